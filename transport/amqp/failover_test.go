package amqp

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// refusePolicy makes the private node refuse (basic.nack) every publish to
// queue, as a channel with a stale view of a quorum queue whose leader was
// lost does; the returned func lifts it.
func refusePolicy(t *testing.T, queue string) (lift func()) {
	t.Helper()
	name := "refuse-" + queue
	pattern := "^" + regexpQuote(queue) + "$"
	privateNodeCtl(t, "set_policy", "--apply-to", "queues", "--priority", "10", name, pattern, `{"max-length":0,"overflow":"reject-publish"}`)
	lifted := false
	lift = func() {
		if !lifted {
			lifted = true
			privateNodeCtl(t, "clear_policy", name)
		}
	}
	t.Cleanup(lift)
	return lift
}

func regexpQuote(s string) string {
	out := make([]byte, 0, len(s)*2)
	for i := range len(s) {
		if c := s[i]; c == '.' || c == '-' {
			out = append(out, '\\', c)
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

// TestRefusedReplyRepublishedNotRequeued: the broker refuses a server's
// reply for a while (basic.nack). The server publishes the reply again, with
// back-off, on a fresh channel, until it is taken: the request is neither
// given back to the queue nor counted toward its delivery limit, the handler
// runs once, and the caller gets its reply, not INTERNAL. (Requeueing the
// request on each nack made it reach the delivery limit in ~100 ms and its
// caller get INTERNAL for a call that had been applied.)
//
// The refusals are made with an overflow policy (reject-publish), which
// quorum queues do not apply to a limit of 0 messages: the queues are
// classic, the code under test is the same.
func TestRefusedReplyRepublishedNotRequeued(t *testing.T) {
	for _, qt := range []QueueType{QueueClassic} {
		t.Run(string(qt), func(t *testing.T) {
			url := privateNodeURL(t)
			ctx := testCtx(t, 60*time.Second)
			svc, client := uniqueName(t), uniqueName(t)
			l := newLedger()
			srv := listen(t, url, ServerConfig{Service: svc, QueueType: qt, DeliveryLimit: 3})
			serve(t, srv, handlerFor(l))
			c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc, ClientName: client, QueueType: qt})))
			lift := refusePolicy(t, ResultQueue(client))

			answered := make(chan error, 1)
			go func() {
				_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "refused"}, bankrpc.WithCallID("refused-1"))
				answered <- err
			}()
			require.Eventually(t, func() bool { return l.executionsOf("refused-1") == 1 }, 20*time.Second, 10*time.Millisecond)
			select {
			case err := <-answered:
				t.Fatalf("the call ended while its reply was refused: %v", err)
			case <-time.After(1500 * time.Millisecond): // many refusals, many delivery limits' worth
			}
			lift()
			select {
			case err := <-answered:
				require.NoError(t, err, "the reply is published again once the broker takes it")
			case <-ctx.Done():
				t.Fatal("no answer after the refusals stopped")
			}
			assert.Equal(t, 1, l.executionsOf("refused-1"), "the handler ran once")
			ch := rawChannel(t, url)
			q, err := ch.QueueDeclarePassive(DeadLetterQueue(svc), true, false, false, false, queueTypeArgs(qt))
			require.NoError(t, err)
			assert.Zero(t, q.Messages, "nothing was dead-lettered")
			q, err = ch.QueueDeclarePassive(ServiceQueue(svc), true, false, false, false, serviceQueueArgs(ServerConfig{Service: svc, QueueType: qt, DeliveryLimit: 3}))
			require.NoError(t, err)
			assert.Zero(t, q.Messages, "the request was acknowledged")
		})
	}
}

// TestRefusedRequestRepublished: the broker refuses a client's request
// for a while (the service queue is full, with overflow reject-publish).
// The client publishes it again, with back-off, on a fresh channel, and the
// call succeeds once the queue takes it; refused for good, the call fails
// with UNAVAILABLE after maxRequestNacks republishes. (A refused request
// used to fail its call at once.)
func TestRefusedRequestRepublished(t *testing.T) {
	url := privateNodeURL(t)
	ctx := testCtx(t, 90*time.Second)
	prefix := uniqueName(t)
	svc, full := prefix+"-a", prefix+"-b"
	// One ready request fills either queue.
	privateNodeCtl(t, "set_policy", "--apply-to", "queues", "--priority", "10", prefix,
		"^"+regexpQuote(ServiceQueue(prefix))+"-(a|b)$", `{"max-length":1,"overflow":"reject-publish"}`)
	t.Cleanup(func() { privateNodeCtl(t, "clear_policy", prefix) })
	l := newLedger()
	srv := listen(t, url, ServerConfig{Service: svc})
	listen(t, url, ServerConfig{Service: full}) // declared, never served
	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))
	first := make(chan error, 1)
	go func() {
		_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "fills the queue"}, bankrpc.WithCallID("req-first"))
		first <- err
	}()
	require.Eventually(t, func() bool { return queueDepth(t, url, ServiceQueue(svc)) == 1 }, 20*time.Second, 20*time.Millisecond)

	answered := make(chan error, 1)
	go func() {
		_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "refused"}, bankrpc.WithCallID("req-refused-1"))
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("the call ended while its request was refused: %v", err)
	case <-time.After(time.Second):
	}
	serve(t, srv, handlerFor(l)) // the queue empties: the request is taken
	for _, ch := range []chan error{first, answered} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("no answer after the queue emptied")
		}
	}
	assert.Equal(t, 1, l.executionsOf("req-refused-1"))

	cf := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: full})))
	go func() { _, _ = cf.Echo(ctx, &testv1.EchoRequest{Tag: "fills the queue for good"}) }()
	require.Eventually(t, func() bool { return queueDepth(t, url, ServiceQueue(full)) == 1 }, 20*time.Second, 20*time.Millisecond)
	start := time.Now()
	_, err := cf.Echo(ctx, &testv1.EchoRequest{Tag: "refused for good"})
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, fmt.Sprintf("%d times", maxRequestNacks+1))
	t.Logf("refused for good: failed after %v", time.Since(start).Round(time.Millisecond))
}

// TestAddressListsClusterNodes: an address may list several nodes; a node
// that does not answer is skipped, at Dial and Listen as on reconnection.
func TestAddressListsClusterNodes(t *testing.T) {
	t.Parallel()
	base := amqptest.URL(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Host = "127.0.0.1:1," + u.Host // nothing listens on port 1
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	l := newLedger()
	srv := listen(t, u.String(), ServerConfig{Service: svc})
	serve(t, srv, handlerFor(l))
	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, u.String(), ClientConfig{Service: svc})))
	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "over the second node"})
	require.NoError(t, err)
	assert.Equal(t, "over the second node", resp.GetTag())
}

// TestConnectorFailover: the connector moves to the next node after a
// failure and wraps around.
func TestConnectorFailover(t *testing.T) {
	k := newConnector([]string{"amqp://a/", "amqp://b/", "amqp://c/"}, "x", nil, time.Millisecond, time.Second, nil)
	assert.Equal(t, "amqp://a/", k.node(), "the first node first")
	k.failover()
	assert.Equal(t, "amqp://b/", k.node())
	k.failover()
	assert.Equal(t, "amqp://c/", k.node())
	k.failover()
	assert.Equal(t, "amqp://a/", k.node(), "round robin")
	one := newConnector([]string{"amqp://a/"}, "x", nil, time.Millisecond, time.Second, nil)
	one.failover()
	assert.Equal(t, "amqp://a/", one.node())
}

// TestReplyCache: bounded by entries, bytes and age, oldest out first.
func TestReplyCache(t *testing.T) {
	rc := newReplyCache(2, 10, time.Hour)
	rc.put("a", "q", []byte("1234"))
	rc.put("b", "q", []byte("5678"))
	got, ok := rc.get("a", "q")
	assert.True(t, ok)
	assert.Equal(t, "1234", string(got))
	_, ok = rc.get("a", "other queue")
	assert.False(t, ok, "keyed by reply queue too")
	rc.put("c", "q", []byte("9"))
	_, ok = rc.get("a", "q")
	assert.False(t, ok, "over the entry bound, the oldest goes")
	rc.put("d", "q", []byte("abcdefg"))
	_, ok = rc.get("b", "q")
	assert.False(t, ok, "over the byte bound, the oldest go")
	_, ok = rc.get("d", "q")
	assert.True(t, ok)
	rc.put("big", "q", make([]byte, 11))
	_, ok = rc.get("big", "q")
	assert.False(t, ok, "a reply over the byte bound is not kept")

	young := newReplyCache(10, 100, time.Nanosecond)
	young.put("a", "q", []byte("1"))
	time.Sleep(time.Millisecond)
	_, ok = young.get("a", "q")
	assert.False(t, ok, "too old")
}
