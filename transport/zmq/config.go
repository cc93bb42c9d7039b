package zmq

import (
	"log/slog"
	"runtime"
	"strings"
	"time"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/internal/status"
)

// Defaults applied to zero fields of ServerConfig and ClientConfig.
const (
	// DefaultMaxFrameSize is the default limit on an envelope frame, the
	// same 4 MiB as codec.DefaultMaxFrameSize.
	DefaultMaxFrameSize = 4 << 20
	// DefaultAttemptTimeout is how long a client waits for a reply before it
	// resends the request.
	DefaultAttemptTimeout = 2 * time.Second
	// DefaultMaxAttempts bounds a call whose ctx has no deadline to
	// DefaultMaxAttempts × AttemptTimeout.
	DefaultMaxAttempts = 3
	// DefaultHWM is the high-water mark, in messages, of every socket's send
	// and receive queues (per peer).
	DefaultHWM = 4096
)

// frameHeadroom is added to MaxFrameSize to get ZMQ_MAXMSGSIZE, the largest
// frame libzmq accepts before it drops the connection. A frame a little over
// the limit still reaches the handler, which answers RESOURCE_EXHAUSTED; only
// a grossly oversized one costs the peer its connection.
const frameHeadroom = 64 << 10

// ServerConfig configures a Server. The zero value is usable.
type ServerConfig struct {
	// Workers is the number of handlers that may run at once (default
	// max(64, 8×GOMAXPROCS)); Serve runs Workers+1 goroutines, one of which
	// at a time owns the socket. Handlers usually wait on disk or locks (the
	// bank fsyncs), so the pool is sized for waiting, not for CPU. When
	// Workers requests are in flight the server stops reading requests and
	// libzmq queues them, up to the high-water mark.
	Workers int
	// MaxFrameSize sets ZMQ_MAXMSGSIZE to MaxFrameSize plus 64 KiB (default
	// DefaultMaxFrameSize). The exact limit is the handler's: configure
	// transport.NewServer with the same value (WithServerMaxFrameSize) so a
	// slightly oversized frame is answered RESOURCE_EXHAUSTED.
	MaxFrameSize int
	// Logger receives refused frames, dropped replies and refused CURVE
	// keys. Nil discards them.
	Logger *slog.Logger
	// Curve turns CURVE encryption and client authentication on; nil leaves
	// the socket in plain text (ZeroMQ's NULL mechanism).
	Curve *CurveServer
}

// ClientConfig configures a Client. The zero value is usable.
type ClientConfig struct {
	// AttemptTimeout is how long one attempt waits for its reply before the
	// request is resent with the same call id (default
	// DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// MaxAttempts bounds a call whose ctx has no deadline: it gives up with
	// UNAVAILABLE after MaxAttempts × AttemptTimeout (default
	// DefaultMaxAttempts). A call with a deadline is retried until the
	// deadline.
	MaxAttempts int
	// MaxFrameSize is the largest request frame sent and reply frame
	// accepted; ZMQ_MAXMSGSIZE is set 64 KiB above it (default
	// DefaultMaxFrameSize).
	MaxFrameSize int
	// Curve turns CURVE encryption on; the server must use CURVE too.
	Curve *CurveClient
	// Logger receives connection events and dropped replies. Nil discards
	// them.
	Logger *slog.Logger

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
	return c
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
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
