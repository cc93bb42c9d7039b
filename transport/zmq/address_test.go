package zmq_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// listenAndServe opens addr with bankrpc.Listen and serves the test service
// on it until the test ends.
func listenAndServe(t *testing.T, ctx context.Context, addr string, opts ...bankrpc.ServerOption) *zmq.Server {
	t.Helper()
	l, err := bankrpc.Listen(ctx, addr, opts...)
	require.NoError(t, err)
	s, ok := l.(*zmq.Server)
	require.True(t, ok, "%T", l)
	srv := newRPCServer(&svc{tag: "registered"}, opts...)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(s) }()
	t.Cleanup(func() {
		assert.NoError(t, srv.Shutdown(context.Background()))
		assert.ErrorIs(t, <-done, bankrpc.ErrServerClosed)
	})
	return s
}

// Importing the package registers zmq:// and zmq+ipc://; the typed configs
// reach the backend through WithTransportConfig.
func TestRegisteredSchemes(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	for _, tc := range []struct {
		name, listen string
		want         string // prefix of the URL the server reports
	}{
		{"tcp", "zmq://127.0.0.1:0", "zmq://127.0.0.1:"},
		{"ipc", "zmq+ipc://" + filepath.Join(t.TempDir(), "bank.sock"), "zmq+ipc:///"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listenAndServe(t, ctx, tc.listen, bankrpc.WithTransportConfig(zmq.ServerConfig{Workers: 2}))
			assert.Contains(t, s.URL(), tc.want)
			conn, err := bankrpc.Dial(ctx, s.URL(), bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: time.Second}))
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, conn.Close()) })
			resp, err := testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{})
			require.NoError(t, err)
			assert.Equal(t, "registered", resp.GetTag())
		})
	}
}

func TestRegisteredSchemeErrors(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	s := listenAndServe(t, ctx, "zmq://127.0.0.1:0")
	for _, tc := range []struct {
		name string
		open func() error
		msg  string
	}{
		{"server config to Dial", func() error {
			_, err := bankrpc.Dial(ctx, s.URL(), bankrpc.WithTransportConfig(zmq.ServerConfig{}))
			return err
		}, "a zmq.ServerConfig does not configure a zmq:// transport"},
		{"client config to Listen", func() error {
			_, err := bankrpc.Listen(ctx, "zmq://127.0.0.1:0", bankrpc.WithTransportConfig(zmq.ClientConfig{}))
			return err
		}, "a zmq.ClientConfig does not configure a zmq:// transport"},
		{"another backend's config", func() error {
			_, err := bankrpc.Dial(ctx, s.URL(), bankrpc.WithTransportConfig(struct{ Queue string }{}))
			return err
		}, "does not configure a zmq:// transport"},
		{"no port", func() error {
			_, err := bankrpc.Dial(ctx, "zmq://127.0.0.1")
			return err
		}, "want zmq://host:port"},
		{"port 0 to Dial", func() error {
			_, err := bankrpc.Dial(ctx, "zmq://127.0.0.1:0")
			return err
		}, "picks a free port when listening"},
		{"a query", func() error {
			_, err := bankrpc.Dial(ctx, s.URL()+"?timeout=1s")
			return err
		}, "zmq.ClientConfig"},
		{"a path", func() error {
			_, err := bankrpc.Listen(ctx, "zmq://127.0.0.1:0/bank")
			return err
		}, "want zmq://host:port"},
		{"no ipc path", func() error {
			_, err := bankrpc.Listen(ctx, "zmq+ipc://")
			return err
		}, "want zmq+ipc:///path"},
	} {
		err := tc.open()
		require.Error(t, err, tc.name)
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%s: %v", tc.name, err)
		assert.Contains(t, err.Error(), tc.msg, tc.name)
	}
}

// bankrpc.Listen's frame limit and logger reach the backend when its config
// leaves them unset.
func TestRegisteredSchemeTakesRuntimeOptions(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	const limit = 1024
	logs := &logRecorder{}
	s := listenAndServe(t, ctx, "zmq://127.0.0.1:0", bankrpc.WithServerMaxFrameSize(limit), bankrpc.WithLogger(logs.logger()))
	conn, err := bankrpc.Dial(ctx, s.URL())
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, conn.Close()) })
	_, err = testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{Payload: make([]byte, 2*limit)})
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err), "%v", err)
	assert.True(t, logs.has("over the size limit"), "the backend logs to the runtime's logger")
}
