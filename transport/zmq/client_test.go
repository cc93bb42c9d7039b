package zmq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

type roundTripResult struct {
	reply []byte
	err   error
}

func goRoundTrip(ctx context.Context, c transport.ClientTransport, call *transport.Call) <-chan roundTripResult {
	out := make(chan roundTripResult, 1)
	go func() {
		reply, err := c.RoundTrip(ctx, call)
		out <- roundTripResult{reply, err}
	}()
	return out
}

func await(t *testing.T, ctx context.Context, ch <-chan roundTripResult) roundTripResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatal("the call did not return")
		return roundTripResult{}
	}
}

// rawRouter binds a raw ROUTER socket standing in for a server.
func rawRouter(t *testing.T, endpoint string) (*zmq4.Socket, string) {
	t.Helper()
	r := rawSocket(t, zmq4.ROUTER)
	require.NoError(t, r.Bind(endpoint))
	addr, err := r.GetLastEndpoint()
	require.NoError(t, err)
	return r, addr
}

// A request is written once while the connection is up, however long its
// reply takes and however often heartbeats come and go; of two replies with
// its id the caller gets the first, and the next call is not confused by the
// other.
func TestNoResendWhileConnected(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	router, addr := rawRouter(t, "tcp://127.0.0.1:*")
	c := dial(t, addr, zmq.ClientConfig{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond, DeadAfter: 300 * time.Millisecond})

	res := goRoundTrip(ctx, c, &transport.Call{ID: "call-1", Frame: []byte("deposit 100")})
	first, err := router.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, first, 3, "[routing id, call id, envelope]")
	assert.Equal(t, "call-1", string(first[1]))
	require.NoError(t, router.SetRcvtimeo(time.Second))
	_, err = router.RecvMessageBytes(0)
	assert.Equal(t, zmq4.Errno(syscall.EAGAIN), zmq4.AsErrno(err), "a call is not resent while the connection is up: %v", err)
	_, err = router.SendMessage(first[0], "call-1", "result 1")
	require.NoError(t, err)
	_, err = router.SendMessage(first[0], "call-1", "result 1 again")
	require.NoError(t, err)
	r := await(t, ctx, res)
	require.NoError(t, r.err)
	assert.Equal(t, "result 1", string(r.reply))

	res = goRoundTrip(ctx, c, &transport.Call{ID: "call-2", Frame: []byte("balance")})
	req, err := router.RecvMessageBytes(0)
	require.NoError(t, err)
	_, err = router.SendMessage(req[0], req[1], "result 2")
	require.NoError(t, err)
	r = await(t, ctx, res)
	require.NoError(t, r.err)
	assert.Equal(t, "result 2", string(r.reply), "the duplicate of call-1 must be dropped, not given to call-2")
}

// Nothing listens: a call with a deadline shorter than DeadAfter ends
// UNAVAILABLE at its deadline, and a call without deadline ends UNAVAILABLE
// after DeadAfter; both name the endpoint and the reason.
func TestDeadServerIsUnavailable(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	addr := freeAddr(t)
	const deadAfter = 700 * time.Millisecond
	c := dial(t, addr, zmq.ClientConfig{DeadAfter: deadAfter})

	callCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := c.RoundTrip(callCtx, &transport.Call{ID: "dead-1", Frame: []byte("x")})
	require.Error(t, err)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "%v", err)
	assert.Contains(t, err.Error(), "zmq: no reply from "+addr)
	assert.Contains(t, err.Error(), "server down?", "the reason says nothing accepts connections")

	began := time.Now()
	r := await(t, ctx, goRoundTrip(context.WithoutCancel(ctx), c, &transport.Call{ID: "dead-2", Frame: []byte("x")}))
	took := time.Since(began)
	require.Error(t, r.err)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(r.err), "%v", r.err)
	assert.Contains(t, r.err.Error(), "zmq: no reply from "+addr+": the request could not be sent in")
	assert.Contains(t, r.err.Error(), "server down?")
	assert.GreaterOrEqual(t, took, deadAfter-50*time.Millisecond, "a call waits DeadAfter for a connection")
	assert.Less(t, took, deadAfter+time.Second, "a call without deadline fails within the dead window")
	t.Log(r.err)
}

// The server goes away with a call in flight and nothing comes back: the
// call fails UNAVAILABLE DeadAfter after the connection was lost, saying so.
func TestServerGoneMidCallIsUnavailable(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	dying, err := zctx.NewSocket(zmq4.ROUTER)
	require.NoError(t, err)
	require.NoError(t, dying.SetLinger(0))
	require.NoError(t, dying.Bind("tcp://127.0.0.1:*"))
	addr, err := dying.GetLastEndpoint()
	require.NoError(t, err)

	const deadAfter = 500 * time.Millisecond
	c := dial(t, addr, zmq.ClientConfig{DeadAfter: deadAfter})
	res := goRoundTrip(context.WithoutCancel(ctx), c, &transport.Call{ID: "gone-1", Frame: []byte("x")})
	_, err = dying.RecvMessageBytes(0)
	require.NoError(t, err)
	lost := time.Now()
	require.NoError(t, dying.Close())
	require.NoError(t, zctx.Term())

	r := await(t, ctx, res)
	took := time.Since(lost)
	require.Error(t, r.err)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(r.err), "%v", r.err)
	assert.Contains(t, r.err.Error(), "zmq: no reply from "+addr+": the connection was lost with the call in flight")
	assert.Less(t, took, deadAfter+time.Second)
	t.Log(r.err)
}

// A connected server that is slow is not unavailable: the call ends with
// its context's error.
func TestSlowServerEndsWithContextError(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	release := make(chan struct{})
	s := serve(t, zmq.ServerConfig{}, handlerFunc(func(context.Context, []byte) ([]byte, error) {
		<-release
		return []byte("late"), nil
	}))
	defer close(release)
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	callCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := c.RoundTrip(callCtx, &transport.Call{ID: "slow-1", Frame: []byte("x")})
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	callCtx, cancel = context.WithCancel(ctx)
	res := goRoundTrip(callCtx, c, &transport.Call{ID: "slow-2", Frame: []byte("x")})
	cancel()
	assert.ErrorIs(t, await(t, ctx, res).err, context.Canceled)
}

func TestClientCloseUnblocksCalls(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	router, addr := rawRouter(t, "tcp://127.0.0.1:*")
	c, err := zmq.Dial(addr, zmq.ClientConfig{})
	require.NoError(t, err)
	res := goRoundTrip(ctx, c, &transport.Call{ID: "close-1", Frame: []byte("x")})
	req, err := router.RecvMessageBytes(0) // in flight, never answered
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.ErrorIs(t, await(t, ctx, res).err, bankrpc.ErrClosed)
	cancelMsg, err := router.RecvMessageBytes(0)
	require.NoError(t, err, "Close sends a cancel message for the call in flight")
	require.Len(t, cancelMsg, 3)
	assert.Equal(t, req[0], cancelMsg[0], "on the connection of the call")
	assert.Equal(t, "close-1", string(cancelMsg[1]))
	id, ok := cancelOf(cancelMsg[2])
	assert.True(t, ok, "a Request with cancel set")
	assert.Equal(t, "close-1", id)
	_, err = c.RoundTrip(ctx, &transport.Call{ID: "close-2", Frame: []byte("x")})
	assert.ErrorIs(t, err, bankrpc.ErrClosed)
	assert.NoError(t, c.Close(), "Close is idempotent")
}

// The server dies with a request in flight (it received it and never
// answered); a new server starts on the same address within DeadAfter. The
// client resends as soon as it reconnects and the call gets exactly one
// reply.
func TestServerRestartMidCall(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	dying, err := zctx.NewSocket(zmq4.ROUTER)
	require.NoError(t, err)
	require.NoError(t, dying.SetLinger(0))
	require.NoError(t, dying.Bind("tcp://127.0.0.1:*"))
	addr, err := dying.GetLastEndpoint()
	require.NoError(t, err)

	c := dial(t, addr, zmq.ClientConfig{})
	res := goRoundTrip(ctx, c, &transport.Call{ID: "restart-1", Frame: echoFrame(t, "restart-1", "survived")})
	_, err = dying.RecvMessageBytes(0)
	require.NoError(t, err)
	require.NoError(t, dying.Close())
	require.NoError(t, zctx.Term())

	impl := &svc{}
	s, err := zmq.Listen(addr, zmq.ServerConfig{})
	require.NoError(t, err)
	serveOn(t, s, newRPCServer(impl))
	r := await(t, ctx, res)
	require.NoError(t, r.err)
	assert.Equal(t, "survived", echoTag(t, r.reply))
	assert.Equal(t, int64(1), impl.echoes.Load(), "the new server must see the call once")
}

// The same Client keeps working across a graceful server restart: the
// DEALER reconnects by itself.
func TestClientSurvivesServerRestart(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	first, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	addr := first.Addr()
	done := make(chan error, 1)
	go func() { done <- first.Serve(newRPCServer(&svc{tag: "first"})) }()
	c := stub(t, dial(t, addr, zmq.ClientConfig{}))
	resp, err := c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Equal(t, "first", resp.GetTag())
	require.NoError(t, first.Shutdown(ctx))
	require.NoError(t, <-done)

	second, err := zmq.Listen(addr, zmq.ServerConfig{})
	require.NoError(t, err)
	serveOn(t, second, newRPCServer(&svc{tag: "second"}))
	for range 3 {
		resp, err = c.Echo(ctx, &testv1.EchoRequest{})
		require.NoError(t, err)
		assert.Equal(t, "second", resp.GetTag())
	}
}

// Two calls in flight with the same call id (a retry by the caller while the
// first is still pending) are one request on the wire, and both get its
// reply.
func TestSameCallIDInFlightTwice(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	var calls atomic.Int64
	release := make(chan struct{})
	s := serve(t, zmq.ServerConfig{}, handlerFunc(func(_ context.Context, frame []byte) ([]byte, error) {
		calls.Add(1)
		<-release
		return append([]byte("done: "), frame...), nil
	}))
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	one := goRoundTrip(ctx, c, &transport.Call{ID: "same", Frame: []byte("deposit")})
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	two := goRoundTrip(ctx, c, &transport.Call{ID: "same", Frame: []byte("deposit")})
	time.Sleep(200 * time.Millisecond) // the second call joins the first
	close(release)
	for _, ch := range []<-chan roundTripResult{one, two} {
		r := await(t, ctx, ch)
		require.NoError(t, r.err)
		assert.Equal(t, "done: deposit", string(r.reply))
	}
	assert.Equal(t, int64(1), calls.Load(), "one request on the wire")
}

func TestConcurrentRoundTrips(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	s := serve(t, zmq.ServerConfig{Workers: 4}, handlerFunc(func(_ context.Context, frame []byte) ([]byte, error) {
		return frame, nil
	}))
	c := dial(t, s.Addr(), zmq.ClientConfig{})
	var wg sync.WaitGroup
	var failed atomic.Bool
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("g%d-c%d", g, i)
				reply, err := c.RoundTrip(ctx, &transport.Call{ID: id, Frame: []byte(id)})
				if err != nil || string(reply) != id {
					failed.Store(true)
					t.Errorf("call %s: reply %q, error %v", id, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
	assert.False(t, failed.Load())
}

func TestOversizedRequestRefusedByClient(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	c := dial(t, freeAddr(t), zmq.ClientConfig{MaxFrameSize: 1024})
	_, err := c.RoundTrip(ctx, &transport.Call{ID: "big", Frame: make([]byte, 1025)})
	var e *bankrpc.Error
	require.True(t, errors.As(err, &e), "%v", err)
	assert.Equal(t, bankrpc.ResourceExhausted, e.Code())
	assert.Contains(t, e.Message(), "1025 bytes exceeds the limit of 1024 bytes")
}

// A client left idle while its server is down collects a connection event
// per reconnection attempt; thousands of them must not block libzmq, and
// Close must still return.
func TestIdleClientToDeadServerCloses(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	c, err := zmq.Dial(freeAddr(t), zmq.WithReconnectInterval(zmq.ClientConfig{}, time.Millisecond))
	require.NoError(t, err)
	// About 1000 retries a second: well past the 2000 events that the
	// monitor's default high-water marks would hold.
	time.Sleep(4 * time.Second)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
}

// While the server is down calls wait unsent; when it is back each is sent
// once. A call whose caller gave up during the outage is never sent.
func TestOutageSendsEachCallOnceWhenBack(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	addr := freeAddr(t)
	c := dial(t, addr, zmq.ClientConfig{DeadAfter: 10 * time.Second})

	abandonedCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	abandoned := goRoundTrip(abandonedCtx, c, &transport.Call{ID: "abandoned", Frame: []byte("abandoned")})
	kept := goRoundTrip(ctx, c, &transport.Call{ID: "kept", Frame: []byte("kept")})
	r := await(t, ctx, abandoned)
	require.Error(t, r.err)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(r.err), "%v", r.err)
	time.Sleep(time.Second) // many reconnection attempts without a server

	var mu sync.Mutex
	runs := map[string]int{}
	s, err := zmq.Listen(addr, zmq.ServerConfig{})
	require.NoError(t, err)
	serveOn(t, s, handlerFunc(func(_ context.Context, frame []byte) ([]byte, error) {
		mu.Lock()
		runs[string(frame)]++
		mu.Unlock()
		return frame, nil
	}))
	r = await(t, ctx, kept)
	require.NoError(t, r.err)
	assert.Equal(t, "kept", string(r.reply))
	time.Sleep(300 * time.Millisecond) // stragglers, if any
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, runs["kept"], "the call reaches the server once")
	assert.Zero(t, runs["abandoned"], "a call given up during the outage is not sent")
}
