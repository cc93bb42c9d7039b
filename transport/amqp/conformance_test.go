package amqp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"github.com/bankrpc/bankrpc/transport/transporttest"
)

func TestConformance(t *testing.T) {
	runConformance(t, QueueClassic)
}

// TestConformanceQuorum runs the suite with quorum queues, the choice for a
// cluster (here a single node).
func TestConformanceQuorum(t *testing.T) {
	runConformance(t, QueueQuorum)
}

func runConformance(t *testing.T, qt QueueType) {
	url := amqptest.URL(t)
	features := transporttest.Features{
		ConcurrentHandlers:    true,
		Status:                true,
		Persistent:            true,
		SurvivesServerRestart: true,
		// A cancel goes through the broker: client, cancel exchange, the
		// server's cancel queue.
		CancelWithin: time.Second,
	}
	transporttest.Run(t, features, func(t *testing.T) transporttest.Endpoint {
		cfg := ServerConfig{Service: uniqueName(t), QueueType: qt, Logger: testLogger(t)}
		srv := listen(t, url, cfg)
		return transporttest.Endpoint{
			Server: srv,
			Dial: func(t *testing.T) transport.ClientTransport {
				c, err := Dial(url, ClientConfig{Service: cfg.Service, ClientName: uniqueName(t), QueueType: qt, Logger: testLogger(t)})
				require.NoError(t, err)
				deleteQueues(t, url, ResultQueue(c.Name()), ErrorQueue(c.Name()))
				return c
			},
			Restart: func(t *testing.T) transport.ServerTransport {
				require.NoError(t, srv.Close())
				next, err := Listen(url, cfg)
				require.NoError(t, err)
				srv = next
				return next
			},
		}
	})
}
