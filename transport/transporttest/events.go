package transporttest

import (
	"sync"

	"github.com/bankrpc/bankrpc/transport"
)

// Events records what a backend reports to its transport.EventSink, for
// tests that check a backend's events.
type Events struct {
	mu  sync.Mutex
	got map[transport.Event]int
}

// Sink returns the EventSink that records into e.
func (e *Events) Sink() transport.EventSink {
	return func(ev transport.Event) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.got == nil {
			e.got = make(map[transport.Event]int)
		}
		e.got[ev]++
	}
}

// Count returns how many events of backend, kind and reason were recorded.
func (e *Events) Count(backend string, kind transport.EventKind, reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.got[transport.Event{Transport: backend, Kind: kind, Reason: reason}]
}
