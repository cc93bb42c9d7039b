package bankrpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lazyCancelCtx is the cancelation of a handler's ctx: it behaves as
// context.WithCancelCause(context.WithDeadline(parent, deadline)) would
// (Done, Err, context.Cause, children), but makes those contexts only when
// they are needed: when Done is called, or Value (context.Cause, a child
// context looking for its parent's cancelation, any value other than the
// call's info). A handler that never waits on its ctx, the common quick
// call, then costs no context and no timer; until the contexts exist, Err
// tells from the recorded cancel, the parent and the clock.
//
// It is safe for concurrent use. mu guards inner, stop, stopDeadline,
// canceled and cause; made is set, under mu, once inner is.
type lazyCancelCtx struct {
	parent   context.Context
	deadline time.Time // zero for none

	made         atomic.Bool
	mu           sync.Mutex
	inner        context.Context
	stop         context.CancelCauseFunc
	stopDeadline context.CancelFunc // nil without a deadline
	canceled     bool               // cancel came before inner was made
	cause        error
}

func (c *lazyCancelCtx) Deadline() (time.Time, bool) {
	d, ok := c.parent.Deadline()
	if c.deadline.IsZero() || (ok && d.Before(c.deadline)) {
		return d, ok
	}
	return c.deadline, true
}

func (c *lazyCancelCtx) Done() <-chan struct{} { return c.ctx().Done() }

func (c *lazyCancelCtx) Err() error {
	if c.made.Load() {
		return c.inner.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil {
		return c.inner.Err()
	}
	return c.errLocked()
}

// errLocked is Err before inner is made: a recorded cancel, else the
// parent's end, else the deadline's.
func (c *lazyCancelCtx) errLocked() error {
	if c.canceled {
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *lazyCancelCtx) Value(key any) any { return c.ctx().Value(key) }

// ctx makes the contexts c stands for, once.
func (c *lazyCancelCtx) ctx() context.Context {
	if c.made.Load() {
		return c.inner
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		parent := c.parent
		// A cancel recorded first has won over the deadline: the deadline
		// context is not made, lest it end first now that it has passed.
		if !c.deadline.IsZero() && !c.canceled {
			parent, c.stopDeadline = context.WithDeadline(parent, c.deadline)
		}
		c.inner, c.stop = context.WithCancelCause(parent)
		if c.canceled {
			c.stop(c.cause)
		}
		c.made.Store(true)
	}
	return c.inner
}

// cancel cancels c with cause (nil: context.Canceled), as the
// CancelCauseFunc of context.WithCancelCause; only the first end counts,
// whether a cancel, the parent's or the deadline. It releases the deadline's
// timer.
func (c *lazyCancelCtx) cancel(cause error) {
	c.mu.Lock()
	if c.inner == nil {
		if c.errLocked() == nil {
			c.canceled, c.cause = true, cause
		}
		c.mu.Unlock()
		return
	}
	stop, stopDeadline := c.stop, c.stopDeadline
	c.mu.Unlock()
	stop(cause)
	if stopDeadline != nil {
		stopDeadline()
	}
}
