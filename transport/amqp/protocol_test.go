package amqp

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// rawChannel opens a plain amqp091 channel, closed at the end of the test.
func rawChannel(t *testing.T, url string) *amqp091.Channel {
	conn, err := amqp091.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// getOne waits for a message in queue and takes it.
func getOne(t *testing.T, ch *amqp091.Channel, queue string) amqp091.Delivery {
	t.Helper()
	var d amqp091.Delivery
	require.Eventually(t, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get(queue, true)
		require.NoError(t, err)
		return ok
	}, 10*time.Second, 5*time.Millisecond, "no message reached %s", queue)
	return d
}

// TestGarbageIntoRequestQueue publishes messages that are not envelopes
// straight into a service's queue: one naming a reply queue gets a
// plain-text error in the matching error queue, one naming none goes to the
// dead-letter queue; the server keeps serving.
func TestGarbageIntoRequestQueue(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	srv := listen(t, url, ServerConfig{Service: svc})
	l := newLedger()
	serve(t, srv, handlerFor(l))

	// A hand-made client: its queues, declared by hand.
	name := uniqueName(t)
	ch := rawChannel(t, url)
	for _, q := range []string{ResultQueue(name), ErrorQueue(name)} {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		require.NoError(t, err)
	}
	deleteQueues(t, url, ResultQueue(name), ErrorQueue(name))

	require.NoError(t, ch.PublishWithContext(ctx, RequestExchange, svc, true, false, amqp091.Publishing{
		CorrelationId: "garbage-1", ReplyTo: ResultQueue(name), DeliveryMode: amqp091.Persistent, Body: []byte("\xff\xfe not an envelope"),
	}))
	d := getOne(t, ch, ErrorQueue(name))
	assert.Equal(t, "garbage-1", d.CorrelationId)
	assert.Equal(t, contentText, d.ContentType)
	assert.Contains(t, string(d.Body), "malformed envelope")
	code, ok := intHeader(d.Headers, headerCode)
	assert.True(t, ok, "the error message carries its code")
	assert.Equal(t, int64(bankrpc.InvalidArgument), code)
	assert.Zero(t, queueDepth(t, url, ResultQueue(name)), "a refused request has no reply")

	require.NoError(t, ch.PublishWithContext(ctx, RequestExchange, svc, true, false, amqp091.Publishing{
		CorrelationId: "garbage-2", DeliveryMode: amqp091.Persistent, Body: []byte("no reply_to either"),
	}))
	d = getOne(t, ch, DeadLetterQueue(svc))
	assert.Equal(t, "garbage-2", d.CorrelationId)
	assert.Equal(t, "no reply_to either", string(d.Body))
	assert.Contains(t, d.Headers[headerDeadReason], "named no reply queue")

	c := dial(t, url, ClientConfig{Service: svc})
	resp, err := testv1.NewTestServiceClient(bankrpc.NewConn(c)).Echo(ctx, &testv1.EchoRequest{Tag: "after garbage"})
	require.NoError(t, err, "the server must keep serving")
	assert.Equal(t, "after garbage", resp.GetTag())
	executions, _ := l.counts()
	assert.Equal(t, 1, executions, "garbage runs no handler")
}

// TestReplicasShareLoad: two servers of one service both take requests.
func TestReplicasShareLoad(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	l := newLedger()
	l.before = func(context.Context, string, *testv1.EchoRequest) { time.Sleep(5 * time.Millisecond) }
	for _, label := range []string{"A", "B"} {
		s := listen(t, url, ServerConfig{Service: svc, Prefetch: 2})
		serve(t, s, labelled(label, handlerFor(l)))
	}
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 2 }, 10*time.Second, 5*time.Millisecond)
	c := dial(t, url, ClientConfig{Service: svc})

	const n = 200
	var done atomic.Int64
	requireAllAnswered(t, load(ctx, testv1.NewTestServiceClient(bankrpc.NewConn(c)), n, 16, &done))
	l.mu.Lock()
	defer l.mu.Unlock()
	assert.Positive(t, l.byServer["A"], "replica A took no request")
	assert.Positive(t, l.byServer["B"], "replica B took no request")
	assert.Equal(t, n, l.byServer["A"]+l.byServer["B"])
	assert.Len(t, l.applied, n)
	t.Logf("A ran %d calls, B %d", l.byServer["A"], l.byServer["B"])
}

// TestSingleActiveConsumerStandby: with SingleActiveConsumer one replica
// takes every request and the other stands by until it goes away, as for two
// bank processes that must not write at once.
func TestSingleActiveConsumerStandby(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	l := newLedger()
	cfg := ServerConfig{Service: svc, SingleActiveConsumer: true}
	a := listen(t, url, cfg)
	stopA := serve(t, a, labelled("A", handlerFor(l)))
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 1 }, 10*time.Second, 5*time.Millisecond)
	b := listen(t, url, cfg)
	serve(t, b, labelled("B", handlerFor(l)))
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 2 }, 10*time.Second, 5*time.Millisecond)

	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))
	var done atomic.Int64
	requireAllAnswered(t, load(ctx, c, 50, 8, &done))
	l.mu.Lock()
	assert.Equal(t, 50, l.byServer["A"], "the active replica takes every request")
	assert.Zero(t, l.byServer["B"], "the standby replica takes none")
	l.mu.Unlock()

	stopA()
	requireAllAnswered(t, load(ctx, c, 50, 8, &done))
	l.mu.Lock()
	assert.Equal(t, 50, l.byServer["B"], "the standby takes over")
	l.mu.Unlock()
}

// TestPoisonRequestDeadLettered: a request whose handling kills the server
// every time (here: cuts its connection) is handed out DeliveryLimit times,
// then moved to the dead-letter queue, and its caller gets INTERNAL; the
// server goes on serving, and reports the reconnections, the redelivery and
// the dead letter to its transport.EventSink. Classic queues count in a confirmed copy
// (bankrpc-failed-deliveries), quorum queues through x-delivery-count.
func TestPoisonRequestDeadLettered(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	for _, qt := range []QueueType{QueueClassic, QueueQuorum} {
		t.Run(string(qt), func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			svc := uniqueName(t)
			var conns connTracker
			l := newLedger()
			l.before = func(_ context.Context, id string, _ *testv1.EchoRequest) {
				if id == "poison-1" {
					conns.cut() // the server "crashes": its reply can never be sent
				}
			}
			const limit = 3
			var ev events
			srv := listen(t, url, ServerConfig{Service: svc, QueueType: qt, DeliveryLimit: limit, Dial: conns.dial, Events: ev.sink()})
			serve(t, srv, restarted(l)) // each "crash" restarts the server
			c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, QueueType: qt})))

			_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "poison"}, bankrpc.WithCallID("poison-1"))
			require.Error(t, err)
			assert.Equal(t, bankrpc.Internal, bankrpc.CodeOf(err), "error: %v", err)
			assert.Contains(t, bankrpc.MessageOf(err), DeadLetterQueue(svc))
			assert.Equal(t, limit, l.executionsOf("poison-1"), "the handler runs DeliveryLimit times")

			d := getOne(t, rawChannel(t, url), DeadLetterQueue(svc))
			assert.Equal(t, "poison-1", d.CorrelationId)
			assert.Equal(t, 1, ev.count(transport.EventDeadLetter, "delivery limit"), "the dead letter is reported")
			assert.Equal(t, limit, ev.count(transport.EventReconnect, "connection lost"), "each crash is a reconnection")
			assert.Positive(t, ev.count(transport.EventRedelivery, ""), "the request came back redelivered")

			resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "healthy"})
			require.NoError(t, err, "the server must keep serving")
			assert.Equal(t, "healthy", resp.GetTag())
		})
	}
}

// TestRequestExpiredWhileQueued: a call whose deadline passes while its
// request waits in the queue fails at the client with DEADLINE_EXCEEDED, and
// its request never runs: the broker discards it at its expiration.
func TestRequestExpiredWhileQueued(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	srv := listen(t, url, ServerConfig{Service: svc})
	tc := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))

	_, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "late"}, bankrpc.WithCallID("late-1"), bankrpc.WithTimeout(200*time.Millisecond))
	require.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "error: %v", err)
	require.Eventually(t, func() bool { return queueDepth(t, url, ServiceQueue(svc)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the broker kept an expired request")

	l := newLedger()
	serve(t, srv, handlerFor(l))
	_, err = tc.Echo(ctx, &testv1.EchoRequest{Tag: "on time"})
	require.NoError(t, err)
	assert.Zero(t, l.executionsOf("late-1"), "an expired request must not run")
}

// TestRequestExpiredBeforeHandled: a request delivered to a server but
// waiting for a free handler past its deadline is answered
// DEADLINE_EXCEEDED without running.
func TestRequestExpiredBeforeHandled(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	gate := make(chan struct{})
	l := newLedger()
	l.before = func(_ context.Context, id string, _ *testv1.EchoRequest) {
		if id == "busy-1" {
			<-gate
		}
	}
	serve(t, listen(t, url, ServerConfig{Service: svc, Prefetch: 4, Concurrency: 1}), handlerFor(l))
	c := dial(t, url, ClientConfig{Service: svc})
	tc := testv1.NewTestServiceClient(bankrpc.NewConn(c))

	busy := make(chan error, 1)
	go func() {
		_, err := tc.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("busy-1"))
		busy <- err
	}()
	require.Eventually(t, func() bool { return l.executionsOf("busy-1") == 1 }, 10*time.Second, time.Millisecond)
	_, err := tc.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("late-1"), bankrpc.WithTimeout(300*time.Millisecond))
	require.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "error: %v", err)
	close(gate)
	require.NoError(t, <-busy)

	// The server's answer to late-1 arrives after its caller gave up: the
	// client keeps it for the call id.
	var kept outcome
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		var ok bool
		kept, ok = c.orphans.take("late-1", time.Now())
		return ok
	}, 10*time.Second, 5*time.Millisecond, "the server did not answer the late request")
	require.NoError(t, kept.err)
	res, err := envelope.DecodeResult(kept.frame, 0)
	require.NoError(t, err)
	assert.Equal(t, uint32(bankrpc.DeadlineExceeded), res.GetCode(), "reason: %s", res.GetReason())
	assert.Zero(t, l.executionsOf("late-1"), "a request past its deadline must not run")
}

// TestDialUnknownService: a client cannot call a service no server ever
// declared, and says so.
func TestDialUnknownService(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	_, err := Dial(url, ClientConfig{Service: uniqueName(t), ClientName: uniqueName(t)})
	require.Error(t, err)
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "error: %v", err)
	assert.Contains(t, err.Error(), "does not exist")
}

// TestUnroutableRequest: a request no queue takes (the service queue was
// deleted) fails with UNAVAILABLE instead of waiting for its deadline.
func TestUnroutableRequest(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 20*time.Second)
	svc := uniqueName(t)
	listen(t, url, ServerConfig{Service: svc})
	c := dial(t, url, ClientConfig{Service: svc})
	_, err := rawChannel(t, url).QueueDelete(ServiceQueue(svc), false, false, false)
	require.NoError(t, err)

	_, err = testv1.NewTestServiceClient(bankrpc.NewConn(c)).Echo(ctx, &testv1.EchoRequest{})
	require.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "error: %v", err)
	assert.Contains(t, bankrpc.MessageOf(err), "was not routed")
}

// TestClientNameInUse: two live clients cannot share a name (they would take
// each other's replies).
func TestClientNameInUse(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	svc := uniqueName(t)
	listen(t, url, ServerConfig{Service: svc})
	name := uniqueName(t)
	dial(t, url, ClientConfig{Service: svc, ClientName: name})
	_, err := Dial(url, ClientConfig{Service: svc, ClientName: name})
	require.Error(t, err)
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "error: %v", err)
	assert.Contains(t, err.Error(), "another live client uses this client name")
}

// TestCallerIdentity: the broker-validated user-id reaches the handler as
// Peer.Identity, unless the client leaves it out.
func TestCallerIdentity(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 20*time.Second)
	uri, err := amqp091.ParseURI(url)
	require.NoError(t, err)
	svc := uniqueName(t)
	serve(t, listen(t, url, ServerConfig{Service: svc}), handlerFor(newLedger()))

	for _, tc := range []struct {
		noUserID bool
		want     string
	}{{false, uri.Username}, {true, ""}} {
		c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, NoUserID: tc.noUserID})))
		resp, err := c.Echo(ctx, &testv1.EchoRequest{})
		require.NoError(t, err)
		assert.Equal(t, tc.want, resp.GetPeerIdentity(), "NoUserID %v", tc.noUserID)
	}
}

// TestOwnQueuesOnly: a server with OwnQueuesOnly answers only into the
// queues of the caller's broker user; a request naming another client's
// queue goes to the dead-letter queue unanswered.
func TestOwnQueuesOnly(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 20*time.Second)
	uri, err := amqp091.ParseURI(url)
	require.NoError(t, err)
	svc := uniqueName(t)
	l := newLedger()
	serve(t, listen(t, url, ServerConfig{Service: svc, OwnQueuesOnly: true}), handlerFor(l))

	own := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, ClientName: uri.Username + "." + uniqueName(t)})))
	resp, err := own.Echo(ctx, &testv1.EchoRequest{Tag: "own"})
	require.NoError(t, err)
	assert.Equal(t, "own", resp.GetTag())

	other := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, ClientName: uniqueName(t)})))
	_, err = other.Echo(ctx, &testv1.EchoRequest{Tag: "other"}, bankrpc.WithCallID("other-1"), bankrpc.WithTimeout(time.Second))
	assert.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "error: %v", err)
	d := getOne(t, rawChannel(t, url), DeadLetterQueue(svc))
	assert.Equal(t, "other-1", d.CorrelationId)
	assert.Contains(t, d.Headers[headerDeadReason], "is not a result queue of user-id")
	assert.Zero(t, l.executionsOf("other-1"))

	for _, tc := range []struct {
		user, replyTo string
		ok            bool
	}{
		{"alice", "bankrpc.client.alice.results", true},
		{"alice", "bankrpc.client.alice.teller-2.results", true},
		{"alice", "bankrpc.client.alicia.results", false},
		{"alice", "bankrpc.client.bob.results", false},
		{"alice", "bankrpc.client.alice.errors", false},
		{"", "bankrpc.client..results", false},
	} {
		assert.Equal(t, tc.ok, ownReplyQueue(tc.user, tc.replyTo), "user %q reply_to %q", tc.user, tc.replyTo)
	}
}

// TestServeTwiceAndAfterClose: Serve runs once.
func TestServeTwiceAndAfterClose(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	svc := uniqueName(t)
	s := listen(t, url, ServerConfig{Service: svc})
	serve(t, s, handlerFor(newLedger()))
	require.Eventually(t, func() bool { return consumers(t, url, ServiceQueue(svc)) == 1 }, 10*time.Second, 5*time.Millisecond)
	err := s.Serve(handlerFor(newLedger()))
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "error: %v", err)

	closed := listen(t, url, ServerConfig{Service: svc})
	require.NoError(t, closed.Close())
	err = closed.Serve(handlerFor(newLedger()))
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "error: %v", err)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"no service", func() error { _, err := Dial("amqp://127.0.0.1/", ClientConfig{}); return err }()},
		{"bad queue type", func() error {
			_, err := Listen("amqp://127.0.0.1/", ServerConfig{Service: "s", QueueType: "stream"})
			return err
		}()},
		{"bad URL", func() error { _, err := Dial("http://127.0.0.1/", ClientConfig{Service: "s"}); return err }()},
	} {
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(tc.err), "%s: %v", tc.name, tc.err)
	}
}
