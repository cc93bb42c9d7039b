// Package calltrace timestamps the points a call passes on its way through
// a backend, so that a benchmark can break one call's latency into
// segments: the caller's side before the request is on the socket, the
// wire and wake-ups to the server, the server's side, the way back. It is
// off unless a benchmark sets a hook: a mark then costs one atomic load.
//
// Only one hook runs at a time, for the whole process: the benchmarks that
// set it measure one caller, one call at a time.
package calltrace

import "sync/atomic"

// Point is a moment in the life of a call.
type Point int

// The points a backend marks, in the order a call passes them.
const (
	ClientSent     Point = iota // the request's last frame is handed to the socket
	ServerReceived              // the server read the request's first frame
	HandlerStart                // the server calls the Handler
	HandlerEnd                  // the Handler returned the reply
	ServerSent                  // the reply's last frame is handed to the socket
	ClientReceived              // the client read the reply's first frame
	NumPoints
)

var hook atomic.Pointer[func(Point)]

// Mark tells the hook, if any, that a call passed p.
func Mark(p Point) {
	if h := hook.Load(); h != nil {
		(*h)(p)
	}
}

// Set makes f the hook (nil: none) and returns a function that puts the
// previous one back.
func Set(f func(Point)) (restore func()) {
	var next *func(Point)
	if f != nil {
		next = &f
	}
	prev := hook.Swap(next)
	return func() { hook.Store(prev) }
}
