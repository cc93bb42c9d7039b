package bankrpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// ErrClosed is returned by calls on, or in flight during the Close of, a
// Conn.
var ErrClosed = transport.ErrClosed

// Conn is the client side of the runtime: generated stubs call its Invoke,
// which runs the client interceptors, encodes the request envelope, hands it
// to a backend and decodes the reply. It is safe for concurrent use; Close is
// idempotent and closes the backend.
type Conn struct {
	t           transport.ClientTransport
	o           dialOptions
	interceptor UnaryClientInterceptor
	prefix      string // "<session>-": random per Conn, so call ids are unique across processes
	pending     pendingSeqs
	subs        submissions
	closed      atomic.Bool
}

var _ ClientConnInterface = (*Conn)(nil)

// Dial opens a Conn to addr, a URL whose scheme names the backend:
// "zmq://127.0.0.1:4040", "amqp://user:pass@host:5672/vhost?service=NAME",
// "inproc://name". A backend registers its scheme when its package is
// imported (import _ "github.com/bankrpc/bankrpc/transport/zmq"); an unknown
// scheme fails with an error naming the registered ones. Dial does not block
// past ctx; whether it waits for the server depends on the backend (none of
// the bundled ones does: calls wait instead).
func Dial(ctx context.Context, addr string, opts ...DialOption) (*Conn, error) {
	o := defaultDialOptions()
	for _, opt := range opts {
		opt.applyDial(&o)
	}
	u, s, err := transport.Lookup(addr)
	if err != nil {
		return nil, err
	}
	t, err := s.Dial(ctx, u, transport.Options{Logger: o.logger, MaxFrameSize: o.maxFrame, Configs: o.configs, Events: eventSink(o.events)})
	if err != nil {
		return nil, err
	}
	return newConn(t, o), nil
}

// NewConn returns a Conn that sends its calls through t, a backend's client
// half opened directly. The Conn owns t: closing the Conn closes t.
// Transport configs (WithTransportConfig) do not apply: t is already open.
func NewConn(t transport.ClientTransport, opts ...DialOption) *Conn {
	o := defaultDialOptions()
	for _, opt := range opts {
		opt.applyDial(&o)
	}
	return newConn(t, o)
}

func newConn(t transport.ClientTransport, o dialOptions) *Conn {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return &Conn{t: t, o: o, interceptor: chainClient(o.interceptors), prefix: hex.EncodeToString(b[:]) + "-"}
}

// NewCallID returns a fresh call id of this Conn's session, unique across
// processes, for a caller that wants to know the id before the call (to
// retry it with WithCallID after a failure).
//
// The id's sequence counts as unanswered from now on, until a call with it
// gets its reply, so that the server keeps what it needs to answer it.
func (c *Conn) NewCallID() string {
	return c.callID(c.pending.reserve())
}

func (c *Conn) callID(seq uint64) string {
	var buf [48]byte
	return string(c.appendCallID(buf[:0], seq))
}

// appendCallID appends the call id of sequence seq of this Conn's session
// to dst.
func (c *Conn) appendCallID(dst []byte, seq uint64) []byte {
	return strconv.AppendUint(append(dst, c.prefix...), seq, 10)
}

// Close closes the backend; calls in flight fail with ErrClosed. The
// results of submitted calls that arrived and were not collected are handed
// to a backend that keeps results (transport.ResultKeeper: AMQP gives them
// back to the client's durable result queue), for a later process; on other
// backends they are lost with the process.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if k, ok := c.t.(transport.ResultKeeper); ok {
		for _, id := range c.subs.list(true) {
			if sub := c.subs.remove(id, nil); sub != nil && sub.err == nil {
				k.KeepResult(string(id), sub.frame)
			}
		}
	}
	return c.t.Close()
}

// Invoke performs one unary call through the client interceptors. See
// ClientConnInterface.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...CallOption) error {
	if c.interceptor != nil {
		return c.interceptor(ctx, method, args, reply, c, invoke, opts...)
	}
	return c.invoke(ctx, method, args, reply, opts...)
}

func invoke(ctx context.Context, method string, args, reply any, cc *Conn, opts ...CallOption) error {
	return cc.invoke(ctx, method, args, reply, opts...)
}

func (c *Conn) invoke(ctx context.Context, method string, args, reply any, opts ...CallOption) error {
	if c.closed.Load() {
		return ErrClosed
	}
	var o callOptions
	if len(opts) > 0 {
		o = applyCallOptions(opts)
	}
	if len(c.o.stats) > 0 {
		if o.callID == "" {
			o.callID = c.NewCallID() // so that Begin sees it
		}
		info := &CallInfo{Method: method, CallID: o.callID, Client: true, Begin: time.Now()}
		ctx = statsBegin(ctx, c.o.stats, info)
		err := c.send(ctx, method, args, reply, &o)
		statsEnd(ctx, c.o.stats, info, &CallEnd{Code: CodeOf(err), Err: err})
		return err
	}
	return c.send(ctx, method, args, reply, &o)
}

// applyCallOptions returns the options opts set. Kept apart from invoke:
// the options escape (applyCall is an interface method), and a call without
// any then costs no allocation.
func applyCallOptions(opts []CallOption) callOptions {
	o := new(callOptions)
	for _, opt := range opts {
		opt.applyCall(o)
	}
	return *o
}

// send encodes and sends one call and decodes its reply.
func (c *Conn) send(ctx context.Context, method string, args, reply any, o *callOptions) error {
	timeout := o.timeout
	if timeout <= 0 {
		timeout = c.o.timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return FromContextError(err)
	}
	md, _ := FromOutgoingContext(ctx)
	if err := checkMetadata(md, c.o.maxMetadata, false); err != nil {
		return err
	}

	call, seq, err := c.newCall(ctx, method, args, md, o)
	if err != nil {
		return err
	}
	frame, err := c.t.RoundTrip(ctx, call)
	if err != nil {
		if seq != 0 {
			// A call that got no reply keeps its sequence pending, so that a
			// retry with its call id can still learn its outcome.
			c.pending.end(seq, false)
		}
		return c.roundTripError(ctx, method, err)
	}
	err = c.decodeResult(method, call.ID, frame, reply, o)
	if seq != 0 {
		c.pending.end(seq, settles(err))
	}
	return err
}

// settles reports whether a call's result, err, settles its outcome, so
// that its sequence need not stay pending: a success, or an error the
// server sent other than those that invite a retry with the same call id
// (PROTOCOL.md 2.8): UNAVAILABLE (not served: the server was stopping),
// DEADLINE_EXCEEDED (refused as expired: outcome unknown) and CANCELED.
// Keeping those pending keeps the call's first unanswered sequence in the
// requests that follow, so that a server recording sessions, such as the
// bank, still answers a retry instead of refusing it as forgotten.
func settles(err error) bool {
	if err == nil {
		return true
	}
	if !status.IsWireError(err) {
		return false // a reply this Conn could not read: outcome unknown
	}
	switch CodeOf(err) {
	case Unavailable, DeadlineExceeded, Canceled:
		return false
	}
	return true
}

// newCall encodes the request of one call and makes its call id (unless o
// names one); seq is its sequence in this Conn's session, pending from now
// on, or 0 for a call id from elsewhere. The deadline is ctx's.
func (c *Conn) newCall(ctx context.Context, method string, args any, md MD, o *callOptions) (*transport.Call, uint64, error) {
	ca := &callAlloc{call: transport.Call{ID: o.callID, Method: method}}
	call := &ca.call
	used := 0                       // bytes of ca.buf the call id took
	var seq, firstUnanswered uint64 // of this Conn's session; 0 for a call id from elsewhere
	if call.ID == "" {
		seq, firstUnanswered = c.pending.next()
		id := c.appendCallID(ca.buf[:0], seq)
		if used = len(id); used <= len(ca.buf) && &id[0] == &ca.buf[0] {
			call.ID = unsafe.String(&ca.buf[0], used) // never written again
		} else {
			call.ID, used = string(id), 0
		}
	} else if s, ok := strings.CutPrefix(call.ID, c.prefix); ok {
		seq, _ = strconv.ParseUint(s, 10, 64)
		if seq != 0 {
			firstUnanswered = c.pending.begin(seq)
		}
	}
	var deadline int64
	if dl, ok := ctx.Deadline(); ok {
		call.Deadline = dl
		deadline = dl.UnixNano()
	}
	// The frame goes into ca.buf after the id when its fixed part fits there
	// (a larger payload then moves it out once, as it would grow a frame
	// of its own); else into a frame of its own.
	fixed := len(method) + len(call.ID) + 34
	buf := ca.buf[used:used]
	if fixed > cap(buf) {
		buf = make([]byte, 0, fixed+payloadHint)
	}
	frame, err := envelope.AppendRequestFunc(buf, call.ID, method, func(dst []byte) ([]byte, error) {
		return appendPayload(c.o.codec, dst, args)
	}, deadline, md, firstUnanswered)
	if err != nil {
		if seq != 0 {
			c.pending.end(seq, true) // nothing was sent
		}
		return nil, 0, Errorf(Internal, "bankrpc: encode %s request: %w", method, err)
	}
	call.Frame = frame
	if o.onStatus != nil || o.onProgress != nil {
		call.Frame = envelope.AppendAcceptStatus(call.Frame)
		call.OnStatus = c.statusDecoder(call.ID, o)
	}
	if c.o.maxFrame > 0 && len(call.Frame) > c.o.maxFrame {
		if seq != 0 {
			c.pending.end(seq, true) // nothing was sent
		}
		return nil, 0, Errorf(ResourceExhausted, "bankrpc: %s request of %d bytes exceeds the limit of %d bytes", method, len(call.Frame), c.o.maxFrame)
	}
	return call, seq, nil
}

// callAlloc is a call, its call id and its request frame in one allocation:
// a small call (the id and the frame fit in buf) costs one allocation, not
// three. Nothing writes the id or the frame once made (transport.Call's
// rule), so they may share an array; what keeps either keeps it all, 256
// bytes.
type callAlloc struct {
	call transport.Call
	buf  [160]byte
}

// decodeResult decodes the result frame of the call id into reply, or
// returns its error. The log lines of the result go to o's LogLines.
func (c *Conn) decodeResult(method, callID string, frame []byte, reply any, o *callOptions) error {
	var res envelope.ResultView
	if err := envelope.DecodeResultView(frame, c.o.maxFrame, &res); err != nil {
		var tooLarge *envelope.FrameTooLargeError
		if errors.As(err, &tooLarge) {
			return Errorf(ResourceExhausted, "bankrpc: %s reply: %w", method, err)
		}
		return Errorf(Internal, "bankrpc: %s reply: %w", method, err)
	}
	if res.Code == uint32(OK) && string(res.CallID) != callID {
		return Errorf(Internal, "bankrpc: %s reply is for call %q, not %q", method, res.CallID, callID)
	}
	if o.log != nil {
		*o.log = res.Log
	}
	if len(res.Method) > 0 && string(res.Method) != method {
		return Errorf(FailedPrecondition, "bankrpc: call %s was a %s call, not %s", callID, res.Method, method)
	}
	if res.Code != uint32(OK) {
		var details [][]byte
		for _, d := range res.Details {
			details = append(details, append([]byte(nil), d...))
		}
		return status.FromWire(Code(res.Code), string(res.Reason), res.Log, details)
	}
	if err := c.o.codec.Unmarshal(res.Payload, reply); err != nil {
		return Errorf(Internal, "bankrpc: decode %s reply: %w", method, err)
	}
	return nil
}

// roundTripError gives a backend error a code: the backend's own when it set
// one (its reason, such as "no reply from tcp://...: server down?", says
// more than the deadline that ended the wait), the context's when the call
// was canceled or timed out, Unavailable otherwise.
func (c *Conn) roundTripError(ctx context.Context, method string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return FromContextError(ctxErr)
	}
	if c := CodeOf(err); c == Canceled || c == DeadlineExceeded {
		return FromContextError(err)
	}
	return status.Wrap(Unavailable, fmt.Errorf("bankrpc: %s: %w", method, err))
}

func (c *Conn) statusDecoder(callID string, o *callOptions) func([]byte) {
	onStatus, onProgress := o.onStatus, o.onProgress
	return func(frame []byte) {
		s, err := envelope.DecodeStatus(frame, c.o.maxFrame)
		if err != nil || s.GetCallId() != callID {
			return // statuses are best-effort: a bad or foreign one is dropped
		}
		if onStatus != nil {
			onStatus(Status{Code: Code(s.GetCode()), Reason: s.GetReason(), Data: s.GetData()})
		}
		if onProgress != nil && s.GetCode() == uint32(OK) && len(s.GetData()) > 0 {
			data := s.GetData()
			onProgress(func(v any) error { return c.o.codec.Unmarshal(data, v) })
		}
	}
}
