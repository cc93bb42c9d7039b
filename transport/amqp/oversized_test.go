package amqp

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

// lenientNode is a private RabbitMQ node with RabbitMQ's own
// max_message_size (128 MiB): a broker configured by someone else, which
// delivers messages far above the protocol's limit. It is started on first
// use (BANKRPC_NODE_MAX_MESSAGE_SIZE=default) and stopped by the test that
// started it.
func lenientNode(t *testing.T) (url string) {
	t.Helper()
	amqptest.URL(t) // the broker tests are on
	bin := os.Getenv("RABBITMQ_BIN_DIR")
	if bin == "" {
		bin = "/usr/lib/rabbitmq/bin"
	}
	if _, err := os.Stat(filepath.Join(bin, "rabbitmq-server")); err != nil {
		t.Skipf("rabbitmq-server is not installed (%v): the tests of a broker configured otherwise need a private node", err)
	}
	t.Setenv("BANKRPC_NODE_MAX_MESSAGE_SIZE", "default")
	if os.Getenv("BANKRPC_NODE_WAIT") == "" {
		t.Setenv("BANKRPC_NODE_WAIT", "180") // a loaded machine boots a node slowly
	}
	// Up to three attempts, each in a directory of its own: the script picks
	// free ports at random, and another node may take one in the meantime
	// (dist_port_already_used).
	var dir string
	var out []byte
	var err error
	for range 3 {
		dir, err = os.MkdirTemp("", "bankrpc-lenient-node-")
		require.NoError(t, err)
		// Stopped even when its start failed: a node that booted too
		// slowly still runs.
		attempt := dir
		t.Cleanup(func() {
			if _, err := os.Stat(filepath.Join(attempt, "node.env")); err != nil {
				_ = os.RemoveAll(attempt)
				return
			}
			if _, err := nodeCommand("stop", attempt); err != nil {
				t.Logf("stop the private node in %s: %v", attempt, err)
				return
			}
			_ = os.RemoveAll(attempt)
		})
		if out, err = nodeCommand("start", dir); err == nil {
			break
		}
		t.Logf("start a private RabbitMQ node: %v", err)
	}
	require.NoError(t, err, "start a private RabbitMQ node with the default max_message_size")
	got, err := nodeCommand("ctl", dir, "eval", "application:get_env(rabbit, max_message_size).")
	require.NoError(t, err)
	require.Equal(t, "{ok,134217728}", strings.TrimSpace(string(got)), "the node runs with RabbitMQ's default")
	return nodeValue(out, "URL")
}

// syncLog collects log lines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) lines(substr string) (n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.Lines(l.b.String()) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// TestOversizedDeliveriesAreDeadLetteredWithoutBody floods a server, on a
// broker that admits 128 MiB messages, with requests far above its frame
// limit while a good client calls. Each one must be dead-lettered at once,
// without its body, with the reason and the size; its caller told
// RESOURCE_EXHAUSTED; the broker's setting logged once (not once per
// request); no handler run; and the good calls all answered.
func TestOversizedDeliveriesAreDeadLetteredWithoutBody(t *testing.T) {
	url := lenientNode(t)
	ctx := testCtx(t, 90*time.Second)
	const limit = 256 << 10
	const flood, size = 6, 8 << 20
	svc := uniqueName(t)
	var logs syncLog
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := listen(t, url, ServerConfig{Service: svc, MaxFrameSize: limit, Logger: logger})
	var handled atomic.Int64
	l := newLedger()
	var biggest atomic.Int64
	serve(t, srv, funcHandler{frame: func(ctx context.Context, frame []byte) ([]byte, error) {
		handled.Add(1)
		if n := int64(len(frame)); n > biggest.Load() {
			biggest.Store(n)
		}
		return handlerFor(l).HandleFrame(ctx, frame)
	}})

	// The hostile client: its queues, declared by hand.
	name := uniqueName(t)
	ch := rawChannel(t, url)
	for _, q := range []string{ResultQueue(name), ErrorQueue(name)} {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		require.NoError(t, err)
	}
	deleteQueues(t, url, ResultQueue(name), ErrorQueue(name))

	// Good calls go on during the flood.
	c := dial(t, url, ClientConfig{Service: svc})
	echo := testv1.NewTestServiceClient(bankrpc.NewConn(c))
	var good sync.WaitGroup
	var goodErr atomic.Value
	var goodCalls atomic.Int64
	stopGood := make(chan struct{})
	good.Go(func() {
		for {
			select {
			case <-stopGood:
				return
			default:
			}
			if _, err := echo.Echo(ctx, &testv1.EchoRequest{Tag: "good"}); err != nil {
				goodErr.Store(err)
				return
			}
			goodCalls.Add(1)
		}
	})

	body := bytes.Repeat([]byte{0xee}, size)
	for i := range flood {
		require.NoError(t, ch.PublishWithContext(ctx, RequestExchange, svc, true, false, amqp091.Publishing{
			CorrelationId: "huge-" + string(rune('a'+i)), ReplyTo: ResultQueue(name), DeliveryMode: amqp091.Persistent,
			Headers: amqp091.Table{"x-attacker": "yes"}, Body: body,
		}))
	}
	for i := range flood {
		d := getOne(t, ch, DeadLetterQueue(svc))
		assert.Empty(t, d.Body, "dead letter %d carries no body", i)
		n, ok := intHeader(d.Headers, headerBodyBytes)
		assert.True(t, ok, "dead letter %d says the body's size", i)
		assert.Equal(t, int64(size), n)
		assert.Contains(t, d.Headers[headerDeadReason], "exceeds the frame limit")
		assert.Contains(t, d.Headers[headerDeadReason], "the broker admits messages above the protocol's limit")
		e := getOne(t, ch, ErrorQueue(name))
		code, _ := intHeader(e.Headers, headerCode)
		assert.Equal(t, int64(bankrpc.ResourceExhausted), code, "the caller is told: %s", e.Body)
	}
	close(stopGood)
	good.Wait()
	if err, _ := goodErr.Load().(error); err != nil {
		t.Fatalf("a good call failed during the flood: %v", err)
	}
	resp, err := echo.Echo(ctx, &testv1.EchoRequest{Tag: "after"})
	require.NoError(t, err, "the server still serves")
	assert.Equal(t, "after", resp.GetTag())
	assert.Positive(t, goodCalls.Load())
	assert.LessOrEqual(t, biggest.Load(), int64(limit), "no oversized frame reached a handler")
	assert.Zero(t, queueDepth(t, url, ServiceQueue(svc)), "nothing left in the service queue")
	assert.Zero(t, queueDepth(t, url, DeadLetterQueue(svc)), "every request dead-lettered once")
	assert.Equal(t, 1, logs.lines("admits messages above the protocol's limit"), "the broker's setting is logged once:\n%s", logs.b.String())
	assert.Zero(t, logs.lines("level=WARN msg=\"amqp: refused"), "no WARN line per oversized request:\n%s", logs.b.String())
}

// TestPrivateNodeRefusesAboveMaxMessageSize checks the setting the project's
// scripts give a broker (scripts/rabbitmq-node.sh, as scripts/broker.sh on
// the shared one): a message above the frame limit plus its headroom is
// refused by the broker itself, so that no server ever assembles it.
func TestPrivateNodeRefusesAboveMaxMessageSize(t *testing.T) {
	url := privateNodeURL(t)
	ctx := testCtx(t, 30*time.Second)
	maxSize := BrokerMaxMessageSize(bankrpc.DefaultMaxFrameSize)
	require.Equal(t, 4259840, maxSize)
	q := uniqueName(t)
	ch := rawChannel(t, url)
	_, err := ch.QueueDeclare(q, false, true, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp091.Publishing{Body: make([]byte, maxSize)})
	require.NoError(t, err)
	ok, err := confirm.WaitContext(ctx)
	require.NoError(t, err)
	assert.True(t, ok, "a message of exactly max_message_size is taken")

	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	_, err = ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp091.Publishing{Body: make([]byte, maxSize+1)})
	require.NoError(t, err, "the publish itself is written")
	select {
	case e := <-closed:
		require.NotNil(t, e)
		assert.Equal(t, amqp091.PreconditionFailed, e.Code, "refused by the broker: %v", e)
		assert.Contains(t, e.Reason, "larger than configured max size")
	case <-ctx.Done():
		t.Fatal("the broker took a message above its max_message_size: is scripts/rabbitmq-node.sh setting it?")
	}
}
