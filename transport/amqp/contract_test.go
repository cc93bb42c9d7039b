package amqp

import (
	"context"
	"fmt"
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
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// The backend's side of the call contract (transport.Handler,
// transport.ServerTransport, docs/protocol-amqp.md), beyond the conformance
// suite: what the AMQP transport must do about duplicates, cancels, Close and
// Shutdown with several replicas and queued requests.

// worker is a TestService whose Work counts its runs per key and replica,
// then works for in.Nanos, or, with Nanos 0, until it is released or its ctx
// ends; on the replica named stuckOn it ignores its ctx and Nanos and waits
// for the release. It records when and why each run's ctx ended.
type worker struct {
	testv1.UnimplementedTestServiceServer
	stuckOn string
	release chan struct{}
	once    sync.Once

	mu     sync.Mutex
	runs   map[string]int64
	where  map[string][]string // replicas that ran a key, in order
	ended  map[string]time.Time
	causes map[string]error
}

func newWorker(t *testing.T) *worker {
	w := &worker{release: make(chan struct{}), runs: map[string]int64{}, where: map[string][]string{}, ended: map[string]time.Time{}, causes: map[string]error{}}
	t.Cleanup(w.releaseAll) // registered first: runs after the servers stopped
	return w
}

func (w *worker) releaseAll() { w.once.Do(func() { close(w.release) }) }

func (w *worker) Work(ctx context.Context, in *testv1.WorkRequest) (*testv1.WorkResponse, error) {
	label, _ := ctx.Value(serverLabelKey{}).(string)
	key := in.GetKey()
	w.mu.Lock()
	w.runs[key]++
	run := w.runs[key]
	w.where[key] = append(w.where[key], label)
	w.mu.Unlock()
	record := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.ended[key], w.causes[key] = time.Now(), context.Cause(ctx)
	}
	stop := context.AfterFunc(ctx, record)
	defer func() {
		// Done is closed before AfterFunc starts its function: a run
		// returning on Done can stop it before it runs, so record here then
		// (without this, 1 run in ~70 of TestCancelThenCloseReachesHandler
		// looked as if the cancel never came).
		if stop() && ctx.Err() != nil {
			record()
		}
	}()
	if label != "" && label == w.stuckOn {
		<-w.release
		return &testv1.WorkResponse{Run: run}, nil
	}
	var timer <-chan time.Time
	if in.GetNanos() > 0 {
		t := time.NewTimer(time.Duration(in.GetNanos()))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
	case <-w.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &testv1.WorkResponse{Run: run}, nil
}

func (w *worker) runsOf(key string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runs[key]
}

func (w *worker) whereRan(key string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.where[key]...)
}

func (w *worker) endOf(key string) (time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended[key], w.causes[key]
}

// replica serves w on a new Server of cfg's service through a runtime
// Server, its requests marked with label; it returns the backend and the
// runtime handler.
func replica(t *testing.T, url string, cfg ServerConfig, label string, w *worker) (*Server, *bankrpc.Server) {
	t.Helper()
	h := bankrpc.NewServer(bankrpc.WithLogger(testLogger(t)))
	testv1.RegisterTestServiceServer(h, w)
	s := listen(t, url, cfg)
	serve(t, s, labelled(label, h))
	return s, h
}

// Rule: duplicates in flight join the one run. Two calls with one call id on
// one client (the transport refused the second before the runtime joined
// duplicates) and a third on another client all get the reply of one run.
func TestSameCallIDInFlightJoins(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	h := bankrpc.NewServer(bankrpc.WithLogger(testLogger(t)))
	testv1.RegisterTestServiceServer(h, w)
	var frames atomic.Int64
	serve(t, listen(t, url, ServerConfig{Service: svc}), funcHandler{
		frame: func(ctx context.Context, f []byte) ([]byte, error) {
			frames.Add(1)
			return h.HandleFrame(ctx, f)
		},
		cancel: h.CancelCall,
	})
	one := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))
	other := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))

	const id = "same-id-1"
	type result struct {
		run int64
		err error
	}
	results := make(chan result, 3)
	call := func(c testv1.TestServiceClient) {
		resp, err := c.Work(ctx, &testv1.WorkRequest{Key: "joined"}, bankrpc.WithCallID(id))
		results <- result{resp.GetRun(), err}
	}
	go call(one)
	require.Eventually(t, func() bool { return w.runsOf("joined") == 1 }, 10*time.Second, time.Millisecond)
	go call(one)
	go call(other)
	require.Eventually(t, func() bool { return frames.Load() == 3 }, 10*time.Second, time.Millisecond,
		"the duplicates did not reach the server")
	w.releaseAll()
	for range 3 {
		r := <-results
		require.NoError(t, r.err, "a duplicate of a call in flight must get its reply")
		assert.Equal(t, int64(1), r.run, "every caller gets the reply of the one run")
	}
	assert.Equal(t, int64(1), w.runsOf("joined"), "one call id, one run")
}

// Rule: a caller's cancel reaches the handler within a second, whichever
// replica of the service runs the call: the cancel goes to every replica.
func TestCancelReachesTheReplicaRunningTheCall(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	for _, label := range []string{"A", "B"} {
		replica(t, url, ServerConfig{Service: svc}, label, w)
	}
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 2 }, 10*time.Second, 5*time.Millisecond)
	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))

	const n = 6
	cancels := make([]context.CancelFunc, n)
	errs := make(chan error, n)
	for i := range n {
		var callCtx context.Context
		callCtx, cancels[i] = context.WithCancel(ctx)
		go func() {
			_, err := c.Work(callCtx, &testv1.WorkRequest{Key: fmt.Sprint("cancel-", i)})
			errs <- err
		}()
	}
	ran := map[string]bool{}
	require.Eventually(t, func() bool {
		for i := range n {
			if w.runsOf(fmt.Sprint("cancel-", i)) != 1 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond)
	for i := range n {
		ran[w.whereRan(fmt.Sprint("cancel-", i))[0]] = true
	}
	require.True(t, ran["A"] && ran["B"], "the broker gave every call to one replica (%v): the test proves nothing", ran)

	canceled := time.Now()
	for _, cancel := range cancels {
		cancel()
	}
	for range n {
		assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(<-errs))
	}
	for i := range n {
		key := fmt.Sprint("cancel-", i)
		var ended time.Time
		require.Eventually(t, func() bool { ended, _ = w.endOf(key); return !ended.IsZero() }, 5*time.Second, time.Millisecond,
			"the handler of %s on replica %v never saw the cancel", key, w.whereRan(key))
		_, cause := w.endOf(key)
		assert.LessOrEqual(t, ended.Sub(canceled), time.Second, "%s: the handler saw the cancel %v after the caller", key, ended.Sub(canceled))
		assert.ErrorIs(t, cause, bankrpc.ErrCanceledByClient, key)
	}
}

// Rule: a cancel queued just before the client closes still goes out (a
// program interrupted cancels its calls and exits).
func TestCancelThenCloseReachesHandler(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	replica(t, url, ServerConfig{Service: svc}, "A", w)
	client := dial(t, url, ClientConfig{Service: svc})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(client))

	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Work(callCtx, &testv1.WorkRequest{Key: "interrupted"})
		errc <- err
	}()
	require.Eventually(t, func() bool { return w.runsOf("interrupted") == 1 }, 10*time.Second, time.Millisecond)
	canceled := time.Now()
	cancel()
	require.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(<-errc))
	require.NoError(t, client.Close())
	var ended time.Time
	require.Eventually(t, func() bool { ended, _ = w.endOf("interrupted"); return !ended.IsZero() }, 5*time.Second, time.Millisecond,
		"the cancel was lost with the client's connection")
	assert.LessOrEqual(t, ended.Sub(canceled), time.Second)
}

// Rule: a cancel that reaches the server before its call starts (the request
// waits for a free handler) makes the call answered CANCELED without
// running.
func TestCancelBeforeTheCallStarts(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	h := bankrpc.NewServer(bankrpc.WithLogger(testLogger(t)))
	testv1.RegisterTestServiceServer(h, w)
	var cancelled sync.Map
	serve(t, listen(t, url, ServerConfig{Service: svc, Prefetch: 4, Concurrency: 1}), funcHandler{
		frame: h.HandleFrame,
		cancel: func(id string) {
			cancelled.Store(id, true)
			h.CancelCall(id)
		},
	})
	client := dial(t, url, ClientConfig{Service: svc})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(client))

	busy := make(chan error, 1)
	go func() {
		_, err := c.Work(ctx, &testv1.WorkRequest{Key: "busy"})
		busy <- err
	}()
	require.Eventually(t, func() bool { return w.runsOf("busy") == 1 }, 10*time.Second, time.Millisecond)
	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Work(callCtx, &testv1.WorkRequest{Key: "waiting"}, bankrpc.WithCallID("waiting-1"))
		errc <- err
	}()
	require.Eventually(t, func() bool { return confirmed(client) == 2 && queueDepth(t, url, ServiceQueue(svc)) == 0 }, 10*time.Second, 5*time.Millisecond,
		"the request did not reach the server")
	cancel()
	require.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(<-errc))
	require.Eventually(t, func() bool { _, ok := cancelled.Load("waiting-1"); return ok }, 5*time.Second, time.Millisecond,
		"the cancel did not reach the server")
	w.releaseAll()
	require.NoError(t, <-busy)

	// The server answers the request when its turn comes, after its caller
	// gave up: the client keeps the reply for the call id.
	var kept outcome
	require.Eventually(t, func() bool {
		client.mu.Lock()
		defer client.mu.Unlock()
		var ok bool
		kept, ok = client.orphans.take("waiting-1", time.Now())
		return ok
	}, 10*time.Second, 5*time.Millisecond, "the server did not answer the canceled request")
	require.NoError(t, kept.err)
	res, err := envelope.DecodeResult(kept.frame, 0)
	require.NoError(t, err)
	assert.Equal(t, uint32(bankrpc.Canceled), res.GetCode(), "reason: %s", res.GetReason())
	assert.Zero(t, w.runsOf("waiting"), "a call canceled before it started must not run")
}

// Rule: Close returns at once even with a stuck handler, Serve returns, and
// the request the stuck handler holds goes back to the queue: the next
// server answers it. The stuck handler's late reply is dropped.
func TestCloseWithStuckHandlerRedelivers(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	w.stuckOn = "A"
	cfg := ServerConfig{Service: svc}
	a := listen(t, url, cfg)
	ha := bankrpc.NewServer(bankrpc.WithLogger(testLogger(t)))
	testv1.RegisterTestServiceServer(ha, w)
	served := make(chan error, 1)
	go func() { served <- a.Serve(labelled("A", ha)) }()
	client := dial(t, url, ClientConfig{Service: svc})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(client))

	type result struct {
		run int64
		err error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := c.Work(ctx, &testv1.WorkRequest{Key: "stuck", Nanos: int64(50 * time.Millisecond)}, bankrpc.WithCallID("stuck-1"))
		results <- result{resp.GetRun(), err}
	}()
	require.Eventually(t, func() bool { return w.runsOf("stuck") == 1 }, 10*time.Second, time.Millisecond)

	began := time.Now()
	require.NoError(t, a.Close())
	assert.Less(t, time.Since(began), time.Second, "Close must not wait for a stuck handler")
	select {
	case err := <-served:
		require.NoError(t, err, "Serve returns nil after Close")
	case <-time.After(time.Second):
		t.Fatal("Serve did not return at once after Close")
	}

	replica(t, url, cfg, "B", w)
	select {
	case r := <-results:
		require.NoError(t, r.err, "the request held by the closed server must be answered by the next one")
		assert.Equal(t, int64(2), r.run)
	case <-time.After(10 * time.Second):
		t.Fatal("the request held by the closed server was not delivered again")
	}
	assert.Equal(t, []string{"A", "B"}, w.whereRan("stuck"))

	// The stuck handler returns now, with a success the runtime would send:
	// the closed server drops it.
	w.releaseAll()
	assert.Never(t, func() bool {
		client.mu.Lock()
		defer client.mu.Unlock()
		_, ok := client.orphans.take("stuck-1", time.Now())
		return ok
	}, 500*time.Millisecond, 10*time.Millisecond, "a closed server published a reply")
}

// Rule: Shutdown stops taking requests at once: those the broker had sent
// that no handler runs yet go back to the queue, for another replica, while
// the call in flight finishes and is answered; then Shutdown returns nil.
func TestShutdownGivesBackRequestsNotStarted(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	w := newWorker(t)
	cfg := ServerConfig{Service: svc, Prefetch: 8, Concurrency: 1}
	a, _ := replica(t, url, cfg, "A", w)
	client := dial(t, url, ClientConfig{Service: svc})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(client))

	first := make(chan error, 1)
	go func() {
		_, err := c.Work(ctx, &testv1.WorkRequest{Key: "first"})
		first <- err
	}()
	require.Eventually(t, func() bool { return w.runsOf("first") == 1 }, 10*time.Second, time.Millisecond)
	const n = 3
	queued := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.Work(ctx, &testv1.WorkRequest{Key: fmt.Sprint("queued-", i), Nanos: int64(time.Millisecond)})
			queued <- err
		}()
	}
	require.Eventually(t, func() bool { return confirmed(client) == n+1 && queueDepth(t, url, ServiceQueue(svc)) == 0 }, 10*time.Second, 5*time.Millisecond,
		"the requests did not reach A")

	shut := make(chan error, 1)
	go func() { shut <- a.Shutdown(ctx) }()
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 0 }, 10*time.Second, 5*time.Millisecond,
		"Shutdown did not cancel the consumer")
	replica(t, url, ServerConfig{Service: svc}, "B", w)
	for range n {
		select {
		case err := <-queued:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("the requests A had not started were not given back")
		}
	}
	for i := range n {
		assert.Equal(t, []string{"B"}, w.whereRan(fmt.Sprint("queued-", i)))
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
	default:
	}
	w.releaseAll()
	require.NoError(t, <-first, "the call in flight during Shutdown is answered")
	require.NoError(t, <-shut)
	assert.Equal(t, []string{"A"}, w.whereRan("first"))
}

// confirmed returns the number of c's calls in flight whose request the
// broker confirmed: it holds them, in the queue or delivered.
func confirmed(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, calls := range c.pending {
		for _, pc := range calls {
			if pc.confirmed {
				n++
			}
		}
	}
	return n
}

// Rule: a request the handler does not serve (transport.ErrNotServed: it is
// shutting down) goes back to the queue, and the server stops consuming
// first, so that the request goes to another server instead of coming
// straight back, again and again, each time counted as a failed delivery.
func TestNotServedGivesBackAndStopsConsuming(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	for _, qt := range []QueueType{QueueClassic, QueueQuorum} {
		t.Run(string(qt), func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			svc := uniqueName(t)
			cfg := ServerConfig{Service: svc, QueueType: qt, DeliveryLimit: 3}
			var frames atomic.Int64
			serve(t, listen(t, url, cfg), funcHandler{frame: func(context.Context, []byte) ([]byte, error) {
				frames.Add(1)
				return nil, transport.ErrNotServed
			}})
			c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, QueueType: qt})))
			errc := make(chan error, 1)
			go func() {
				_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "given back"})
				errc <- err
			}()
			require.Eventually(t, func() bool { return frames.Load() == 1 }, 10*time.Second, time.Millisecond)
			require.Eventually(t, func() bool {
				return consumers(t, url, ServiceQueue(svc)) == 0 && queueDepth(t, url, ServiceQueue(svc)) == 1
			}, 10*time.Second, 5*time.Millisecond, "the request was not given back, or the server still consumes")
			assert.Never(t, func() bool { return frames.Load() > 1 }, 300*time.Millisecond, 10*time.Millisecond,
				"the request came back to the server that does not serve")

			l := newLedger()
			serve(t, listen(t, url, cfg), handlerFor(l))
			require.NoError(t, <-errc, "the next server answers the request given back")
			executions, _ := l.counts()
			assert.Equal(t, 1, executions)
		})
	}
}
