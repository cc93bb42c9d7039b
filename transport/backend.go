package transport

import (
	"context"
	"time"
)

// Call is one request frame handed to a client backend. The runtime builds it;
// a backend moves Frame and returns the matching reply frame.
type Call struct {
	// ID is the call id, also inside Frame. It is unique per logical call and
	// a backend that retries resends the same Frame, so the same ID. Backends
	// use it to match replies (ZeroMQ frame, AMQP correlation-id) and to drop
	// duplicates.
	ID string
	// Method is the full method name, for backends that route or log by it.
	Method string
	// Deadline is the absolute deadline of the call; zero means none. It is
	// also inside Frame and in the ctx passed to RoundTrip.
	Deadline time.Time
	// Frame is the encoded request envelope. Backends must not modify it.
	Frame []byte
	// OnStatus, when not nil, receives encoded Status frames for this call
	// from backends that carry progress messages (see StatusCapable). It is
	// called from a backend goroutine and must not block.
	OnStatus func(frame []byte)
}

// ClientTransport is the client half of a backend: it moves one encoded
// request frame to a server and returns the matching encoded reply frame.
//
// Implementations are safe for concurrent use. RoundTrip honours ctx
// cancellation and deadline, returning ctx's error (or an *Error wrapping it)
// promptly. Close is idempotent; it unblocks calls in flight, which then fail
// with ErrClosed.
type ClientTransport interface {
	RoundTrip(ctx context.Context, call *Call) (reply []byte, err error)
	Close() error
}

// Handler processes one encoded request frame and returns the encoded reply
// frame. It is safe for concurrent use. When the frame cannot be decoded as a
// request, HandleFrame returns a non-nil error describing why, and still
// returns a reply frame (an INVALID_ARGUMENT result) for backends that can
// deliver it in the protocol; backends with a separate error path (AMQP's
// error queue) may send the error text there instead.
//
// *Server is the Handler every backend serves in practice.
type Handler interface {
	HandleFrame(ctx context.Context, frame []byte) (reply []byte, err error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, frame []byte) ([]byte, error)

// HandleFrame calls f(ctx, frame).
func (f HandlerFunc) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	return f(ctx, frame)
}

// ServerTransport is the server half of a backend. Serve delivers request
// frames to h until ctx is done or Close is called; it then stops taking new
// requests, waits for the handlers in flight to finish and their replies to
// be sent, and returns nil (or the error that stopped it). A backend may run
// handlers concurrently. Serve may be called once. Close is idempotent and
// safe to call from any goroutine.
type ServerTransport interface {
	Serve(ctx context.Context, h Handler) error
	Close() error
}

// ErrClosed is returned by calls on, or in flight during the Close of, a
// client Conn or backend.
var ErrClosed = &Error{Code: Canceled, Message: "bankrpc: connection closed"}

// Peer describes the caller of a request, as far as the backend knows it.
type Peer struct {
	// Transport names the backend: "inproc", "zmq", "amqp".
	Transport string
	// Addr is the caller's address when known (a ZeroMQ routing id in hex, an
	// AMQP reply queue), for logs.
	Addr string
	// Identity is the authenticated identity of the caller, empty when the
	// backend did not authenticate it: the Z85 CURVE public key on ZeroMQ,
	// the validated user-id property on AMQP.
	Identity string
}

type peerKey struct{}

// NewPeerContext returns a copy of ctx carrying p. Backends call it before
// handing a frame to the Handler.
func NewPeerContext(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFromContext returns the caller of the request being handled.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// StatusSink receives encoded Status frames sent by a handler through
// SendStatus. Backends that can carry progress messages put one in the
// handler's ctx with NewStatusContext. Sinks must not block for long; they
// may drop stale statuses.
type StatusSink func(ctx context.Context, frame []byte) error

type statusKey struct{}

// NewStatusContext returns a copy of ctx carrying sink.
func NewStatusContext(ctx context.Context, sink StatusSink) context.Context {
	return context.WithValue(ctx, statusKey{}, sink)
}

// StatusCapable is implemented by client backends that deliver Status frames
// to Call.OnStatus. The runtime uses it only to document the capability; a
// backend without it simply never calls OnStatus.
type StatusCapable interface {
	CarriesStatus() bool
}
