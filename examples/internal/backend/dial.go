package backend

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// OneShotQueueExpiry is how long the broker keeps the result and error
// queues of a client without --client-name once the client is gone. Nobody
// reads them after that: such a client's name is random and never reused.
const OneShotQueueExpiry = time.Minute

// Listen binds the server half of t's backend. For ZeroMQ it binds the
// endpoint at once (a port in use fails here); for AMQP it connects to the
// broker and declares the bank's service queue. The queue is declared with
// single active consumer: a bank is the only writer of its data directory,
// so of several bank-server processes serving one bank name only one takes
// requests at a time and the others stand by. It returns the transport and
// the address it serves on, for people to read.
func Listen(t Target, opts ServerOptions) (transport.ServerTransport, string, error) {
	switch t.Kind {
	case ZMQ:
		s, err := zmq.Listen(t.Addr, zmq.ServerConfig{Logger: opts.Logger, Events: opts.Events})
		if err != nil {
			return nil, "", err
		}
		return s, s.Addr(), nil
	case AMQP:
		s, err := amqp.Listen(t.Addr, amqp.ServerConfig{
			Service:              t.Bank,
			QueueType:            amqp.QueueType(t.Queue), // the address's ?queue= wins
			SingleActiveConsumer: true,
			ConnectionName:       "bank-server " + t.Bank,
			Logger:               opts.Logger,
			Events:               opts.Events,
		})
		if err != nil {
			return nil, "", err
		}
		return s, fmt.Sprintf("%s (queue %s)", Redact(t.Addr), amqp.ServiceQueue(t.Bank)), nil
	}
	return nil, "", fmt.Errorf("backend: unknown kind %q", t.Kind)
}

// ServerOptions configures Listen.
type ServerOptions struct {
	// Logger receives the backend's reports; nil discards them.
	Logger *slog.Logger
	// Events receives the backend's events (reconnections, refused
	// frames, ...), e.g. metrics.TransportMetrics.Sink(); nil drops them.
	Events transport.EventSink
}

// ClientOptions configures Dial.
type ClientOptions struct {
	// Account is the account the client acts for; it goes into the default
	// AMQP client name.
	Account int32
	// ClientName is the stable AMQP client name (--client-name); empty picks
	// a random one, see Dial. Ignored by ZeroMQ.
	ClientName string
	// Logger receives the backend's connection events; nil discards them.
	Logger *slog.Logger
	// Events receives the backend's events; nil drops them.
	Events transport.EventSink
}

// Dial returns the client half of t's backend. ZeroMQ connects in the
// background: an absent server shows as calls failing with Unavailable at
// their deadline. AMQP connects to the broker now and checks that the
// bank's queue exists (a bank-server declared it once), failing otherwise.
//
// AMQP client names: replies go to durable queues named after the client.
// Without opts.ClientName the name is "<bank>.account-<id>.<random>", so
// that any number of clients, even for the same account, run at once
// without taking each other's replies, and their queues expire
// OneShotQueueExpiry after they exit. A stable ClientName keeps its queues
// (a restarted client finds the replies sent while it was away) but only one
// process may use it at a time: a second one fails to Dial.
func Dial(t Target, opts ClientOptions) (transport.ClientTransport, error) {
	switch t.Kind {
	case ZMQ:
		return zmq.Dial(t.Addr, zmq.ClientConfig{Logger: opts.Logger, Events: opts.Events})
	case AMQP:
		cfg := amqp.ClientConfig{Service: t.Bank, ClientName: opts.ClientName, QueueType: amqp.QueueType(t.Queue), Logger: opts.Logger, Events: opts.Events}
		if cfg.ClientName == "" {
			var b [6]byte
			_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
			cfg.ClientName = fmt.Sprintf("%s.account-%d.%s", t.Bank, opts.Account, hex.EncodeToString(b[:]))
			cfg.QueueExpires = OneShotQueueExpiry
		}
		return amqp.Dial(t.Addr, cfg)
	}
	return nil, fmt.Errorf("backend: unknown kind %q", t.Kind)
}
