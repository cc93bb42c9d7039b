package bankrpc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests hold lazyCancelCtx to what context.WithCancelCause over
// context.WithDeadline does, whether or not its contexts were made before
// the cancel or the deadline.

var errCause = errors.New("the cause")

func lazy(deadline time.Time) *callContext {
	return &callContext{lazyCancelCtx: lazyCancelCtx{parent: context.Background(), deadline: deadline}}
}

// hasInner reports whether c made the context.WithCancelCause that only
// Value needs.
func hasInner(c *callContext) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner != nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestLazyCancelCtxCanceledBeforeOrAfterDone(t *testing.T) {
	for _, doneFirst := range []bool{false, true} {
		c := lazy(time.Time{})
		assert.NoError(t, c.Err())
		assert.NoError(t, context.Cause(c))
		if doneFirst {
			assert.False(t, isClosed(c.Done()))
		}
		c.cancel(errCause)
		c.cancel(errors.New("a later cancel does not count"))
		assert.Equal(t, context.Canceled, c.Err(), "doneFirst=%v", doneFirst)
		assert.True(t, isClosed(c.Done()), "doneFirst=%v", doneFirst)
		assert.Equal(t, errCause, context.Cause(c), "doneFirst=%v", doneFirst)
	}
}

func TestLazyCancelCtxEndsByItsDeadline(t *testing.T) {
	for _, doneFirst := range []bool{false, true} {
		dl := time.Now().Add(20 * time.Millisecond)
		c := lazy(dl)
		got, ok := c.Deadline()
		require.True(t, ok)
		assert.Equal(t, dl, got)
		if doneFirst {
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("Done was not closed by the deadline")
			}
		} else {
			time.Sleep(time.Until(dl) + time.Millisecond)
		}
		c.cancel(errCause) // too late: the deadline came first
		assert.Equal(t, context.DeadlineExceeded, c.Err(), "doneFirst=%v", doneFirst)
		assert.Equal(t, context.DeadlineExceeded, context.Cause(c), "doneFirst=%v", doneFirst)
		assert.True(t, isClosed(c.Done()))
	}
}

func TestLazyCancelCtxCancelBeforeTheDeadlineWins(t *testing.T) {
	c := lazy(time.Now().Add(10 * time.Millisecond))
	c.cancel(nil)
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, context.Canceled, c.Err())
	assert.Equal(t, context.Canceled, context.Cause(c), "a nil cause is context.Canceled")
}

func TestLazyCancelCtxReachesChildrenAndAfterFunc(t *testing.T) {
	c := lazy(time.Time{})
	child, stop := context.WithCancel(c)
	defer stop()
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })
	c.cancel(errCause)
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the child was not canceled")
	}
	assert.Equal(t, errCause, context.Cause(child))
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the AfterFunc did not run")
	}
}

func TestLazyCancelCtxMakesNothingForTheCallInfo(t *testing.T) {
	c := lazy(time.Now().Add(time.Hour))
	c.info.id = "s-1"
	assert.Equal(t, "s-1", CallIDFromContext(c))
	assert.NoError(t, c.Err())
	c.cancel(errCause)
	assert.False(t, hasInner(c), "reading the call's info, Err and a cancel make no context")
	assert.Equal(t, errCause, context.Cause(c))
	assert.True(t, hasInner(c))
}

func TestLazyCancelCtxFollowsItsParent(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	c := &callContext{lazyCancelCtx: lazyCancelCtx{parent: parent}}
	cancel(errCause)
	c.cancel(errors.New("too late: the parent ended first"))
	assert.Equal(t, context.Canceled, c.Err())
	assert.Equal(t, errCause, context.Cause(c))
}

func TestLazyCancelCtxDoneMakesNoInnerContext(t *testing.T) {
	c := lazy(time.Now().Add(time.Hour))
	done := c.Done()
	assert.False(t, isClosed(done))
	c.cancel(errCause)
	assert.True(t, isClosed(done))
	assert.True(t, done == c.Done(), "one channel")
	assert.False(t, hasInner(c), "Done and a cancel need no context.WithCancelCause")
	assert.Equal(t, errCause, context.Cause(c))
}

func TestLazyCancelCtxErrAndDoneAgreeAtTheDeadline(t *testing.T) {
	c := lazy(time.Now().Add(5 * time.Millisecond))
	time.Sleep(10 * time.Millisecond)
	// Nothing watched the deadline: Err finds it passed, and Done agrees.
	require.Equal(t, context.DeadlineExceeded, c.Err())
	assert.True(t, isClosed(c.Done()), "Err is not nil, so Done is closed")
}

func TestLazyCancelCtxChildEndsByTheDeadline(t *testing.T) {
	c := lazy(time.Now().Add(10 * time.Millisecond))
	child, stop := context.WithCancel(c)
	defer stop()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the child did not end by its parent's deadline")
	}
	assert.Equal(t, context.DeadlineExceeded, child.Err(), "as a child of context.WithDeadline")
	assert.Equal(t, context.DeadlineExceeded, context.Cause(child))
}

func TestLazyCancelCtxWatchesItsParent(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	c := &callContext{lazyCancelCtx: lazyCancelCtx{parent: parent}}
	done := c.Done()
	cancel(errCause)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Done was not closed by the parent's end")
	}
	assert.Equal(t, context.Canceled, c.Err())
	assert.Equal(t, errCause, context.Cause(c))
}

func TestLazyCancelCtxAfterFuncStop(t *testing.T) {
	c := lazy(time.Time{})
	ran := make(chan string, 2)
	stopFirst := context.AfterFunc(c, func() { ran <- "first" })
	stopSecond := context.AfterFunc(c, func() { ran <- "second" })
	assert.True(t, stopFirst(), "stopped before the end")
	assert.False(t, stopFirst(), "stopped already")
	c.cancel(nil)
	select {
	case got := <-ran:
		assert.Equal(t, "second", got)
	case <-time.After(5 * time.Second):
		t.Fatal("the AfterFunc did not run")
	}
	assert.False(t, stopSecond(), "started already")
	context.AfterFunc(c, func() { ran <- "after the end" })
	select {
	case got := <-ran:
		assert.Equal(t, "after the end", got, "runs at once once c has ended")
	case <-time.After(5 * time.Second):
		t.Fatal("an AfterFunc given after the end did not run")
	}
	assert.Empty(t, ran, "the stopped one never ran")
}

func TestLazyCancelCtxCancelsChildrenBeforeCancelReturns(t *testing.T) {
	c := lazy(time.Time{})
	child, stop := context.WithCancel(c)
	defer stop()
	grandchild, stopGrandchild := context.WithTimeout(child, time.Hour)
	defer stopGrandchild()
	c.cancel(errCause)
	// As with context.WithCancelCause: the children end within the cancel.
	assert.Equal(t, context.Canceled, child.Err())
	assert.Equal(t, errCause, context.Cause(child))
	assert.Equal(t, errCause, context.Cause(grandchild))
}

func TestLazyCancelCtxChildOfAnEndedCtx(t *testing.T) {
	for range 200 { // the end races the child's registration
		c := lazy(time.Time{})
		go c.cancel(errCause)
		child, stop := context.WithCancel(c)
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the child of an ended ctx did not end")
		}
		assert.Equal(t, errCause, context.Cause(child))
		stop()
	}
}

func TestLazyCancelCtxCauseAgreesWithErrAtTheDeadline(t *testing.T) {
	c := lazy(time.Now().Add(5 * time.Millisecond))
	assert.NoError(t, context.Cause(c), "made before the deadline")
	time.Sleep(10 * time.Millisecond)
	// Nothing watched the deadline (no Done): Cause finds it as Err does.
	assert.Equal(t, context.DeadlineExceeded, context.Cause(c))
	assert.Equal(t, context.DeadlineExceeded, c.Err())
}

func TestLazyCancelCtxManyChildrenComeAndGo(t *testing.T) {
	c := lazy(time.Time{})
	var stops []context.CancelFunc
	var kept []context.Context
	for i := range 1000 {
		child, stop := context.WithCancel(c)
		if i%3 == 0 {
			kept = append(kept, child)
			defer stop()
		} else {
			stops = append(stops, stop)
		}
	}
	for _, stop := range stops {
		stop() // each leaves c's list
	}
	c.cancel(errCause)
	for _, child := range kept {
		assert.Equal(t, errCause, context.Cause(child))
	}
}
