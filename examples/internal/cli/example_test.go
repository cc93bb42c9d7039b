package cli_test

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/bankrpc/bankrpc/examples/internal/cli"
)

// Example shows the order of precedence: a flag on the command line, then its
// BANKRPC_ environment variable, then the default.
func Example() {
	fs := flag.NewFlagSet("bank-client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bank := fs.String("bank", "bank", "")
	timeout := fs.Duration("timeout", 5*time.Second, "")
	id := fs.String("id", "", "")
	env := map[string]string{"BANKRPC_BANK": "savings", "BANKRPC_ID": "9"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	set, err := cli.Parse(fs, []string{"--id", "7", "balance"}, lookup)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*id, *bank, *timeout, set["timeout"], fs.Args())

	if _, err := cli.ParseAmount("1e3"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// 7 savings 5s false [balance]
	// amount "1e3" is not accepted: give a positive whole number of minor units (cents), from 1 to 9223372036854775807, in digits only (no sign, point or exponent)
}
