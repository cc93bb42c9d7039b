package zmq_test

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

func TestPeerSeenByHandler(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	c := stub(t, dial(t, s.Addr(), zmq.ClientConfig{}))
	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "peer"})
	require.NoError(t, err)
	require.Len(t, resp.GetMetadata(), 2)
	assert.Equal(t, "transport=zmq", resp.GetMetadata()[0])
	assert.Regexp(t, regexp.MustCompile(`^addr=[0-9a-f]{10}$`), resp.GetMetadata()[1], "the routing id in hex")
	assert.Empty(t, resp.GetPeerIdentity(), "no identity without CURVE")
}

func TestAddrResolvesPort(t *testing.T) {
	for _, endpoint := range []string{"tcp://127.0.0.1:0", "tcp://127.0.0.1:*"} {
		s, err := zmq.Listen(endpoint, zmq.ServerConfig{})
		require.NoError(t, err, endpoint)
		assert.Regexp(t, regexp.MustCompile(`^tcp://127\.0\.0\.1:[1-9][0-9]*$`), s.Addr(), endpoint)
		assert.NoError(t, s.Close())
	}
}

func TestListenErrors(t *testing.T) {
	busy := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	for _, tc := range []struct {
		endpoint string
		code     bankrpc.Code
		msg      string
	}{
		{"127.0.0.1:4040", bankrpc.InvalidArgument, "not of the form"},
		{"inproc://bank", bankrpc.InvalidArgument, `transport "inproc" is not supported`},
		{"tcp://127.0.0.1:notaport", bankrpc.InvalidArgument, "tcp://127.0.0.1:notaport"},
		{busy.Addr(), bankrpc.Unavailable, busy.Addr()},
	} {
		_, err := zmq.Listen(tc.endpoint, zmq.ServerConfig{})
		require.Error(t, err, tc.endpoint)
		assert.Equal(t, tc.code, bankrpc.CodeOf(err), "%s: %v", tc.endpoint, err)
		assert.Contains(t, err.Error(), tc.msg)
	}
	_, err := zmq.Dial("udp://127.0.0.1:1", zmq.ClientConfig{})
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
}

// Several servers and several clients in one process: every call is
// answered by the server its client dialled.
func TestSeveralServersAndClients(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	const servers, clientsPerServer, calls = 3, 2, 50
	var wg sync.WaitGroup
	for i := range servers {
		name := fmt.Sprintf("bank-%d", i)
		s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{tag: name}))
		for j := range clientsPerServer {
			c := stub(t, dial(t, s.Addr(), zmq.ClientConfig{}))
			wg.Go(func() {
				for k := range calls {
					resp, err := c.Echo(ctx, &testv1.EchoRequest{Payload: []byte{byte(j), byte(k)}})
					if !assert.NoError(t, err) {
						return
					}
					assert.Equal(t, name, resp.GetTag(), "client %d of %s was answered by another server", j, name)
					assert.Equal(t, []byte{byte(j), byte(k)}, resp.GetPayload())
				}
			})
		}
	}
	wg.Wait()
}

func TestServeAfterCloseAndTwice(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	require.NoError(t, s.Close(), "Close before Serve")
	require.NoError(t, s.Close(), "Close is idempotent")
	require.NoError(t, s.Shutdown(ctx), "Shutdown after Close")
	err = s.Serve(newRPCServer(&svc{}))
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "%v", err)

	s = serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	_, err = stub(t, dial(t, s.Addr(), zmq.ClientConfig{})).Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err, "the first Serve runs")
	err = s.Serve(newRPCServer(&svc{}))
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "%v", err)
}

// Shutdown lets the handlers in flight finish and sends their replies;
// Serve then returns nil and the address is free again.
func TestShutdownFinishesCalls(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	impl := &svc{}
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(newRPCServer(impl)) }()
	c := stub(t, dial(t, s.Addr(), zmq.ClientConfig{}))
	const sleep = 300 * time.Millisecond
	replied := make(chan error, 1)
	go func() {
		resp, err := c.Sleep(ctx, &testv1.SleepRequest{Nanos: int64(sleep)})
		if err == nil && resp.GetInterrupted() {
			err = fmt.Errorf("the handler's ctx was canceled by the shutdown")
		}
		replied <- err
	}()
	require.Eventually(t, func() bool { return impl.sleeps.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, s.Shutdown(ctx))
	require.NoError(t, <-done)
	select {
	case err := <-replied:
		require.NoError(t, err, "a call in flight during Shutdown must get its reply")
	case <-ctx.Done():
		t.Fatal("the call in flight did not return")
	}
	require.NoError(t, s.Shutdown(ctx), "Shutdown is idempotent")
	require.NoError(t, s.Close(), "Close after Shutdown is a no-op")
	again, err := zmq.Listen(s.Addr(), zmq.ServerConfig{})
	require.NoError(t, err, "the address is free again")
	require.NoError(t, again.Close())
}

// stuckHandler blocks every request until the test ends and reports each
// one it starts on started.
func stuckHandler(t *testing.T) (transport.Handler, <-chan struct{}) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // last: after the server is closed
	started := make(chan struct{}, 16)
	return handlerFunc(func(context.Context, []byte) ([]byte, error) {
		started <- struct{}{}
		<-release
		return []byte("too late"), nil
	}), started
}

// Close does not wait for a handler that does not return: it closes the
// socket at once, Serve returns nil, and the address is free again. (Close
// used to wait for the handler forever.)
func TestCloseDoesNotWaitForStuckHandler(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	h, started := stuckHandler(t)
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	res := goRoundTrip(ctx, c, &transport.Call{ID: "stuck-1", Frame: []byte("x")})
	<-started

	began := time.Now()
	require.NoError(t, s.Close())
	assert.Less(t, time.Since(began), time.Second, "Close must return at once")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Second):
		t.Fatal("Serve did not return at once after Close")
	}
	require.NoError(t, s.Close(), "Close is idempotent")
	again, err := zmq.Listen(s.Addr(), zmq.ServerConfig{})
	require.NoError(t, err, "the address is free again")
	require.NoError(t, again.Close())
	require.NoError(t, c.Close())
	assert.ErrorIs(t, await(t, ctx, res).err, bankrpc.ErrClosed)
}

// Shutdown with a handler that does not return gives up when its ctx ends:
// it closes at once and returns the ctx's error.
func TestShutdownBoundedByCtx(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	h, started := stuckHandler(t)
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	_ = goRoundTrip(ctx, c, &transport.Call{ID: "stuck-2", Frame: []byte("x")})
	<-started

	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = s.Shutdown(sctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(began), time.Second, "Shutdown must not wait past its ctx")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Second):
		t.Fatal("Serve did not return after Shutdown gave up")
	}
}

// freeAddr returns a tcp endpoint on 127.0.0.1 where nothing listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "tcp://" + addr
}

// A raw Handler that panics (a bankrpc.Server never does) is answered
// INTERNAL, as the runtime answers a panicking method; the panic is logged
// and the server keeps serving.
func TestHandlerPanicKeepsServing(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	logs := &logRecorder{}
	var calls atomic.Int64
	h := handlerFunc(func(ctx context.Context, frame []byte) ([]byte, error) {
		if calls.Add(1) == 1 {
			panic("raw handler bug")
		}
		return frame, nil
	})
	s := serve(t, zmq.ServerConfig{Logger: logs.logger()}, h)
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	reply, err := c.RoundTrip(ctx, &transport.Call{ID: "p-1", Frame: echoFrame(t, "p-1", "boom")})
	require.NoError(t, err)
	res, err := envelope.DecodeResult(reply, 0)
	require.NoError(t, err)
	assert.Equal(t, uint32(bankrpc.Internal), res.GetCode(), "reason: %s", res.GetReason())
	assert.Equal(t, "p-1", res.GetCallId())
	assert.True(t, logs.has("handler panicked"), "the panic must be logged")
	reply, err = c.RoundTrip(ctx, &transport.Call{ID: "p-2", Frame: []byte("ping")})
	require.NoError(t, err)
	assert.Equal(t, "ping", string(reply))
	assert.Equal(t, int64(2), calls.Load())
}

// A lone request runs on the goroutine that owns the socket; while its
// handler blocks, another goroutine takes the socket over and serves the
// next request.
func TestBlockedHandlerDoesNotStallOthers(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	release := make(chan struct{})
	var calls atomic.Int64
	s := serve(t, zmq.ServerConfig{}, handlerFunc(func(_ context.Context, frame []byte) ([]byte, error) {
		if calls.Add(1) == 1 {
			<-release
		}
		return frame, nil
	}))
	defer close(release)
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	blocked := goRoundTrip(ctx, c, &transport.Call{ID: "blocked", Frame: []byte("first")})
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	reply, err := c.RoundTrip(ctx, &transport.Call{ID: "next", Frame: []byte("second")})
	require.NoError(t, err)
	assert.Equal(t, "second", string(reply))
	select {
	case r := <-blocked:
		t.Fatalf("the blocked call returned early: %q, %v", r.reply, r.err)
	default:
	}
}

// The reply a handler sends while the server is stopping gracefully reaches
// the client: the server sends it before closing, and the client reads it
// even though the server disconnects right after. (With ZMQ_IMMEDIATE on the
// client, libzmq discarded such replies: 15 of 200 were lost.)
func TestReplySentJustBeforeGracefulStopArrives(t *testing.T) {
	const runs = 100
	lost := 0
	for range runs {
		s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
		require.NoError(t, err)
		shutdown := make(chan error, 1)
		h := handlerFunc(func(_ context.Context, frame []byte) ([]byte, error) {
			// The server starts its graceful stop while this call is in flight.
			go func() { shutdown <- s.Shutdown(context.Background()) }()
			time.Sleep(time.Millisecond)
			return frame, nil
		})
		served := make(chan error, 1)
		go func() { served <- s.Serve(h) }()
		c, err := zmq.Dial(s.Addr(), zmq.ClientConfig{})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		reply, err := c.RoundTrip(ctx, &transport.Call{ID: "last", Frame: []byte("last words")})
		cancel()
		if err != nil || string(reply) != "last words" {
			lost++
		}
		require.NoError(t, c.Close())
		require.NoError(t, <-served)
		require.NoError(t, <-shutdown)
		require.NoError(t, s.Close())
	}
	assert.Zero(t, lost, "replies lost out of %d", runs)
}

// A graceful stop delivers replies too large to be on the wire by the time
// the server closes its socket: the socket lingers until they are out.
func TestShutdownDeliversLargeReplies(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	const calls, size = 8, 2 << 20
	var started sync.WaitGroup
	started.Add(calls)
	release := make(chan struct{})
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(handlerFunc(func(context.Context, []byte) ([]byte, error) {
			started.Done()
			<-release
			return make([]byte, size), nil
		}))
	}()
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	results := make([]<-chan roundTripResult, calls)
	for i := range calls {
		results[i] = goRoundTrip(callCtx, c, &transport.Call{ID: fmt.Sprint("big-", i), Frame: []byte("x")})
	}
	started.Wait()
	closed := make(chan error, 1)
	go func() { closed <- s.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond) // Shutdown has asked Serve to stop
	close(release)
	delivered := 0
	for _, ch := range results {
		r := await(t, ctx, ch)
		if r.err == nil && len(r.reply) == size {
			delivered++
		}
	}
	assert.Equal(t, calls, delivered, "replies of the calls in flight during a graceful stop")
	assert.NoError(t, <-closed, "Shutdown")
	assert.NoError(t, <-served)
}
