package amqp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// load makes n Echo calls from callers goroutines, each tagged with its
// number, and returns the error of each call (nil when it got its own reply).
// done counts the calls finished so far.
func load(ctx context.Context, c testv1.TestServiceClient, n, callers int, done *atomic.Int64) []error {
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				tag := fmt.Sprintf("call-%d", i)
				resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: tag, Payload: []byte(tag)})
				if err == nil && (resp.GetTag() != tag || string(resp.GetPayload()) != tag) {
					err = fmt.Errorf("call %s got the reply of %s", tag, resp.GetTag())
				}
				errs[i] = err
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return errs
}

// loadUntil makes Echo calls from callers goroutines until stop is closed,
// and returns the error of each call, as load does.
func loadUntil(ctx context.Context, c testv1.TestServiceClient, callers int, stop <-chan struct{}, done *atomic.Int64) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range callers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				i := len(errs)
				errs = append(errs, nil)
				mu.Unlock()
				tag := fmt.Sprintf("call-%d", i)
				resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: tag, Payload: []byte(tag)})
				if err == nil && (resp.GetTag() != tag || string(resp.GetPayload()) != tag) {
					err = fmt.Errorf("call %s got the reply of %s", tag, resp.GetTag())
				}
				mu.Lock()
				errs[i] = err
				mu.Unlock()
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return errs
}

func requireAllAnswered(t *testing.T, errs []error) {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("call %d: %v", i, err)
			}
		}
	}
	require.Zero(t, failed, "%d of %d calls failed", failed, len(errs))
}

// TestConnectionsCutDuringLoad cuts the TCP connections of the server and of
// the client again and again while calls are in flight, as a crash of the
// network would. Handlers outlive the reconnection, so requests taken on the
// old connection are answered while the new one already delivers requests
// whose delivery tags start again at 1: an acknowledgement sent on the wrong
// channel would acknowledge one of those unanswered, and its call would be
// lost. Every call must get its own reply, and each call id must run once:
// the runtime answers a redelivery from its reply cache, or joins the run in
// flight.
func TestConnectionsCutDuringLoad(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 90*time.Second)
	svc := uniqueName(t)
	var serverConns, clientConns connTracker

	l := newLedger()
	l.before = func(context.Context, string, *testv1.EchoRequest) {
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond)
	}
	srv := listen(t, url, ServerConfig{Service: svc, Prefetch: 16, Dial: serverConns.dial})
	var frames atomic.Int64
	serve(t, srv, counted(&frames, handlerFor(l)))
	c := dial(t, url, ClientConfig{Service: svc, ClientName: uniqueName(t), Dial: clientConns.dial})

	const n = 400
	var done atomic.Int64
	errc := make(chan []error, 1)
	go func() { errc <- load(ctx, testv1.NewTestServiceClient(bankrpc.NewConn(c)), n, 16, &done) }()

	cuts := 0
	for i := range 6 {
		require.Eventually(t, func() bool { return done.Load() >= int64((i+1)*n/8) }, 60*time.Second, time.Millisecond,
			"the calls stopped progressing after %d cuts", cuts)
		if i%2 == 0 {
			cuts += serverConns.cut()
		} else {
			cuts += clientConns.cut()
		}
	}
	requireAllAnswered(t, <-errc)
	executions, effects := l.counts()
	assert.Equal(t, n, effects, "every call takes effect exactly once")
	assert.Equal(t, n, executions, "the server runs each call id once")
	assert.Greater(t, frames.Load(), int64(n), "some requests must have been redelivered, or the test cut nothing in flight")
	t.Logf("%d connections cut; %d deliveries for %d calls", cuts, frames.Load(), n)
}

// TestServerKilledWithUnackedRequests: a server holding requests it has not
// answered dies (its connection is cut, as when the process is killed); the
// broker hands them to another replica, which answers each exactly once.
func TestServerKilledWithUnackedRequests(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	const n = 20

	gate := make(chan struct{})
	l := newLedger()
	l.before = func(ctx context.Context, _ string, _ *testv1.EchoRequest) {
		if label, _ := ctx.Value(serverLabelKey{}).(string); label == "A" {
			<-gate
		}
	}
	var connsA connTracker
	a := listen(t, url, ServerConfig{Service: svc, Prefetch: 2 * n, Dial: connsA.dial})
	stopA := serve(t, a, labelled("A", handlerFor(l)))
	c := dial(t, url, ClientConfig{Service: svc, ClientName: uniqueName(t)})

	var done atomic.Int64
	errc := make(chan []error, 1)
	go func() { errc <- load(ctx, testv1.NewTestServiceClient(bankrpc.NewConn(c)), n, n, &done) }()
	require.Eventually(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.byServer["A"] == n }, 20*time.Second, time.Millisecond,
		"server A never held all %d requests", n)

	b := listen(t, url, ServerConfig{Service: svc})
	serve(t, b, labelled("B", handlerFor(l)))

	// A stops taking requests (its consumer goes away), then dies holding
	// them all, unanswered.
	stopped := make(chan struct{})
	go func() { defer close(stopped); stopA() }()
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 1 }, 10*time.Second, 10*time.Millisecond,
		"server A did not cancel its consumer")
	require.Positive(t, connsA.cut())
	close(gate)
	<-stopped

	requireAllAnswered(t, <-errc)
	l.mu.Lock()
	defer l.mu.Unlock()
	assert.Equal(t, n, l.byServer["B"], "B must run each request A held, once")
	assert.Len(t, l.applied, n, "every call takes effect exactly once")
}

// consumers returns the number of consumers of queue.
func consumers(t *testing.T, url, queue string) int {
	conn, err := amqp091.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Consumers
}

// TestBrokerConnectionsClosedAndRestarted runs a load against a private
// broker node, makes the broker close every connection (CONNECTION_FORCED),
// then restarts the node: the durable queues keep the confirmed requests and
// replies, the unconfirmed requests are published again, and every call
// completes, taking effect once.
func TestBrokerConnectionsClosedAndRestarted(t *testing.T) {
	t.Parallel()
	url := privateNodeURL(t)
	ctx := testCtx(t, 120*time.Second)
	svc := uniqueName(t)

	l := newLedger()
	l.before = func(context.Context, string, *testv1.EchoRequest) { time.Sleep(5 * time.Millisecond) }
	srv := listen(t, url, ServerConfig{Service: svc, Prefetch: 8, ReconnectMax: time.Second})
	serve(t, srv, handlerFor(l))
	c := dial(t, url, ClientConfig{Service: svc, ClientName: uniqueName(t), ReconnectMax: time.Second})

	// The calls go on until well after the restart.
	var done atomic.Int64
	stop := make(chan struct{})
	errc := make(chan []error, 1)
	go func() { errc <- loadUntil(ctx, testv1.NewTestServiceClient(bankrpc.NewConn(c)), 8, stop, &done) }()

	require.Eventually(t, func() bool { return done.Load() >= 50 }, 30*time.Second, time.Millisecond)
	out := privateNodeCtl(t, "close_all_connections", "bankrpc test: forced close")
	t.Logf("rabbitmqctl close_all_connections: %s", out)
	mark := done.Load()
	require.Eventually(t, func() bool { return done.Load() >= mark+50 }, 30*time.Second, time.Millisecond,
		"the calls did not resume after the broker closed the connections")
	privateNodeRestart(t)
	mark = done.Load()
	require.Eventually(t, func() bool { return done.Load() >= mark+50 }, 60*time.Second, time.Millisecond,
		"the calls did not resume after the broker restarted")
	close(stop)

	errs := <-errc
	requireAllAnswered(t, errs)
	executions, effects := l.counts()
	assert.Equal(t, len(errs), effects, "every call takes effect exactly once")
	t.Logf("%d executions for %d calls", executions, len(errs))
}

// TestClientRestartReissuesCall: a client stops while its call is in flight;
// restarted with the same client name, it re-issues the call under the same
// call id and gets that call's outcome, whether the old reply waited in its
// durable result queue or the service answers the repeat. The server
// restarts between deliveries (restarted), so the repeat is answered by the
// service's own record, as the bank does after a restart.
func TestClientRestartReissuesCall(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	name := uniqueName(t)

	gate := make(chan struct{})
	l := newLedger()
	l.before = func(_ context.Context, id string, _ *testv1.EchoRequest) {
		if id == "transfer-1" {
			<-gate
		}
	}
	srv := listen(t, url, ServerConfig{Service: svc})
	serve(t, srv, restarted(l))

	// The first life of the client: the call reaches the server, then the
	// client goes away before the reply exists.
	first := dial(t, url, ClientConfig{Service: svc, ClientName: name})
	errc := make(chan error, 1)
	go func() {
		_, err := testv1.NewTestServiceClient(bankrpc.NewConn(first)).Echo(ctx, &testv1.EchoRequest{Tag: "transfer"}, bankrpc.WithCallID("transfer-1"))
		errc <- err
	}()
	require.Eventually(t, func() bool { return l.executionsOf("transfer-1") == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, first.Close())
	require.ErrorIs(t, <-errc, bankrpc.ErrClosed)

	// The reply is published while no client runs: it waits in the durable
	// result queue.
	close(gate)
	require.Eventually(t, func() bool { return queueDepth(t, url, ResultQueue(name)) == 1 }, 10*time.Second, 5*time.Millisecond,
		"the reply did not reach the result queue")

	// The second life: the old reply is consumed at once and kept for the
	// call re-issued under its id, which gets it without a second execution.
	second := dial(t, url, ClientConfig{Service: svc, ClientName: name})
	require.Eventually(t, func() bool { return queueDepth(t, url, ResultQueue(name)) == 0 }, 10*time.Second, 5*time.Millisecond)
	tc := testv1.NewTestServiceClient(bankrpc.NewConn(second))
	resp, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "transfer"}, bankrpc.WithCallID("transfer-1"))
	require.NoError(t, err)
	assert.Equal(t, "transfer", resp.GetTag())
	assert.Equal(t, "transfer-1", resp.GetCallId())
	assert.Equal(t, 1, l.executionsOf("transfer-1"), "the kept reply answers the re-issued call")

	// Re-issued again, the call reaches the server, which answers the repeat
	// with the recorded outcome: still one effect.
	resp, err = tc.Echo(ctx, &testv1.EchoRequest{Tag: "transfer"}, bankrpc.WithCallID("transfer-1"))
	require.NoError(t, err)
	assert.Equal(t, "transfer", resp.GetTag())
	assert.Equal(t, 2, l.executionsOf("transfer-1"))
	_, effects := l.counts()
	assert.Equal(t, 1, effects)
}

// queueDepth returns the number of messages ready in queue.
func queueDepth(t *testing.T, url, queue string) int {
	conn, err := amqp091.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}
