package tracing_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/tracing"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	_ "github.com/bankrpc/bankrpc/transport/inproc" // registers inproc://
	_ "github.com/bankrpc/bankrpc/transport/zmq"    // registers zmq://
)

// service answers Echo with the metadata its handler saw, Fail with the
// error asked for.
type service struct {
	testv1.UnimplementedTestServiceServer
}

func (service) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	md, _ := bankrpc.FromIncomingContext(ctx)
	var seen []string
	for k, vs := range md {
		for _, v := range vs {
			seen = append(seen, k+"="+v)
		}
	}
	slices.Sort(seen)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil, bankrpc.Errorf(bankrpc.Internal, "the handler's ctx has no span")
	}
	return &testv1.EchoResponse{Tag: in.GetTag(), Metadata: seen}, nil
}

func (service) Fail(_ context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

// endpoint is where a test serves and how it dials.
type endpoint struct {
	listen func(t *testing.T) transport.ServerTransport
	addr   func() string // the address to dial, known once listen returned
}

var names atomic.Int64

func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), names.Add(1))
}

func inprocEndpoint() endpoint {
	addr := "inproc://" + unique("tracing")
	return endpoint{
		listen: func(t *testing.T) transport.ServerTransport { return listen(t, addr) },
		addr:   func() string { return addr },
	}
}

func zmqEndpoint() endpoint {
	var addr string
	return endpoint{
		listen: func(t *testing.T) transport.ServerTransport {
			l := listen(t, "zmq://127.0.0.1:0")
			u, ok := l.(interface{ URL() string })
			require.True(t, ok, "the zmq listener tells its address")
			addr = u.URL()
			return l
		},
		addr: func() string { return addr },
	}
}

// amqpEndpoint serves a service of its own on the test broker and deletes
// its queues at the end.
func amqpEndpoint(t *testing.T) endpoint {
	broker := amqptest.URL(t)
	svc, client := unique("tracing"), unique("tracing-client")
	t.Cleanup(func() {
		deleteQueues(t, broker, amqp.ServiceQueue(svc), amqp.DeadLetterQueue(svc),
			amqp.ResultQueue(client), amqp.ErrorQueue(client), amqp.StatusQueue(client))
	})
	base := strings.TrimSuffix(broker, "/") + "/"
	if u, err := url.Parse(broker); err == nil && u.Path != "" && u.Path != "/" {
		base = broker
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return endpoint{
		listen: func(t *testing.T) transport.ServerTransport { return listen(t, base+sep+"service="+svc) },
		addr:   func() string { return base + sep + "service=" + svc + "&client=" + client },
	}
}

func listen(t *testing.T, addr string) transport.ServerTransport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := bankrpc.Listen(ctx, addr)
	require.NoError(t, err, "listen on %s", addr)
	return l
}

func deleteQueues(t *testing.T, broker string, queues ...string) {
	conn, err := amqp091.Dial(broker)
	if err != nil {
		t.Logf("delete test queues: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			t.Logf("delete test queue %s: %v", q, err)
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.Close()
	}
}

// traced is a traced server and client over one endpoint, and the spans
// they end.
type traced struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	srv    *bankrpc.Server
	client testv1.TestServiceClient
}

// newTraced serves service with tracing on e (not yet serving: serve starts
// it) and dials it with tracing.
func newTraced(t *testing.T, e endpoint) (*traced, func()) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	srv := bankrpc.NewServer(tracing.ServerOption(tracing.WithTracerProvider(tp)))
	testv1.RegisterTestServiceServer(srv, service{})
	l := e.listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bankrpc.Dial(ctx, e.addr(), tracing.ClientOption(tracing.WithTracerProvider(tp)))
	require.NoError(t, err)
	served := make(chan error, 1)
	started := false
	serve := func() {
		started = true
		go func() { served <- srv.Serve(l) }()
	}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if started {
			<-served
		} else {
			_ = l.Close()
		}
		_ = tp.Shutdown(ctx)
	})
	return &traced{spans: exp, tp: tp, srv: srv, client: testv1.NewTestServiceClient(conn)}, serve
}

// span returns the ended span of that kind, failing when there is not
// exactly one.
func (tr *traced) span(t *testing.T, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range tr.spans.GetSpans() {
		if s.SpanKind == kind {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans of kind %v", kind)
	return found[0]
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		out[kv.Key] = kv.Value
	}
	return out
}

// checkParentage makes a call inside a span of the test and checks the
// chain test span -> client span -> server span, one trace, and what each
// span says of the call.
func checkParentage(t *testing.T, e endpoint) {
	tr, serve := newTraced(t, e)
	serve()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx, root := tr.tp.Tracer("test").Start(ctx, "test")
	ctx = bankrpc.AppendToOutgoingContext(ctx, "user-key", "kept")
	resp, err := tr.client.Echo(ctx, &testv1.EchoRequest{Tag: "t1"})
	root.End()
	require.NoError(t, err)

	client, server := tr.span(t, trace.SpanKindClient), tr.span(t, trace.SpanKindServer)
	assert.Equal(t, root.SpanContext().TraceID(), client.SpanContext.TraceID())
	assert.Equal(t, root.SpanContext().SpanID(), client.Parent.SpanID(), "the caller's span is the client span's parent")
	assert.Equal(t, client.SpanContext.TraceID(), server.SpanContext.TraceID(), "one trace across the transport")
	assert.Equal(t, client.SpanContext.SpanID(), server.Parent.SpanID(), "the client span is the server span's parent")
	assert.True(t, server.Parent.IsRemote())

	assert.Contains(t, resp.GetMetadata(), "user-key=kept", "the caller's own metadata still travels")
	assert.Contains(t, resp.GetMetadata(), "traceparent="+fmt.Sprintf("00-%s-%s-01", client.SpanContext.TraceID(), client.SpanContext.SpanID()))

	for _, s := range []tracetest.SpanStub{client, server} {
		assert.Equal(t, "bankrpc.test.v1.TestService/Echo", s.Name)
		a := attrs(s)
		assert.Equal(t, "bankrpc", a["rpc.system"].AsString())
		assert.Equal(t, "bankrpc.test.v1.TestService", a["rpc.service"].AsString())
		assert.Equal(t, "Echo", a["rpc.method"].AsString())
		assert.Equal(t, int64(0), a[tracing.StatusCodeKey].AsInt64())
		assert.NotEmpty(t, a[tracing.CallIDKey].AsString())
		assert.Equal(t, codes.Unset, s.Status.Code)
	}
	assert.Equal(t, attrs(client)[tracing.CallIDKey], attrs(server)[tracing.CallIDKey], "both sides name the same call")
}

func TestClientSpanIsParentOfServerSpan(t *testing.T) {
	t.Run("inproc", func(t *testing.T) { checkParentage(t, inprocEndpoint()) })
	t.Run("zmq", func(t *testing.T) { checkParentage(t, zmqEndpoint()) })
	t.Run("amqp", func(t *testing.T) { checkParentage(t, amqpEndpoint(t)) })
}

// TestTraceCrossesAQueueWithNoServer: over AMQP a call made while no server
// runs waits in the durable queue; the server started later still makes
// its span a child of the client's.
func TestTraceCrossesAQueueWithNoServer(t *testing.T) {
	e := amqpEndpoint(t)
	tr, serve := newTraced(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := tr.client.Echo(ctx, &testv1.EchoRequest{Tag: "queued"})
		done <- err
	}()
	const wait = 500 * time.Millisecond
	time.Sleep(wait)
	select {
	case err := <-done:
		t.Fatalf("the call returned (%v) before any server ran", err)
	default:
	}
	serve()
	require.NoError(t, <-done)

	client, server := tr.span(t, trace.SpanKindClient), tr.span(t, trace.SpanKindServer)
	assert.Equal(t, client.SpanContext.TraceID(), server.SpanContext.TraceID())
	assert.Equal(t, client.SpanContext.SpanID(), server.Parent.SpanID())
	assert.GreaterOrEqual(t, server.StartTime.Sub(client.StartTime), wait, "the server span starts when a server takes the request")
}

// TestFailedCallsSetSpanStatus: a failure is an error on the client's span
// always, on the server's only when the server failed (as in gRPC's
// semantic conventions).
func TestFailedCallsSetSpanStatus(t *testing.T) {
	for _, tc := range []struct {
		code          bankrpc.Code
		serverIsError bool
	}{
		{bankrpc.NotFound, false},
		{bankrpc.FailedPrecondition, false},
		{bankrpc.Internal, true},
		{bankrpc.Unavailable, true},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			tr, serve := newTraced(t, inprocEndpoint())
			serve()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := tr.client.Fail(ctx, &testv1.FailRequest{Code: uint32(tc.code), Message: "boom"})
			require.Equal(t, tc.code, bankrpc.CodeOf(err))

			client, server := tr.span(t, trace.SpanKindClient), tr.span(t, trace.SpanKindServer)
			assert.Equal(t, codes.Error, client.Status.Code)
			assert.Equal(t, tc.code.String()+": boom", client.Status.Description)
			if tc.serverIsError {
				assert.Equal(t, codes.Error, server.Status.Code)
			} else {
				assert.Equal(t, codes.Unset, server.Status.Code)
			}
			for _, s := range []tracetest.SpanStub{client, server} {
				assert.Equal(t, int64(tc.code), attrs(s)[tracing.StatusCodeKey].AsInt64())
			}
		})
	}
}

// TestClientWithoutParentStartsATrace: a call made outside any span still
// gets a client span, root of a new trace the server joins.
func TestClientWithoutParentStartsATrace(t *testing.T) {
	tr, serve := newTraced(t, inprocEndpoint())
	serve()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tr.client.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	client, server := tr.span(t, trace.SpanKindClient), tr.span(t, trace.SpanKindServer)
	assert.False(t, client.Parent.IsValid())
	assert.Equal(t, client.SpanContext.SpanID(), server.Parent.SpanID())
}
