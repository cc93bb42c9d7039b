package zmq

import (
	"context"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request with far more route frames than allowed is dropped without its
// frames being kept: the server's memory does not grow with a peer's frame
// count.
func TestRecvKeepsNoFramesPastTheRouteLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Listen("tcp://127.0.0.1:0", ServerConfig{})
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.Close()) }()

	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	d, err := zctx.NewSocket(zmq4.DEALER)
	require.NoError(t, err)
	defer func() {
		assert.NoError(t, d.Close())
		assert.NoError(t, zctx.Term())
	}()
	require.NoError(t, d.SetLinger(0))
	require.NoError(t, d.Connect(s.Addr()))
	frames := make([]any, 1000)
	for i := range frames {
		frames[i] = "frame"
	}
	_, err = d.SendMessage(frames...)
	require.NoError(t, err)

	// No Serve: the test owns the ROUTER and reads the request itself.
	p := zmq4.NewPoller()
	p.Add(s.router, zmq4.POLLIN)
	for {
		polled, err := p.Poll(10 * time.Millisecond)
		require.NoError(t, err)
		if len(polled) > 0 {
			break
		}
		require.NoError(t, ctx.Err(), "the request did not arrive")
	}
	var j job
	ok, more := s.recv(&j)
	assert.False(t, ok, "a request over the route frame limit is dropped")
	assert.True(t, more)
	assert.LessOrEqual(t, len(j.route), maxRouteFrames, "route frames kept")
}
