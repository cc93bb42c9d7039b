package backend

import (
	"context"
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func resolve(t *testing.T, args []string, vars map[string]string) (Target, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f Flags
	f.Register(fs, "timeout", 5*time.Second)
	set, err := cli.Parse(fs, args, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	require.NoError(t, err)
	return f.Resolve(set)
}

func TestResolveDefaultsPerTransport(t *testing.T) {
	got, err := resolve(t, nil, nil)
	require.NoError(t, err)
	assert.Equal(t, Target{Kind: ZMQ, Addr: DefaultZMQAddr, Bank: "bank", Timeout: 5 * time.Second}, got)

	got, err = resolve(t, []string{"--transport", "amqp", "--bank", "b2"}, nil)
	require.NoError(t, err)
	assert.Equal(t, Target{Kind: AMQP, Addr: DefaultAMQPAddr, Bank: "b2", Timeout: 5 * time.Second}, got)

	got, err = resolve(t, nil, map[string]string{"BANKRPC_TRANSPORT": "amqp", "BANKRPC_ADDR": "amqp://u:p@h:1/"})
	require.NoError(t, err)
	assert.Equal(t, AMQP, got.Kind)
	assert.Equal(t, "amqp://u:p@h:1/", got.Addr, "an address from the environment is a choice, not replaced by the default")
}

func TestResolveTakesBankrpcAddresses(t *testing.T) {
	got, err := resolve(t, []string{"--addr", "zmq://127.0.0.1:4041"}, nil)
	require.NoError(t, err)
	assert.Equal(t, Target{Kind: ZMQ, Addr: "tcp://127.0.0.1:4041", Bank: "bank", Timeout: 5 * time.Second}, got)

	got, err = resolve(t, []string{"--addr", "amqp://u:p@h:5672/v?service=savings"}, nil)
	require.NoError(t, err)
	assert.Equal(t, Target{Kind: AMQP, Addr: "amqp://u:p@h:5672/v", Bank: "savings", Timeout: 5 * time.Second}, got,
		"the scheme names the backend without --transport; ?service names the bank")

	got, err = resolve(t, []string{"--addr", "amqp://u:p@h1:5672,h2:5673/?service=savings", "--queue", "quorum"}, nil)
	require.NoError(t, err)
	assert.Equal(t, Target{Kind: AMQP, Addr: "amqp://u:p@h1:5672,h2:5673/", Bank: "savings", Queue: "quorum", Timeout: 5 * time.Second}, got,
		"a cluster's nodes in one address, quorum queues")

	_, err = resolve(t, []string{"--addr", "amqp://h/?service=a", "--bank", "b"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `names service "a" but --bank is "b"`)
}

func TestResolveRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--transport", "inproc"}, "inproc is refused"},
		{[]string{"--transport", "grpc"}, "give zmq or amqp"},
		{[]string{"--transport", "amqp", "--addr", "tcp://127.0.0.1:4040"}, "not an AMQP URL"},
		{[]string{"--transport", "zmq", "--addr", "amqp://127.0.0.1/"}, "not a ZeroMQ endpoint"},
		{[]string{"--addr", "127.0.0.1:4040"}, "not a ZeroMQ endpoint"},
		{[]string{"--bank", "../etc"}, "bank name"},
		{[]string{"--timeout", "0s"}, "positive duration"},
		{[]string{"--transport", "amqp", "--queue", "stream"}, "not a queue type"},
		{[]string{"--queue", "quorum"}, "for the amqp backend"},
	} {
		_, err := resolve(t, tc.args, nil)
		require.Error(t, err, "%v", tc.args)
		assert.ErrorAs(t, err, new(*cli.UsageError), "%v", tc.args)
		assert.Contains(t, err.Error(), tc.says, "%v", tc.args)
	}
}

func TestTargetStringHidesPassword(t *testing.T) {
	tg := Target{Kind: AMQP, Addr: "amqp://guest:secret@127.0.0.1:5672/", Bank: "b"}
	assert.NotContains(t, tg.String(), "secret")
	assert.Contains(t, tg.String(), "127.0.0.1:5672")
	assert.Equal(t, "zmq tcp://127.0.0.1:4040", Target{Kind: ZMQ, Addr: "tcp://127.0.0.1:4040"}.String())
}

func TestListenZMQPortInUse(t *testing.T) {
	first, addr, err := Listen(Target{Kind: ZMQ, Addr: "tcp://127.0.0.1:0", Bank: "b"}, ServerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = first.Close() })
	assert.Regexp(t, `^tcp://127\.0\.0\.1:[1-9][0-9]*$`, addr, "the port picked for :0 is shown")

	_, _, err = Listen(Target{Kind: ZMQ, Addr: addr, Bank: "b"}, ServerOptions{})
	require.Error(t, err, "a second server on %s", addr)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err))
	assert.Contains(t, err.Error(), addr)
}

func TestDialZMQWithoutServerFailsAtTheDeadline(t *testing.T) {
	ln, addr, err := Listen(Target{Kind: ZMQ, Addr: "tcp://127.0.0.1:0", Bank: "b"}, ServerOptions{})
	require.NoError(t, err)
	require.NoError(t, ln.Close()) // the port is now free and nobody listens

	ct, err := Dial(Target{Kind: ZMQ, Addr: addr, Bank: "b"}, ClientOptions{Account: 1})
	require.NoError(t, err, "ZeroMQ connects in the background")
	conn := bankrpc.NewConn(ct)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = bankv1.NewBankClient(conn).Balance(ctx, &bankv1.BalanceRequest{AccountId: 1})
	assert.True(t, cli.Unreachable(bankrpc.CodeOf(err)), "got %v", err)
}
