package amqp

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
)

// TestDocumentedPermissions gives a client user and a server user exactly the
// permissions docs/protocol-amqp.md lists, on the private node, and checks
// that they suffice for a call, and that the client can neither write into
// another client's queue nor take another client's name. It is not parallel:
// it runs before the test that restarts the node.
func TestDocumentedPermissions(t *testing.T) {
	base := privateNodeURL(t)
	ctx := testCtx(t, 60*time.Second)
	uri, err := amqp091.ParseURI(base)
	require.NoError(t, err)
	svc := uniqueName(t)
	alice := "alice-" + strings.TrimPrefix(uniqueName(t), "test-")
	server := "bank-" + svc
	q := regexp.QuoteMeta

	userURL := func(user string) string {
		return fmt.Sprintf("amqp://%s:secret@127.0.0.1:%d/", user, uri.Port)
	}
	clientQueues := `^bankrpc\.client\.` + q(alice) + `\.(results|errors|status)$`
	svcRes := `bankrpc\.svc\.` + q(svc) + `(\.dead|\.cancel\.[0-9a-f]+)?`
	for _, u := range []struct{ name, configure, write, read string }{
		{alice, clientQueues, `^bankrpc\.(requests|cancels)$`, clientQueues},
		{server, `^(bankrpc\.(requests|cancels)|` + svcRes + `)$`, `^(amq\.default|` + svcRes + `)$`, `^(bankrpc\.(requests|cancels)|` + svcRes + `)$`},
	} {
		privateNodeCtl(t, "add_user", u.name, "secret")
		t.Cleanup(func() { privateNodeCtl(t, "delete_user", u.name) })
		privateNodeCtl(t, "set_permissions", "-p", "/", u.name, u.configure, u.write, u.read)
	}
	deleteQueues(t, base, ServiceQueue(svc), DeadLetterQueue(svc), ResultQueue(alice), ErrorQueue(alice))

	srv, err := Listen(userURL(server), ServerConfig{Service: svc, OwnQueuesOnly: true, Logger: testLogger(t)})
	require.NoError(t, err, "the server's documented permissions must suffice")
	w := newWorker(t)
	h := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(h, ledgerWorker{newLedger(), w})
	serve(t, srv, h)
	c, err := Dial(userURL(alice), ClientConfig{Service: svc, ClientName: alice, Logger: testLogger(t)})
	require.NoError(t, err, "the client's documented permissions must suffice")
	t.Cleanup(func() { _ = c.Close() })
	tc := testv1.NewTestServiceClient(bankrpc.NewConn(c))
	resp, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "allowed"})
	require.NoError(t, err)
	assert.Equal(t, "allowed", resp.GetTag())
	assert.Equal(t, alice, resp.GetPeerIdentity(), "the validated user-id is the caller's identity")

	// Finished cannot publish its marker to the default exchange with these
	// permissions: it waits for the result queue to drain instead.
	rc := bankrpc.NewConn(c)
	id, err := testv1.NewTestServiceClient(rc).SubmitEcho(ctx, &testv1.EchoRequest{Tag: "submitted"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		fin, err := rc.Finished(ctx)
		require.NoError(t, err)
		return len(fin) == 1 && fin[0].ID == id
	}, 10*time.Second, 10*time.Millisecond)
	_, err = tc.Echo(ctx, &testv1.EchoRequest{Tag: "still connected"})
	require.NoError(t, err, "the refused marker did not disturb the client's session")

	// A cancel goes through bankrpc.cancels and the server's cancel queue.
	callCtx, cancel := context.WithCancel(ctx)
	go func() {
		if assert.Eventually(t, func() bool { return w.runsOf("canceled") == 1 }, 10*time.Second, time.Millisecond) {
			cancel()
		}
	}()
	_, err = tc.Work(callCtx, &testv1.WorkRequest{Key: "canceled"})
	assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err), "%v", err)
	assert.Eventually(t, func() bool { _, cause := w.endOf("canceled"); return errors.Is(cause, bankrpc.ErrCanceledByClient) }, 5*time.Second, time.Millisecond,
		"the cancel did not reach the handler with the documented permissions")

	_, err = Dial(userURL(alice), ClientConfig{Service: svc, ClientName: "someone-else"})
	assert.Equal(t, bankrpc.PermissionDenied, bankrpc.CodeOf(err), "another client's name: %v", err)

	// Straight into a queue through the default exchange: refused.
	conn, err := amqp091.Dial(userURL(alice))
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	require.NoError(t, ch.Publish("", ServiceQueue(svc), false, false, amqp091.Publishing{Body: []byte("sneaky")}))
	select {
	case e := <-closed:
		var ae *amqp091.Error
		require.True(t, errors.As(e, &ae), "channel closed with %v", e)
		assert.Equal(t, amqp091.AccessRefused, ae.Code, "%v", ae)
	case <-ctx.Done():
		t.Fatal("publishing to the default exchange was not refused")
	}
}

// ledgerWorker serves Echo with a ledger and Work with a worker.
type ledgerWorker struct {
	*ledger
	w *worker
}

func (lw ledgerWorker) Work(ctx context.Context, in *testv1.WorkRequest) (*testv1.WorkResponse, error) {
	return lw.w.Work(ctx, in)
}
