package amqp

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/transporttest"
)

func TestConformance(t *testing.T) {
	url := brokerURL(t)
	features := transporttest.Features{ConcurrentHandlers: true, Status: true, Persistent: true, SurvivesServerRestart: true}
	transporttest.Run(t, features, func(t *testing.T) transporttest.Endpoint {
		cfg := ServerConfig{Service: uniqueName(t), Logger: testLogger(t)}
		srv := listen(t, url, cfg)
		return transporttest.Endpoint{
			Server: srv,
			Dial: func(t *testing.T) transport.ClientTransport {
				c, err := Dial(url, ClientConfig{Service: cfg.Service, ClientName: uniqueName(t), Logger: testLogger(t)})
				require.NoError(t, err)
				deleteQueues(t, url, ResultQueue(c.Name()), ErrorQueue(c.Name()))
				return c
			},
			Restart: func(t *testing.T) transport.ServerTransport {
				require.NoError(t, srv.Close())
				next, err := Listen(url, cfg)
				require.NoError(t, err)
				return next
			},
		}
	})
}
