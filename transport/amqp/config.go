package amqp

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// QueueType selects the RabbitMQ queue type of the durable queues: the
// service queue, its dead-letter queue and the clients' result and error
// queues.
type QueueType string

const (
	// QueueClassic is the default: a single-node queue, the fastest choice on
	// one broker. Servers count failed deliveries in a confirmed copy of the
	// request (see docs/protocol-amqp.md, section 6.2).
	QueueClassic QueueType = "classic"
	// QueueQuorum is a replicated Raft queue for a cluster; the broker counts
	// deliveries itself (x-delivery-limit).
	QueueQuorum QueueType = "quorum"
)

// Defaults applied to zero fields of ClientConfig and ServerConfig.
const (
	DefaultPrefetch       = 64
	DefaultDeliveryLimit  = 10
	DefaultResultPrefetch = 256
	DefaultOrphanReplies  = 10000
	DefaultAnonymousTTL   = time.Hour
	DefaultReconnectMin   = 50 * time.Millisecond
	DefaultReconnectMax   = 5 * time.Second
	defaultHeartbeat      = 10 * time.Second
	defaultDialTimeout    = 10 * time.Second
	nameReleaseWait       = 3 * time.Second // how long Dial waits for a dead connection to release its client name
	maxNameLen            = 200             // queue names are AMQP short strings: 255 bytes with our prefixes and suffixes
)

// ClientConfig configures Dial. Service is required; the zero value of every
// other field is a sensible default.
//
// A ClientConfig given to bankrpc.Dial with bankrpc.WithTransportConfig
// fills what the address does not say (see the package documentation).
type ClientConfig struct {
	// Service is the name of the service called, e.g. the bank name:
	// requests are routed to its queue, bankrpc.svc.<Service>.
	Service string
	// ClientName is the stable name of this client: its queues are
	// bankrpc.client.<ClientName>.{results,errors,status}. A client restarted
	// with the same name finds the replies sent while it was away. Only one
	// live connection may use a name at a time (its status queue is
	// exclusive): Dial waits up to 3 s for the broker to notice that a
	// previous holder died, then fails. Default: a random name,
	// whose queues the broker deletes after AnonymousQueueTTL unused.
	ClientName string
	// QueueType of the result and error queues (default QueueClassic).
	QueueType QueueType
	// QueueExpires, when positive, makes the broker delete the result and
	// error queues after they have had no consumer for this long (the
	// x-expires argument). Default: none for a named client (its replies wait
	// for it forever), AnonymousQueueTTL for a random one. Changing it for an
	// existing queue makes Dial fail with PRECONDITION_FAILED.
	QueueExpires time.Duration
	// Prefetch bounds the replies the broker sends before they are
	// acknowledged (default DefaultResultPrefetch).
	Prefetch int
	// NoUserID leaves out the user-id property. By default requests carry the
	// URL's user name as user-id; RabbitMQ refuses a message whose user-id is
	// not the connection's user, so servers can trust it as the caller's
	// identity (transport.Peer.Identity).
	NoUserID bool
	// OrphanReplies is how many replies to calls not in flight (the reply
	// to a call submitted before a restart, a reply that arrived after its
	// caller gave up) are kept until they are collected (bankrpc.Conn.Collect)
	// or taken by a call re-issued with the same call id (bankrpc.WithCallID);
	// default DefaultOrphanReplies. Beyond it the oldest is dropped, with a
	// warning in the log: it has been acknowledged, so it is lost.
	OrphanReplies int
	// OrphanTTL, when positive, is how long such a reply is kept at most.
	// Default: no limit.
	OrphanTTL time.Duration
	// MaxFrameSize, when positive, is the largest request frame sent and
	// reply frame accepted: a larger request fails with RESOURCE_EXHAUSTED
	// before it is published, a larger reply fails its call so. Default: no
	// limit in the transport (the runtime applies its own, and Dial through
	// bankrpc.Dial sets this field to it).
	MaxFrameSize int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts (defaults DefaultReconnectMin, DefaultReconnectMax).
	ReconnectMin, ReconnectMax time.Duration
	// ConnectionName is advertised to the broker as connection_name (shown by
	// rabbitmqctl list_connections client_properties). Default
	// "bankrpc client <ClientName> of <Service>".
	ConnectionName string
	// Dial opens the TCP connection; default net.Dialer with a 10 s timeout.
	Dial func(network, addr string) (net.Conn, error)
	// Logger receives reconnections and dropped messages; default discards.
	Logger *slog.Logger
	// Events receives reconnections, re-published requests and dropped
	// replies (transport.Event); nil drops them (bankrpc.Dial passes its
	// WithTransportEvents).
	Events transport.EventSink
}

// ServerConfig configures Listen. Service is required.
//
// A ServerConfig given to bankrpc.Listen with bankrpc.WithTransportConfig
// fills what the address does not say (see the package documentation).
type ServerConfig struct {
	// Service is the name of the service served, e.g. the bank name; every
	// replica of a service consumes the one queue bankrpc.svc.<Service>.
	Service string
	// Prefetch is the number of unacknowledged requests the broker delivers
	// to this server at once (default DefaultPrefetch).
	Prefetch int
	// Concurrency is the number of handlers run at once (default Prefetch).
	Concurrency int
	// QueueType of the service queue and its dead-letter queue (default
	// QueueClassic). All replicas must agree.
	QueueType QueueType
	// DeliveryLimit is how many times a request may be handed to a handler
	// without being answered (its server crashed or lost its connection each
	// time) before it is moved to the dead-letter queue
	// bankrpc.svc.<Service>.dead and its caller gets an Internal error.
	// Default DefaultDeliveryLimit; negative disables the limit. With quorum
	// queues it is also the queue's x-delivery-limit, so all replicas must
	// agree.
	DeliveryLimit int
	// SingleActiveConsumer declares the service queue with
	// x-single-active-consumer: of all the replicas only one receives
	// requests, the others stand by and take over when it goes away. Use it
	// for replicas in separate processes that must not serve at the same
	// time (a bank, single writer of its data directory). All replicas must
	// agree.
	SingleActiveConsumer bool
	// OwnQueuesOnly makes the server answer a request only into queues of
	// its caller: the request must carry a user-id (validated by the broker)
	// and name as reply_to the result queue of a client name equal to that
	// user-id or starting with it and a dot ("alice", "alice.teller-2").
	// Other requests are not run; they go to the dead-letter queue. Without
	// it a client can name another client's result queue as its reply_to.
	OwnQueuesOnly bool
	// MaxFrameSize, when positive, is the largest request frame handed to
	// the handler: a larger request is refused with RESOURCE_EXHAUSTED (an
	// error-queue message) without being decoded. Default: no limit in the
	// transport (the runtime applies its own, and Listen through
	// bankrpc.Listen sets this field to it).
	MaxFrameSize int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts (defaults DefaultReconnectMin, DefaultReconnectMax).
	ReconnectMin, ReconnectMax time.Duration
	// ConnectionName is advertised to the broker as connection_name. Default
	// "bankrpc server of <Service>".
	ConnectionName string
	// Dial opens the TCP connection; default net.Dialer with a 10 s timeout.
	Dial func(network, addr string) (net.Conn, error)
	// Logger receives reconnections, refused and dead-lettered requests;
	// default discards.
	Logger *slog.Logger
	// Events receives reconnections, redeliveries, refused and
	// dead-lettered requests (transport.Event); nil drops them
	// (bankrpc.Listen passes its WithTransportEvents).
	Events transport.EventSink
}

func checkQueueType(q QueueType) (QueueType, error) {
	switch q {
	case "", QueueClassic:
		return QueueClassic, nil
	case QueueQuorum:
		return QueueQuorum, nil
	}
	return "", status.Errorf(status.InvalidArgument, "amqp: queue type %q is neither %q nor %q", q, QueueClassic, QueueQuorum)
}

func checkName(what, name string) error {
	if name == "" {
		return status.Errorf(status.InvalidArgument, "amqp: %s is empty", what)
	}
	if len(name) > maxNameLen {
		return status.Errorf(status.InvalidArgument, "amqp: %s %q is %d bytes long; at most %d are allowed", what, name, len(name), maxNameLen)
	}
	return nil
}

func (c ClientConfig) withDefaults() (ClientConfig, error) {
	if err := checkName("ClientConfig.Service", c.Service); err != nil {
		return c, err
	}
	anonymous := c.ClientName == ""
	if anonymous {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		c.ClientName = "anon-" + hex.EncodeToString(b[:])
	}
	if err := checkName("ClientConfig.ClientName", c.ClientName); err != nil {
		return c, err
	}
	var err error
	if c.QueueType, err = checkQueueType(c.QueueType); err != nil {
		return c, err
	}
	if c.QueueExpires <= 0 && anonymous {
		c.QueueExpires = DefaultAnonymousTTL
	}
	c.Prefetch = orDefault(c.Prefetch, DefaultResultPrefetch)
	c.OrphanReplies = orDefault(c.OrphanReplies, DefaultOrphanReplies)
	c.ReconnectMin = orDefault(c.ReconnectMin, DefaultReconnectMin)
	c.ReconnectMax = max(orDefault(c.ReconnectMax, DefaultReconnectMax), c.ReconnectMin)
	if c.ConnectionName == "" {
		c.ConnectionName = "bankrpc client " + c.ClientName + " of " + c.Service
	}
	c.Logger = orDiscard(c.Logger)
	return c, nil
}

func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if err := checkName("ServerConfig.Service", c.Service); err != nil {
		return c, err
	}
	var err error
	if c.QueueType, err = checkQueueType(c.QueueType); err != nil {
		return c, err
	}
	c.Prefetch = orDefault(c.Prefetch, DefaultPrefetch)
	c.Concurrency = orDefault(c.Concurrency, c.Prefetch)
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = DefaultDeliveryLimit
	}
	c.ReconnectMin = orDefault(c.ReconnectMin, DefaultReconnectMin)
	c.ReconnectMax = max(orDefault(c.ReconnectMax, DefaultReconnectMax), c.ReconnectMin)
	if c.ConnectionName == "" {
		c.ConnectionName = "bankrpc server of " + c.Service
	}
	c.Logger = orDiscard(c.Logger)
	return c, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}
