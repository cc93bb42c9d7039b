package transporttest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
)

// The cases of the call contract (docs/semantics.md). Each names the rule it
// pins; every backend runs them all.

// Rules 1 and 3: a handler slower than any retry timer, called without a
// deadline, runs once and its caller gets the reply; a second caller with the
// same call id joins it.
func testSlowCallRunsOnce(t *testing.T, e *env) {
	ctx := testCtx(t, 40*time.Second) // no deadline on the calls themselves
	c := e.client(t)
	conn := e.conn(t)
	const work = 10 * time.Second
	key := "slow-" + t.Name()
	id := conn.NewCallID()
	var wg sync.WaitGroup
	runs := make([]int64, 2)
	for i := range 2 {
		wg.Go(func() {
			if i == 1 {
				require.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond)
			}
			resp, err := c.Work(context.WithoutCancel(ctx), &testv1.WorkRequest{Key: key, Nanos: int64(work)}, bankrpc.WithCallID(id))
			if assert.NoError(t, err, "caller %d: a 10s call without deadline to a healthy server must succeed", i) {
				runs[i] = resp.GetRun()
				assert.False(t, resp.GetInterrupted())
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(1), e.svc.runsOf(key), "one call id, one run")
	assert.Equal(t, []int64{1, 1}, runs, "both callers get the reply of the one run")
}

// Rule 1: duplicates of a call in flight join it.
func testDuplicateJoins(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	key := "join-" + t.Name()
	const n = 5
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := c.Work(ctx, &testv1.WorkRequest{Key: key, Nanos: int64(300 * time.Millisecond)}, bankrpc.WithCallID("dup-"+key))
			if assert.NoError(t, err) {
				assert.Equal(t, int64(1), resp.GetRun())
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(1), e.svc.runsOf(key), "five callers of one call id, one run")
}

// Rule 1: a finished call's reply is answered again from the reply cache.
func testDuplicateCached(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	key := "cached-" + t.Name()
	for range 3 {
		resp, err := c.Work(ctx, &testv1.WorkRequest{Key: key}, bankrpc.WithCallID("cached-"+key))
		require.NoError(t, err)
		assert.Equal(t, int64(1), resp.GetRun(), "a repeat gets the first run's reply")
	}
	assert.Equal(t, int64(1), e.svc.runsOf(key))
	// An error reply is cached the same way.
	for range 2 {
		_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound), Message: "once"}, bankrpc.WithCallID("cached-fail-"+key))
		requireCode(t, bankrpc.NotFound, err)
	}
}

// Rule 1: a call id names one request; reusing it for another is refused.
func testCallIDReused(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	key := "reused-" + t.Name()
	_, err := c.Work(ctx, &testv1.WorkRequest{Key: key}, bankrpc.WithCallID("reused-"+key))
	require.NoError(t, err)
	_, err = c.Work(ctx, &testv1.WorkRequest{Key: key + "-other"}, bankrpc.WithCallID("reused-"+key))
	requireCode(t, bankrpc.InvalidArgument, err)
	assert.Contains(t, bankrpc.MessageOf(err), "already used by a different request")
	assert.Equal(t, int64(0), e.svc.runsOf(key+"-other"), "the second request must not run")
}

// waitHow is how a Work handler of a contract case waits for its ctx's end.
// The runtime makes a handler's ctx lazily, and a handler must see the same
// however it waits.
type waitHow int

const (
	onDone     waitHow = iota // on ctx.Done, with context.AfterFunc
	pollingErr                // only ever calling ctx.Err(), between steps
	onChildCtx                // on a context derived from ctx
)

func (w waitHow) work(key string, nanos time.Duration) *testv1.WorkRequest {
	return &testv1.WorkRequest{Key: key, Nanos: int64(nanos), PollErr: w == pollingErr, ChildCtx: w == onChildCtx}
}

// Rule 2: the caller's cancel ends the handler's ctx, and a context derived
// from it, with cause ErrCanceledByClient, within the backend's bound.
func testCancelReachesHandler(t *testing.T, e *env, within time.Duration, how waitHow) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	key := "cancel-" + t.Name()
	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Work(callCtx, how.work(key, 15*time.Second))
		errc <- err
	}()
	require.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond)
	canceled := time.Now()
	cancel()
	requireCode(t, bankrpc.Canceled, <-errc)
	var ended time.Time
	var cause error
	require.Eventually(t, func() bool { ended, cause = e.svc.ctxDoneOf(key); return !ended.IsZero() }, 5*time.Second, time.Millisecond,
		"the handler's ctx was not canceled when its caller canceled")
	assert.LessOrEqual(t, ended.Sub(canceled), within, "the handler saw the cancel %v after the caller", ended.Sub(canceled))
	assert.ErrorIs(t, cause, bankrpc.ErrCanceledByClient)
	assert.Equal(t, int64(1), e.svc.runsOf(key))
}

// Rule 3: a deadline ends the handler's ctx, and a context derived from it,
// with DeadlineExceeded, however the handler waits (see rule 2).
func testDeadlineEndsHandler(t *testing.T, e *env, how waitHow) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	key := "deadline-" + t.Name()
	_, err := c.Work(ctx, how.work(key, 10*time.Second), bankrpc.WithTimeout(300*time.Millisecond))
	requireCode(t, bankrpc.DeadlineExceeded, err)
	require.Eventually(t, func() bool { ended, _ := e.svc.ctxDoneOf(key); return !ended.IsZero() }, 5*time.Second, time.Millisecond)
	_, cause := e.svc.ctxDoneOf(key)
	assert.ErrorIs(t, cause, context.DeadlineExceeded)
}

// Rule 4: errors a server sent are wire errors; local ones are not and
// unwrap to their cause.
func testWireErrors(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.FailedPrecondition), Message: "insufficient funds"})
	requireCode(t, bankrpc.FailedPrecondition, err)
	assert.True(t, bankrpc.IsWireError(err), "an error the server sent is a wire error")
	var be *bankrpc.Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, bankrpc.FailedPrecondition, be.Code())
	assert.Equal(t, "insufficient funds", be.Message())
	assert.Nil(t, be.Unwrap())

	key := "wire-" + t.Name()
	callCtx, cancel := context.WithCancel(ctx)
	go func() {
		if assert.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond) {
			cancel()
		}
	}()
	_, err = c.Work(callCtx, &testv1.WorkRequest{Key: key, Nanos: int64(5 * time.Second)})
	requireCode(t, bankrpc.Canceled, err)
	assert.False(t, bankrpc.IsWireError(err), "a cancel made here is a local error")
	assert.ErrorIs(t, err, context.Canceled, "a local error unwraps to its cause")
}

// Rule 4: a handler's error that carries OK (a zero *bankrpc.Error) reaches
// the caller as UNKNOWN, never as a success.
func testErrorWithCodeOK(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.OK), Message: "zero"})
	requireCode(t, bankrpc.Unknown, err)
	_, err = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.OK), Message: zeroError})
	requireCode(t, bankrpc.Unknown, err)
}

// Rule 4: a panic becomes INTERNAL with a generic message; the value and the
// stack go to the server's log only; the server keeps serving.
func testPanicContract(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	_, err := c.Panic(ctx, &testv1.PanicRequest{Message: "secret at account 7"})
	requireCode(t, bankrpc.Internal, err)
	assert.NotContains(t, bankrpc.MessageOf(err), "secret", "the panic's value must not reach the caller")
	assert.Contains(t, e.log.String(), "secret at account 7", "the panic's value goes to the server's log")
	assert.Contains(t, e.log.String(), "goroutine ", "the panic's stack goes to the server's log")
	_, err = c.Echo(ctx, &testv1.EchoRequest{Tag: "after panic"})
	require.NoError(t, err, "the server keeps serving after a panic")
}

// Rule 5: Shutdown waits for the calls in flight, which get their replies,
// and then Serve returns ErrServerClosed.
func testShutdownWaits(t *testing.T, e *env) {
	ctx := testCtx(t, 30*time.Second)
	c := e.client(t)
	key := "drain-" + t.Name()
	const n = 3
	errc := make(chan error, n)
	for i := range n {
		go func() {
			resp, err := c.Work(ctx, &testv1.WorkRequest{Key: fmt.Sprint(key, i), Nanos: int64(500 * time.Millisecond)})
			if err == nil && resp.GetInterrupted() {
				err = errors.New("the handler's ctx was canceled by a graceful Shutdown")
			}
			errc <- err
		}()
	}
	require.Eventually(t, func() bool {
		return e.svc.runsOf(key+"0")+e.svc.runsOf(key+"1")+e.svc.runsOf(key+"2") == n
	}, 10*time.Second, time.Millisecond)
	e.stop(t) // Shutdown with 15s
	for range n {
		require.NoError(t, <-errc, "a call in flight during Shutdown must complete")
	}
}

// Rule 5: Shutdown with a stuck handler returns when its ctx ends, having
// canceled the handlers' contexts (cause ErrServerStopping).
func testShutdownStuck(t *testing.T, e *env) {
	ctx := testCtx(t, 30*time.Second)
	c := e.client(t)
	key := "stuck-" + t.Name()
	go func() {
		_, _ = c.Work(ctx, &testv1.WorkRequest{Key: key, Nanos: int64(time.Minute), IgnoreCancel: true}, bankrpc.WithTimeout(20*time.Second))
	}()
	require.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := e.current().Shutdown(sctx)
	took := time.Since(began)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Shutdown returns its ctx's error when calls outlast it")
	assert.Less(t, took, 3*time.Second, "Shutdown must not wait for a stuck handler past its ctx")
	if !assert.Eventually(t, func() bool { _, cause := e.svc.ctxDoneOf(key); return errors.Is(cause, bankrpc.ErrServerStopping) }, 5*time.Second, time.Millisecond,
		"Shutdown cancels the handlers' contexts (cause ErrServerStopping) when its ctx ends") {
		at, cause := e.svc.ctxDoneOf(key)
		t.Logf("the handler's ctx ended at %v (Shutdown began %v) with cause %v", at, began, cause)
	}
	e.svc.releaseStuck()
}

// Rule 5: Close returns at once even with a stuck handler, and cancels its
// ctx; the caller is not left hanging past its deadline.
func testCloseStuck(t *testing.T, e *env) {
	ctx := testCtx(t, 30*time.Second)
	c := e.client(t)
	key := "close-" + t.Name()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Work(ctx, &testv1.WorkRequest{Key: key, Nanos: int64(time.Minute), IgnoreCancel: true}, bankrpc.WithTimeout(3*time.Second))
		errc <- err
	}()
	require.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond)
	began := time.Now()
	require.NoError(t, e.current().Close())
	assert.Less(t, time.Since(began), time.Second, "Close must return at once")
	assert.Eventually(t, func() bool { _, cause := e.svc.ctxDoneOf(key); return errors.Is(cause, bankrpc.ErrServerStopping) }, 5*time.Second, time.Millisecond,
		"Close cancels the handlers' contexts (cause ErrServerStopping)")
	select {
	case err := <-errc:
		require.Error(t, err, "a call whose server closed cannot succeed")
	case <-time.After(10 * time.Second):
		t.Fatal("a caller was left hanging past its deadline after the server closed")
	}
	e.svc.releaseStuck()
}

// Rule 6: interceptors chain in the order given (the first outermost), on
// the client and on the server; several options append; a client
// interceptor adds metadata the handler sees.
func testInterceptors(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	client := func(name string) bankrpc.UnaryClientInterceptor {
		return func(ctx context.Context, method string, req, reply any, cc *bankrpc.Conn, invoker bankrpc.UnaryInvoker, opts ...bankrpc.CallOption) error {
			e.note("client " + name)
			assert.Equal(t, testv1.TestService_Echo_FullMethodName, method)
			assert.IsType(t, &testv1.EchoRequest{}, req)
			assert.IsType(t, &testv1.EchoResponse{}, reply)
			assert.Contains(t, opts, bankrpc.CallOption(bankrpc.CallIDOption{CallID: "intercepted-1"}), "interceptors see the call options")
			return invoker(bankrpc.AppendToOutgoingContext(ctx, "via", name), method, req, reply, cc, opts...)
		}
	}
	c := e.client(t, bankrpc.WithUnaryInterceptor(client("a")), bankrpc.WithChainUnaryInterceptor(client("b"), client("c")))
	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "intercepted"}, bankrpc.WithCallID("intercepted-1"))
	require.NoError(t, err)
	assert.Equal(t, []string{"via=a", "via=b", "via=c"}, resp.GetMetadata(), "metadata added by each client interceptor, in order")
	assert.Equal(t, []string{"client a", "client b", "client c", "server auth", "server log", "server last"}, e.notes())

	bare := e.client(t)
	_, err = bare.Echo(ctx, &testv1.EchoRequest{})
	requireCode(t, bankrpc.Unauthenticated, err) // the first of several options is not dropped
}

// interceptorOptions are testInterceptors' server interceptors, given as
// three options: "auth" refuses a call without "via" metadata.
func interceptorOptions(e *env) []bankrpc.ServerOption {
	server := func(name string) bankrpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *bankrpc.UnaryServerInfo, handler bankrpc.UnaryHandler) (any, error) {
			e.note("server " + name)
			if name == "auth" {
				md, _ := bankrpc.FromIncomingContext(ctx)
				if len(md.Get("via")) == 0 {
					return nil, bankrpc.Errorf(bankrpc.Unauthenticated, "no via")
				}
			}
			return handler(ctx, req)
		}
	}
	return []bankrpc.ServerOption{bankrpc.UnaryInterceptor(server("auth")), bankrpc.UnaryInterceptor(server("log")), bankrpc.ChainUnaryInterceptor(server("last"))}
}

// Rule 7: metadata as in grpc-go: keys case-insensitive (lower-cased on the
// wire), several values per key, a reserved prefix, a size limit.
func testMetadata(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	mctx := bankrpc.NewOutgoingContext(ctx, bankrpc.Pairs("Authorization", "Bearer x", "X-Tag", "1"))
	mctx = bankrpc.AppendToOutgoingContext(mctx, "x-tag", "2")
	resp, err := c.Echo(mctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Equal(t, []string{"authorization=Bearer x", "x-tag=1", "x-tag=2"}, resp.GetMetadata())

	_, err = c.Echo(bankrpc.AppendToOutgoingContext(ctx, "bankrpc-call", "x"), &testv1.EchoRequest{})
	requireCode(t, bankrpc.InvalidArgument, err)
	assert.Contains(t, bankrpc.MessageOf(err), "reserved prefix")

	_, err = c.Echo(bankrpc.AppendToOutgoingContext(ctx, "big", strings.Repeat("x", bankrpc.DefaultMaxMetadataSize)), &testv1.EchoRequest{})
	requireCode(t, bankrpc.ResourceExhausted, err)
	assert.False(t, bankrpc.IsWireError(err), "the client refuses it before sending")

	// A client allowed more than the server accepts is refused by the server.
	lax := e.client(t, bankrpc.WithMaxMetadataSize(1<<20))
	_, err = lax.Echo(bankrpc.AppendToOutgoingContext(ctx, "big", strings.Repeat("x", bankrpc.DefaultMaxMetadataSize)), &testv1.EchoRequest{})
	requireCode(t, bankrpc.ResourceExhausted, err)
	assert.True(t, bankrpc.IsWireError(err), "the server refuses it")
	assert.Equal(t, int64(0), e.svc.echoes.Load()-1, "the refused call must not run")
}

// Rule 5, durable backends: a call interrupted by a Shutdown that ran out of
// time is given back to the queue and answered by the next server.
func testInterruptedRedelivered(t *testing.T, e *env) {
	ctx := testCtx(t, 60*time.Second)
	c := e.client(t)
	key := "requeued-" + t.Name()
	errc := make(chan error, 1)
	var resp *testv1.WorkResponse
	go func() {
		var err error
		resp, err = c.Work(ctx, &testv1.WorkRequest{Key: key, Nanos: int64(2 * time.Second)})
		errc <- err
	}()
	require.Eventually(t, func() bool { return e.svc.runsOf(key) == 1 }, 10*time.Second, time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_ = e.current().Shutdown(sctx)
	e.stop(t)
	e.serve(t, e.ep.Restart(t))
	require.NoError(t, <-errc, "the interrupted call must be answered by the next server")
	assert.Equal(t, int64(2), resp.GetRun(), "the next server ran it again: the first run was interrupted")
}
