package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"github.com/bankrpc/bankrpc/transport/transporttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	privateNodeStop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var nameChars = regexp.MustCompile(`[^A-Za-z0-9]+`)

// uniqueName returns a name for a service or a client that no other test or
// test run uses.
func uniqueName(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.Trim(nameChars.ReplaceAllString(t.Name(), "-"), "-")
	if len(base) > 60 {
		base = base[len(base)-60:]
	}
	return "test-" + base + "-" + hex.EncodeToString(b[:])
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// deleteQueues deletes queues at the end of the test.
func deleteQueues(t *testing.T, url string, queues ...string) {
	t.Cleanup(func() { amqptest.DeleteQueues(t, url, queues...) })
}

// testLogger logs through t, so failures show what the backend saw.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// listen declares a service; its queues are deleted at the end of the test.
func listen(t *testing.T, url string, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := Listen(url, cfg)
	require.NoError(t, err)
	deleteQueues(t, url, ServiceQueue(cfg.Service), DeadLetterQueue(cfg.Service))
	return s
}

// serve runs s with h until the end of the test, or until the returned stop
// is called; stop shuts s down gracefully (Shutdown) and waits for Serve to
// return.
func serve(t *testing.T, s *Server, h transport.Handler) (stop func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, s.Shutdown(ctx), "Shutdown of %s", s.cfg.Service)
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Errorf("Serve of %s did not return within 30s of Shutdown", s.cfg.Service)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// dial connects a client; its queues are deleted at the end of the test.
func dial(t *testing.T, url string, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := Dial(url, cfg)
	require.NoError(t, err)
	deleteQueues(t, url, ResultQueue(c.Name()), ErrorQueue(c.Name()))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ledger is a TestService whose Echo applies each call id once, as the bank
// does: a repeat gets the recorded reply. It counts executions and effects.
type ledger struct {
	testv1.UnimplementedTestServiceServer

	// before, when set, runs at the start of every execution of Echo.
	before func(ctx context.Context, callID string, in *testv1.EchoRequest)

	mu         sync.Mutex
	executions map[string]int                  // handler runs per call id
	applied    map[string]*testv1.EchoResponse // the effect: one reply per call id
	byServer   map[string]int                  // handler runs per server label (see labelled)
}

func newLedger() *ledger {
	return &ledger{executions: make(map[string]int), applied: make(map[string]*testv1.EchoResponse), byServer: make(map[string]int)}
}

func (l *ledger) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	id := bankrpc.CallIDFromContext(ctx)
	l.mu.Lock()
	l.executions[id]++
	label, _ := ctx.Value(serverLabelKey{}).(string)
	l.byServer[label]++
	l.mu.Unlock()
	if l.before != nil {
		l.before(ctx, id, in)
	}
	l.mu.Lock()
	if r, ok := l.applied[id]; ok {
		l.mu.Unlock()
		return r, nil
	}
	l.mu.Unlock()
	resp := &testv1.EchoResponse{Payload: in.GetPayload(), Tag: in.GetTag(), CallId: id}
	if p, ok := bankrpc.PeerFromContext(ctx); ok {
		resp.PeerIdentity = p.Identity
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.applied[id]; ok {
		return r, nil
	}
	l.applied[id] = resp
	return resp, nil
}

func (l *ledger) counts() (executions, effects int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.executions {
		executions += n
	}
	return executions, len(l.applied)
}

func (l *ledger) executionsOf(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.executions[id]
}

// handlerFor returns a runtime Server serving l.
func handlerFor(l *ledger, opts ...bankrpc.ServerOption) *bankrpc.Server {
	s := bankrpc.NewServer(opts...)
	testv1.RegisterTestServiceServer(s, l)
	return s
}

// restarted is a handler that runs every frame on a fresh runtime Server
// serving l, as if the server process had crashed and been restarted before
// each delivery: no reply cache remembers a call id from one delivery to the
// next, only the ledger (the bank's durable record) does.
func restarted(l *ledger) transport.Handler {
	return funcHandler{frame: func(ctx context.Context, frame []byte) ([]byte, error) {
		return handlerFor(l).HandleFrame(ctx, frame)
	}}
}

// counted counts the frames it passes to h.
func counted(n *atomic.Int64, h transport.Handler) transport.Handler {
	return funcHandler{
		frame: func(ctx context.Context, frame []byte) ([]byte, error) {
			n.Add(1)
			return h.HandleFrame(ctx, frame)
		},
		cancel: h.CancelCall,
	}
}

// labelled marks every request it passes to h with the server label, so a
// test can tell which replica ran a call.
func labelled(label string, h transport.Handler) transport.Handler {
	return funcHandler{
		frame: func(ctx context.Context, frame []byte) ([]byte, error) {
			return h.HandleFrame(context.WithValue(ctx, serverLabelKey{}, label), frame)
		},
		cancel: h.CancelCall,
	}
}

// funcHandler is a transport.Handler made of functions: a fake handler for
// tests that feed a backend without the runtime, or a wrapper around the
// runtime. cancel may be nil: cancels are then ignored.
type funcHandler struct {
	frame  func(ctx context.Context, frame []byte) ([]byte, error)
	cancel func(callID string)
}

func (h funcHandler) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	return h.frame(ctx, frame)
}

func (h funcHandler) CancelCall(callID string) {
	if h.cancel != nil {
		h.cancel(callID)
	}
}

type serverLabelKey struct{}

// connTracker dials TCP connections it can later cut, as a crash or a
// network failure would: the broker sees the socket close and requeues the
// unacknowledged deliveries.
type connTracker struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (k *connTracker) dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil { // the handshake; amqp091 clears it
		_ = c.Close()
		return nil, err
	}
	k.mu.Lock()
	k.conns = append(k.conns, c)
	k.mu.Unlock()
	return c, nil
}

// cut closes every connection dialled so far and reports how many.
func (k *connTracker) cut() int {
	k.mu.Lock()
	conns := k.conns
	k.conns = nil
	k.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// events records what the amqp backend reports to its transport.EventSink.
type events struct{ transporttest.Events }

func (e *events) sink() transport.EventSink { return e.Sink() }

func (e *events) count(kind transport.EventKind, reason string) int {
	return e.Count("amqp", kind, reason)
}
