package transport_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/codec"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
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
func serving(srv *transport.Server) backendFunc {
	return func(ctx context.Context, call *transport.Call) ([]byte, error) {
		reply, _ := srv.HandleFrame(context.Background(), call.Frame)
		return reply, nil
	}
}

func echo(t *testing.T, b transport.ClientTransport, opts ...transport.CallOption) (*testv1.EchoResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return testv1.NewTestServiceClient(transport.NewConn(b)).Echo(ctx, &testv1.EchoRequest{Tag: "x"}, opts...)
}

func TestConnGivesBackendErrorsACode(t *testing.T) {
	_, err := echo(t, backendFunc(func(context.Context, *transport.Call) ([]byte, error) {
		return nil, errors.New("connection refused")
	}))
	assert.Equal(t, transport.Unavailable, transport.CodeOf(err))
	assert.Contains(t, err.Error(), "connection refused")
	assert.Contains(t, err.Error(), testv1.TestService_Echo_FullMethodName)

	_, err = echo(t, backendFunc(func(context.Context, *transport.Call) ([]byte, error) {
		return nil, transport.Errorf(transport.PermissionDenied, "key not allowed")
	}))
	assert.Equal(t, transport.PermissionDenied, transport.CodeOf(err), "a backend's own code is kept")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err = transport.NewConn(backendFunc(func(ctx context.Context, _ *transport.Call) ([]byte, error) {
		<-ctx.Done()
		return nil, transport.Errorf(transport.Unavailable, "no reply from tcp://127.0.0.1:4040 after 3 attempts")
	})).Invoke(ctx, "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.Equal(t, transport.Unavailable, transport.CodeOf(err), "the backend's reason outlives the deadline that ended the wait")
	assert.Contains(t, err.Error(), "tcp://127.0.0.1:4040")
}

func TestConnRefusesBadReplies(t *testing.T) {
	for name, tc := range map[string]struct {
		reply func(call *transport.Call) []byte
		code  transport.Code
		msg   string
	}{
		"garbage": {func(*transport.Call) []byte { return []byte{0xff, 0xff} }, transport.Internal, "malformed envelope"},
		"other call's reply": {func(*transport.Call) []byte {
			return codec.AppendResult(nil, []byte("someone-else"), 0, "", nil, nil)
		}, transport.Internal, `is for call "someone-else"`},
		"undecodable payload": {func(c *transport.Call) []byte {
			return codec.AppendResult(nil, []byte(c.ID), 0, "", []byte{0xff}, nil)
		}, transport.Internal, "decode"},
		"oversized": {func(c *transport.Call) []byte {
			return codec.AppendResult(nil, []byte(c.ID), 0, "", make([]byte, codec.DefaultMaxFrameSize), nil)
		}, transport.ResourceExhausted, "exceeds the limit"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := echo(t, backendFunc(func(_ context.Context, call *transport.Call) ([]byte, error) {
				return tc.reply(call), nil
			}))
			assert.Equal(t, tc.code, transport.CodeOf(err), "error: %v", err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestConnSendsIDDeadlineAndMetadata(t *testing.T) {
	srv := transport.NewServer()
	testv1.RegisterTestServiceServer(srv, echoServer{})
	var seen *transport.Call
	b := backendFunc(func(ctx context.Context, call *transport.Call) ([]byte, error) {
		seen = call
		return serving(srv)(ctx, call)
	})
	conn := transport.NewConn(b, transport.WithDefaultTimeout(3*time.Second))
	c := testv1.NewTestServiceClient(conn)
	before := time.Now()
	resp, err := c.Echo(context.Background(), &testv1.EchoRequest{Tag: "x"}, transport.WithMetadata("k", "v"), transport.WithCallID("id-1"))
	require.NoError(t, err)
	assert.Equal(t, "id-1", seen.ID)
	assert.Equal(t, "id-1", resp.GetCallId())
	assert.Equal(t, testv1.TestService_Echo_FullMethodName, seen.Method)
	assert.WithinRange(t, seen.Deadline, before.Add(3*time.Second), time.Now().Add(3*time.Second), "the default timeout sets the deadline")
	assert.Equal(t, seen.Deadline.UnixNano(), resp.GetDeadlineUnixNano(), "the absolute deadline travels in the envelope")
	assert.Equal(t, map[string]string{"k": "v"}, resp.GetMetadata())

	a, b2 := conn.NewCallID(), conn.NewCallID()
	other := transport.NewConn(b).NewCallID()
	assert.NotEqual(t, a, b2)
	assert.NotEqual(t, strings.Split(a, "-")[0], strings.Split(other, "-")[0], "call ids of two Conns differ in their random prefix")
}

func TestConnCloseIsIdempotent(t *testing.T) {
	var closes atomic.Int32
	conn := transport.NewConn(closeCounter{&closes})
	require.NoError(t, conn.Close())
	require.NoError(t, conn.Close())
	assert.Equal(t, int32(1), closes.Load(), "the backend is closed once")
	err := conn.Invoke(context.Background(), "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.ErrorIs(t, err, transport.ErrClosed)
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
	err := transport.NewConn(b).Invoke(ctx, "/s.S/M", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	assert.Equal(t, transport.Canceled, transport.CodeOf(err))
}

// echoServer answers Echo with what the server saw.
type echoServer struct {
	testv1.UnimplementedTestServiceServer
}

func (echoServer) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	out := &testv1.EchoResponse{Tag: in.GetTag(), Payload: in.GetPayload(), CallId: transport.CallIDFromContext(ctx), Metadata: transport.MetadataFromContext(ctx)}
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
		return nil, transport.Errorf(transport.Internal, "bad \xff byte")
	}
	return nil, transport.SendStatus(ctx, transport.Status{Reason: "no sink"})
}

func (echoServer) Panic(_ context.Context, in *testv1.PanicRequest) (*testv1.PanicResponse, error) {
	panic(in.GetMessage())
}

func (echoServer) Sleep(context.Context, *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	return &testv1.SleepResponse{}, nil
}

func TestServerMapsHandlerErrors(t *testing.T) {
	srv := transport.NewServer()
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(transport.NewConn(serving(srv)))
	ctx := context.Background()
	for msg, want := range map[string]struct {
		code transport.Code
		text string
	}{
		"foreign":  {transport.Unknown, "disk full"},
		"deadline": {transport.DeadlineExceeded, "deadline exceeded"},
		"bad utf8": {transport.Internal, "bad \uFFFD byte"},
		"sink":     {transport.Unimplemented, "this transport carries no status messages"},
	} {
		_, err := c.Fail(ctx, &testv1.FailRequest{Message: msg})
		assert.Equal(t, want.code, transport.CodeOf(err), msg)
		assert.Contains(t, transport.MessageOf(err), want.text, msg)
	}
	_, err := c.Progress(ctx, &testv1.ProgressRequest{})
	assert.Equal(t, transport.Unimplemented, transport.CodeOf(err), "an unimplemented method answers UNIMPLEMENTED")
	assert.Equal(t, "method Progress not implemented", transport.MessageOf(err))
}

func TestServerLogsPanicsWithStack(t *testing.T) {
	var logs bytes.Buffer
	srv := transport.NewServer(transport.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(transport.NewConn(serving(srv)))
	_, err := c.Panic(context.Background(), &testv1.PanicRequest{Message: "boom"})
	assert.Equal(t, transport.Internal, transport.CodeOf(err))
	assert.Contains(t, logs.String(), "handler panicked")
	assert.Contains(t, logs.String(), "goroutine", "the stack is logged")
}

func TestServerInterceptor(t *testing.T) {
	var seen []string
	srv := transport.NewServer(transport.WithUnaryInterceptor(func(ctx context.Context, req any, info *transport.UnaryServerInfo, h transport.UnaryHandler) (any, error) {
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
	srv := transport.NewServer()
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
	srv := transport.NewServer(transport.WithServerMaxFrameSize(64))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	for name, tc := range map[string]struct {
		frame []byte
		code  transport.Code
	}{
		"garbage":   {[]byte("\xff\xff\xff"), transport.InvalidArgument},
		"oversized": {make([]byte, 65), transport.ResourceExhausted},
	} {
		reply, err := srv.HandleFrame(context.Background(), tc.frame)
		require.Error(t, err, name)
		assert.Equal(t, tc.code, transport.CodeOf(err), name)
		res, derr := codec.DecodeResult(reply, 0)
		require.NoError(t, derr, "a refused frame still gets a reply frame")
		assert.Equal(t, uint32(tc.code), res.GetCode(), name)
	}
}

func TestServerRefusesAnOversizedReply(t *testing.T) {
	srv := transport.NewServer(transport.WithServerMaxFrameSize(512))
	testv1.RegisterTestServiceServer(srv, echoServer{})
	c := testv1.NewTestServiceClient(transport.NewConn(serving(srv)))
	// The reply carries the call id twice (envelope and EchoResponse): with
	// a long id the request fits the limit and the reply does not. The
	// limit applies to the whole frame, not to the payload alone.
	longID := strings.Repeat("i", 300)
	_, err := c.Echo(context.Background(), &testv1.EchoRequest{}, transport.WithCallID(longID))
	assert.Equal(t, transport.ResourceExhausted, transport.CodeOf(err), "error: %v", err)
	assert.Contains(t, transport.MessageOf(err), "reply of")
	_, err = c.Echo(context.Background(), &testv1.EchoRequest{}, transport.WithCallID(longID[:100]))
	assert.NoError(t, err)
}
