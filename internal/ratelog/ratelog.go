// Package ratelog bounds what a flood of bad input can write to a log: each
// kind of event is logged once per event up to a burst per interval; past
// it, events are counted and one summary line per interval says how many
// were left out. The runtime and the backends use it for what they refuse
// (garbage frames, oversized messages, unknown methods), which a client can
// send as fast as the network goes.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Default bounds: 10 lines per kind per 10 seconds, then a summary.
const (
	DefaultBurst    = 10
	DefaultInterval = 10 * time.Second
)

// Logger is a rate-limited front of an *slog.Logger. It is safe for
// concurrent use. The zero value is not usable; call New.
type Logger struct {
	l     *slog.Logger
	burst int
	every time.Duration

	mu    sync.Mutex
	kinds map[string]*window
}

// window counts one kind's events in the current interval.
type window struct {
	start      time.Time
	logged     int
	suppressed int
	level      slog.Level
	msg        string
	flushing   bool // a summary is scheduled
}

// New returns a Logger writing to l at most burst lines per kind per every,
// plus one summary line per interval in which lines were left out.
func New(l *slog.Logger, burst int, every time.Duration) *Logger {
	if burst < 1 {
		burst = 1
	}
	return &Logger{l: l, burst: burst, every: every, kinds: make(map[string]*window)}
}

// Log writes msg with args at level under kind, unless kind has used its
// burst in the current interval; then it counts it for the summary.
func (r *Logger) Log(ctx context.Context, level slog.Level, kind, msg string, args ...any) {
	if !r.l.Enabled(ctx, level) {
		return
	}
	now := time.Now()
	r.mu.Lock()
	w := r.kinds[kind]
	if w == nil || now.Sub(w.start) >= r.every && !w.flushing {
		w = &window{start: now}
		r.kinds[kind] = w
	}
	if w.logged < r.burst {
		w.logged++
		r.mu.Unlock()
		r.l.Log(ctx, level, msg, append(args, "kind", kind)...)
		return
	}
	w.suppressed++
	w.level, w.msg = level, msg
	if !w.flushing {
		w.flushing = true
		time.AfterFunc(time.Until(w.start.Add(r.every)), func() { r.flush(kind, w) })
	}
	r.mu.Unlock()
}

// flush writes the summary of w's interval and starts a new one.
func (r *Logger) flush(kind string, w *window) {
	r.mu.Lock()
	n, level, msg := w.suppressed, w.level, w.msg
	if r.kinds[kind] == w {
		delete(r.kinds, kind)
	}
	r.mu.Unlock()
	r.l.Log(context.Background(), level, msg+" (summary)", "kind", kind, "suppressed", n, "interval", r.every)
}
