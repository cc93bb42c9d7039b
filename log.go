package bankrpc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// The bounds of a result's log lines (Result.log): a handler's lines beyond
// them are dropped, and the result ends with one line saying how many.
const (
	MaxLogLines    = 100      // lines per result
	MaxLogLineSize = 1 << 10  // bytes per line; a longer line is cut
	MaxLogBytes    = 16 << 10 // bytes of all the lines of a result
)

// callLog holds the lines a handler added with Log. Its mutex guards the
// rest: a handler may log from several goroutines.
type callLog struct {
	mu      sync.Mutex
	lines   []string
	bytes   int
	dropped int
}

func (l *callLog) add(line string) {
	if !utf8.ValidString(line) {
		// protobuf strings must be UTF-8; a handler's text need not be.
		line = strings.ToValidUTF8(line, "\ufffd")
	}
	if len(line) > MaxLogLineSize {
		cut := MaxLogLineSize - len("…")
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "…"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) >= MaxLogLines || l.bytes+len(line) > MaxLogBytes {
		l.dropped++
		return
	}
	l.lines = append(l.lines, line)
	l.bytes += len(line)
}

// take returns the lines logged so far, followed by the lines of e, and a
// last line counting those dropped by the bounds.
func (l *callLog) take(e *Error) []string {
	l.mu.Lock()
	lines, dropped := l.lines, l.dropped
	l.lines, l.bytes, l.dropped = nil, 0, 0
	l.mu.Unlock()
	if e != nil && len(e.Log()) > 0 {
		lines = append(lines, e.Log()...)
	}
	if dropped > 0 {
		lines = append(lines, fmt.Sprintf("bankrpc: %d more log lines dropped (at most %d lines and %d bytes per result)", dropped, MaxLogLines, MaxLogBytes))
	}
	return lines
}

// Log adds a diagnostic line to the result of the call being handled (the
// thesis's Result.log). The lines travel with the result, whether the call
// succeeds or fails: a client reads them with the LogLines call option, or
// from the error (Error.Log). At most MaxLogLines lines and MaxLogBytes
// bytes are kept per call, each line cut at MaxLogLineSize bytes; the result
// says how many were dropped. Outside a handler's ctx Log does nothing. It
// is safe for concurrent use.
func Log(ctx context.Context, line string) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		ci.log.add(line)
	}
}

// Logf is Log with a fmt-formatted line.
func Logf(ctx context.Context, format string, args ...any) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		ci.log.add(fmt.Sprintf(format, args...))
	}
}

// LogOption asks for a call's log lines; see LogLines.
type LogOption struct{ Lines *[]string }

func (o LogOption) applyCall(c *callOptions) { c.log = o.Lines }

// LogLines stores in *dst the log lines the server attached to the call's
// result (see Log), on success and on error alike (an error also carries
// them: Error.Log). *dst is left as it is when no result arrived.
func LogLines(dst *[]string) CallOption { return LogOption{Lines: dst} }
