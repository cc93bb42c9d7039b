package amqp

import "sync"

// inflight counts running handlers, for a drain to wait for. It is safe for
// concurrent use.
type inflight struct {
	mu   sync.Mutex // guards n, wake
	n    int
	wake chan struct{} // closed when n drops to 0; nil while nobody waits
}

// closedChan is the channel idle returns when nothing runs.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 && f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

// idle returns a channel closed once no handler runs.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return closedChan
	}
	if f.wake == nil {
		f.wake = make(chan struct{})
	}
	return f.wake
}
