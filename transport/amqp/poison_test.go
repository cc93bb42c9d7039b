package amqp

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// TestCountedCopy: the copy a server publishes back for a redelivered
// classic request keeps what the caller and the handler need, counts the
// failure, and carries the remaining time as its expiration.
func TestCountedCopy(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	d := amqp091.Delivery{
		Headers:       amqp091.Table{headerDeadline: now.Add(1500 * time.Millisecond).UnixMilli(), "app": "kept", "x-death": []any{}, headerFailed: int64(2)},
		ContentType:   contentProto,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: "call-1",
		ReplyTo:       ResultQueue("alice"),
		Expiration:    "60000",
		Timestamp:     now.Add(-time.Minute).Truncate(time.Second),
		Type:          typeRequest,
		UserId:        "alice",
		Redelivered:   true,
		Body:          []byte("frame"),
	}
	msg, live := countedCopy(d, 3, "bank-north", now)
	require.True(t, live)
	assert.Equal(t, int64(3), msg.Headers[headerFailed])
	assert.Equal(t, "kept", msg.Headers["app"])
	assert.NotContains(t, msg.Headers, "x-death", "broker headers are the broker's to set")
	assert.Equal(t, "1500", msg.Expiration, "the copy expires at the caller's deadline")
	assert.Equal(t, amqp091.Persistent, msg.DeliveryMode)
	assert.Equal(t, "call-1", msg.CorrelationId)
	assert.Equal(t, ResultQueue("alice"), msg.ReplyTo)
	assert.Equal(t, d.Timestamp, msg.Timestamp)
	assert.Equal(t, typeRequest, msg.Type)
	assert.Equal(t, "frame", string(msg.Body))
	assert.Equal(t, "bank-north", msg.UserId, "the broker accepts only the publisher's own user-id")
	assert.Equal(t, "alice", msg.Headers[headerUserID])

	// The copy, delivered, names the same caller; a copy of the copy too.
	copied := amqp091.Delivery{Headers: msg.Headers, UserId: msg.UserId}
	assert.Equal(t, "alice", identity(copied, "bank-north"))
	again, live := countedCopy(copied, 4, "bank-north", now)
	require.True(t, live)
	assert.Equal(t, "alice", identity(amqp091.Delivery{Headers: again.Headers, UserId: again.UserId}, "bank-north"))

	// Same user on both sides: the user-id is kept as it is.
	d.UserId = "guest"
	msg, _ = countedCopy(d, 3, "guest", now)
	assert.Equal(t, "guest", msg.UserId)
	assert.NotContains(t, msg.Headers, headerUserID)

	// Without a deadline header the expiration stays; past the deadline
	// there is nothing to copy.
	delete(d.Headers, headerDeadline)
	msg, live = countedCopy(d, 3, "guest", now)
	require.True(t, live)
	assert.Equal(t, "60000", msg.Expiration)
	d.Headers[headerDeadline] = now.UnixMilli()
	_, live = countedCopy(d, 3, "guest", now)
	assert.False(t, live, "an expired request is not copied")
}

// TestIdentityNotForgeable: a client cannot claim another identity through
// the bankrpc-user-id header.
func TestIdentityNotForgeable(t *testing.T) {
	forged := amqp091.Table{headerUserID: "bob"}
	assert.Equal(t, "alice", identity(amqp091.Delivery{Headers: forged, UserId: "alice"}, "bank-north"))
	assert.Empty(t, identity(amqp091.Delivery{Headers: forged}, "bank-north"))
	assert.Empty(t, identity(amqp091.Delivery{Headers: forged}, ""))
	msg, _ := countedCopy(amqp091.Delivery{Headers: forged}, 1, "bank-north", time.Now())
	assert.Equal(t, "bank-north", msg.UserId, "a copy is always the server's, so its count is trusted")
	assert.Empty(t, identity(amqp091.Delivery{Headers: msg.Headers, UserId: msg.UserId}, "bank-north"), "a caller without identity stays without one")
}

// TestRedeliveredRequestCountedCopy: on a classic queue a request whose
// server crashed comes back as a counted copy published through confirms
// (never a reject): it runs again with its caller's identity, its call
// succeeds, and the copy carries the count and the deadline left.
func TestRedeliveredRequestCountedCopy(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	var conns connTracker
	l := newLedger()
	l.before = func(_ context.Context, id string, _ *testv1.EchoRequest) {
		if id == "crash-once" && l.executionsOf(id) == 1 {
			conns.cut()
		}
	}
	srv := listen(t, url, ServerConfig{Service: svc, DeliveryLimit: 5, Dial: conns.dial})
	serve(t, srv, restarted(l)) // the "crash" restarts the server
	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))

	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "again"}, bankrpc.WithCallID("crash-once"), bankrpc.WithTimeout(30*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "again", resp.GetTag())
	assert.Equal(t, 2, l.executionsOf("crash-once"), "the request runs once more after the crash")
	assert.Equal(t, "guest", resp.GetPeerIdentity(), "the copy keeps the caller's identity")
}

// TestCountedCopyInQueue looks at the copy itself: a request taken from a
// classic queue by a consumer that died comes back through the next server
// as a persistent copy counted once, with the caller's properties and the
// expiration left, and the original is gone.
func TestCountedCopyInQueue(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 60*time.Second)
	svc := uniqueName(t)
	var conns connTracker
	srv := listen(t, url, ServerConfig{Service: svc, Prefetch: 1, Dial: conns.dial, ReconnectMin: 20 * time.Second, ReconnectMax: 20 * time.Second})
	ch := rawChannel(t, url)
	require.NoError(t, ch.PublishWithContext(ctx, RequestExchange, svc, true, false, amqp091.Publishing{
		Headers:       amqp091.Table{headerDeadline: time.Now().Add(time.Minute).UnixMilli()},
		ContentType:   contentProto,
		Type:          typeRequest,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: "counted-1",
		ReplyTo:       ResultQueue("nobody"),
		Expiration:    strconv.FormatInt(time.Minute.Milliseconds(), 10),
		UserId:        "guest",
		Body:          []byte("request"),
	}))

	// A consumer takes the request and dies without acknowledging it.
	dead, err := amqp091.Dial(url)
	require.NoError(t, err)
	deadCh, err := dead.Channel()
	require.NoError(t, err)
	_, ok := getNoAck(t, deadCh, ServiceQueue(svc))
	require.True(t, ok)
	require.NoError(t, dead.Close())

	// The server gets it redelivered, publishes the counted copy, acks the
	// original and runs the copy; its connection is cut while the copy runs,
	// so the copy goes back to the queue to be looked at.
	started := make(chan struct{}, 1)
	gate := make(chan struct{})
	stop := serve(t, srv, funcHandler{frame: func(context.Context, []byte) ([]byte, error) {
		started <- struct{}{}
		<-gate
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "test")
	}})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the server did not run the counted copy")
	}
	conns.cut()
	close(gate)
	stop()

	d, ok := getNoAck(t, ch, ServiceQueue(svc))
	require.True(t, ok, "the copy must be in the queue")
	n, _ := intHeader(d.Headers, headerFailed)
	assert.Equal(t, int64(1), n, "one failed delivery: the consumer that died")
	assert.Equal(t, "counted-1", d.CorrelationId)
	assert.Equal(t, ResultQueue("nobody"), d.ReplyTo)
	assert.Equal(t, "guest", d.UserId)
	assert.Equal(t, amqp091.Persistent, d.DeliveryMode)
	assert.Equal(t, typeRequest, d.Type)
	assert.Equal(t, "request", string(d.Body))
	ms, err := strconv.ParseInt(d.Expiration, 10, 64)
	require.NoError(t, err, "expiration %q", d.Expiration)
	assert.True(t, ms > 0 && ms < time.Minute.Milliseconds(), "the copy expires at the deadline: %d ms left", ms)
	assert.Zero(t, queueDepth(t, url, ServiceQueue(svc)), "the original was acknowledged")
}

// getNoAck waits for a message in queue and takes it without acknowledging.
func getNoAck(t *testing.T, ch *amqp091.Channel, queue string) (amqp091.Delivery, bool) {
	t.Helper()
	var d amqp091.Delivery
	ok := assert.Eventually(t, func() bool {
		var got bool
		var err error
		d, got, err = ch.Get(queue, false)
		require.NoError(t, err)
		return got
	}, 10*time.Second, 5*time.Millisecond, "no message reached %s", queue)
	return d, ok
}
