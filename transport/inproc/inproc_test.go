package inproc_test

import (
	"testing"

	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/inproc"
	"github.com/bankrpc/bankrpc/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Features{ConcurrentHandlers: true, Status: true},
		func(t *testing.T) transporttest.Endpoint {
			l := inproc.NewListener()
			return transporttest.Endpoint{
				Server: l,
				Dial:   func(*testing.T) transport.ClientTransport { return l.Dial() },
			}
		})
}
