package zmq_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/transporttest"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

var features = transporttest.Features{ConcurrentHandlers: true, Status: true, SurvivesServerRestart: true}

// The plain-text backend, opened through the scheme registry as
// bankrpc.Listen and bankrpc.Dial open it.
func TestConformance(t *testing.T) {
	transporttest.Run(t, features, func(t *testing.T) transporttest.Endpoint {
		listen := func(addr string) *zmq.Server {
			l, err := bankrpc.Listen(context.Background(), addr)
			require.NoError(t, err, "listen on %s", addr)
			s, ok := l.(*zmq.Server)
			require.True(t, ok, "bankrpc.Listen of a zmq:// address returns a *zmq.Server, not %T", l)
			return s
		}
		s := listen("zmq://127.0.0.1:0")
		// Registered before the suite's own cleanups, so it runs after them.
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		addr := s.URL()
		return transporttest.Endpoint{
			Server: s,
			Dial: func(t *testing.T) transport.ClientTransport {
				u, scheme, err := transport.Lookup(addr)
				require.NoError(t, err)
				c, err := scheme.Dial(context.Background(), u, transport.Options{Logger: discard, MaxFrameSize: bankrpc.DefaultMaxFrameSize})
				require.NoError(t, err)
				return c
			},
			Restart: func(t *testing.T) transport.ServerTransport {
				require.NoError(t, s.Close())
				s = listen(addr)
				return s
			},
		}
	})
}

// The same suite with CURVE encryption and an allow-list, through the
// package's own constructors.
func TestConformanceCurve(t *testing.T) {
	server, client := newKeypair(t), newKeypair(t)
	serverCfg := zmq.ServerConfig{Curve: &zmq.CurveServer{PublicKey: server.public, SecretKey: server.secret, AllowedClients: []string{client.public}}}
	clientCfg := zmq.ClientConfig{Curve: curveClient(server, client)}
	transporttest.Run(t, features, func(t *testing.T) transporttest.Endpoint {
		listen := func(addr string) *zmq.Server {
			s, err := zmq.Listen(addr, serverCfg)
			require.NoError(t, err, "listen on %s", addr)
			return s
		}
		s := listen("tcp://127.0.0.1:0")
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		addr := s.Addr()
		return transporttest.Endpoint{
			Server: s,
			Dial: func(t *testing.T) transport.ClientTransport {
				c, err := zmq.Dial(addr, clientCfg)
				require.NoError(t, err)
				return c
			},
			Restart: func(t *testing.T) transport.ServerTransport {
				require.NoError(t, s.Close())
				s = listen(addr)
				return s
			},
		}
	})
}
