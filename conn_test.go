package bankrpc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
)

// backendFunc is a ClientTransport made of a function: each test names the
// backend behaviour it needs.
type backendFunc func(ctx context.Context, call *transport.Call) ([]byte, error)

func (f backendFunc) RoundTrip(ctx context.Context, call *transport.Call) ([]byte, error) {
	return f(ctx, call)
}
func (f backendFunc) Close() error { return nil }

// serving is a backend that hands frames straight to a Server.
func serving(srv *bankrpc.Server) backendFunc {
	return func(ctx context.Context, call *transport.Call) ([]byte, error) {
		reply, _ := srv.HandleFrame(context.Background(), call.Frame)
		return reply, nil
	}
}

func echo(t *testing.T, b transport.ClientTransport, opts ...bankrpc.CallOption) (*testv1.EchoResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return testv1.NewTestServiceClient(bankrpc.NewConn(b)).Echo(ctx, &testv1.EchoRequest{Tag: "x"}, opts...)
}

func TestConnGivesBackendErrorsACode(t *testing.T) {
	_, err := echo(t, backendFunc(func(context.Context, *transport.Call) ([]byte, error) {
		return nil, errors.New("connection refused")
	}))
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err))
	assert.Contains(t, err.Error(), "connection refused")
	assert.Contains(t, err.Error(), testv1.TestService_Echo_FullMethodName)

	_, err = echo(t, backendFunc(func(context.Context, *transport.Call) ([]byte, error) {
		return nil, bankrpc.Errorf(bankrpc.PermissionDenied, "key not allowed")
	}))
	assert.Equal(t, bankrpc.PermissionDenied, bankrpc.CodeOf(err), "a backend's own code is kept")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err = bankrpc.NewConn(backendFunc(func(ctx context.Context, _ *transport.Call) ([]byte, error) {
		<-ctx.Done()
		return nil, bankrpc.Errorf(bankrpc.Unavailable, "no reply from tcp://127.0.0.1:4040 after 3 attempts")
	})).Invoke(ctx, "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "the backend's reason outlives the deadline that ended the wait")
	assert.Contains(t, err.Error(), "tcp://127.0.0.1:4040")
}

func TestConnRefusesBadReplies(t *testing.T) {
	for name, tc := range map[string]struct {
		reply func(call *transport.Call) []byte
		code  bankrpc.Code
		msg   string
	}{
		"garbage": {func(*transport.Call) []byte { return []byte{0xff, 0xff} }, bankrpc.Internal, "malformed envelope"},
		"other call's reply": {func(*transport.Call) []byte {
			return envelope.AppendResult(nil, []byte("someone-else"), 0, "", nil, nil, nil)
		}, bankrpc.Internal, `is for call "someone-else"`},
		"undecodable payload": {func(c *transport.Call) []byte {
			return envelope.AppendResult(nil, []byte(c.ID), 0, "", []byte{0xff}, nil, nil)
		}, bankrpc.Internal, "decode"},
		"oversized": {func(c *transport.Call) []byte {
			return envelope.AppendResult(nil, []byte(c.ID), 0, "", make([]byte, envelope.DefaultMaxFrameSize), nil, nil)
		}, bankrpc.ResourceExhausted, "exceeds the limit"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := echo(t, backendFunc(func(_ context.Context, call *transport.Call) ([]byte, error) {
				return tc.reply(call), nil
			}))
			assert.Equal(t, tc.code, bankrpc.CodeOf(err), "error: %v", err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestConnSendsIDDeadlineAndMetadata(t *testing.T) {
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, echoServer{})
	var seen *transport.Call
	b := backendFunc(func(ctx context.Context, call *transport.Call) ([]byte, error) {
		seen = call
		return serving(srv)(ctx, call)
	})
	conn := bankrpc.NewConn(b, bankrpc.WithDefaultTimeout(3*time.Second))
	c := testv1.NewTestServiceClient(conn)
	before := time.Now()
	resp, err := c.Echo(bankrpc.AppendToOutgoingContext(context.Background(), "K", "v"), &testv1.EchoRequest{Tag: "x"}, bankrpc.WithCallID("id-1"))
	require.NoError(t, err)
	assert.Equal(t, "id-1", seen.ID)
	assert.Equal(t, "id-1", resp.GetCallId())
	assert.Equal(t, testv1.TestService_Echo_FullMethodName, seen.Method)
	assert.WithinRange(t, seen.Deadline, before.Add(3*time.Second), time.Now().Add(3*time.Second), "the default timeout sets the deadline")
	assert.Equal(t, seen.Deadline.UnixNano(), resp.GetDeadlineUnixNano(), "the absolute deadline travels in the envelope")
	assert.Equal(t, []string{"k=v"}, resp.GetMetadata(), "keys are lower-cased")

	a, b2 := conn.NewCallID(), conn.NewCallID()
	other := bankrpc.NewConn(b).NewCallID()
	assert.NotEqual(t, a, b2)
	assert.NotEqual(t, strings.Split(a, "-")[0], strings.Split(other, "-")[0], "call ids of two Conns differ in their random prefix")
}

func TestConnCloseIsIdempotent(t *testing.T) {
	var closes atomic.Int32
	conn := bankrpc.NewConn(closeCounter{&closes})
	require.NoError(t, conn.Close())
	require.NoError(t, conn.Close())
	assert.Equal(t, int32(1), closes.Load(), "the backend is closed once")
	err := conn.Invoke(context.Background(), "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.ErrorIs(t, err, bankrpc.ErrClosed)
}

type closeCounter struct{ n *atomic.Int32 }

func (closeCounter) RoundTrip(context.Context, *transport.Call) ([]byte, error) { return nil, nil }
func (c closeCounter) Close() error                                             { c.n.Add(1); return nil }

func TestConnCanceledWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := backendFunc(func(ctx context.Context, _ *transport.Call) ([]byte, error) {
		cancel()
		<-ctx.Done()
		return nil, ctx.Err()
	})
	err := bankrpc.NewConn(b).Invoke(ctx, "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err))
}

// echoServer answers Echo with what the server saw.
type echoServer struct {
	testv1.UnimplementedTestServiceServer
}

func (echoServer) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	out := &testv1.EchoResponse{Tag: in.GetTag(), Payload: in.GetPayload(), CallId: bankrpc.CallIDFromContext(ctx), Metadata: pairs(ctx)}
	if dl, ok := ctx.Deadline(); ok {
		out.DeadlineUnixNano = dl.UnixNano()
	}
	return out, nil
}

func (echoServer) Fail(ctx context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	switch in.GetMessage() {
	case "foreign":
		return nil, errors.New("disk full")
	case "deadline":
		return nil, context.DeadlineExceeded
	case "bad utf8":
		return nil, bankrpc.Errorf(bankrpc.Internal, "bad \xff byte")
	}
	return nil, bankrpc.SendStatus(ctx, bankrpc.Status{Reason: "no sink"})
}

func (echoServer) Panic(_ context.Context, in *testv1.PanicRequest) (*testv1.PanicResponse, error) {
	panic(in.GetMessage())
}

func (echoServer) Sleep(context.Context, *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	return &testv1.SleepResponse{}, nil
}

func TestServerMapsHandlerErrors(t *testing.T) {
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(serving(srv)))
	ctx := context.Background()
	for msg, want := range map[string]struct {
		code bankrpc.Code
		text string
	}{
		"foreign":  {bankrpc.Unknown, "disk full"},
		"deadline": {bankrpc.DeadlineExceeded, "deadline exceeded"},
		"bad utf8": {bankrpc.Internal, "bad \uFFFD byte"},
		"sink":     {bankrpc.Unimplemented, "this transport carries no status messages"},
	} {
		_, err := c.Fail(ctx, &testv1.FailRequest{Message: msg})
		assert.Equal(t, want.code, bankrpc.CodeOf(err), msg)
		assert.Contains(t, bankrpc.MessageOf(err), want.text, msg)
	}
	_, err := c.Progress(ctx, &testv1.ProgressRequest{})
	assert.Equal(t, bankrpc.Unimplemented, bankrpc.CodeOf(err), "an unimplemented method answers UNIMPLEMENTED")
	assert.Equal(t, "method Progress not implemented", bankrpc.MessageOf(err))
}

func TestServerLogsPanicsWithStack(t *testing.T) {
	var logs bytes.Buffer
	srv := bankrpc.NewServer(bankrpc.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(serving(srv)))
	_, err := c.Panic(context.Background(), &testv1.PanicRequest{Message: "boom"})
	assert.Equal(t, bankrpc.Internal, bankrpc.CodeOf(err))
	assert.Contains(t, logs.String(), "handler panicked")
	assert.Contains(t, logs.String(), "goroutine", "the stack is logged")
}

func TestServerInterceptor(t *testing.T) {
	var seen []string
	srv := bankrpc.NewServer(bankrpc.UnaryInterceptor(func(ctx context.Context, req any, info *bankrpc.UnaryServerInfo, h bankrpc.UnaryHandler) (any, error) {
		seen = append(seen, info.FullMethod)
		return h(ctx, req)
	}))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	resp, err := echo(t, serving(srv))
	require.NoError(t, err)
	assert.Equal(t, "x", resp.GetTag())
	assert.Equal(t, []string{testv1.TestService_Echo_FullMethodName}, seen)
}

func TestRegisterServiceRefusesMistakes(t *testing.T) {
	srv := bankrpc.NewServer()
	assert.PanicsWithValue(t, "bankrpc: RegisterService(bankrpc.test.v1.TestService): the implementation is nil", func() {
		srv.RegisterService(&testv1.TestService_ServiceDesc, nil)
	})
	var nilPtr *echoServer
	assert.Panics(t, func() { srv.RegisterService(&testv1.TestService_ServiceDesc, nilPtr) })
	assert.PanicsWithValue(t, "bankrpc: RegisterService(bankrpc.test.v1.TestService): string does not implement testv1.TestServiceServer", func() {
		srv.RegisterService(&testv1.TestService_ServiceDesc, "not a server")
	})
	testv1.RegisterTestServiceServer(srv, echoServer{})
	assert.PanicsWithValue(t, "bankrpc: RegisterService(bankrpc.test.v1.TestService): method /bankrpc.test.v1.TestService/Echo is already registered", func() {
		testv1.RegisterTestServiceServer(srv, echoServer{})
	})
}

func TestHandleFrameRefusesBadFrames(t *testing.T) {
	srv := bankrpc.NewServer(bankrpc.WithServerMaxFrameSize(64))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	for name, tc := range map[string]struct {
		frame []byte
		code  bankrpc.Code
	}{
		"garbage":   {[]byte("\xff\xff\xff"), bankrpc.InvalidArgument},
		"oversized": {make([]byte, 65), bankrpc.ResourceExhausted},
	} {
		reply, err := srv.HandleFrame(context.Background(), tc.frame)
		require.Error(t, err, name)
		assert.Equal(t, tc.code, bankrpc.CodeOf(err), name)
		res, derr := envelope.DecodeResult(reply, 0)
		require.NoError(t, derr, "a refused frame still gets a reply frame")
		assert.Equal(t, uint32(tc.code), res.GetCode(), name)
	}
}

func TestServerRefusesAnOversizedReply(t *testing.T) {
	srv := bankrpc.NewServer(bankrpc.WithServerMaxFrameSize(512))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(bankrpc.NewConn(serving(srv)))
	// The reply carries the call id twice (envelope and EchoResponse): with
	// a long id the request fits the limit and the reply does not. The
	// limit applies to the whole frame, not to the payload alone.
	longID := strings.Repeat("i", 300)
	_, err := c.Echo(context.Background(), &testv1.EchoRequest{}, bankrpc.WithCallID(longID))
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err), "error: %v", err)
	assert.Contains(t, bankrpc.MessageOf(err), "reply of")
	_, err = c.Echo(context.Background(), &testv1.EchoRequest{}, bankrpc.WithCallID(longID[:100]))
	assert.NoError(t, err)
}

func pairs(ctx context.Context) []string {
	md, _ := bankrpc.FromIncomingContext(ctx)
	var out []string
	for k, vs := range md {
		for _, v := range vs {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}
