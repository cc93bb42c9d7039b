package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bankrpc/bankrpc/codec"
)

// Conn is the client side of the runtime: generated stubs call its Invoke,
// which encodes the request envelope, hands it to the backend and decodes the
// reply. It is safe for concurrent use; Close is idempotent and closes the
// backend.
type Conn struct {
	t        ClientTransport
	codec    codec.Codec
	maxFrame int
	timeout  time.Duration
	prefix   string        // random per Conn, so call ids are unique across processes
	seq      atomic.Uint64 // call id counter
	closed   atomic.Bool
}

// ConnOption configures a Conn.
type ConnOption func(*Conn)

// WithMaxFrameSize sets the largest request frame the Conn sends and reply
// frame it accepts (default codec.DefaultMaxFrameSize, 4 MiB).
func WithMaxFrameSize(n int) ConnOption {
	return func(c *Conn) { c.maxFrame = n }
}

// WithCodec sets the payload codec (default codec.Proto).
func WithCodec(cd codec.Codec) ConnOption {
	return func(c *Conn) { c.codec = cd }
}

// WithDefaultTimeout bounds every call that has no shorter deadline.
func WithDefaultTimeout(d time.Duration) ConnOption {
	return func(c *Conn) { c.timeout = d }
}

// NewConn returns a Conn that sends its calls through t. The Conn owns t:
// closing the Conn closes t.
func NewConn(t ClientTransport, opts ...ConnOption) *Conn {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	c := &Conn{t: t, codec: codec.Proto{}, maxFrame: codec.DefaultMaxFrameSize, prefix: hex.EncodeToString(b[:]) + "-"}
	for _, o := range opts {
		o(c)
	}
	return c
}

// NewCallID returns a fresh call id, unique across processes.
func (c *Conn) NewCallID() string {
	var buf [48]byte
	return string(strconv.AppendUint(append(buf[:0], c.prefix...), c.seq.Add(1), 10))
}

// Close closes the backend; calls in flight fail with ErrClosed.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.t.Close()
}

// Invoke performs one unary call. See ClientConnInterface.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...CallOption) error {
	if c.closed.Load() {
		return ErrClosed
	}
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	timeout := o.timeout
	if timeout <= 0 {
		timeout = c.timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return FromContextError(err)
	}

	payload, err := c.codec.Marshal(args)
	if err != nil {
		return Errorf(Internal, "bankrpc: encode %s request: %v", method, err)
	}
	call := &Call{ID: o.callID, Method: method}
	if call.ID == "" {
		call.ID = c.NewCallID()
	}
	var deadline int64
	if dl, ok := ctx.Deadline(); ok {
		call.Deadline = dl
		deadline = dl.UnixNano()
	}
	call.Frame = codec.AppendRequest(make([]byte, 0, len(payload)+len(method)+len(call.ID)+24), call.ID, method, payload, deadline, o.metadata)
	if c.maxFrame > 0 && len(call.Frame) > c.maxFrame {
		return Errorf(ResourceExhausted, "bankrpc: %s request of %d bytes exceeds the limit of %d bytes", method, len(call.Frame), c.maxFrame)
	}
	if o.onStatus != nil {
		call.OnStatus = c.statusDecoder(call.ID, o.onStatus)
	}

	frame, err := c.t.RoundTrip(ctx, call)
	if err != nil {
		return c.roundTripError(ctx, method, err)
	}
	var res codec.ResultView
	if err := codec.DecodeResultView(frame, c.maxFrame, &res); err != nil {
		var tooLarge *codec.FrameTooLargeError
		if errors.As(err, &tooLarge) {
			return Errorf(ResourceExhausted, "bankrpc: %s reply: %v", method, err)
		}
		return Errorf(Internal, "bankrpc: %s reply: %v", method, err)
	}
	if res.Code == uint32(OK) && string(res.CallID) != call.ID {
		return Errorf(Internal, "bankrpc: %s reply is for call %q, not %q", method, res.CallID, call.ID)
	}
	if res.Code != uint32(OK) {
		return &Error{Code: Code(res.Code), Message: string(res.Reason), Log: res.Log}
	}
	if err := c.codec.Unmarshal(res.Payload, reply); err != nil {
		return Errorf(Internal, "bankrpc: decode %s reply: %v", method, err)
	}
	return nil
}

// roundTripError gives a backend error a code: the backend's own when it set
// one (its reason, such as "no reply from tcp://... after 3 attempts", says
// more than the deadline that ended the wait), the context's when the call was
// canceled or timed out, Unavailable otherwise.
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
	return &Error{Code: Unavailable, Message: fmt.Sprintf("bankrpc: %s: %v", method, err)}
}

func (c *Conn) statusDecoder(callID string, fn func(Status)) func([]byte) {
	return func(frame []byte) {
		s, err := codec.DecodeStatus(frame, c.maxFrame)
		if err != nil || s.GetCallId() != callID {
			return // statuses are best-effort: a bad or foreign one is dropped
		}
		fn(Status{Code: Code(s.GetCode()), Reason: s.GetReason(), Data: s.GetData()})
	}
}
