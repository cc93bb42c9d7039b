package transport

import (
	"context"
	"time"
)

// callInfo is what the server knows of the call being handled.
type callInfo struct {
	id       string
	method   string
	metadata map[string]string
	status   StatusSink
}

type callInfoKey struct{}

// callContext is the handler's ctx: its parent plus the callInfo, in one
// allocation instead of a context.WithValue and a callInfo.
type callContext struct {
	context.Context
	info callInfo
}

func (c *callContext) Value(key any) any {
	if key == (callInfoKey{}) {
		return &c.info
	}
	return c.Context.Value(key)
}

// CallIDFromContext returns the call id of the request being handled: unique
// per logical call, and the same on a retry or a redelivery. Handlers that
// mutate state use it to apply a call at most once.
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

// MetadataFromContext returns the caller's metadata; the map must not be modified.
func MetadataFromContext(ctx context.Context) map[string]string {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return ci.metadata
	}
	return nil
}

// Status is a progress message for a call in flight: best-effort, only the
// latest matters, never persisted.
type Status struct {
	Code   Code
	Reason string
	Data   []byte
}

// CallOption configures one call made through Invoke.
type CallOption func(*callOptions)

type callOptions struct {
	timeout  time.Duration
	callID   string
	metadata map[string]string
	onStatus func(Status)
}

// WithTimeout bounds the call to d, on top of any deadline in ctx. The
// deadline travels with the request: a server does not start a call whose
// deadline has passed.
func WithTimeout(d time.Duration) CallOption {
	return func(o *callOptions) { o.timeout = d }
}

// WithCallID sets the call id instead of generating a fresh one. Reusing the
// id of a call whose outcome is unknown (the client crashed, the connection
// broke) asks the server for that call's recorded result instead of applying
// it again, for servers that de-duplicate by call id, such as the bank.
func WithCallID(id string) CallOption {
	return func(o *callOptions) { o.callID = id }
}

// WithMetadata adds a key/value pair to the request's metadata.
func WithMetadata(key, value string) CallOption {
	return func(o *callOptions) {
		if o.metadata == nil {
			o.metadata = make(map[string]string)
		}
		o.metadata[key] = value
	}
}

// OnStatus asks for the call's progress messages. fn is called from a backend
// goroutine, in order, and must not block; backends that carry no statuses
// (see StatusCapable) never call it.
func OnStatus(fn func(Status)) CallOption {
	return func(o *callOptions) { o.onStatus = fn }
}
