package zmq_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// The call contract as the ZeroMQ backend carries it: no resend on a timer,
// dead servers told by heartbeats and the connection's state, cancel
// messages.

// quickDeath detects a dead server fast, so that a test sees any confusion
// of a slow server with a dead one.
var quickDeath = zmq.ClientConfig{
	HeartbeatInterval: 100 * time.Millisecond,
	HeartbeatTimeout:  300 * time.Millisecond,
	DeadAfter:         300 * time.Millisecond,
}

// countingHandler counts the request frames (not cancels) that reach h.
type countingHandler struct {
	transport.Handler
	frames atomic.Int64
}

func (c *countingHandler) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	if _, ok := cancelOf(frame); !ok {
		c.frames.Add(1)
	}
	return c.Handler.HandleFrame(ctx, frame)
}

// A call without deadline whose handler outlasts the heartbeat timeout and
// the dead window many times over gets its reply; the request reached the
// server once and the handler ran once. (The client used to resend on an
// attempt timer and give up after three attempts with UNAVAILABLE.)
func TestSlowCallRunsOnce(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	impl := &svc{}
	h := &countingHandler{Handler: newRPCServer(impl)}
	s := serve(t, zmq.ServerConfig{}, h)
	c := stub(t, dial(t, s.Addr(), quickDeath))
	resp, err := c.Work(context.WithoutCancel(ctx), &testv1.WorkRequest{Key: "slow", Nanos: int64(2500 * time.Millisecond)})
	require.NoError(t, err, "a slow call to a live server must succeed")
	assert.False(t, resp.GetInterrupted())
	assert.Equal(t, int64(1), resp.GetRun())
	assert.Equal(t, int64(1), h.frames.Load(), "the request must reach the server once")
	assert.Equal(t, int64(1), impl.runsOf("slow"), "the handler must run once")
}

// The caller's cancel reaches the handler within 100ms, as a cancel
// message: both when the caller works the socket itself and when another
// caller does it for it.
func TestCancelReachesHandler(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	impl := &svc{}
	s := serve(t, zmq.ServerConfig{}, newRPCServer(impl))
	c := stub(t, dial(t, s.Addr(), zmq.ClientConfig{}))

	work := func(key string) (context.CancelFunc, <-chan error) {
		callCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Work(callCtx, &testv1.WorkRequest{Key: key, Nanos: int64(15 * time.Second)})
			errc <- err
		}()
		require.Eventually(t, func() bool { return impl.runsOf(key) == 1 }, 5*time.Second, time.Millisecond)
		return cancel, errc
	}
	check := func(key string, cancel context.CancelFunc, errc <-chan error) {
		t.Helper()
		canceled := time.Now()
		cancel()
		err := <-errc
		require.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err), "%v", err)
		var end interruption
		require.Eventually(t, func() bool {
			var ok bool
			end, ok = impl.endOf(key)
			return ok
		}, 5*time.Second, time.Millisecond, "the handler's ctx was not canceled")
		assert.LessOrEqual(t, end.at.Sub(canceled), 100*time.Millisecond, "%s: the handler saw the cancel %v after the caller", key, end.at.Sub(canceled))
		assert.ErrorIs(t, end.cause, bankrpc.ErrCanceledByClient)
	}
	// The first call's caller leads; the second one's waits for it.
	cancelLeader, leader := work("leader")
	cancelFollower, follower := work("follower")
	check("follower", cancelFollower, follower)
	check("leader", cancelLeader, leader)
	_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "after"})
	require.NoError(t, err, "the client keeps working after cancels")
}

// Closing a Client with calls in flight cancels their handlers.
func TestClientCloseCancelsCalls(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	impl := &svc{}
	s := serve(t, zmq.ServerConfig{}, newRPCServer(impl))
	conn := bankrpc.NewConn(dial(t, s.Addr(), zmq.ClientConfig{}))
	c := testv1.NewTestServiceClient(conn)
	const n = 3
	errc := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.Work(ctx, &testv1.WorkRequest{Key: string(rune('a' + i)), Nanos: int64(15 * time.Second)})
			errc <- err
		}()
	}
	require.Eventually(t, func() bool { return impl.runsOf("a")+impl.runsOf("b")+impl.runsOf("c") == n }, 5*time.Second, time.Millisecond)
	require.NoError(t, conn.Close())
	for range n {
		require.ErrorIs(t, <-errc, bankrpc.ErrClosed)
	}
	for _, key := range []string{"a", "b", "c"} {
		require.Eventually(t, func() bool { _, ok := impl.endOf(key); return ok }, 5*time.Second, time.Millisecond,
			"the handler of %s was not canceled when its client closed", key)
		end, _ := impl.endOf(key)
		assert.ErrorIs(t, end.cause, bankrpc.ErrCanceledByClient)
	}
}

// A server that freezes (its TCP connection stays open, nothing comes
// through) is taken for dead once heartbeats time out and DeadAfter passes:
// the call fails UNAVAILABLE instead of waiting forever.
func TestFrozenServerIsUnavailable(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	impl := &svc{}
	rpc := newRPCServer(impl)
	t.Cleanup(func() { assert.NoError(t, rpc.Close()) }) // ends the handler left running
	s := serve(t, zmq.ServerConfig{}, rpc)
	p := newProxy(t, s.Addr())
	cfg := quickDeath
	cfg.DeadAfter = time.Second // past a reconnection whose handshake times out
	c := stub(t, dial(t, p.addr(), cfg))
	_, err := c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err, "through the proxy")

	errc := make(chan error, 1)
	go func() {
		_, err := c.Work(context.WithoutCancel(ctx), &testv1.WorkRequest{Key: "frozen", Nanos: int64(time.Minute)})
		errc <- err
	}()
	require.Eventually(t, func() bool { return impl.runsOf("frozen") == 1 }, 5*time.Second, time.Millisecond)
	began := time.Now()
	p.freeze()
	select {
	case err := <-errc:
		took := time.Since(began)
		require.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "%v", err)
		assert.Contains(t, err.Error(), p.addr())
		assert.Contains(t, err.Error(), "the server did not complete it (frozen?", "the reason")
		assert.GreaterOrEqual(t, took, cfg.HeartbeatTimeout+cfg.DeadAfter, "not before the heartbeats time out and the dead window passes")
		t.Logf("after %v: %v", took, err)
	case <-ctx.Done():
		t.Fatal("a call to a frozen server did not fail")
	}
}

// proxy forwards TCP connections to a server until it freezes: then it
// keeps the connections open and forwards nothing, as a frozen host would.
type proxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, endpoint string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: endpoint[len("tcp://"):]}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return "tcp://" + p.ln.Addr().String() }

func (p *proxy) freeze() { p.frozen.Store(true) }

func (p *proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(out, in) })
		p.wg.Go(func() { p.pipe(in, out) })
	}
}

// pipe copies src to dst until either closes, dropping what it reads once
// frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
