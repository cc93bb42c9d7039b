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
// A call costs one allocation, its call, which is also its handler's ctx;
// the table adds none of its own: the calls in flight are a list threaded
// through them, and a finished call's outcome is kept by value, so the
// cache holds neither the call nor its ctx (and what the backend put in
// that). The cache is bounded when a reply is added, not on every lookup (a
// lookup ignores a reply past its age).
type callTable struct {
	mu       sync.Mutex
	byID     map[string]slot
	finished []outcome // oldest first, numbered without gaps; finished[head:] are counted
	head     int
	bytes    int           // sizes of finished[head:]
	seq      uint64        // the number of the latest outcome cached
	running  *call         // the calls in flight, linked by next and prev
	idle     chan struct{} // closed when running becomes empty, for a waiter

	size, maxBytes int
	age            time.Duration
}

// slot is what the table knows of a call id: the call in flight, or, when
// run is nil, the number of the finished one's outcome. It is kept small:
// the map is probed on every call.
type slot struct {
	run *call
	seq uint64
}

// outcome is the reply of a finished call, as the cache keeps it, with what
// it counts against the cache's bounds.
type outcome struct {
	id    string
	seq   uint64 // its number in the cache
	reply []byte
	code  Code
	e     *Error
	fp    uint64 // of the call's request; 0 for a cancel that came first
	at    time.Time
	size  int
}

// call is one call id's run: in flight until done is closed, then its reply.
type call struct {
	id       string
	fp       uint64 // fingerprint of method and payload
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

	// The handler's ctx. Until the call ends the table may cancel it (its
	// lazyCancelCtx is safe for concurrent use); the rest is the owner's.
	cc callContext
}

// callOverhead is what the cache counts for an outcome besides its id and
// reply: its map slot and its place in the order of eviction.
const callOverhead = 256

func (t *callTable) init(size int, age time.Duration, maxBytes int) {
	t.byID = make(map[string]slot)
	t.size, t.age, t.maxBytes = size, age, maxBytes
}

// earlyCancelTTL is how long a cancel that came before its request waits
// for that request.
const earlyCancelTTL = 30 * time.Second

// errCallIDReused refuses a request whose call id names another request.
func errCallIDReused(id string) error {
	return status.Errorf(status.InvalidArgument, "bankrpc: call id %q is already used by a different request (another method or payload); a retry must resend the same request", id)
}

// admission is what begin tells of a request: the call to run (owner) or
// to join (wait is closed when it ends), or the outcome of the call id's
// finished call.
type admission struct {
	run   *call
	owner bool
	wait  <-chan struct{}
	done  outcome
	early bool // done answers a cancel that came before the request
}

// begin finds the call id's run, or starts one when accept is true: the
// owner runs it in &run.cc, the handler's ctx, derived from parent and
// ending by the deadline, that CancelCall and the server's stop cancel. A
// duplicate of another request's id is refused; so is a new call when
// accept is false (transport.ErrNotServed). id is read, not kept: a new call
// copies it.
func (t *callTable) begin(parent context.Context, id []byte, fp uint64, deadline int64, accept bool) (admission, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sl, ok := t.byID[string(id)]
	if ok && sl.run == nil {
		o := t.outcomeLocked(sl.seq)
		switch {
		case o.fp == 0:
			// A cancel that came before its request answers that request
			// once, if it comes soon (AMQP may deliver the two out of
			// order); a later retry of the call id runs.
			delete(t.byID, string(id))
			if time.Since(o.at) <= min(earlyCancelTTL, t.age) {
				return admission{done: o, early: true}, nil
			}
		case time.Since(o.at) > t.age:
			// Past its age: forgotten, as if evicted (a later finish
			// evicts it).
			delete(t.byID, string(id))
		case o.fp != fp:
			return admission{}, errCallIDReused(string(id))
		default:
			return admission{done: o}, nil
		}
	} else if ok {
		c := sl.run
		if c.fp != fp {
			return admission{}, errCallIDReused(c.id)
		}
		if c.done == nil {
			c.done = make(chan struct{})
		}
		return admission{run: c, wait: c.done}, nil
	}
	if !accept {
		return admission{}, transport.ErrNotServed
	}
	c := &call{id: string(id), fp: fp, deadline: deadline}
	c.cc.parent = parent
	if deadline != 0 {
		c.cc.deadline = time.Unix(0, deadline)
	}
	t.byID[c.id] = slot{run: c}
	c.next = t.running
	if t.running != nil {
		t.running.prev = c
	}
	t.running = c
	return admission{run: c, owner: true}, nil
}

// finish records the reply of c, which its owner ran, and wakes its joiners.
// With keep false the reply answers them but is not cached: it was the
// request's, not the call's (an expired request did not run), and a later
// repeat of the call id must run (PROTOCOL.md 2.2).
func (t *callTable) finish(c *call, reply []byte, code Code, e *Error, keep bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	c.reply, c.code, c.e = reply, code, e
	t.endLocked(c)
	if !keep || t.size <= 0 || t.age <= 0 {
		delete(t.byID, c.id)
		return
	}
	t.cacheLocked(outcome{id: c.id, reply: reply, code: code, e: e, fp: c.fp, at: now})
}

// cacheLocked makes o the outcome of its call id and bounds the cache.
func (t *callTable) cacheLocked(o outcome) {
	t.seq++
	o.seq = t.seq
	o.size = callOverhead + len(o.id) + len(o.reply)
	t.byID[o.id] = slot{seq: o.seq}
	t.finished = append(t.finished, o)
	t.bytes += o.size
	t.evictLocked(o.at)
}

// outcomeLocked returns the cached outcome numbered seq, which a slot names:
// the outcomes are numbered without gaps, and evicting one deletes its slot.
func (t *callTable) outcomeLocked(seq uint64) outcome {
	return t.finished[t.head+int(seq-t.finished[t.head].seq)]
}

// abandon ends c without a reply: the server stopped it. It is forgotten, so
// a later delivery of the same call (AMQP requeues it) runs it again.
func (t *callTable) abandon(c *call) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c.err, c.code = transport.ErrNotServed, Unavailable
	c.reply = resultFrame([]byte(c.id), transport.ErrNotServed, nil)
	t.endLocked(c)
	if t.byID[c.id].run == c {
		delete(t.byID, c.id)
	}
}

// endLocked marks c ended, after its outcome was written, wakes its joiners
// and ends its handler's ctx.
func (t *callTable) endLocked(c *call) {
	c.ended = true
	c.cc.cancel(nil)
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
	if sl, ok := t.byID[id]; ok {
		// A client also stops waiting when the call's deadline passes; the
		// handler's ctx then ends by that deadline, which it carries, and
		// says so (context.DeadlineExceeded) rather than "canceled".
		if c := sl.run; c != nil && (c.deadline == 0 || time.Now().UnixNano() < c.deadline) {
			c.cc.cancel(ErrCanceledByClient)
		}
		return
	}
	if t.size <= 0 || t.age <= 0 {
		return
	}
	t.cacheLocked(outcome{id: id, reply: tombstone(), code: Canceled, at: time.Now()})
}

// cancelAll cancels every call in flight with cause.
func (t *callTable) cancelAll(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := t.running; c != nil; c = c.next {
		c.cc.cancel(cause)
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
		f := t.finished[t.head]
		if len(t.finished)-t.head <= t.size && t.bytes <= t.maxBytes && now.Sub(f.at) <= t.age {
			break
		}
		t.finished[t.head] = outcome{}
		t.head++
		t.bytes -= f.size
		if sl, ok := t.byID[f.id]; ok && sl.run == nil && sl.seq == f.seq {
			delete(t.byID, f.id)
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
