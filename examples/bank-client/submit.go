package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// Commands that do not wait for the bank: submit hands a command to the
// broker and exits; collect prints the results that came back.
const (
	cmdSubmit  = "submit"
	cmdCollect = "collect"
)

// checkSubmitTarget refuses submit and collect without a durable result
// queue to wait in.
func checkSubmitTarget(t backend.Target, clientName string) error {
	if t.Kind != backend.AMQP || clientName == "" {
		return cli.Usagef("submit and collect need --transport amqp and --client-name NAME: the results wait for NAME in its durable queue while no client runs")
	}
	return nil
}

// laterCommand is a parsed submit or collect command line.
type laterCommand struct {
	submit  bool
	command command        // submit's command
	id      bankrpc.CallID // collect's call id; empty for all
	wait    bool
}

// parseLater parses the words of submit COMMAND or collect [ID] [--wait];
// wait is the --wait flag. Errors are *cli.UsageError.
func parseLater(words []string, wait bool) (laterCommand, error) {
	if words[0] == cmdSubmit {
		c, err := parseCommand(words[1:])
		if err != nil {
			return laterCommand{}, err
		}
		if !c.mutating() && c.name != cmdBalance {
			return laterCommand{}, cli.Usagef("submit takes deposit, withdraw, transfer or balance, not %s", c.name)
		}
		return laterCommand{submit: true, command: c}, nil
	}
	l := laterCommand{wait: wait}
	for _, a := range words[1:] {
		switch {
		case a == "--wait" || a == "-wait":
			l.wait = true
		case l.id == "":
			l.id = bankrpc.CallID(a)
		default:
			return laterCommand{}, cli.Usagef("collect takes at most one call id, then --wait")
		}
	}
	if l.wait && l.id == "" {
		return laterCommand{}, cli.Usagef("collect --wait needs the call id to wait for")
	}
	return l, nil
}

// submit submits one deposit, withdraw, transfer or balance command without
// waiting for the bank (which need not run), and prints its call id.
func submit(ctx context.Context, bank bankv1.BankClient, account int32, c command, out io.Writer, timeout time.Duration) (int, error) {
	var err error
	ctx, cancel := context.WithTimeout(ctx, timeout) // for the broker's confirmation only
	defer cancel()
	var id bankrpc.CallID
	switch c.name {
	case cmdDeposit:
		id, err = bank.SubmitDeposit(ctx, &bankv1.DepositRequest{AccountId: account, Amount: c.amount})
	case cmdWithdraw:
		id, err = bank.SubmitWithdraw(ctx, &bankv1.WithdrawRequest{AccountId: account, Amount: c.amount})
	case cmdTransfer:
		id, err = bank.SubmitTransfer(ctx, &bankv1.TransferRequest{AccountId: account, ToAccountId: c.to, Amount: c.amount})
	default:
		id, err = bank.SubmitBalance(ctx, &bankv1.BalanceRequest{AccountId: account})
	}
	if err != nil {
		return exitStatus(err), err
	}
	fmt.Fprintf(out, "submitted %s %s\n", c.name, id)
	return cli.ExitOK, nil
}

// collect prints the result of call id, or of every finished call when id
// is empty. With wait it waits for id's result (until ctx ends).
func collect(ctx context.Context, conn *bankrpc.Conn, bank bankv1.BankClient, id bankrpc.CallID, wait bool, out io.Writer) (int, error) {
	for {
		fin, err := conn.Finished(ctx)
		if err != nil {
			return exitStatus(err), err
		}
		status, found := cli.ExitOK, false
		for _, f := range fin {
			if id != "" && f.ID != id {
				continue
			}
			found = true
			if st := printCollected(ctx, bank, f, out); st != cli.ExitOK {
				status = st
			}
		}
		switch {
		case found:
			return status, nil
		case id == "":
			fmt.Fprintln(out, "no results waiting")
			return cli.ExitOK, nil
		case !wait:
			fmt.Fprintf(out, "call %s: no result yet (the bank has not answered it; collect --wait waits)\n", id)
			return cli.ExitUnreachable, nil
		}
		select {
		case <-ctx.Done():
			return exitStatus(ctx.Err()), bankrpc.FromContextError(ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// printCollected collects one finished call and prints "ID method: result".
func printCollected(ctx context.Context, bank bankv1.BankClient, f bankrpc.FinishedCall, out io.Writer) int {
	var (
		resp proto.Message
		err  error
	)
	switch f.Method {
	case bankv1.Bank_Deposit_FullMethodName:
		resp, err = bank.CollectDeposit(ctx, f.ID)
	case bankv1.Bank_Withdraw_FullMethodName:
		resp, err = bank.CollectWithdraw(ctx, f.ID)
	case bankv1.Bank_Transfer_FullMethodName:
		resp, err = bank.CollectTransfer(ctx, f.ID)
	case bankv1.Bank_Balance_FullMethodName:
		resp, err = bank.CollectBalance(ctx, f.ID)
	case bankv1.Bank_Open_FullMethodName:
		resp, err = bank.CollectOpen(ctx, f.ID)
	case bankv1.Bank_Close_FullMethodName:
		resp, err = bank.CollectClose(ctx, f.ID)
	default:
		fmt.Fprintf(out, "%s: a result of an unknown method %q (code %s), left to collect\n", f.ID, f.Method, f.Code)
		return cli.ExitRefused
	}
	if err != nil {
		fmt.Fprintf(out, "%s %s: %s: %s\n", f.ID, methodName(f.Method), bankrpc.CodeOf(err), bankrpc.MessageOf(err))
		return exitStatus(err)
	}
	b, _ := resp.(interface{ GetBalance() int64 })
	fmt.Fprintf(out, "%s %s: balance %d\n", f.ID, methodName(f.Method), b.GetBalance())
	return cli.ExitOK
}

func methodName(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}
