package bankrpc_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	_ "github.com/bankrpc/bankrpc/transport/inproc"
	_ "github.com/bankrpc/bankrpc/transport/zmq"
)

// runCounter answers Echo with the number of calls it ran so far.
type runCounter struct {
	testv1.UnimplementedTestServiceServer
	runs atomic.Int64
}

func (c *runCounter) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Tag: fmt.Sprint(c.runs.Add(1)), Payload: in.GetPayload()}, nil
}

func uniqueSuffix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOneServerOnEveryTransport: one Server, and so one handler, serves
// inproc, zmq and amqp addresses at once through ListenAndServe; a client
// dialled by address reaches it over each; Shutdown stops them all and
// ListenAndServe returns ErrServerClosed.
func TestOneServerOnEveryTransport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svc := "serve-" + uniqueSuffix(t)
	addrs := []string{
		"inproc://" + svc,
		fmt.Sprintf("zmq://127.0.0.1:%d", freeTCPPort(t)),
	}
	if u := amqptest.URL(t); u != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		addrs = append(addrs, u+sep+"service="+svc)
		t.Cleanup(func() { amqptest.DeleteQueues(t, u, amqp.ServiceQueue(svc), amqp.DeadLetterQueue(svc)) })
	}
	h := &runCounter{}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, h)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx, addrs...) }()

	for i, addr := range addrs {
		conn := dialWhenServed(t, ctx, addr, served)
		resp, err := testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{Payload: []byte(addr)})
		if err != nil {
			select {
			case e := <-served:
				t.Fatalf("call over %s: %v; ListenAndServe returned %v", addr, err, e)
			case <-time.After(time.Second):
				t.Fatalf("call over %s: %v", addr, err)
			}
		}
		assert.Equal(t, fmt.Sprint(i+1), resp.GetTag(), "the same handler answers over %s", addr)
		assert.Equal(t, addr, string(resp.GetPayload()))
		require.NoError(t, conn.Close())
	}
	assert.Equal(t, int64(len(addrs)), h.runs.Load())

	require.NoError(t, srv.Shutdown(ctx))
	select {
	case err := <-served:
		assert.ErrorIs(t, err, bankrpc.ErrServerClosed)
	case <-ctx.Done():
		t.Fatal("ListenAndServe did not return after Shutdown")
	}
	// The addresses are free again.
	for _, addr := range addrs[:2] {
		l, err := bankrpc.Listen(ctx, addr)
		require.NoError(t, err, "listen again on %s", addr)
		require.NoError(t, l.Close())
	}
}

// dialWhenServed dials addr once ListenAndServe, started in another
// goroutine, has opened it; it fails t if ListenAndServe returns first.
func dialWhenServed(t *testing.T, ctx context.Context, addr string, served <-chan error) *bankrpc.Conn {
	t.Helper()
	for {
		conn, err := bankrpc.Dial(ctx, addr)
		if err == nil {
			return conn
		}
		select {
		case e := <-served:
			t.Fatalf("ListenAndServe returned %v before %s could be dialled (%v)", e, addr, err)
		case <-ctx.Done():
			t.Fatalf("dial %s: %v", addr, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// An address whose scheme no imported backend registered is refused with
// INVALID_ARGUMENT naming the registered schemes, by Dial, Listen and
// ListenAndServe; ListenAndServe closes the listeners it had opened.
func TestUnknownSchemeNamesTheRegisteredOnes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := bankrpc.Dial(ctx, "grpc://127.0.0.1:50051")
	require.Error(t, err)
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	for _, scheme := range transport.Schemes() {
		assert.Contains(t, err.Error(), scheme)
	}
	assert.Contains(t, err.Error(), "inproc")
	assert.Contains(t, err.Error(), "zmq")

	_, err = bankrpc.Listen(ctx, "nope://x")
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)

	good := "inproc://serve-" + uniqueSuffix(t)
	srv := bankrpc.NewServer()
	err = srv.ListenAndServe(ctx, good, "nope://x")
	require.Error(t, err)
	assert.False(t, errors.Is(err, bankrpc.ErrServerClosed))
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	l, err := bankrpc.Listen(ctx, good)
	require.NoError(t, err, "the listener opened before the bad address was closed")
	require.NoError(t, l.Close())
}
