// Command promisedriver is the client process of the banktest promise test
// (promise_test.go): a bank client that runs the operations written on its
// standard input, one at a time, and says on its standard output when each
// one is sent and what became of it, so that the test can kill it with
// SIGKILL in the middle of a call and know which calls' outcomes are
// unknown.
//
//	promisedriver TRANSPORT ADDR BANK
//
// Input lines, one operation each:
//
//	TAG CALLID open ACCOUNT
//	TAG CALLID deposit ACCOUNT AMOUNT
//	TAG CALLID transfer FROM TO AMOUNT
//	TAG - balance ACCOUNT
//
// CALLID is "-" for a fresh call id. Output lines: "ready" once connected;
// "send TAG CALLID" just before a call is sent; then "done TAG CODE BALANCE"
// when the bank answered (CODE is OK or the bank's refusal, e.g.
// FAILED_PRECONDITION; BALANCE the balance the reply carries, 0 for a
// refusal), or "unknown TAG CODE" when no answer came (the outcome is
// unknown). It lives in testdata so that `go build ./...` and `make build`
// leave it out; the test builds it.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

const callTimeout = 10 * time.Second

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: promisedriver TRANSPORT ADDR BANK")
		os.Exit(2)
	}
	t := backend.Target{Kind: backend.Kind(os.Args[1]), Addr: os.Args[2], Bank: os.Args[3], Timeout: callTimeout}
	ct, err := backend.Dial(t, backend.ClientOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "promisedriver: dial:", err)
		os.Exit(1)
	}
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(callTimeout))
	defer conn.Close()
	bank := bankv1.NewBankClient(conn)
	fmt.Println("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) < 4 {
			fmt.Fprintf(os.Stderr, "promisedriver: bad line %q\n", in.Text())
			os.Exit(2)
		}
		tag, callID, op := f[0], f[1], f[2]
		n := make([]int64, len(f)-3)
		for i, s := range f[3:] {
			if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
				fmt.Fprintf(os.Stderr, "promisedriver: bad number in %q\n", in.Text())
				os.Exit(2)
			}
		}
		if callID == "-" {
			callID = conn.NewCallID()
		}
		// Printed with a write of its own before the call: a SIGKILL after
		// it leaves the outcome unknown to the test.
		fmt.Printf("send %s %s\n", tag, callID)
		balance, err := run(bank, op, n, bankrpc.WithCallID(callID))
		code := bankrpc.CodeOf(err)
		if err != nil && !bankrpc.IsWireError(err) {
			fmt.Printf("unknown %s %s\n", tag, code)
			continue
		}
		if code != bankrpc.OK && code != bankrpc.FailedPrecondition {
			// What the test reports as a problem: its reason, for the log.
			fmt.Fprintf(os.Stderr, "promisedriver: %s %s: %s: %s\n", op, callID, code, bankrpc.MessageOf(err))
		}
		fmt.Printf("done %s %s %d\n", tag, code, balance)
	}
}

func run(bank bankv1.BankClient, op string, n []int64, opt bankrpc.CallOption) (int64, error) {
	ctx := context.Background()
	arg := func(i int) int64 {
		if i >= len(n) {
			fmt.Fprintf(os.Stderr, "promisedriver: %s needs %d numbers\n", op, i+1)
			os.Exit(2)
		}
		return n[i]
	}
	switch op {
	case "open":
		r, err := bank.Open(ctx, &bankv1.OpenRequest{AccountId: int32(arg(0))}, opt)
		return r.GetBalance(), err
	case "deposit":
		r, err := bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: int32(arg(0)), Amount: arg(1)}, opt)
		return r.GetBalance(), err
	case "transfer":
		r, err := bank.Transfer(ctx, &bankv1.TransferRequest{AccountId: int32(arg(0)), ToAccountId: int32(arg(1)), Amount: arg(2)}, opt)
		return r.GetBalance(), err
	case "balance":
		r, err := bank.Balance(ctx, &bankv1.BalanceRequest{AccountId: int32(arg(0))})
		return r.GetBalance(), err
	}
	fmt.Fprintf(os.Stderr, "promisedriver: unknown operation %q\n", op)
	os.Exit(2)
	return 0, nil
}
