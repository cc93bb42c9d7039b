package zmq_test

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// rawPeer connects a raw socket of type typ to addr.
func rawPeer(t *testing.T, typ zmq4.Type, addr string) *zmq4.Socket {
	t.Helper()
	s := rawSocket(t, typ)
	require.NoError(t, s.Connect(addr))
	return s
}

// resultCode decodes a result envelope and returns its code.
func resultCode(t *testing.T, frame []byte) bankrpc.Code {
	t.Helper()
	res, err := envelope.DecodeResult(frame, 0)
	require.NoError(t, err)
	return bankrpc.Code(res.GetCode())
}

// serverStillServes checks that a well-behaved client is answered.
func serverStillServes(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	resp, err := stub(t, dial(t, addr, zmq.ClientConfig{})).Echo(ctx, &testv1.EchoRequest{Tag: "still serving"})
	require.NoError(t, err, "the server must keep serving")
	assert.Equal(t, "still serving", resp.GetTag())
}

// A plain REQ socket, as a C or Python client would use, sends one envelope
// frame and gets one result frame.
func TestPlainREQClient(t *testing.T) {
	s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	req := rawPeer(t, zmq4.REQ, s.Addr())
	_, err := req.SendBytes(echoFrame(t, "req-1", "from REQ"), 0)
	require.NoError(t, err)
	reply, err := req.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, reply, 1)
	assert.Equal(t, "from REQ", echoTag(t, reply[0]))
}

// Every frame between the routing id and the envelope comes back, whatever
// their number, so that replies route through DEALER/ROUTER proxies.
func TestRoutingFramesEchoed(t *testing.T) {
	s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	d := rawPeer(t, zmq4.DEALER, s.Addr())
	for _, route := range [][]string{nil, {"call-7"}, {"hop-a", "", "call-8"}} {
		msg := []any{}
		for _, r := range route {
			msg = append(msg, r)
		}
		msg = append(msg, echoFrame(t, "id", "routed"))
		_, err := d.SendMessage(msg...)
		require.NoError(t, err)
		reply, err := d.RecvMessageBytes(0)
		require.NoError(t, err)
		require.Len(t, reply, len(route)+1, "route %q", route)
		for i, r := range route {
			assert.Equal(t, r, string(reply[i]))
		}
		assert.Equal(t, "routed", echoTag(t, reply[len(route)]))
	}
}

func TestTooManyFramesDropped(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	logs := &logRecorder{}
	s := serve(t, zmq.ServerConfig{Logger: logs.logger()}, newRPCServer(&svc{}))
	d := rawPeer(t, zmq4.DEALER, s.Addr())
	require.NoError(t, d.SetRcvtimeo(300*time.Millisecond))
	frames := make([]any, 20)
	for i := range frames {
		frames[i] = "frame"
	}
	_, err := d.SendMessage(frames...)
	require.NoError(t, err)
	_, err = d.RecvMessageBytes(0)
	assert.Equal(t, zmq4.Errno(syscall.EAGAIN), zmq4.AsErrno(err), "no reply can be routed: %v", err)
	assert.True(t, logs.has("too many routing frames"))

	// The same connection is still served.
	require.NoError(t, d.SetRcvtimeo(5*time.Second))
	_, err = d.SendMessage("call-9", echoFrame(t, "call-9", "after"))
	require.NoError(t, err)
	reply, err := d.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, reply, 2)
	assert.Equal(t, "after", echoTag(t, reply[1]))
	serverStillServes(t, ctx, s.Addr())
}

func TestRandomBytesAnswered(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{}))
	garbage := make([]byte, 300)
	_, _ = rand.Read(garbage)

	d := rawPeer(t, zmq4.DEALER, s.Addr())
	_, err := d.SendMessage("junk-1", garbage)
	require.NoError(t, err)
	reply, err := d.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, reply, 2)
	assert.Equal(t, "junk-1", string(reply[0]))
	assert.Equal(t, bankrpc.InvalidArgument, resultCode(t, reply[1]))

	req := rawPeer(t, zmq4.REQ, s.Addr())
	_, err = req.SendBytes(garbage, 0)
	require.NoError(t, err)
	one, err := req.RecvBytes(0)
	require.NoError(t, err)
	assert.Equal(t, bankrpc.InvalidArgument, resultCode(t, one))
	serverStillServes(t, ctx, s.Addr())
}

// A frame a little over the limit is answered RESOURCE_EXHAUSTED; one far
// over it costs its sender the connection (libzmq's ZMQ_MAXMSGSIZE), and
// everybody else is still served.
func TestOversizedFrames(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	const limit = 1024
	logs := &logRecorder{}
	s := serve(t, zmq.ServerConfig{MaxFrameSize: limit, Logger: logs.logger()},
		newRPCServer(&svc{}, bankrpc.WithServerMaxFrameSize(limit)))

	d := rawPeer(t, zmq4.DEALER, s.Addr())
	_, err := d.SendMessage("big-1", make([]byte, 2*limit))
	require.NoError(t, err)
	reply, err := d.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, reply, 2)
	assert.Equal(t, bankrpc.ResourceExhausted, resultCode(t, reply[1]))
	assert.True(t, logs.has("over the size limit"))

	huge := rawPeer(t, zmq4.DEALER, s.Addr())
	require.NoError(t, huge.SetRcvtimeo(500*time.Millisecond))
	_, err = huge.SendMessage("big-2", make([]byte, limit+200<<10))
	require.NoError(t, err)
	_, err = huge.RecvMessageBytes(0)
	assert.Equal(t, zmq4.Errno(syscall.EAGAIN), zmq4.AsErrno(err), "the connection is dropped, no reply: %v", err)
	serverStillServes(t, ctx, s.Addr())
}

// A REQ peer that disconnects while its call runs: the reply has nowhere to
// go, the server logs it and serves the others.
func TestREQPeerDisconnectsMidCall(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	logs := &logRecorder{}
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	rpc := newRPCServer(&svc{})
	var first atomic.Bool
	s := serve(t, zmq.ServerConfig{Logger: logs.logger()}, handlerFunc(func(ctx context.Context, frame []byte) ([]byte, error) {
		if first.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-release
		}
		return rpc.HandleFrame(ctx, frame)
	}))

	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	req, err := zctx.NewSocket(zmq4.REQ)
	require.NoError(t, err)
	require.NoError(t, req.SetLinger(0))
	require.NoError(t, req.Connect(s.Addr()))
	_, err = req.SendBytes(echoFrame(t, "gone-1", "nobody listens"), 0)
	require.NoError(t, err)
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the handler was not called")
	}
	require.NoError(t, req.Close())
	require.NoError(t, zctx.Term())
	time.Sleep(100 * time.Millisecond) // the server's I/O thread sees the disconnect
	close(release)

	require.Eventually(t, func() bool { return logs.has("the peer disconnected") }, 5*time.Second, 10*time.Millisecond)
	serverStillServes(t, ctx, s.Addr())
}
