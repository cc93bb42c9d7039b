package banktest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBadInputIsRefusedBeforeSending runs every malformed command line
// against a live server logging each call, and checks that each exits 2 with
// a message saying what is accepted, and that the server saw no call.
func TestBadInputIsRefusedBeforeSending(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "strict"}, filepath.Join(dir, "data"), "--log-level", "debug")
	b := srv.ref

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--id", "7", "deposit", "abc"}, "positive whole number of minor units"},
		{[]string{"--id", "7", "deposit", "-5"}, "positive whole number of minor units"},
		{[]string{"--id", "7", "withdraw", "0"}, "amount must be positive"},
		{[]string{"--id", "7", "deposit", "1e3"}, "digits only"},
		{[]string{"--id", "7", "deposit", "9223372036854775808"}, "too large"},
		{[]string{"--id", "7", "transfer", "8", "99999999999999999999"}, "too large"},
		{[]string{"--id", "7", "transfer", "-8", "5"}, "receiver account id"},
		{[]string{"--id", "7", "transfer", "2147483648", "5"}, "receiver account id 2147483648 is too large"},
		{[]string{"--id", "0", "balance"}, "--id must be positive"},
		{[]string{"--id", "-1", "balance"}, "positive 32-bit integer"},
		{[]string{"--id", "2147483648", "balance"}, "too large"},
		{[]string{"--id", "abc", "balance"}, "digits only"},
		{[]string{"balance"}, "--id is required"},
		{[]string{"--id", "7", "rob", "5"}, `unknown command "rob"`},
		{[]string{"--id", "7", "deposit"}, "deposit takes 1 argument"},
		{[]string{"--transport", "inproc", "--id", "7", "balance"}, "inproc is refused"},
	} {
		r := runClient(t, dir, b, tc.args...)
		assert.Equal(t, 2, r.status, "%v: %v", tc.args, r)
		assert.Empty(t, r.stdout, "%v", tc.args)
		assert.Contains(t, r.stderr, tc.says, "%v", tc.args)
	}
	r := runBinary(t, dir, serverBinary, "--transport", "inproc")
	assert.Equal(t, 2, r.status, "%v", r)
	assert.Contains(t, r.stderr, "inproc is refused")

	srv.stop(t)
	assert.NotContains(t, srv.stderr.String(), "msg=call", "no malformed command reached the bank")
	assert.Contains(t, srv.stdout.String(), "stopped: 0 accounts saved")
}

// TestUnknownCommandInPrompt checks that a mistyped line is reported and the
// session goes on.
func TestUnknownCommandInPrompt(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "typo"}, filepath.Join(dir, "data"))
	p := startPrompt(t, dir, srv.ref, 5)
	_, err := fmt.Fprint(p.in, "depsoit 10\n")
	require.NoError(t, err)
	assert.Equal(t, "balance 10", p.do(t, "deposit 10"), "the session goes on after the typo")
	assert.Equal(t, 2, p.quit(t), "the status of the mistyped line")
	assert.Contains(t, p.stderr.String(), `unknown command "depsoit"`)
	assert.NotContains(t, p.stdout.String(), "bank>", "no prompt when stdin is not a terminal")
	srv.stop(t)
}

// TestUnreachable checks that a client of a server, or broker, that is not
// there exits 3 within its timeout and says what it tried.
func TestUnreachable(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	port := freePort(t)

	zmqAddr := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	r := runClient(t, dir, bankRef{transport: "zmq", addr: zmqAddr, name: "gone"}, "--timeout", "1s", "--id", "7", "deposit", "100")
	assert.Equal(t, 3, r.status, "%v", r)
	assert.Less(t, r.took, 5*time.Second, "no hang: %v", r)
	assert.Contains(t, r.stderr, "over zmq "+zmqAddr+" within 1s")
	assert.Contains(t, r.stderr, "check that bank-server --transport zmq --addr "+zmqAddr+" runs")
	assert.Contains(t, r.stderr, "the deposit was not sent")

	amqpAddr := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)
	r = runClient(t, dir, bankRef{transport: "amqp", addr: amqpAddr, name: "gone"}, "--timeout", "1s", "--id", "7", "deposit", "100")
	assert.Equal(t, 3, r.status, "%v", r)
	assert.Less(t, r.took, 5*time.Second, "no hang: %v", r)
	assert.Contains(t, r.stderr, fmt.Sprintf("amqp://guest:xxxxx@127.0.0.1:%d/", port))
	assert.Contains(t, r.stderr, "check that RabbitMQ answers")
	assert.Contains(t, r.stderr, "nothing was sent")
	assert.NotContains(t, r.stderr, "guest:guest", "no password in messages")
}

// TestSecondServerIsRefused starts a second server on the data directory of
// a running one, then on its address: each is refused with a clear message,
// and the first one keeps serving.
func TestSecondServerIsRefused(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	first := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "one"}, data)

	other := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
	r := runBinary(t, dir, serverBinary, "--addr", other, "--bank", "one", "--data", data)
	assert.Equal(t, 1, r.status, "%v", r)
	assert.Contains(t, r.stderr, fmt.Sprintf("in use by process %d", first.cmd.Process.Pid))
	assert.Contains(t, r.stderr, "another bank-server already serves the data in "+data)
	assert.NotContains(t, r.stdout, "serving")

	r = runBinary(t, dir, serverBinary, "--addr", first.ref.addr, "--bank", "two", "--data", filepath.Join(dir, "data2"))
	assert.Equal(t, 1, r.status, "%v", r)
	assert.Contains(t, r.stderr, "cannot serve over zmq "+first.ref.addr)
	assert.Contains(t, r.stderr, "Pick another --addr")

	assert.Equal(t, "balance 1\n", mustRun(t, dir, first.ref, "--id", "1", "deposit", "1"), "the first server still serves")
	first.stop(t)
}

// TestEnvironmentFallback checks that BANKRPC_<FLAG> variables stand for
// flags, and that a flag wins over its variable.
func TestEnvironmentFallback(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "env"}, filepath.Join(dir, "data"))
	run := func(env []string, args ...string) result {
		t.Helper()
		cmd := commandIn(dir, clientBinary, args...)
		cmd.Env = childEnv(env...)
		return runCmd(t, cmd)
	}
	r := run([]string{"BANKRPC_ADDR=" + srv.ref.addr, "BANKRPC_ID=4", "BANKRPC_JSON=true"}, "deposit", "9")
	assert.Equal(t, 0, r.status, "%v", r)
	assert.Equal(t, `{"balance":"9"}`+"\n", r.stdout)

	r = run([]string{"BANKRPC_ADDR=tcp://127.0.0.1:1", "BANKRPC_ID=5"}, "--addr", srv.ref.addr, "--id", "4", "balance")
	assert.Equal(t, 0, r.status, "flags win: %v", r)
	assert.Equal(t, "balance 9\n", r.stdout)
	srv.stop(t)

	r = run([]string{"BANKRPC_TRANSPORT=inproc"}, "--id", "4", "balance")
	assert.Equal(t, 2, r.status, "%v", r)
	assert.Contains(t, r.stderr, "inproc is refused")
}
