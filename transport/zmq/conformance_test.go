package zmq_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/transporttest"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

func TestConformance(t *testing.T) {
	features := transporttest.Features{ConcurrentHandlers: true, SurvivesServerRestart: true}
	transporttest.Run(t, features, func(t *testing.T) transporttest.Endpoint {
		s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		addr := s.Addr()
		return transporttest.Endpoint{
			Server: s,
			Dial: func(t *testing.T) transport.ClientTransport {
				c, err := zmq.Dial(addr, zmq.ClientConfig{})
				require.NoError(t, err)
				return c
			},
			Restart: func(t *testing.T) transport.ServerTransport {
				require.NoError(t, s.Close())
				next, err := zmq.Listen(addr, zmq.ServerConfig{})
				require.NoError(t, err, "listen again on %s", addr)
				t.Cleanup(func() { assert.NoError(t, next.Close()) })
				return next
			},
		}
	})
}
