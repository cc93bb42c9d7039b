package bankrpc

import (
	"context"
	"time"
)

// StatsHandler observes the calls of a Server or a Conn: every call, including
// those the server refuses before a handler runs (an expired deadline, an
// unknown method, bad metadata, an undecodable payload, a reused call id, a
// call not served during shutdown) and the duplicates answered from the
// reply cache — which interceptors do not see. Metrics, tracing and call logs
// are built on it (see the metrics and tracing packages). Implementations are
// safe for concurrent use and must not block.
type StatsHandler interface {
	// Begin is called when a call starts; the ctx it returns is the one the
	// handler (server) or the backend (client) gets, and End's.
	Begin(ctx context.Context, info *CallInfo) context.Context
	// End is called once per Begin, when the call ends.
	End(ctx context.Context, info *CallInfo, end *CallEnd)
}

// CallInfo describes a call to a StatsHandler.
type CallInfo struct {
	// Method is the full method name, "/package.Service/Method"; for a
	// frame too malformed to read, "" .
	Method string
	// CallID is the call's id; "" for a frame too malformed to read.
	CallID string
	// Client is true on the client side.
	Client bool
	// Peer is the caller (server side), as the backend knows it.
	Peer Peer
	// Begin is when the call started.
	Begin time.Time
}

// CallEnd is the outcome of a call.
type CallEnd struct {
	// Code is the call's code; OK on success.
	Code Code
	// Err is the error the caller gets (client) or the server answered
	// (server); nil on success.
	Err error
	// Duration is the time from Begin to the end.
	Duration time.Duration
	// Refused is true when the server answered without running a handler
	// (see StatsHandler); RefusedReason then says why, e.g. "expired".
	Refused       bool
	RefusedReason string
	// Duplicate is true on the server when the call joined a run in flight
	// or was answered from the reply cache.
	Duplicate bool
}

// WithStatsHandler adds a StatsHandler to a Server or a Conn. Several append;
// they are called in order at Begin and in reverse order at End.
func WithStatsHandler(h StatsHandler) Option {
	return bothFunc{
		dial:   func(o *dialOptions) { o.stats = append(o.stats, h) },
		server: func(o *serverOptions) { o.stats = append(o.stats, h) },
	}
}

// statsBegin calls every handler's Begin.
func statsBegin(ctx context.Context, hs []StatsHandler, info *CallInfo) context.Context {
	for _, h := range hs {
		ctx = h.Begin(ctx, info)
	}
	return ctx
}

// statsEnd calls every handler's End, in reverse order.
func statsEnd(ctx context.Context, hs []StatsHandler, info *CallInfo, end *CallEnd) {
	end.Duration = time.Since(info.Begin)
	for i := len(hs) - 1; i >= 0; i-- {
		hs[i].End(ctx, info, end)
	}
}
