package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

func TestParseAddress(t *testing.T) {
	a, err := parseAddress("amqp://u:p@h:5672/v?service=bank&client=alice&queue=quorum&heartbeat=5", true)
	require.NoError(t, err)
	assert.Equal(t, address{brokers: []string{"amqp://u:p@h:5672/v?heartbeat=5"}, service: "bank", client: "alice", queue: QueueQuorum}, a,
		"bankrpc's parameters are taken out, the broker's stay")

	a, err = parseAddress("AMQPS://u:p@h/", false)
	require.NoError(t, err)
	assert.Equal(t, []string{"amqps://u:p@h/"}, a.brokers, "amqp091-go knows lower-case schemes only")

	a, err = parseAddress("amqp://u:p@h/", false)
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p@h/"}, a.brokers, "an address without parameters is the broker URL as it is")

	a, err = parseAddress("amqp://u:p@n1:5672,n2:5673,n3:5674/v?service=bank&heartbeat=5", true)
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p@n1:5672/v?heartbeat=5", "amqp://u:p@n2:5673/v?heartbeat=5", "amqp://u:p@n3:5674/v?heartbeat=5"}, a.brokers,
		"the nodes of a cluster share the credentials, vhost and broker parameters")
	assert.Equal(t, "bank", a.service)

	for _, tc := range []struct {
		addr    string
		forDial bool
		want    string
	}{
		{"amqp://u:p@n1:5672,,n2:5672/?service=bank", true, "empty host"},
		{"http://h/?service=bank", true, "the scheme must be amqp or amqps"},
		{"amqp://h/?servce=bank", true, `unknown parameter "servce"`},
		{"amqp://h/?service=bank&queue=stream", true, `queue type "stream"`},
		{"amqp://h/?service=bank&service=other", true, "give service= exactly once"},
		{"amqp://h/?service=", true, "give service= exactly once"},
		{"amqp://h/?service=bank&client=alice", false, "a server's address takes service= and queue="},
		{"amqp://u:secret@h/?nope=1", true, "amqp://u:xxxxx@h/"},
	} {
		_, err := parseAddress(tc.addr, tc.forDial)
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%s: %v", tc.addr, err)
		assert.ErrorContains(t, err, tc.want, tc.addr)
		assert.NotContains(t, bankrpc.MessageOf(err), "secret", "errors never show the password")
	}
}

// TestAddressOverridesConfig: the address's parameters take precedence over
// the same fields of a config; the config fills the rest.
func TestAddressOverridesConfig(t *testing.T) {
	cfg := ClientConfig{Service: "north", ClientName: "bob", QueueType: QueueQuorum, Prefetch: 7}
	broker, err := cfg.fromAddress("amqp://h/?service=south&client=alice")
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://h/"}, broker)
	assert.Equal(t, ClientConfig{Service: "south", ClientName: "alice", QueueType: QueueQuorum, Prefetch: 7}, cfg)

	scfg := ServerConfig{Service: "north", QueueType: QueueQuorum, Prefetch: 7}
	_, err = scfg.fromAddress("amqp://h/?queue=classic")
	require.NoError(t, err)
	assert.Equal(t, ServerConfig{Service: "north", QueueType: QueueClassic, Prefetch: 7}, scfg)
}

func TestRegisteredSchemes(t *testing.T) {
	assert.Subset(t, transport.Schemes(), []string{"amqp", "amqps"})
	ctx := testCtx(t, 10*time.Second)
	_, err := bankrpc.Dial(ctx, "amqp://guest:guest@127.0.0.1:1/")
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "?service=NAME")
	_, err = bankrpc.Listen(ctx, "amqp://guest:guest@127.0.0.1:1/?queue=quorum")
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	_, err = bankrpc.Dial(ctx, "amqp://guest:guest@127.0.0.1:1/?service=s", bankrpc.WithTransportConfig(42))
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "a config of another backend is refused: %v", err)
}

// TestListenAndDialByAddress opens both halves through the registry: the
// address names the service, the client and the queue type; a config given
// with WithTransportConfig fills the rest.
func TestListenAndDialByAddress(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc, name := uniqueName(t), uniqueName(t)
	deleteQueues(t, url, ServiceQueue(svc), DeadLetterQueue(svc), ResultQueue(name), ErrorQueue(name))

	l, err := bankrpc.Listen(ctx, url+"?service="+svc+"&queue=quorum",
		bankrpc.WithTransportConfig(ServerConfig{Service: "ignored", Prefetch: 3}), bankrpc.WithLogger(testLogger(t)))
	require.NoError(t, err)
	srv, ok := l.(*Server)
	require.True(t, ok, "%T", l)
	assert.Equal(t, svc, srv.cfg.Service, "the address's service wins over the config's")
	assert.Equal(t, QueueQuorum, srv.cfg.QueueType)
	assert.Equal(t, 3, srv.cfg.Prefetch, "the config fills what the address does not say")
	assert.Equal(t, bankrpc.DefaultMaxFrameSize, srv.cfg.MaxFrameSize, "the runtime's frame limit applies")
	h := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(h, newLedger())
	serve(t, srv, h)

	conn, err := bankrpc.Dial(ctx, url+"?service="+svc+"&client="+name+"&queue=quorum", bankrpc.WithTransportConfig(ClientConfig{NoUserID: true}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	resp, err := testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{Tag: "by address"})
	require.NoError(t, err)
	assert.Equal(t, "by address", resp.GetTag())
	assert.Empty(t, resp.GetPeerIdentity(), "the config's NoUserID applies")

	// The client's queues are named after the address's client, and are
	// quorum queues: declaring one as classic fails.
	ch := rawChannel(t, url)
	_, err = ch.QueueDeclare(ResultQueue(name), true, false, false, false, nil)
	assert.ErrorContains(t, err, "PRECONDITION_FAILED", "the result queue must exist as a quorum queue")
}

// TestMaxFrameSize: a client refuses to publish a request over its limit and
// fails a reply over it; a server refuses a request over its limit into the
// caller's error queue, without running it.
func TestMaxFrameSize(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	ctx := testCtx(t, 30*time.Second)
	svc := uniqueName(t)
	l := newLedger()
	serve(t, listen(t, url, ServerConfig{Service: svc, MaxFrameSize: 1024}), handlerFor(l))

	small := dial(t, url, ClientConfig{Service: svc, MaxFrameSize: 512})
	_, err := small.RoundTrip(ctx, &transport.Call{ID: "big-1", Method: "/m", Frame: make([]byte, 513)})
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err), "%v", err)

	c := testv1.NewTestServiceClient(bankrpc.NewConn(dial(t, url, ClientConfig{Service: svc})))
	_, err = c.Echo(ctx, &testv1.EchoRequest{Payload: make([]byte, 2048)}, bankrpc.WithCallID("big-2"))
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err), "%v", err)
	assert.Contains(t, bankrpc.MessageOf(err), "exceeds the limit of 1024 bytes")
	assert.Zero(t, l.executionsOf("big-2"), "a request over the server's limit must not run")

	// A reply over the client's limit fails its call.
	big := uniqueName(t)
	serve(t, listen(t, url, ServerConfig{Service: big}), funcHandler{frame: func(context.Context, []byte) ([]byte, error) {
		return make([]byte, 400), nil
	}})
	tiny := dial(t, url, ClientConfig{Service: big, MaxFrameSize: 300})
	_, err = tiny.RoundTrip(ctx, &transport.Call{ID: "big-3", Method: "/m", Frame: []byte("small")})
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err), "%v", err)
	assert.Contains(t, bankrpc.MessageOf(err), "reply frame of 400 bytes exceeds the limit of 300 bytes")
}

// TestDialHonoursCtx: Dial through the registry does not block past its ctx.
func TestDialHonoursCtx(t *testing.T) {
	t.Parallel()
	url := amqptest.URL(t)
	svc := uniqueName(t)
	listen(t, url, ServerConfig{Service: svc})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := bankrpc.Dial(ctx, url+"?service="+svc)
	assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err), "%v", err)
	_, err = bankrpc.Listen(ctx, url+"?service="+svc)
	assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err), "%v", err)
}
