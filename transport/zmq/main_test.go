package zmq_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var discard = slog.New(slog.DiscardHandler)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// svc implements the test service: Echo reports what the server saw, Sleep
// waits, and both count their calls.
type svc struct {
	testv1.UnimplementedTestServiceServer
	echoes atomic.Int64
	sleeps atomic.Int64
	tag    string // returned by Echo when the request has no tag: tells servers apart

	mu    sync.Mutex
	runs  map[string]int64        // Work runs by key
	ended map[string]interruption // Work calls whose ctx ended, by key
}

// interruption is when, and why, the ctx of a Work call ended.
type interruption struct {
	at    time.Time
	cause error
}

func (s *svc) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	s.echoes.Add(1)
	p, _ := bankrpc.PeerFromContext(ctx)
	tag := in.GetTag()
	if tag == "" {
		tag = s.tag
	}
	return &testv1.EchoResponse{
		Payload:      in.GetPayload(),
		Tag:          tag,
		CallId:       bankrpc.CallIDFromContext(ctx),
		PeerIdentity: p.Identity,
		Metadata:     []string{"transport=" + p.Transport, "addr=" + p.Addr},
	}, nil
}

func (s *svc) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	s.sleeps.Add(1)
	select {
	case <-time.After(time.Duration(in.GetNanos())):
		return &testv1.SleepResponse{}, nil
	case <-ctx.Done():
		return &testv1.SleepResponse{Interrupted: true}, nil
	}
}

// Work runs for in.Nanos, or until its ctx ends, and records both by key.
func (s *svc) Work(ctx context.Context, in *testv1.WorkRequest) (*testv1.WorkResponse, error) {
	s.mu.Lock()
	if s.runs == nil {
		s.runs, s.ended = make(map[string]int64), make(map[string]interruption)
	}
	s.runs[in.GetKey()]++
	run := s.runs[in.GetKey()]
	s.mu.Unlock()
	t := time.NewTimer(time.Duration(in.GetNanos()))
	defer t.Stop()
	select {
	case <-t.C:
		return &testv1.WorkResponse{Run: run}, nil
	case <-ctx.Done():
		s.mu.Lock()
		s.ended[in.GetKey()] = interruption{time.Now(), context.Cause(ctx)}
		s.mu.Unlock()
		return &testv1.WorkResponse{Run: run, Interrupted: true}, nil
	}
}

func (s *svc) runsOf(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[key]
}

func (s *svc) endOf(key string) (interruption, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.ended[key]
	return i, ok
}

func newRPCServer(s *svc, opts ...bankrpc.ServerOption) *bankrpc.Server {
	srv := bankrpc.NewServer(opts...)
	testv1.RegisterTestServiceServer(srv, s)
	return srv
}

// serve listens on a free port of 127.0.0.1 and serves h until the test
// ends.
func serve(t *testing.T, cfg zmq.ServerConfig, h transport.Handler) *zmq.Server {
	t.Helper()
	s, err := zmq.Listen("tcp://127.0.0.1:0", cfg)
	require.NoError(t, err)
	serveOn(t, s, h)
	return s
}

// serveOn serves h on s until the test ends.
func serveOn(t *testing.T, s *zmq.Server, h transport.Handler) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		select {
		case err := <-done:
			// Close may come before the goroutine above called Serve, which
			// then refuses to start (TestServeAfterCloseAndTwice).
			if bankrpc.CodeOf(err) != bankrpc.FailedPrecondition {
				assert.NoError(t, err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of Close")
		}
	})
}

func dial(t *testing.T, addr string, cfg zmq.ClientConfig) *zmq.Client {
	t.Helper()
	c, err := zmq.Dial(addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

func stub(t *testing.T, ct transport.ClientTransport) testv1.TestServiceClient {
	return testv1.NewTestServiceClient(bankrpc.NewConn(ct))
}

// handlerFunc is a raw transport.Handler: it runs for every request frame
// and passes over cancel messages, as a bankrpc.Server does.
type handlerFunc func(ctx context.Context, frame []byte) ([]byte, error)

func (f handlerFunc) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	if _, ok := cancelOf(frame); ok {
		return nil, nil
	}
	return f(ctx, frame)
}

func (f handlerFunc) CancelCall(string) {}

// cancelOf returns the call id of a cancel message.
func cancelOf(frame []byte) (string, bool) {
	var req envelope.RequestView
	if err := envelope.DecodeRequestView(frame, 0, &req); err != nil || !req.Cancel {
		return "", false
	}
	return string(req.CallID), true
}

// echoFrame encodes an Echo request envelope.
func echoFrame(t *testing.T, callID, tag string) []byte {
	t.Helper()
	payload, err := proto.Marshal(&testv1.EchoRequest{Tag: tag})
	require.NoError(t, err)
	frame, err := envelope.EncodeRequest(&wirev1.Request{CallId: callID, Method: testv1.TestService_Echo_FullMethodName, Payload: payload})
	require.NoError(t, err)
	return frame
}

// echoTag decodes an Echo result envelope and returns the echoed tag.
func echoTag(t *testing.T, frame []byte) string {
	t.Helper()
	res, err := envelope.DecodeResult(frame, 0)
	require.NoError(t, err)
	require.Equal(t, uint32(bankrpc.OK), res.GetCode(), "reason: %s", res.GetReason())
	var out testv1.EchoResponse
	require.NoError(t, proto.Unmarshal(res.GetPayload(), &out))
	return out.GetTag()
}

// rawSocket opens a pebbe/zmq4 socket in a context of its own, with a
// receive timeout, closed when the test ends.
func rawSocket(t *testing.T, typ zmq4.Type) *zmq4.Socket {
	t.Helper()
	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	s, err := zctx.NewSocket(typ)
	require.NoError(t, err)
	require.NoError(t, s.SetLinger(0))
	require.NoError(t, s.SetRcvtimeo(5*time.Second))
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		assert.NoError(t, zctx.Term())
	})
	return s
}

// logRecorder is a slog handler that keeps the messages it receives.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) logger() *slog.Logger { return slog.New(r) }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// has reports whether a message containing sub was logged.
func (r *logRecorder) has(sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}
