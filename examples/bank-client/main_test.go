package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
)

// runClient runs the program with args and the environment vars, stdin
// empty, and returns its exit status and output.
func runClient(t *testing.T, vars map[string]string, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	status = run(testContext(t), program{
		args:      args,
		lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		stdin:     strings.NewReader(""),
		stdout:    &out,
		stderr:    &errOut,
	})
	return status, out.String(), errOut.String()
}

// TestRunUsageErrors checks that every malformed command line exits 2 with
// a message saying what is accepted, before dialing anything: the address
// given would not answer.
func TestRunUsageErrors(t *testing.T) {
	dead := []string{"--addr", "tcp://127.0.0.1:1", "--timeout", "50ms"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		says string
	}{
		{args: []string{"balance"}, says: "--id is required"},
		{args: []string{"--id", "0", "balance"}, says: "--id must be positive"},
		{args: []string{"--id", "-7", "balance"}, says: "positive 32-bit integer"},
		{args: []string{"--id", "2147483648", "balance"}, says: "too large"},
		{args: []string{"--id", "seven", "balance"}, says: "digits only"},
		{args: []string{"--id", "7", "deposit", "abc"}, says: "digits only"},
		{args: []string{"--id", "7", "deposit", "-5"}, says: "digits only"},
		{args: []string{"--id", "7", "deposit", "0"}, says: "must be positive"},
		{args: []string{"--id", "7", "deposit", "1e3"}, says: "digits only"},
		{args: []string{"--id", "7", "withdraw", "9223372036854775808"}, says: "too large"},
		{args: []string{"--id", "7", "transfer", "0", "5"}, says: "receiver account id must be positive"},
		{args: []string{"--id", "7", "steal", "5"}, says: `unknown command "steal"`},
		{args: []string{"--id", "7", "quit"}, says: "interactive prompt"},
		{args: []string{"--transport", "inproc", "--id", "7", "balance"}, says: "inproc is refused"},
		{args: []string{"--id", "7", "--call-id", "x", "balance"}, says: "--call-id goes with one deposit"},
		{args: []string{"--id", "7", "--call-id", "a b", "deposit", "1"}, says: "printable ASCII"},
		{args: []string{"--id", "7", "--call-id", "mine", "deposit", "1"}, says: `--call-id "mine" is not a call id this client prints`},
		{args: []string{"--id", "7", "--bogus", "balance"}, says: "bogus"},
		{args: []string{"--id", "7", "submit", "deposit", "5"}, says: "need --transport amqp and --client-name"},
		{args: []string{"--transport", "amqp", "--addr", "amqp://127.0.0.1:1/", "--id", "7", "submit", "deposit", "5"}, says: "--client-name"},
		{args: []string{"--transport", "amqp", "--addr", "amqp://127.0.0.1:1/", "--client-name", "a", "--id", "7", "submit", "quit"}, says: "submit takes deposit, withdraw, transfer or balance"},
		{args: []string{"--transport", "amqp", "--addr", "amqp://127.0.0.1:1/", "--client-name", "a", "--id", "7", "submit", "deposit", "0"}, says: "must be positive"},
		{args: []string{"--transport", "amqp", "--addr", "amqp://127.0.0.1:1/", "--client-name", "a", "--id", "7", "collect", "--wait"}, says: "collect --wait needs the call id"},
		{args: []string{"--transport", "amqp", "--addr", "amqp://127.0.0.1:1/", "--client-name", "a", "--id", "7", "collect", "x-1", "y-2"}, says: "at most one call id"},
		{args: []string{"balance"}, env: map[string]string{"BANKRPC_JSON": "maybe", "BANKRPC_ID": "7"}, says: "BANKRPC_JSON"},
		{args: []string{"balance"}, env: map[string]string{"BANKRPC_BANK": "../etc", "BANKRPC_ID": "7"}, says: "bank name"},
		{args: []string{"--id", "7", "--log-level", "loud", "balance"}, says: "log level"},
	} {
		status, stdout, stderr := runClient(t, tc.env, append(append([]string{}, dead...), tc.args...)...)
		assert.Equal(t, cli.ExitUsage, status, "%v", tc.args)
		assert.Empty(t, stdout, "%v", tc.args)
		assert.Contains(t, stderr, tc.says, "%v", tc.args)
		assert.NotContains(t, stderr, "no answer", "%v: nothing is sent", tc.args)
	}
}

func TestRunHelp(t *testing.T) {
	status, stdout, _ := runClient(t, nil, "--help")
	assert.Equal(t, cli.ExitOK, status)
	assert.Contains(t, stdout, "usage: bank-client --id N")
	assert.Contains(t, stdout, "env BANKRPC_CLIENT_NAME")
	assert.Contains(t, stdout, "exit status")

	status, stdout, _ = runClient(t, nil, "--id", "7", "help")
	assert.Equal(t, cli.ExitOK, status)
	assert.Equal(t, helpText, stdout)
}

// TestRunUnreachable checks that a client of a server that is not there
// exits 3 within its timeout and says which transport and address it
// tried.
func TestRunUnreachable(t *testing.T) {
	ln, addr, err := backend.Listen(backend.Target{Kind: backend.ZMQ, Addr: "tcp://127.0.0.1:0"}, backend.ServerOptions{})
	require.NoError(t, err)
	require.NoError(t, ln.Close()) // nobody listens on addr now

	start := time.Now()
	status, stdout, stderr := runClient(t, map[string]string{"BANKRPC_ADDR": addr}, "--id", "7", "--timeout", "300ms", "deposit", "100")
	assert.Equal(t, cli.ExitUnreachable, status)
	assert.Less(t, time.Since(start), 5*time.Second, "gives up at the timeout, not much later")
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "over zmq "+addr+" within 300ms")
	assert.Contains(t, stderr, "check that bank-server --transport zmq --addr "+addr+" runs")
	assert.Contains(t, stderr, "the deposit was not sent")
}
