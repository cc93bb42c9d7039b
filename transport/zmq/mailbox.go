package zmq

import (
	"sync"
	"time"

	zmq4 "github.com/pebbe/zmq4"
)

// mailbox hands items from any goroutine to the goroutine that currently
// owns a zmq socket (the leader of a Server or Client). The owner may sleep
// in zmq_poll, which cannot wait on a Go channel, so a put while it sleeps
// also writes a one-byte wake-up message to an inproc PAIR socket that the
// owner polls. Wake-ups are spared when they are not needed: only the first
// put of a sleep signals, and a put while the owner is awake costs none, so
// a busy owner drains many items per wake-up.
//
// put and wake are safe for concurrent use; rx, drain, poll, take and close
// belong to the owner.
type mailbox[T any] struct {
	mu       sync.Mutex // guards items, asleep, signaled, closed, leading and every use of tx
	items    []T
	asleep   bool // the owner is in, or about to enter, zmq_poll
	signaled bool // a wake-up was sent during this sleep
	closed   bool
	leading  bool         // Client only: a caller owns the socket (see Client.lead)
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

// wake wakes the owner without an item. The owner must check the reason for
// the wake-up (a flag set before wake) before it sleeps again.
func (m *mailbox[T]) wake() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.signalLocked()
	}
}

func (m *mailbox[T]) signalLocked() {
	if !m.asleep || m.signaled {
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

// poll runs p.PollAll, blocking for up to timeout only when no item is
// queued and stop reports false once the mailbox knows the owner sleeps.
// stop checks the flags that wake is used for.
func (m *mailbox[T]) poll(p *zmq4.Poller, timeout time.Duration, stop func() bool) ([]zmq4.Polled, error) {
	if !m.sleep() {
		return p.PollAll(0)
	}
	if stop() {
		m.awake()
		return p.PollAll(0)
	}
	polled, err := p.PollAll(timeout)
	m.awake()
	return polled, err
}

// sleep tells the mailbox the owner is about to block in zmq_poll, so that
// puts from now on signal. It reports false, and the owner must not block,
// when items are already queued.
func (m *mailbox[T]) sleep() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.items) > 0 {
		return false
	}
	m.asleep = true
	return true
}

// awake tells the mailbox the owner is back from zmq_poll.
func (m *mailbox[T]) awake() {
	m.mu.Lock()
	m.asleep, m.signaled = false, false
	m.mu.Unlock()
}

// take appends the queued items to dst and returns it.
func (m *mailbox[T]) take(dst []T) []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	dst = append(dst, m.items...)
	clear(m.items)
	m.items = m.items[:0]
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
