package transport

import (
	"context"
	"time"

	"github.com/bankrpc/bankrpc/internal/status"
)

// Call is one request frame handed to a client backend. The runtime builds it;
// a backend moves Frame and returns the matching reply frame.
type Call struct {
	// ID is the call id, also inside Frame. It is unique per logical call and
	// a backend that retries resends the same Frame, so the same ID. Backends
	// use it to match replies (ZeroMQ frame, AMQP correlation-id), to drop
	// duplicates and to name the call in a cancel message.
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
	// Sent, when not nil, is called once, from a backend goroutine, when a
	// backend that confirms sends (see SendConfirmer) holds the request
	// safely: AMQP when the broker confirmed it (it is then durable). It
	// must not block.
	Sent func()
}

// ClientTransport is the client half of a backend: it moves one encoded
// request frame to a server and returns the matching encoded reply frame.
//
// Implementations are safe for concurrent use. RoundTrip honours ctx:
// when ctx ends before the reply, RoundTrip returns ctx's error promptly and
// tells the server, best-effort, that the call is canceled (a cancel message
// naming call.ID; see PROTOCOL.md), so that the server cancels the handler's
// ctx. A backend may omit the cancel when ctx ended by its deadline (the
// server enforces the deadline in the frame). A call without a deadline waits for its reply as long as the server
// is alive: a backend detects a dead server by its own means (heartbeats,
// broker connections), never by counting attempts. Close is idempotent; it
// unblocks calls in flight, which then fail with ErrClosed.
type ClientTransport interface {
	RoundTrip(ctx context.Context, call *Call) (reply []byte, err error)
	Close() error
}

// Handler is what a server backend feeds: the runtime's *bankrpc.Server.
// Both methods are safe for concurrent use.
//
// HandleFrame processes one encoded request frame and returns the encoded
// reply frame. A backend calls it for every request it receives, including
// duplicates (retries, redeliveries): the handler runs a call id at most once
// and answers duplicates with the same reply. ctx carries the Peer and, where
// the backend has one, a StatusSink; its cancellation is not needed for the
// call's own (CancelCall and the handler's shutdown do that), but a backend
// may cancel it when the frame's connection is gone.
//
// The error tells the backend what to do with the reply:
//   - nil: send the reply.
//   - ErrNotServed: the server did not answer the call (it is shutting down,
//     or the call was interrupted by a shutdown). reply is an UNAVAILABLE
//     result: a backend that can give the request back for later delivery
//     (AMQP: nack with requeue) does so and sends nothing; others send reply.
//   - any other error: the frame was refused (not a valid envelope, too
//     large); reply is still an error result, for backends that answer in
//     the protocol; backends with a separate error path (AMQP's error queue)
//     may send the error's text there instead.
//
// CancelCall cancels the handler's ctx of the call with that id when it runs
// here; backends call it when a client's cancel message arrives. A cancel
// that arrives before its request makes that request, if it comes within the
// next 30 seconds, answered CANCELED without running (once).
type Handler interface {
	HandleFrame(ctx context.Context, frame []byte) (reply []byte, err error)
	CancelCall(callID string)
}

// ServerTransport is the server half of a backend.
//
// Serve delivers request frames and cancel messages to h until Shutdown or
// Close; it returns nil after either (or the error that stopped it). A
// backend may run handlers concurrently. Serve may be called once.
//
// Shutdown stops taking requests, waits until every HandleFrame in flight has
// returned and its reply is sent, then closes. When ctx ends first it closes
// at once, as Close, and returns ctx's error. It never waits for a handler
// beyond ctx: the runtime cancels the handlers' contexts when ctx ends.
//
// Close stops at once: it stops taking requests and closes the connection or
// socket without waiting for handlers; their replies are dropped, and a
// backend with redelivery (AMQP) leaves their requests to the broker, which
// delivers them again. Close and Shutdown are idempotent and safe to call
// from any goroutine, before, during or after Serve.
type ServerTransport interface {
	Serve(h Handler) error
	Shutdown(ctx context.Context) error
	Close() error
}

// ErrClosed is returned by calls on, or in flight during the Close of, a
// client Conn or backend.
var ErrClosed = status.NewError(status.Canceled, "bankrpc: connection closed")

// ErrNotServed is returned by Handler.HandleFrame for a call the server did
// not answer because it is shutting down; see Handler. A handler returns it
// only once the server is stopping and will serve no new call; a backend may
// stop taking requests from then on (AMQP does, so that a request given back
// is not delivered to it again).
var ErrNotServed = status.NewError(status.Unavailable, "bankrpc: the server is shutting down")

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

// StatusSinkFromContext returns the sink a backend put in ctx, or nil.
func StatusSinkFromContext(ctx context.Context) StatusSink {
	s, _ := ctx.Value(statusKey{}).(StatusSink)
	return s
}

// StatusCapable is implemented by client backends that deliver Status frames
// to Call.OnStatus. The runtime uses it only to document the capability; a
// backend without it simply never calls OnStatus.
type StatusCapable interface {
	CarriesStatus() bool
}

// SendConfirmer is implemented by client backends that call Call.Sent once a
// request is held safely (AMQP: confirmed by the broker, durable). The
// runtime's Submit waits for it before it returns, so that a process may
// exit right after submitting. Backends without it hold a request only in
// the process: Submit returns at once.
type SendConfirmer interface {
	ConfirmsSends() bool
}

// KeptResult is a reply a ResultKeeper holds for a call no caller waits for
// in this process: a reply frame, or the error that ended the call (AMQP's
// error queue).
type KeptResult struct {
	CallID string
	Frame  []byte
	Err    error
}

// ResultKeeper is implemented by client backends that keep the replies of
// calls no RoundTrip waits for, until they are taken: replies to calls that
// an earlier process of the same client submitted (AMQP: they wait in the
// durable result queue of the client name, and reach the next process that
// connects with that name). The runtime's Conn.Collect and Conn.Finished use
// it for call ids this process did not submit. The methods are safe for
// concurrent use.
type ResultKeeper interface {
	// KeptResults returns the replies kept now, once every reply that
	// waited for the client when it was called has reached it (or ctx
	// ended: then it returns ctx's error).
	KeptResults(ctx context.Context) ([]KeptResult, error)
	// WaitResult returns the reply kept for the call id, waiting for it to
	// arrive until ctx ends (then it returns ctx's error). The reply stays
	// kept until DropResult.
	WaitResult(ctx context.Context, callID string) (KeptResult, error)
	// DropResult forgets the reply kept for the call id, and reports
	// whether there was one.
	DropResult(callID string) bool
	// KeepResult keeps frame, the reply of the call id, as if it had arrived
	// for a call not in flight: the runtime's Conn.Close hands over the
	// results of submitted calls that arrived and were not collected, so
	// that the backend gives them back for a later process (AMQP: to the
	// durable result queue, when the client closes).
	KeepResult(callID string, frame []byte)
}
