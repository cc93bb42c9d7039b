package logging

import (
	"context"
	"log/slog"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/internal/ratelog"
)

// Config configures a Handler. The zero value is the defaults.
type Config struct {
	// Level gives the level of a finished call's line (default
	// DefaultLevel).
	Level func(info *bankrpc.CallInfo, end *bankrpc.CallEnd) slog.Level
	// Burst and Interval bound the lines of refused calls, per reason, and
	// of warnings, per code: Burst lines per Interval, then one summary
	// line per Interval saying how many were left out (default 10 per 10s).
	Burst    int
	Interval time.Duration
}

// DefaultLevel is Warn for a call that failed because the server (or the
// way to it) did — UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS — when the
// server ran it; and Debug for every other call: successes, the answers an
// application gives (NOT_FOUND, FAILED_PRECONDITION...), the caller's own
// mistakes and deadlines (INVALID_ARGUMENT, DEADLINE_EXCEEDED, CANCELED), the
// calls the server refused without running them and the duplicates it
// answered from its reply cache, which a client can send as fast as the
// network goes. The same rule holds on the client's side.
func DefaultLevel(_ *bankrpc.CallInfo, end *bankrpc.CallEnd) slog.Level {
	if end.Refused || end.Duplicate {
		return slog.LevelDebug
	}
	switch end.Code {
	case bankrpc.Unknown, bankrpc.Internal, bankrpc.Unavailable, bankrpc.DataLoss:
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// Handler writes one line per finished call: "finished call" with the side
// (server or client), method, code, duration, call id, the peer (server
// side) and, for a failure, the error's message; refused calls say why
// ("refused"), duplicates say so ("duplicate"). It is a bankrpc.StatsHandler,
// so it sees the calls a server refuses before running a handler, which
// interceptors do not. Lines of refused calls and warnings are
// rate-limited (see Config); the others are not, so that a debug log has
// every call. It is safe for concurrent use.
type Handler struct {
	l       *slog.Logger
	level   func(*bankrpc.CallInfo, *bankrpc.CallEnd) slog.Level
	limited *ratelog.Logger
}

var _ bankrpc.StatsHandler = (*Handler)(nil)

// NewHandler returns a Handler writing to l.
func NewHandler(l *slog.Logger, cfg Config) *Handler {
	if cfg.Level == nil {
		cfg.Level = DefaultLevel
	}
	if cfg.Burst <= 0 {
		cfg.Burst = ratelog.DefaultBurst
	}
	if cfg.Interval <= 0 {
		cfg.Interval = ratelog.DefaultInterval
	}
	return &Handler{l: l, level: cfg.Level, limited: ratelog.New(l, cfg.Burst, cfg.Interval)}
}

// Option returns the option that adds h to a Server or a Conn.
func (h *Handler) Option() bankrpc.Option { return bankrpc.WithStatsHandler(h) }

// Option returns the option that logs a Server's or a Conn's calls to l,
// with the default Config.
func Option(l *slog.Logger) bankrpc.Option { return NewHandler(l, Config{}).Option() }

// Begin implements bankrpc.StatsHandler.
func (h *Handler) Begin(ctx context.Context, _ *bankrpc.CallInfo) context.Context { return ctx }

// End implements bankrpc.StatsHandler.
func (h *Handler) End(ctx context.Context, info *bankrpc.CallInfo, end *bankrpc.CallEnd) {
	level := h.level(info, end)
	if !h.l.Enabled(ctx, level) {
		return
	}
	side := "server"
	if info.Client {
		side = "client"
	}
	attrs := make([]any, 0, 16)
	attrs = append(attrs,
		slog.String("side", side),
		slog.String("method", info.Method),
		slog.String("code", end.Code.String()),
		slog.Duration("duration", end.Duration),
		slog.String("call_id", info.CallID),
	)
	if p := info.Peer; p.Transport != "" {
		peer := []any{slog.String("transport", p.Transport)}
		if p.Addr != "" {
			peer = append(peer, slog.String("addr", p.Addr))
		}
		if p.Identity != "" {
			peer = append(peer, slog.String("identity", p.Identity))
		}
		attrs = append(attrs, slog.Group("peer", peer...))
	}
	// Err is read only for a failure: a duplicate of a successful call
	// may carry a nil *Error in it.
	if end.Code != bankrpc.OK && end.Err != nil {
		attrs = append(attrs, slog.String("error", bankrpc.MessageOf(end.Err)))
	}
	if end.Duplicate {
		attrs = append(attrs, slog.Bool("duplicate", true))
	}
	const msg = "finished call"
	switch {
	case end.Refused:
		attrs = append(attrs, slog.String("refused", end.RefusedReason))
		h.limited.Log(ctx, level, "refused "+end.RefusedReason, msg, attrs...)
	case level >= slog.LevelWarn:
		h.limited.Log(ctx, level, side+" "+end.Code.String(), msg, attrs...)
	default:
		h.l.Log(ctx, level, msg, attrs...)
	}
}
