package bankrpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lazyCancelCtx is the cancelation of a handler's ctx: it behaves as
// context.WithCancelCause(context.WithDeadline(parent, deadline)) would
// (Done, Err, context.Cause, children, context.AfterFunc), at a fraction of
// the cost, and only for what the handler uses:
//
//   - A handler that never waits on its ctx, the common quick call, costs
//     nothing: Err tells from the recorded end, the parent and the clock.
//   - Done makes one channel, and a timer for the deadline (and a watch of
//     the parent, when it can end).
//   - Children and context.AfterFunc are told through the AfterFunc method,
//     which the context package uses for a parent that has one: at the end,
//     on the goroutine that ended c, once it let go of c (a child is canceled
//     at once, as a child of a context.WithCancel is; context.AfterFunc
//     starts its function in a goroutine of its own).
//   - A context.WithCancelCause of the parent's values, inner, exists only to
//     answer Value: context.Cause finds it there, with the cause of the end.
//     It is made on the first Value of a key other than the call's info, and
//     canceled, with the cause, when c ends.
//
// The first end counts: a cancel (cancel), the deadline, or the parent's
// end; a cancel after the deadline passed, or after the parent ended, finds
// them first, as it would with the context package's contexts.
//
// It is safe for concurrent use. mu guards the fields below it; a method
// that may end c lets go of it with unlock.
type lazyCancelCtx struct {
	parent   context.Context
	deadline time.Time // zero for none

	done atomic.Value // of chan struct{}: made by Done, closed at the end

	mu         sync.Mutex
	ended      bool
	err, cause error
	watching   bool        // the deadline and the parent's end are watched
	timer      *time.Timer // the deadline's, while watching
	stopParent func() bool // the watch of the parent's end
	funcs      []*afterFunc
	run        []func() // AfterFunc functions due, run by unlock
	inner      context.Context
	stopInner  context.CancelCauseFunc
}

// afterFunc is a function given to AfterFunc, run once at the end unless
// stopped first.
type afterFunc struct {
	f    func()
	done bool // started or stopped; guarded by lazyCancelCtx.mu
	i    int  // its index in lazyCancelCtx.funcs while waiting
}

// closedChan is the Done of a ctx that ended before anybody asked.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func (c *lazyCancelCtx) Deadline() (time.Time, bool) {
	d, ok := c.parent.Deadline()
	if c.deadline.IsZero() || (ok && d.Before(c.deadline)) {
		return d, ok
	}
	return c.deadline, true
}

func (c *lazyCancelCtx) Done() <-chan struct{} {
	if d, ok := c.done.Load().(chan struct{}); ok {
		return d
	}
	c.mu.Lock()
	defer c.unlock()
	if d, ok := c.done.Load().(chan struct{}); ok {
		return d
	}
	c.checkLocked()
	ch := closedChan
	if !c.ended {
		ch = make(chan struct{})
		c.watchLocked()
	}
	c.done.Store(ch)
	return ch
}

func (c *lazyCancelCtx) Err() error {
	c.mu.Lock()
	defer c.unlock()
	c.checkLocked()
	return c.err
}

// Value answers from inner, made for it once (see lazyCancelCtx). It first
// records an end that nothing watched, so that context.Cause agrees with
// Err.
func (c *lazyCancelCtx) Value(key any) any {
	c.mu.Lock()
	defer c.unlock()
	c.checkLocked()
	if c.inner == nil {
		c.inner, c.stopInner = context.WithCancelCause(context.WithoutCancel(c.parent))
		if c.ended {
			c.stopInner(c.cause)
		}
	}
	return c.inner.Value(key)
}

// AfterFunc arranges for f to run once c ends, on the goroutine that ended
// it (in a goroutine of its own if c has ended); stop reports whether it
// kept f from starting.
// The context package calls it for the children of c and for
// context.AfterFunc(c, f), with a function that cancels the child.
func (c *lazyCancelCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.unlock()
	c.checkLocked()
	a := &afterFunc{f: f}
	if c.ended {
		// Not on this goroutine: the context package holds the child's lock
		// while it calls AfterFunc, and f takes it.
		a.done = true
		go f()
	} else {
		a.i = len(c.funcs)
		c.funcs = append(c.funcs, a)
		c.watchLocked()
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.done {
			return false
		}
		a.done = true
		// Out of funcs in O(1), so that many children come and go cheaply.
		last := c.funcs[len(c.funcs)-1]
		c.funcs[a.i], last.i = last, a.i
		c.funcs[len(c.funcs)-1] = nil
		c.funcs = c.funcs[:len(c.funcs)-1]
		return true
	}
}

// cancel cancels c with cause (nil: context.Canceled), as the
// CancelCauseFunc of context.WithCancelCause; only the first end counts,
// whether a cancel, the parent's or the deadline. It releases the deadline's
// timer.
func (c *lazyCancelCtx) cancel(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	c.mu.Lock()
	defer c.unlock()
	c.checkLocked()
	c.endLocked(context.Canceled, cause)
}

// expire ends c by its deadline: the timer's function.
func (c *lazyCancelCtx) expire() {
	c.mu.Lock()
	defer c.unlock()
	c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
}

// parentEnded ends c as its parent ended.
func (c *lazyCancelCtx) parentEnded() {
	c.mu.Lock()
	defer c.unlock()
	c.endLocked(c.parent.Err(), context.Cause(c.parent))
}

// checkLocked ends c if its parent ended or its deadline passed, which
// nothing may have watched yet.
func (c *lazyCancelCtx) checkLocked() {
	if c.ended {
		return
	}
	if err := c.parent.Err(); err != nil {
		c.endLocked(err, context.Cause(c.parent))
	} else if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
	}
}

// watchLocked arms the deadline's timer and watches the parent's end, once
// somebody can wait for c's end (Done, AfterFunc).
func (c *lazyCancelCtx) watchLocked() {
	if c.watching || c.ended {
		return
	}
	c.watching = true
	if !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), c.expire)
	}
	if c.parent.Done() != nil {
		c.stopParent = context.AfterFunc(c.parent, c.parentEnded)
	}
}

// endLocked ends c with err and cause, unless it has ended: it closes Done,
// cancels inner with the cause, releases the watches and makes the
// AfterFunc functions due.
func (c *lazyCancelCtx) endLocked(err, cause error) {
	if c.ended {
		return
	}
	c.ended, c.err, c.cause = true, err, cause
	if d, ok := c.done.Load().(chan struct{}); ok {
		close(d) // not closedChan: that is only stored once c has ended
	}
	if c.stopInner != nil {
		c.stopInner(cause) // inner has no children: nothing calls back
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopParent != nil {
		c.stopParent()
	}
	for _, a := range c.funcs {
		if !a.done {
			a.done = true
			c.run = append(c.run, a.f)
		}
	}
	c.funcs = nil
}

// unlock lets go of mu and runs the AfterFunc functions that became due:
// they ask c for its Err and cause.
func (c *lazyCancelCtx) unlock() {
	run := c.run
	c.run = nil
	c.mu.Unlock()
	for _, f := range run {
		f()
	}
}
