package zmq

import (
	"errors"
	"runtime"
	"strings"
	"syscall"
	"time"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/internal/status"
)

// Heartbeats let each side notice a peer that vanished without closing its
// TCP connection (a frozen or unplugged host): the connection is dropped
// when nothing arrives within the heartbeat timeout of a PING, which the
// client takes as a disconnect and the server as a peer gone. These are the
// server's; a client's are in its ClientConfig.
//
// The server's PINGs are rare on purpose: libzmq's I/O thread keeps every
// connection's timers in one ordered map and cancels a timer by walking it
// (poller_base_t::cancel_timer, O(n), "we assume it is rarely used"), and
// every PING's timeout timer is cancelled when the peer answers. With a PING
// a second to each of 10,000 idle clients, the server spent a whole core on
// those walks and dropped clients whose PONGs it read too late
// (BENCHMARKS.md, target 5). A client's PINGs cost the server no timer (the
// Go client sets no ZMQ_HEARTBEAT_TTL, which would arm one per PING), so a
// frozen server is still noticed within the client's timeout; a vanished
// client is dropped within serverHeartbeatInterval+serverHeartbeatTimeout.
const (
	serverHeartbeatInterval = 30 * time.Second
	serverHeartbeatTimeout  = 10 * time.Second
	reconnectInterval       = 100 * time.Millisecond
	reconnectMax            = time.Second
	// connectTimeout bounds one TCP connection attempt of a client to a
	// host that does not answer at all; libzmq then tries again.
	connectTimeout = 2 * time.Second
)

func isEAGAIN(err error) bool {
	return zmq4.AsErrno(err) == zmq4.Errno(syscall.EAGAIN)
}

// setOptions applies options in order and stops at the first error, naming
// the option.
func setOptions(s *zmq4.Socket, opts ...socketOption) error {
	for _, o := range opts {
		if err := o.set(s); err != nil {
			return status.Errorf(status.Internal, "zmq: set %s: %v", o.name, err)
		}
	}
	return nil
}

type socketOption struct {
	name string
	set  func(*zmq4.Socket) error
}

func opt(name string, set func(*zmq4.Socket) error) socketOption {
	return socketOption{name: name, set: set}
}

// commonOptions are shared by the server's ROUTER and the client's DEALER.
func commonOptions(maxFrame int, heartbeatInterval, heartbeatTimeout time.Duration) []socketOption {
	return []socketOption{
		opt("ZMQ_MAXMSGSIZE", func(s *zmq4.Socket) error { return s.SetMaxmsgsize(int64(maxFrame + frameHeadroom)) }),
		opt("ZMQ_SNDHWM", func(s *zmq4.Socket) error { return s.SetSndhwm(DefaultHWM) }),
		opt("ZMQ_RCVHWM", func(s *zmq4.Socket) error { return s.SetRcvhwm(DefaultHWM) }),
		opt("ZMQ_HEARTBEAT_IVL", func(s *zmq4.Socket) error { return s.SetHeartbeatIvl(heartbeatInterval) }),
		opt("ZMQ_HEARTBEAT_TIMEOUT", func(s *zmq4.Socket) error { return s.SetHeartbeatTimeout(heartbeatTimeout) }),
	}
}

// newContext returns a private zmq context, so that Close can terminate it
// and so that its inproc endpoints (the ZAP handler's among them) belong to
// one Server or Client only.
func newContext() (*zmq4.Context, error) {
	zctx, err := zmq4.NewContext()
	if err != nil {
		return nil, status.Errorf(status.Internal, "zmq: new context: %v", err)
	}
	return zctx, nil
}

// newSocket opens a socket of type t in zctx with LINGER 0 and the options.
func newSocket(zctx *zmq4.Context, t zmq4.Type, opts ...socketOption) (*zmq4.Socket, error) {
	s, err := zctx.NewSocket(t)
	if err != nil {
		return nil, status.Errorf(status.Internal, "zmq: new %v socket: %v", t, err)
	}
	opts = append([]socketOption{opt("ZMQ_LINGER", func(s *zmq4.Socket) error { return s.SetLinger(0) })}, opts...)
	if err := setOptions(s, opts...); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// checkEndpoint accepts tcp:// and ipc:// endpoints. inproc:// cannot work:
// every Server and Client has its own zmq context.
func checkEndpoint(endpoint string) error {
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok || rest == "" {
		return status.Errorf(status.InvalidArgument, "zmq: endpoint %q is not of the form tcp://host:port or ipc:///path", endpoint)
	}
	switch scheme {
	case "tcp", "ipc":
		return nil
	}
	return status.Errorf(status.InvalidArgument, "zmq: endpoint %q: transport %q is not supported (use tcp:// or ipc://)", endpoint, scheme)
}

// endpointError gives a bind or connect error a code: a malformed endpoint is
// the caller's mistake, anything else (address in use) is Unavailable.
func endpointError(op, endpoint string, err error) error {
	code := status.Unavailable
	switch zmq4.AsErrno(err) {
	case zmq4.Errno(syscall.EINVAL), zmq4.EPROTONOSUPPORT, zmq4.ENOCOMPATPROTO:
		code = status.InvalidArgument
	}
	return status.Errorf(code, "zmq: %s %s: %v", op, endpoint, err)
}

// closeAll closes sockets and then terminates zctx; it returns the first
// error. Termination waits for no socket but one whose LINGER was raised
// (a Server's ROUTER in a graceful stop), and for that one at most its
// LINGER.
func closeAll(zctx *zmq4.Context, sockets ...*zmq4.Socket) error {
	var errs []error
	for _, s := range sockets {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	errs = append(errs, zctx.Term())
	if err := errors.Join(errs...); err != nil {
		return status.Errorf(status.Internal, "zmq: close: %v", err)
	}
	return nil
}

// yield lets the goroutines a socket owner just woke run before the owner
// blocks in zmq_poll. A cgo call keeps its P, so without this a woken
// goroutine queued on that P waits for the runtime's monitor thread to take
// the P back, tens to hundreds of microseconds later.
func yield() { runtime.Gosched() }
