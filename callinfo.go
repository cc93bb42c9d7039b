package bankrpc

import (
	"context"
	"log/slog"
	"time"

	"github.com/bankrpc/bankrpc/codec"
	"github.com/bankrpc/bankrpc/internal/ratelog"
	"github.com/bankrpc/bankrpc/transport"
)

// callInfo is what the server knows of the call being handled.
type callInfo struct {
	id     string
	method string
	md     []string // key, value, key, value, ...
	status transport.StatusSink
	codec  codec.Codec

	firstUnanswered uint64

	log callLog // the lines the handler added with Log
}

type callInfoKey struct{}

// callContext is the handler's ctx: its parent, its cancelation (see
// lazyCancelCtx) and the callInfo, in one allocation instead of a
// context.WithCancelCause, a context.WithValue and a callInfo.
type callContext struct {
	lazyCancelCtx
	info callInfo

	// For decode, the handler's decode callback.
	payload     []byte // aliases the request frame; not used once the handler returned
	refusals    *ratelog.Logger
	undecodable bool // set by decode when the payload could not be decoded
}

// decode decodes the request's payload into v: the decode callback of the
// method handler.
func (c *callContext) decode(v any) error {
	if err := c.info.codec.Unmarshal(c.payload, v); err != nil {
		e := Errorf(InvalidArgument, "bankrpc: decode %s request: %v", c.info.method, err)
		c.undecodable = true
		c.refusals.Log(c, slog.LevelDebug, "undecodable payload", "bankrpc: refused a call", "method", c.info.method, "call_id", c.info.id, "error", e.Message())
		return e
	}
	return nil
}

func (c *callContext) Value(key any) any {
	if key == (callInfoKey{}) {
		return &c.info
	}
	return c.lazyCancelCtx.Value(key)
}

// CallIDFromContext returns the call id of the request being handled: unique
// per logical call, and the same on a retry or a redelivery. Handlers that
// mutate state durably use it to apply a call at most once across restarts.
func CallIDFromContext(ctx context.Context) string {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return ci.id
	}
	return ""
}

// MethodFromContext returns the full method name of the request being handled.
func MethodFromContext(ctx context.Context) string {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return ci.method
	}
	return ""
}

// Peer describes the caller of a request, as far as the backend knows it.
type Peer = transport.Peer

// PeerFromContext returns the caller of the request being handled.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	return transport.PeerFromContext(ctx)
}

// Status is a progress message for a call in flight: best-effort, only the
// latest matters, never persisted.
type Status struct {
	Code   Code
	Reason string
	Data   []byte
}

// CallOption configures one call made through Invoke. The options are plain
// values (CallIDOption, TimeoutOption, StatusOption) so that an interceptor
// can read them.
type CallOption interface{ applyCall(*callOptions) }

type callOptions struct {
	timeout    time.Duration
	callID     string
	onStatus   func(Status)
	onProgress func(unmarshal func(any) error)
	log        *[]string
}

// TimeoutOption bounds a call; see WithTimeout.
type TimeoutOption struct{ Timeout time.Duration }

func (o TimeoutOption) applyCall(c *callOptions) { c.timeout = o.Timeout }

// WithTimeout bounds the call to d, on top of any deadline in ctx. The
// deadline travels with the request: a server does not start a call whose
// deadline has passed.
func WithTimeout(d time.Duration) CallOption { return TimeoutOption{Timeout: d} }

// CallIDOption sets a call's id; see WithCallID.
type CallIDOption struct{ CallID string }

func (o CallIDOption) applyCall(c *callOptions) { c.callID = o.CallID }

// WithCallID sets the call id instead of generating a fresh one. Reusing the
// id of a call whose outcome is unknown (the client crashed, the connection
// broke) asks the server for that call's reply instead of running it again:
// the runtime answers a duplicate with the reply of the first (see
// docs/semantics.md), and a server that records call ids durably, such as
// the bank, does so across restarts.
func WithCallID(id string) CallOption { return CallIDOption{CallID: id} }

// StatusOption asks for a call's progress messages; see OnStatus.
type StatusOption struct{ OnStatus func(Status) }

func (o StatusOption) applyCall(c *callOptions) { c.onStatus = o.OnStatus }

// OnStatus asks for the call's progress messages. fn is called from a backend
// goroutine, in order, and must not block; backends that carry no statuses
// (see transport.StatusCapable) never call it.
func OnStatus(fn func(Status)) CallOption { return StatusOption{OnStatus: fn} }
