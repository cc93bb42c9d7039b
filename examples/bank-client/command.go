package main

import (
	"fmt"
	"strconv"

	"github.com/bankrpc/bankrpc/examples/internal/cli"
)

// Command names, as typed.
const (
	cmdDeposit  = "deposit"
	cmdWithdraw = "withdraw"
	cmdTransfer = "transfer"
	cmdBalance  = "balance"
	cmdHelp     = "help"
	cmdQuit     = "quit"
)

// command is one parsed command line, checked before anything is sent.
type command struct {
	name   string
	to     int32 // transfer only
	amount int64 // deposit, withdraw and transfer only
}

// mutating reports whether the command changes the bank: such a command
// carries a call id and is applied at most once per id.
func (c command) mutating() bool {
	return c.name == cmdDeposit || c.name == cmdWithdraw || c.name == cmdTransfer
}

// args returns the command as it would be typed: "transfer 8 30".
func (c command) args() []string {
	switch c.name {
	case cmdDeposit, cmdWithdraw:
		return []string{c.name, strconv.FormatInt(c.amount, 10)}
	case cmdTransfer:
		return []string{c.name, strconv.Itoa(int(c.to)), strconv.FormatInt(c.amount, 10)}
	}
	return []string{c.name}
}

const helpText = `commands:
  deposit AMOUNT       add AMOUNT to your account
  withdraw AMOUNT      take AMOUNT from your account, if the balance (and its credit) allows it
  transfer TO AMOUNT   move AMOUNT from your account to account TO of the same bank
  balance              print your balance
  help                 print this help
  quit                 log off and exit (so does the end of the input)
  submit COMMAND       (amqp, --client-name) send deposit, withdraw, transfer or balance without
                       waiting, even while no bank runs; prints the call id
  collect [ID] [--wait] (amqp, --client-name) print the results of submitted calls, or of ID;
                       --wait waits for ID's
AMOUNT is a positive whole number of minor units (cents), e.g. 150; TO is an account id.
`

// parseCommand parses the words of a command. Errors are *cli.UsageError.
func parseCommand(words []string) (command, error) {
	if len(words) == 0 {
		return command{}, cli.Usagef("no command: give deposit, withdraw, transfer, balance, help or quit")
	}
	c := command{name: words[0]}
	args := words[1:]
	want := func(n int, synopsis string) error {
		if len(args) != n {
			return cli.Usagef("%s takes %s, got %d argument(s): usage: %s", c.name, plural(n), len(args), synopsis)
		}
		return nil
	}
	var err error
	switch c.name {
	case cmdDeposit, cmdWithdraw:
		if err = want(1, c.name+" AMOUNT"); err != nil {
			return command{}, err
		}
		c.amount, err = cli.ParseAmount(args[0])
	case cmdTransfer:
		if err = want(2, "transfer TO AMOUNT"); err != nil {
			return command{}, err
		}
		if c.to, err = cli.ParseAccountID("receiver account id", args[0]); err != nil {
			return command{}, err
		}
		c.amount, err = cli.ParseAmount(args[1])
	case cmdBalance, cmdHelp, cmdQuit:
		err = want(0, c.name)
	case "exit":
		c.name = cmdQuit
		err = want(0, "exit")
	default:
		err = cli.Usagef("unknown command %q: give deposit, withdraw, transfer, balance, help or quit", c.name)
	}
	if err != nil {
		return command{}, err
	}
	return c, nil
}

func plural(n int) string {
	switch n {
	case 0:
		return "no argument"
	case 1:
		return "1 argument"
	}
	return fmt.Sprintf("%d arguments", n)
}
