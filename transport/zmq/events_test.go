package zmq_test

import (
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/transporttest"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// events records what the zmq backend reports to its transport.EventSink.
type events struct{ transporttest.Events }

func (e *events) sink() transport.EventSink { return e.Sink() }

func (e *events) count(kind transport.EventKind, reason string) int {
	return e.Count("zmq", kind, reason)
}

// The frames a server refuses before the runtime sees them are reported as
// refused_frame events, by reason, once each.
func TestServerReportsRefusedFrames(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	const limit = 1024
	var ev events
	s := serve(t, zmq.ServerConfig{MaxFrameSize: limit, Events: ev.sink()},
		newRPCServer(&svc{}, bankrpc.WithServerMaxFrameSize(limit)))

	d := rawPeer(t, zmq4.DEALER, s.Addr())
	require.NoError(t, d.SetRcvtimeo(5*time.Second))
	_, err := d.SendMessage("big-1", make([]byte, 2*limit))
	require.NoError(t, err)
	_, err = d.RecvMessageBytes(0)
	require.NoError(t, err, "a frame a little over the limit is answered")

	frames := make([]any, 20)
	for i := range frames {
		frames[i] = "frame"
	}
	_, err = d.SendMessage(frames...)
	require.NoError(t, err)
	serverStillServes(t, ctx, s.Addr())

	assert.Equal(t, 1, ev.count(transport.EventRefusedFrame, "oversized"))
	assert.Eventually(t, func() bool { return ev.count(transport.EventRefusedFrame, "routing frames") == 1 }, 5*time.Second, 10*time.Millisecond)
}

// A client whose server comes back reports one reconnection; its first
// connection is not one.
func TestClientReportsReconnection(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	first, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	addr := first.Addr()
	done := make(chan error, 1)
	go func() { done <- first.Serve(newRPCServer(&svc{})) }()
	var ev events
	c := stub(t, dial(t, addr, zmq.ClientConfig{Events: ev.sink()}))
	_, err = c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Zero(t, ev.count(transport.EventReconnect, "connection lost"), "the first connection is no reconnection")
	require.NoError(t, first.Shutdown(ctx))
	require.NoError(t, <-done)

	second, err := zmq.Listen(addr, zmq.ServerConfig{})
	require.NoError(t, err)
	serveOn(t, second, newRPCServer(&svc{}))
	_, err = c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Equal(t, 1, ev.count(transport.EventReconnect, "connection lost"))
}

// A reply to no call in flight (here: sent by a fake server with a made-up
// call id) is dropped and reported.
func TestClientReportsDroppedReplies(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	router := rawSocket(t, zmq4.ROUTER)
	require.NoError(t, router.Bind("tcp://127.0.0.1:*"))
	addr, err := router.GetLastEndpoint()
	require.NoError(t, err)
	var ev events
	c := stub(t, dial(t, addr, zmq.ClientConfig{Events: ev.sink()}))
	go func() { _, _ = c.Echo(ctx, &testv1.EchoRequest{Tag: "waits"}) }()

	require.NoError(t, router.SetRcvtimeo(5*time.Second))
	req, err := router.RecvMessageBytes(0)
	require.NoError(t, err)
	peer := req[0]
	_, err = router.SendMessage(peer, "no-such-call", echoFrame(t, "no-such-call", "stray"))
	require.NoError(t, err)
	_, err = router.SendMessage(peer, "three", "frames", "in all")
	require.NoError(t, err)
	assert.Eventually(t, func() bool {
		return ev.count(transport.EventDroppedReply, "no call in flight") == 1 &&
			ev.count(transport.EventDroppedReply, "malformed") == 1
	}, 5*time.Second, 10*time.Millisecond)
}
