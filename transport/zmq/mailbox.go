package zmq

import (
	"sync"

	zmq4 "github.com/pebbe/zmq4"
)

// mailbox hands items from any goroutine to the goroutine that owns a zmq
// socket. The owner sleeps in zmq_poll, which cannot wait on a Go channel,
// so a put also writes a one-byte wake-up message to an inproc PAIR socket
// that the owner polls. Wake-ups are coalesced: only the first put after the
// owner took the items signals, so a busy owner drains many items per
// wake-up and a burst of puts costs one signal.
//
// put and wake are safe for concurrent use; rx, drain, take and close belong
// to the owner goroutine.
type mailbox[T any] struct {
	mu       sync.Mutex // guards items, signaled, closed and every use of tx
	items    []T
	signaled bool // a wake-up was sent since the last take
	closed   bool
	tx       *zmq4.Socket // PAIR, connected to rx
	rx       *zmq4.Socket // PAIR, bound; polled by the owner
	one      []byte
}

// newMailbox opens the PAIR sockets in zctx; name is an inproc endpoint
// unique in zctx.
func newMailbox[T any](zctx *zmq4.Context, name string) (*mailbox[T], error) {
	rx, err := newSocket(zctx, zmq4.PAIR)
	if err != nil {
		return nil, err
	}
	if err := rx.Bind(name); err != nil {
		_ = rx.Close()
		return nil, endpointError("bind", name, err)
	}
	tx, err := newSocket(zctx, zmq4.PAIR)
	if err != nil {
		_ = rx.Close()
		return nil, err
	}
	if err := tx.Connect(name); err != nil {
		_ = rx.Close()
		_ = tx.Close()
		return nil, endpointError("connect", name, err)
	}
	return &mailbox[T]{tx: tx, rx: rx, one: []byte{1}}, nil
}

// put queues v and wakes the owner. It reports false when the mailbox is
// closed.
func (m *mailbox[T]) put(v T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.items = append(m.items, v)
	m.signalLocked()
	return true
}

// wake wakes the owner without an item.
func (m *mailbox[T]) wake() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.signalLocked()
	}
}

func (m *mailbox[T]) signalLocked() {
	if m.signaled {
		return
	}
	// An inproc PAIR with an empty queue never refuses a message; should it
	// ever, the owner is awake already with a signal pending.
	if _, err := m.tx.SendBytes(m.one, zmq4.DONTWAIT); err == nil {
		m.signaled = true
	}
}

// drain consumes the wake-up messages; the owner calls it when rx polls
// readable.
func (m *mailbox[T]) drain() {
	for {
		if _, err := m.rx.RecvBytes(zmq4.DONTWAIT); err != nil {
			return
		}
	}
}

// take appends the queued items to dst and returns it. Items put after take
// signal again, so none is left behind without a wake-up.
func (m *mailbox[T]) take(dst []T) []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	dst = append(dst, m.items...)
	clear(m.items)
	m.items = m.items[:0]
	m.signaled = false
	return dst
}

// close closes both sockets; later puts report false.
func (m *mailbox[T]) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	_ = m.tx.Close()
	_ = m.rx.Close()
}
