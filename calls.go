package bankrpc

import (
	"context"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// callTable holds the calls a Server runs and the replies of those it
// finished, by call id: the in-flight table and the reply cache behind the
// rule "at most one run per call id while the server runs".
//
// A call costs no allocation of its own here: the calls in flight are a
// list threaded through them, and the cache is bounded when a reply is
// added, not on every lookup (a lookup ignores a reply past its age).
type callTable struct {
	mu       sync.Mutex
	byID     map[string]*call
	finished []*call // oldest first; finished[head:] are live
	head     int
	bytes    int           // sizes of finished[head:]
	running  *call         // the calls in flight, linked by next and prev
	idle     chan struct{} // closed when running becomes empty, for a waiter

	size, maxBytes int
	age            time.Duration
}

// call is one call id's run: in flight until done is closed, then its reply.
type call struct {
	id       string
	fp       uint64 // fingerprint of method and payload; 0 matches any
	deadline int64  // the request's, Unix nanoseconds; 0 for none

	// Guarded by callTable.mu: whether the call ended, the channel its
	// joiners wait on, made only when one joins (most calls have none), and
	// its links in the list of calls in flight.
	ended      bool
	done       chan struct{}
	next, prev *call

	// Written before done is closed, read after.
	reply []byte
	err   error // nil, or transport.ErrNotServed
	code  Code  // the reply's code
	e     *Error

	ctx        *callContext // the handler's; guarded by callTable.mu; nil once done
	finishedAt time.Time
	size       int // what the cache counts for it, set when it is cached
}

// callOverhead is what the cache counts for a call besides its id and
// reply: the call itself and its map and slice slots.
const callOverhead = 256

// cacheSize is what the cache counts for c in its byte bound.
func (c *call) cacheSize() int {
	return callOverhead + len(c.id) + len(c.reply)
}

func (t *callTable) init(size int, age time.Duration, maxBytes int) {
	t.byID = make(map[string]*call)
	t.size, t.age, t.maxBytes = size, age, maxBytes
}

// earlyCancelTTL is how long a cancel that came before its request waits
// for that request.
const earlyCancelTTL = 30 * time.Second

// errCallIDReused refuses a request whose call id names another request.
func errCallIDReused(id string) error {
	return status.Errorf(status.InvalidArgument, "bankrpc: call id %q is already used by a different request (another method or payload); a retry must resend the same request", id)
}

// begin finds the call id's run, or starts one when accept is true. It
// returns the call, whether the caller owns (must run and finish) it, for
// the owner the handler's ctx, derived from parent, ending by the deadline,
// that CancelCall and the server's stop cancel, and for a joiner of a call still running the channel closed when
// it ends (nil when it has ended). A duplicate of another request's id is
// refused; so is a new call when accept is false (transport.ErrNotServed).
// id is read, not kept: a new call copies it.
func (t *callTable) begin(parent context.Context, id []byte, fp uint64, deadline int64, accept bool) (c *call, owner bool, ctx *callContext, wait <-chan struct{}, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c = t.byID[string(id)]
	if c != nil && c.ended && c.fp != 0 && time.Since(c.finishedAt) > t.age {
		// Past its age: forgotten, as if evicted (finish evicts it).
		delete(t.byID, c.id)
		c = nil
	}
	if c != nil && c.fp == 0 && c.ended {
		// A cancel that came before its request answers that request once,
		// if it comes soon (AMQP may deliver the two out of order); a later
		// retry of the call id runs.
		delete(t.byID, c.id)
		if time.Since(c.finishedAt) <= min(earlyCancelTTL, t.age) {
			return c, false, nil, nil, nil
		}
	} else if c != nil {
		if c.fp != 0 && c.fp != fp {
			return nil, false, nil, nil, errCallIDReused(c.id)
		}
		if !c.ended && c.done == nil {
			c.done = make(chan struct{})
		}
		if !c.ended {
			wait = c.done
		}
		return c, false, nil, wait, nil
	}
	if !accept {
		return nil, false, nil, nil, transport.ErrNotServed
	}
	c = &call{id: string(id), fp: fp, deadline: deadline}
	c.ctx = &callContext{lazyCancelCtx: lazyCancelCtx{parent: parent}}
	if deadline != 0 {
		c.ctx.deadline = time.Unix(0, deadline)
	}
	t.byID[c.id] = c
	c.next = t.running
	if t.running != nil {
		t.running.prev = c
	}
	t.running = c
	return c, true, c.ctx, nil, nil
}

// finish records the reply of c, which its owner ran, and wakes its joiners.
// With keep false the reply answers them but is not cached: it was the
// request's, not the call's (an expired request did not run), and a later
// repeat of the call id must run (PROTOCOL.md 2.2).
func (t *callTable) finish(c *call, reply []byte, code Code, e *Error, keep bool) {
	now := time.Now()
	t.mu.Lock()
	c.reply, c.finishedAt, c.code, c.e = reply, now, code, e
	c.ctx.cancel(nil)
	c.ctx = nil
	t.endLocked(c)
	if keep && t.size > 0 && t.age > 0 {
		c.size = c.cacheSize()
		t.finished = append(t.finished, c)
		t.bytes += c.size
		t.evictLocked(now)
	} else {
		delete(t.byID, c.id)
	}
	t.mu.Unlock()
}

// abandon ends c without a reply: the server stopped it. It is forgotten, so
// a later delivery of the same call (AMQP requeues it) runs it again.
func (t *callTable) abandon(c *call) {
	t.mu.Lock()
	c.err, c.code = transport.ErrNotServed, Unavailable
	c.reply = resultFrame([]byte(c.id), transport.ErrNotServed, nil)
	c.ctx.cancel(nil)
	c.ctx = nil
	t.endLocked(c)
	if t.byID[c.id] == c {
		delete(t.byID, c.id)
	}
	t.mu.Unlock()
}

// endLocked marks c ended, after its outcome was written, and wakes its
// joiners.
func (t *callTable) endLocked(c *call) {
	c.ended = true
	if c.done != nil {
		close(c.done)
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else if t.running == c {
		t.running = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.next, c.prev = nil, nil
	if t.running == nil && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// cancel cancels the run of id, or, when id is unknown, records a cancel
// that answers the call, if it comes later, with the reply tombstone makes.
func (t *callTable) cancel(id string, tombstone func() []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.byID[id]; c != nil {
		// A client also stops waiting when the call's deadline passes; the
		// handler's ctx then ends by that deadline, which it carries, and
		// says so (context.DeadlineExceeded) rather than "canceled".
		expired := c.deadline != 0 && time.Now().UnixNano() >= c.deadline
		if c.ctx != nil && !expired {
			c.ctx.cancel(ErrCanceledByClient)
		}
		return
	}
	if t.size == 0 || t.age <= 0 {
		return
	}
	now := time.Now()
	c := &call{id: id, ended: true, reply: tombstone(), finishedAt: now, code: Canceled}
	c.size = c.cacheSize()
	t.byID[id] = c
	t.finished = append(t.finished, c)
	t.bytes += c.size
	t.evictLocked(now)
}

// cancelAll cancels every call in flight with cause.
func (t *callTable) cancelAll(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := t.running; c != nil; c = c.next {
		if c.ctx != nil {
			c.ctx.cancel(cause)
		}
	}
}

// wait returns when no call is in flight, or with ctx's error.
func (t *callTable) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.running == nil {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// evictLocked drops the oldest finished replies beyond the cache's bounds.
func (t *callTable) evictLocked(now time.Time) {
	for t.head < len(t.finished) {
		c := t.finished[t.head]
		if len(t.finished)-t.head <= t.size && t.bytes <= t.maxBytes && now.Sub(c.finishedAt) <= t.age {
			break
		}
		t.finished[t.head] = nil
		t.head++
		t.bytes -= c.size
		if t.byID[c.id] == c {
			delete(t.byID, c.id)
		}
	}
	// Reuse the slice once its dead prefix is at least half of it.
	if t.head > 0 && t.head*2 >= len(t.finished) {
		n := copy(t.finished, t.finished[t.head:])
		clear(t.finished[n:])
		t.finished = t.finished[:n]
		t.head = 0
	}
}
