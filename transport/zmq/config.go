package zmq

import (
	"log/slog"
	"runtime"
	"strings"
	"time"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Defaults applied to zero fields of ServerConfig and ClientConfig.
const (
	// DefaultMaxFrameSize is the default limit on an envelope frame, the
	// same 4 MiB as bankrpc.DefaultMaxFrameSize.
	DefaultMaxFrameSize = 4 << 20
	// DefaultDeadAfter is how long a call waits for a connection to the
	// server before it fails with UNAVAILABLE.
	DefaultDeadAfter = 5 * time.Second
	// DefaultHeartbeatInterval is how often a client sends a ZMTP PING.
	DefaultHeartbeatInterval = time.Second
	// DefaultHeartbeatTimeout is how long a client waits without any traffic
	// from the server before it drops the connection.
	DefaultHeartbeatTimeout = 5 * time.Second
	// DefaultHWM is the high-water mark, in messages, of every socket's send
	// and receive queues (per peer).
	DefaultHWM = 4096
)

// frameHeadroom is added to MaxFrameSize to get ZMQ_MAXMSGSIZE, the largest
// frame libzmq accepts before it drops the connection. A frame a little over
// the limit still reaches the handler, which answers RESOURCE_EXHAUSTED; only
// a grossly oversized one costs the peer its connection.
const frameHeadroom = 64 << 10

// ServerConfig configures a Server. The zero value is usable. Through
// bankrpc.Listen it is given with bankrpc.WithTransportConfig.
type ServerConfig struct {
	// Workers is the number of handlers that may run at once (default
	// max(64, 8×GOMAXPROCS)); Serve runs Workers+1 goroutines, one of which
	// at a time owns the socket. Handlers usually wait on disk or locks (the
	// bank fsyncs), so the pool is sized for waiting, not for CPU. When
	// Workers requests are in flight and as many more wait for a handler,
	// the server stops reading requests and libzmq queues them, up to the
	// high-water mark.
	Workers int
	// MaxFrameSize sets ZMQ_MAXMSGSIZE to MaxFrameSize plus 64 KiB (default
	// DefaultMaxFrameSize, or bankrpc's WithServerMaxFrameSize through
	// bankrpc.Listen). The exact limit is the handler's: give the
	// bankrpc.Server the same value (WithServerMaxFrameSize) so that a
	// slightly oversized frame is answered RESOURCE_EXHAUSTED.
	MaxFrameSize int
	// Logger receives refused frames, dropped replies and refused CURVE
	// keys. Nil discards them (bankrpc.Listen passes its WithLogger).
	Logger *slog.Logger
	// Events receives the frames the server refuses (transport.Event, kind
	// refused_frame); nil drops them (bankrpc.Listen passes its
	// WithTransportEvents).
	Events transport.EventSink
	// Curve turns CURVE encryption and client authentication on; nil leaves
	// the socket in plain text (ZeroMQ's NULL mechanism).
	Curve *CurveServer

	// heartbeat and heartbeatTimeout are the server's ZMTP heartbeats
	// (serverHeartbeatInterval, serverHeartbeatTimeout unless a test sets
	// them through WithServerHeartbeat).
	heartbeat, heartbeatTimeout time.Duration
}

// ClientConfig configures a Client. The zero value is usable. Through
// bankrpc.Dial it is given with bankrpc.WithTransportConfig.
//
// A call waits for its reply as long as the server is alive, with or
// without a deadline; it is never resent on a timer. The client takes the
// server for dead when it has had no connection to it for DeadAfter: no
// connection yet, one that dropped (the server closed it, or sent no
// traffic for HeartbeatTimeout) and is not back, or handshakes that fail.
type ClientConfig struct {
	// DeadAfter is how long a call waits for a connection to the server:
	// a call that has had none for DeadAfter (counted from the later of its
	// start and the loss of the connection) fails with UNAVAILABLE, naming
	// the endpoint and the reason. A server back within DeadAfter gets the
	// calls in flight again and answers them. Default DefaultDeadAfter.
	DeadAfter time.Duration
	// HeartbeatInterval is how often the client sends a ZMTP PING
	// (ZMQ_HEARTBEAT_IVL; default DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration
	// HeartbeatTimeout drops a connection on which nothing arrived for that
	// long (ZMQ_HEARTBEAT_TIMEOUT; default DefaultHeartbeatTimeout), so that
	// a frozen or unplugged server is noticed; DeadAfter counts from then.
	// A live server answers PINGs from libzmq's I/O thread, however long its
	// handlers run.
	HeartbeatTimeout time.Duration
	// MaxFrameSize is the largest request frame sent and reply frame
	// accepted; ZMQ_MAXMSGSIZE is set 64 KiB above it (default
	// DefaultMaxFrameSize, or bankrpc's WithMaxFrameSize through
	// bankrpc.Dial).
	MaxFrameSize int
	// Curve turns CURVE encryption on; the server must use CURVE too.
	Curve *CurveClient
	// Logger receives connection events and dropped replies. Nil discards
	// them (bankrpc.Dial passes its WithLogger).
	Logger *slog.Logger
	// Events receives reconnections and dropped replies (transport.Event);
	// nil drops them (bankrpc.Dial passes its WithTransportEvents).
	Events transport.EventSink

	// reconnect, when set (by tests), replaces the reconnection interval and
	// turns its back-off off.
	reconnect time.Duration
}

// CurveServer is a server's CURVE keypair and allow-list. Keys are 40
// character Z85 strings as NewCurveKeypair returns them.
type CurveServer struct {
	PublicKey, SecretKey string
	// AllowedClients lists the client public keys the server accepts; empty
	// accepts any client that completes the handshake (encryption without
	// authentication). The accepted key is the handler's
	// transport.Peer.Identity either way.
	AllowedClients []string
}

// CurveClient is a client's CURVE keypair and the public key of the server
// it trusts.
type CurveClient struct {
	ServerPublicKey, PublicKey, SecretKey string
}

// NewCurveKeypair returns a fresh CURVE keypair in Z85.
func NewCurveKeypair() (public, secret string, err error) {
	public, secret, err = zmq4.NewCurveKeypair()
	if err != nil {
		return "", "", status.Errorf(status.Internal, "zmq: generate a CURVE keypair: %v", err)
	}
	return public, secret, nil
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Workers <= 0 {
		c.Workers = max(64, 8*runtime.GOMAXPROCS(0))
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.heartbeat <= 0 || c.heartbeatTimeout <= 0 {
		c.heartbeat, c.heartbeatTimeout = serverHeartbeatInterval, serverHeartbeatTimeout
	}
	return c
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.DeadAfter <= 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

const z85Alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

// checkKey reports whether key is a 40 character Z85 CURVE key.
func checkKey(what, key string) error {
	if len(key) != 40 {
		return status.Errorf(status.InvalidArgument, "zmq: %s %q is not a CURVE key: want 40 Z85 characters, got %d", what, key, len(key))
	}
	for i := 0; i < len(key); i++ {
		if !strings.ContainsRune(z85Alphabet, rune(key[i])) {
			return status.Errorf(status.InvalidArgument, "zmq: %s %q is not a CURVE key: %q at offset %d is not a Z85 character", what, key, key[i], i)
		}
	}
	return nil
}

// checkKeypair checks both keys and that public belongs to secret.
func checkKeypair(who, public, secret string) error {
	if err := checkKey(who+" public key", public); err != nil {
		return err
	}
	if err := checkKey(who+" secret key", secret); err != nil {
		return status.Errorf(status.InvalidArgument, "zmq: %s secret key is not a CURVE key (40 Z85 characters)", who)
	}
	derived, err := zmq4.AuthCurvePublic(secret)
	if err != nil {
		return status.Errorf(status.InvalidArgument, "zmq: %s secret key: %v", who, err)
	}
	if derived != public {
		return status.Errorf(status.InvalidArgument, "zmq: %s public key %s does not belong to its secret key (which gives %s)", who, public, derived)
	}
	return nil
}

func (c *CurveServer) check() error {
	if err := checkKeypair("server", c.PublicKey, c.SecretKey); err != nil {
		return err
	}
	for _, k := range c.AllowedClients {
		if err := checkKey("allowed client key", k); err != nil {
			return err
		}
	}
	return nil
}

func (c *CurveClient) check() error {
	if err := checkKey("server public key", c.ServerPublicKey); err != nil {
		return err
	}
	return checkKeypair("client", c.PublicKey, c.SecretKey)
}
