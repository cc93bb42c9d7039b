package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
)

// Features says what a backend promises beyond the core contract; the suite
// runs the tests of each promised feature and skips the others.
type Features struct {
	// ConcurrentHandlers: the server runs handlers of different calls at the
	// same time.
	ConcurrentHandlers bool
	// Status: handler status messages reach the caller's OnStatus.
	Status bool
	// Persistent: a call made while no server runs is kept and served when a
	// server starts (durable queueing).
	Persistent bool
	// SurvivesServerRestart: a call in flight while the server restarts
	// completes once the new server runs (retries or redelivery).
	SurvivesServerRestart bool
	// CancelWithin is how soon after the caller cancels the handler's ctx
	// must end (default 100ms; the contract allows AMQP 1s).
	CancelWithin time.Duration
}

// Endpoint is one fresh instance of a backend: a server half, not yet
// serving, and a way to dial it.
type Endpoint struct {
	// Server is served by the suite with its test service.
	Server transport.ServerTransport
	// Dial returns a new client half connected to Server. The suite closes it.
	Dial func(t *testing.T) transport.ClientTransport
	// Restart closes Server and returns a new server half reachable by the
	// clients dialled before (same address or queue), not yet serving. Needed
	// when SurvivesServerRestart or Persistent is set.
	Restart func(t *testing.T) transport.ServerTransport
}

// Run runs the conformance suite against a backend. newEndpoint is called
// once per subtest and must return an Endpoint isolated from the others
// (fresh address, fresh queues). Subtests run one after another so that
// goroutine leaks can be attributed to the subtest that caused them.
func Run(t *testing.T, f Features, newEndpoint func(t *testing.T) Endpoint) {
	tests := []struct {
		name string
		need bool
		fn   func(*testing.T, *env)
		opts func(*env) []bankrpc.ServerOption // server options, when the case needs some
	}{
		{"RoundTrip", true, testRoundTrip, nil},
		{"ConcurrentCallsMatchReplies", true, testConcurrentCalls, nil},
		{"ErrorCodeAndMessage", true, testErrors, nil},
		{"DeadlinePropagated", true, testDeadlinePropagated, nil},
		{"ExpiredCallNotExecuted", true, testExpiredNotExecuted, nil},
		{"ClientCancel", true, testClientCancel, nil},
		{"UnknownMethod", true, testUnknownMethod, nil},
		{"PanickingHandler", true, testPanic, nil},
		{"OversizedRequest", true, testOversized, nil},
		{"GarbageFrameThenGoodCall", true, testGarbage, nil},
		{"CloseUnblocksCalls", true, testCloseUnblocks, nil},
		{"GracefulStopFinishesCalls", true, testGracefulStop, nil},
		{"ConcurrentHandlers", f.ConcurrentHandlers, testConcurrentHandlers, nil},
		// The call contract of docs/semantics.md, one case per rule.
		{"Contract/SlowCallWithoutDeadlineRunsOnce", true, testSlowCallRunsOnce, nil},
		{"Contract/DuplicateInFlightJoins", true, testDuplicateJoins, nil},
		{"Contract/DuplicateAfterReplyIsAnsweredFromCache", true, testDuplicateCached, nil},
		{"Contract/CallIDReusedForAnotherRequest", true, testCallIDReused, nil},
		{"Contract/CancelReachesHandler", true, func(t *testing.T, e *env) { testCancelReachesHandler(t, e, f.cancelWithin(), onDone) }, nil},
		{"Contract/CancelReachesHandlerPollingErr", true, func(t *testing.T, e *env) { testCancelReachesHandler(t, e, f.cancelWithin(), pollingErr) }, nil},
		{"Contract/CancelReachesHandlerChildCtx", true, func(t *testing.T, e *env) { testCancelReachesHandler(t, e, f.cancelWithin(), onChildCtx) }, nil},
		{"Contract/DeadlineEndsHandlerCtx", true, func(t *testing.T, e *env) { testDeadlineEndsHandler(t, e, onDone) }, nil},
		{"Contract/DeadlineEndsHandlerCtxPollingErr", true, func(t *testing.T, e *env) { testDeadlineEndsHandler(t, e, pollingErr) }, nil},
		{"Contract/DeadlineEndsHandlerChildCtx", true, func(t *testing.T, e *env) { testDeadlineEndsHandler(t, e, onChildCtx) }, nil},
		{"Contract/ErrorsAreWireErrors", true, testWireErrors, nil},
		{"Contract/HandlerErrorWithCodeOK", true, testErrorWithCodeOK, nil},
		{"Contract/PanicIsInternalAndLogged", true, testPanicContract, nil},
		{"Contract/ShutdownWaitsForCalls", true, testShutdownWaits, nil},
		{"Contract/ShutdownBoundedByCtxWithStuckHandler", true, testShutdownStuck, nil},
		{"Contract/CloseReturnsAtOnceWithStuckHandler", true, testCloseStuck, nil},
		{"Contract/InterceptorsChainInOrder", true, testInterceptors, interceptorOptions},
		{"Contract/MetadataKeysValuesAndLimits", true, testMetadata, nil},
		{"Contract/InterruptedCallIsRedelivered", f.Persistent, testInterruptedRedelivered, nil},
		{"Status", f.Status, testStatus, nil},
		{"TypedProgress", f.Status, testTypedProgress, nil},
		{"Contract/LogLinesWithSuccessAndError", true, testLogLines, nil},
		{"Contract/SubmitThenCollect", true, testSubmitCollect, nil},
		{"ServerRestartMidCall", f.SurvivesServerRestart, testServerRestart, nil},
		{"CallQueuedWhileNoServer", f.Persistent, testPersistent, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.need {
				t.Skip("the backend does not promise this feature")
			}
			// Registered first, so it runs last: after every cleanup below.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() {
				if !t.Failed() {
					goleak.VerifyNone(t, ignore)
				}
			})
			tc.fn(t, start(t, newEndpoint(t), tc.opts))
		})
	}
}

func (f Features) cancelWithin() time.Duration {
	if f.CancelWithin > 0 {
		return f.CancelWithin
	}
	return 100 * time.Millisecond
}

// env is one served endpoint with the test service behind it.
type env struct {
	ep      Endpoint
	svc     *testService
	log     *syncBuffer // the servers' log
	mu      sync.Mutex
	server  *bankrpc.Server // the one serving now
	stopSrv func()

	orderMu sync.Mutex
	order   []string // what interceptors saw, in order
}

// note records an interceptor's step.
func (e *env) note(s string) {
	e.orderMu.Lock()
	defer e.orderMu.Unlock()
	e.order = append(e.order, s)
}

func (e *env) notes() []string {
	e.orderMu.Lock()
	defer e.orderMu.Unlock()
	return append([]string(nil), e.order...)
}

const serverMaxFrame = 256 << 10

func start(t *testing.T, ep Endpoint, opts func(*env) []bankrpc.ServerOption) *env {
	e := &env{ep: ep, svc: newTestService(), log: &syncBuffer{}}
	// Stuck handlers are released last, so that no goroutine outlives the test.
	t.Cleanup(e.svc.releaseStuck)
	var o []bankrpc.ServerOption
	if opts != nil {
		o = opts(e)
	}
	e.serve(t, ep.Server, o...)
	t.Cleanup(func() { e.stop(t) })
	return e
}

// serve runs a new bankrpc.Server with the test service on st in the
// background; stop shuts it down gracefully and waits.
func (e *env) serve(t *testing.T, st transport.ServerTransport, opts ...bankrpc.ServerOption) {
	opts = append([]bankrpc.ServerOption{
		bankrpc.WithServerMaxFrameSize(serverMaxFrame),
		bankrpc.WithLogger(slog.New(slog.NewTextHandler(e.log, nil))),
	}, opts...)
	srv := bankrpc.NewServer(opts...)
	testv1.RegisterTestServiceServer(srv, e.svc)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(st) }()
	e.mu.Lock()
	e.server = srv
	e.stopSrv = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx), "Shutdown")
		select {
		case err := <-done:
			assert.ErrorIs(t, err, bankrpc.ErrServerClosed, "Serve after Shutdown")
		case <-time.After(15 * time.Second):
			t.Errorf("Serve did not return within 15s of Shutdown")
		}
		assert.NoError(t, st.Close(), "Close after Shutdown must be a no-op")
		assert.NoError(t, srv.Close(), "a second stop must be a no-op")
	}
	e.mu.Unlock()
}

// current returns the server serving now.
func (e *env) current() *bankrpc.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.server
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for a server's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (e *env) stop(t *testing.T) {
	e.mu.Lock()
	stop := e.stopSrv
	e.stopSrv = nil
	e.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// conn dials a client wrapped in a runtime Conn, closed at cleanup.
func (e *env) conn(t *testing.T, opts ...bankrpc.DialOption) *bankrpc.Conn {
	c := bankrpc.NewConn(e.ep.Dial(t), opts...)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

func (e *env) client(t *testing.T, opts ...bankrpc.DialOption) testv1.TestServiceClient {
	return testv1.NewTestServiceClient(e.conn(t, opts...))
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func requireCode(t *testing.T, want bankrpc.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, bankrpc.CodeOf(err), "error: %v", err)
}

func testRoundTrip(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	payload := []byte("deposit 100 into account 7")
	resp, err := c.Echo(bankrpc.AppendToOutgoingContext(ctx, "client", "suite"), &testv1.EchoRequest{Payload: payload, Tag: "one"})
	require.NoError(t, err)
	assert.Equal(t, payload, resp.GetPayload())
	assert.Equal(t, "one", resp.GetTag())
	assert.NotEmpty(t, resp.GetCallId(), "the handler must see a call id")
	assert.Equal(t, []string{"client=suite"}, resp.GetMetadata())

	resp, err = c.Echo(ctx, &testv1.EchoRequest{Tag: "fixed id"}, bankrpc.WithCallID("call-42"))
	require.NoError(t, err)
	assert.Equal(t, "call-42", resp.GetCallId(), "WithCallID must reach the handler")

	resp, err = c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err, "an empty message must round-trip")
	assert.Empty(t, resp.GetPayload())
}

func testConcurrentCalls(t *testing.T, e *env) {
	const goroutines, calls = 64, 100
	ctx := testCtx(t, 90*time.Second)
	c := e.client(t)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				tag := fmt.Sprintf("g%d-c%d", g, i)
				resp, err := c.Echo(ctx, &testv1.EchoRequest{Payload: []byte(tag), Tag: tag})
				if err != nil {
					errs <- fmt.Errorf("call %s: %w", tag, err)
					return
				}
				if resp.GetTag() != tag || string(resp.GetPayload()) != tag {
					errs <- fmt.Errorf("call %s got the reply of %s (payload %q)", tag, resp.GetTag(), resp.GetPayload())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, int64(goroutines*calls), e.svc.echoes.Load(), "every call must execute exactly once")
}

func testErrors(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	for _, tc := range []struct {
		code bankrpc.Code
		msg  string
	}{
		{bankrpc.FailedPrecondition, "insufficient funds (balance 120, asked 500)"},
		{bankrpc.NotFound, "no such receiver 42"},
		{bankrpc.InvalidArgument, "amount must be positive, got -5"},
		{bankrpc.Internal, "disk on fire: «unicode» survives"},
		{bankrpc.Code(99), "a code outside the canonical set"},
	} {
		_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(tc.code), Message: tc.msg})
		requireCode(t, tc.code, err)
		assert.Equal(t, tc.msg, bankrpc.MessageOf(err))
		var te *bankrpc.Error
		require.True(t, errors.As(err, &te), "errors must be *bankrpc.Error, got %T", err)
	}
	_, err := c.Fail(ctx, &testv1.FailRequest{Code: 0, Message: "OK is not an error"})
	requireCode(t, bankrpc.Unknown, err)
}

func testDeadlinePropagated(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	want, _ := callCtx.Deadline()
	resp, err := c.Echo(callCtx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Equal(t, want.UnixNano(), resp.GetDeadlineUnixNano(), "the handler's ctx must carry the caller's absolute deadline")

	resp, err = c.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithTimeout(5*time.Second))
	require.NoError(t, err)
	assert.NotZero(t, resp.GetDeadlineUnixNano(), "WithTimeout must set a deadline on the handler's ctx")
}

func testExpiredNotExecuted(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	ct := e.ep.Dial(t)
	t.Cleanup(func() { assert.NoError(t, ct.Close()) })
	// An envelope whose deadline passed on the way, as after a long queueing.
	frame, err := envelope.EncodeRequest(&wirev1.Request{
		CallId:           "expired-1",
		Method:           testv1.TestService_Echo_FullMethodName,
		DeadlineUnixNano: time.Now().Add(-time.Second).UnixNano(),
	})
	require.NoError(t, err)
	res := roundTripResult(ctx, t, ct, &transport.Call{ID: "expired-1", Method: testv1.TestService_Echo_FullMethodName, Frame: frame})
	assert.Equal(t, uint32(bankrpc.DeadlineExceeded), res.GetCode(), "reason: %s", res.GetReason())
	assert.Equal(t, int64(0), e.svc.echoes.Load(), "an expired call must not be executed")

	// The runtime refuses to send a call whose ctx already ended.
	c := e.client(t)
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Millisecond))
	defer cancel()
	_, err = c.Echo(expired, &testv1.EchoRequest{})
	requireCode(t, bankrpc.DeadlineExceeded, err)
	assert.Equal(t, int64(0), e.svc.echoes.Load())
}

// roundTripResult sends a hand-made frame and decodes the result. A backend
// that reports a refused frame as a RoundTrip error (AMQP's error queue) is
// turned into a result with that error's code.
func roundTripResult(ctx context.Context, t *testing.T, ct transport.ClientTransport, call *transport.Call) *wirev1.Result {
	t.Helper()
	reply, err := ct.RoundTrip(ctx, call)
	if err != nil {
		require.NotContains(t, []bankrpc.Code{bankrpc.Canceled, bankrpc.DeadlineExceeded, bankrpc.Unavailable}, bankrpc.CodeOf(err), "the server must answer a bad frame, not drop it: %v", err)
		return &wirev1.Result{Code: uint32(bankrpc.CodeOf(err)), Reason: bankrpc.MessageOf(err)}
	}
	res, err := envelope.DecodeResult(reply, 0)
	require.NoError(t, err)
	return res
}

func testClientCancel(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	callCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Sleep(callCtx, &testv1.SleepRequest{Nanos: int64(longSleep)})
		errc <- err
	}()
	// Cancel once the server runs the call, so cancellation of a call in
	// flight is what is tested.
	require.Eventually(t, func() bool { return e.svc.sleeps.Load() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		requireCode(t, bankrpc.Canceled, err)
	case <-ctx.Done():
		t.Fatal("a canceled call did not return")
	}
	_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "after cancel"})
	require.NoError(t, err, "the connection must stay usable after a canceled call")
}

func testUnknownMethod(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	conn := e.conn(t)
	err := conn.Invoke(ctx, "/bankrpc.test.v1.TestService/NoSuchMethod", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	requireCode(t, bankrpc.Unimplemented, err)
	assert.Contains(t, bankrpc.MessageOf(err), "/bankrpc.test.v1.TestService/NoSuchMethod")
	err = conn.Invoke(ctx, "/no.such.Service/Echo", &testv1.EchoRequest{}, &testv1.EchoResponse{})
	requireCode(t, bankrpc.Unimplemented, err)
}

func testPanic(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	_, err := c.Panic(ctx, &testv1.PanicRequest{Message: "boom at account 7"})
	requireCode(t, bankrpc.Internal, err)
	_, err = c.Echo(ctx, &testv1.EchoRequest{Tag: "after panic"})
	require.NoError(t, err, "the server must keep serving after a panic")
}

func testOversized(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	// Refused by the client before anything is sent.
	small := e.client(t, bankrpc.WithMaxFrameSize(1024))
	_, err := small.Echo(ctx, &testv1.EchoRequest{Payload: make([]byte, 2048)})
	requireCode(t, bankrpc.ResourceExhausted, err)
	assert.Contains(t, bankrpc.MessageOf(err), "exceeds the limit of 1024 bytes")

	// Refused by the server, whose limit is smaller than the client's.
	big := e.client(t)
	_, err = big.Echo(ctx, &testv1.EchoRequest{Payload: make([]byte, serverMaxFrame+1)})
	requireCode(t, bankrpc.ResourceExhausted, err)
	assert.Equal(t, int64(0), e.svc.echoes.Load(), "an oversized request must not be executed")
	_, err = big.Echo(ctx, &testv1.EchoRequest{Payload: make([]byte, serverMaxFrame/2)})
	require.NoError(t, err, "a request under the limit must pass after an oversized one")
}

func testGarbage(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	ct := e.ep.Dial(t)
	t.Cleanup(func() { assert.NoError(t, ct.Close()) })
	garbage := make([]byte, 512)
	_, _ = rand.Read(garbage)
	for i, frame := range [][]byte{garbage, []byte("not a protobuf \xff\xff\xff\xff"), {}} {
		id := fmt.Sprintf("garbage-%d", i)
		res := roundTripResult(ctx, t, ct, &transport.Call{ID: id, Method: "?", Frame: frame})
		assert.Equal(t, uint32(bankrpc.InvalidArgument), res.GetCode(), "frame %d: reason %s", i, res.GetReason())
		assert.NotEmpty(t, res.GetReason())
	}
	c := e.client(t)
	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "after garbage"})
	require.NoError(t, err, "the server must keep serving after garbage")
	assert.Equal(t, "after garbage", resp.GetTag())
}

func testCloseUnblocks(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	conn := bankrpc.NewConn(e.ep.Dial(t))
	c := testv1.NewTestServiceClient(conn)
	const n = 4
	errc := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Sleep(ctx, &testv1.SleepRequest{Nanos: int64(longSleep)})
			errc <- err
		}()
	}
	require.Eventually(t, func() bool { return e.svc.sleeps.Load() == n }, 10*time.Second, time.Millisecond)
	require.NoError(t, conn.Close())
	for range n {
		select {
		case err := <-errc:
			require.ErrorIs(t, err, bankrpc.ErrClosed)
		case <-ctx.Done():
			t.Fatal("Close did not unblock a call in flight")
		}
	}
	require.NoError(t, conn.Close(), "Close must be idempotent")
	_, err := c.Echo(ctx, &testv1.EchoRequest{})
	require.ErrorIs(t, err, bankrpc.ErrClosed, "calls after Close must fail with ErrClosed")
}

func testGracefulStop(t *testing.T, e *env) {
	ctx := testCtx(t, 30*time.Second)
	c := e.client(t)
	const n = 3
	errc := make(chan error, n)
	for range n {
		go func() {
			resp, err := c.Sleep(ctx, &testv1.SleepRequest{Nanos: int64(500 * time.Millisecond)})
			if err == nil && resp.GetInterrupted() {
				err = errors.New("the handler's ctx was cancelled by the server's stop")
			}
			errc <- err
		}()
	}
	// Stop the server while the calls run: it takes no new ones, but
	// finishes these and delivers their replies before Serve returns.
	require.Eventually(t, func() bool { return e.svc.sleeps.Load() == n }, 10*time.Second, time.Millisecond)
	e.stop(t)
	for range n {
		select {
		case err := <-errc:
			require.NoError(t, err, "a call in flight during a graceful stop must complete")
		case <-ctx.Done():
			t.Fatal("a call in flight during a graceful stop got no reply")
		}
	}
}

func testConcurrentHandlers(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	const n = 4
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// Each call waits inside the handler until all n are inside.
			_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: fmt.Sprintf("barrier:b:%d", n)}, bankrpc.WithTimeout(10*time.Second))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
}

func testStatus(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	var mu sync.Mutex
	var got []bankrpc.Status
	resp, err := c.Progress(ctx, &testv1.ProgressRequest{Steps: 3}, bankrpc.OnStatus(func(s bankrpc.Status) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}))
	require.NoError(t, err)
	assert.Equal(t, int32(3), resp.GetSent())
	// Statuses are best-effort and may arrive after the result; stale ones may
	// be dropped, but those that arrive are in order and intact.
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 }, 5*time.Second, time.Millisecond,
		"no status reached the caller")
	mu.Lock()
	defer mu.Unlock()
	last := 0
	for _, s := range got {
		step := int(s.Data[0])
		assert.Greater(t, step, last, "statuses out of order: %v", got)
		assert.Equal(t, fmt.Sprintf("step %d", step), s.Reason)
		last = step
	}
}

// testTypedProgress: a method whose proto names a progress message reports
// it with Report<Method>Progress; the caller's On<Method>Progress gets it
// typed, in order, with the result (best-effort: at least the last step
// before the result, as the steps are paced).
func testTypedProgress(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	var mu sync.Mutex
	var got []*testv1.Step
	resp, err := c.Steps(ctx, &testv1.StepsRequest{Steps: 3, PauseNanos: int64(20 * time.Millisecond)}, testv1.OnStepsProgress(func(s *testv1.Step) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}))
	require.NoError(t, err)
	assert.Equal(t, int32(3), resp.GetReported(), "the server's Report calls failed: the backend carries no progress for a caller that asks")
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 }, 5*time.Second, time.Millisecond,
		"no progress reached the caller")
	mu.Lock()
	defer mu.Unlock()
	last := int32(0)
	for _, s := range got {
		assert.Greater(t, s.GetDone(), last, "progress out of order: %v", got)
		assert.Equal(t, int32(3), s.GetTotal())
		last = s.GetDone()
	}
	assert.Equal(t, int32(3), last, "the last progress (the latest wins) did not arrive: %v", got)
}

// testLogLines: the lines a handler adds with bankrpc.Log travel with its
// result, success or error: LogLines reads them, and so does the error.
func testLogLines(t *testing.T, e *env) {
	ctx := testCtx(t, 20*time.Second)
	c := e.client(t)
	var lines []string
	_, err := c.Echo(ctx, &testv1.EchoRequest{Log: []string{"read the account", "applied"}}, bankrpc.LogLines(&lines))
	require.NoError(t, err)
	assert.Equal(t, []string{"read the account", "applied"}, lines)

	lines = nil
	_, err = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.FailedPrecondition), Message: "insufficient funds", Log: []string{"balance 120", "asked 500"}}, bankrpc.LogLines(&lines))
	requireCode(t, bankrpc.FailedPrecondition, err)
	var be *bankrpc.Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, []string{"balance 120", "asked 500"}, be.Log(), "the error carries the log lines")
	assert.Equal(t, []string{"balance 120", "asked 500"}, lines)

	// Bounded: a handler that logs too much gets its lines cut, and told so.
	many := make([]string, bankrpc.MaxLogLines+5)
	for i := range many {
		many[i] = fmt.Sprintf("line %d", i)
	}
	lines = nil
	_, err = c.Echo(ctx, &testv1.EchoRequest{Log: many}, bankrpc.LogLines(&lines))
	require.NoError(t, err)
	require.Len(t, lines, bankrpc.MaxLogLines+1)
	assert.Equal(t, many[:bankrpc.MaxLogLines], lines[:bankrpc.MaxLogLines])
	assert.Contains(t, lines[bankrpc.MaxLogLines], "5 more log lines dropped")
}

// testSubmitCollect: a submitted call's result is collected later by the
// same process, typed; Pending, Finished and Forget see it; a result of one
// method is not collected as another's.
func testSubmitCollect(t *testing.T, e *env) {
	ctx := testCtx(t, 30*time.Second)
	conn := e.conn(t)
	c := testv1.NewTestServiceClient(conn)
	slow, err := c.SubmitSleep(ctx, &testv1.SleepRequest{Nanos: int64(300 * time.Millisecond)})
	require.NoError(t, err)
	fast, err := c.SubmitEcho(ctx, &testv1.EchoRequest{Tag: "submitted", Log: []string{"echoed"}})
	require.NoError(t, err)
	failed, err := c.SubmitFail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound), Message: "no such account"})
	require.NoError(t, err)
	assert.NotEqual(t, fast, slow)

	_, err = c.CollectSleep(ctx, fast)
	requireCode(t, bankrpc.FailedPrecondition, err)

	var lines []string
	echo, err := c.CollectEcho(ctx, fast, bankrpc.LogLines(&lines))
	require.NoError(t, err)
	assert.Equal(t, "submitted", echo.GetTag())
	assert.Equal(t, string(fast), echo.GetCallId(), "the call id Submit returned is the one the server saw")
	assert.Equal(t, []string{"echoed"}, lines)
	assert.Contains(t, []bankrpc.Code{bankrpc.NotFound, bankrpc.DeadlineExceeded}, bankrpc.CodeOf(collectOnce(c, fast)), "a collected result is gone")

	require.Eventually(t, func() bool {
		fin, err := conn.Finished(ctx)
		require.NoError(t, err)
		for _, f := range fin {
			if f.ID == failed {
				return f.Code == bankrpc.NotFound && f.Method == testv1.TestService_Fail_FullMethodName
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the failed call is not listed as finished")
	_, err = c.CollectFail(ctx, failed)
	requireCode(t, bankrpc.NotFound, err)
	assert.Equal(t, "no such account", bankrpc.MessageOf(err))

	sleep, err := c.CollectSleep(ctx, slow)
	require.NoError(t, err)
	assert.False(t, sleep.GetInterrupted())
	assert.Empty(t, conn.Pending())

	gone, err := c.SubmitSleep(ctx, &testv1.SleepRequest{Nanos: int64(3 * time.Second)})
	require.NoError(t, err)
	assert.Equal(t, []bankrpc.CallID{gone}, conn.Pending())
	assert.True(t, conn.Forget(gone))
	assert.Empty(t, conn.Pending())
	assert.False(t, conn.Forget(gone))
}

// collectOnce tries to collect id again, briefly: over a backend that keeps
// results across processes it waits for a result that never comes.
func collectOnce(c testv1.TestServiceClient, id bankrpc.CallID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.CollectEcho(ctx, id)
	return err
}

func testServerRestart(t *testing.T, e *env) {
	ctx := testCtx(t, 60*time.Second)
	c := e.client(t)
	_, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "before"})
	require.NoError(t, err)

	e.stop(t)
	next := e.ep.Restart(t)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "during restart"})
		if err == nil && resp.GetTag() != "during restart" {
			err = fmt.Errorf("got the reply of %q", resp.GetTag())
		}
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond) // the call is sent while no server runs
	e.serve(t, next)
	select {
	case err := <-errc:
		require.NoError(t, err, "a call made while the server restarts must complete")
	case <-ctx.Done():
		t.Fatal("the call did not complete after the server restarted")
	}
}

func testPersistent(t *testing.T, e *env) {
	ctx := testCtx(t, 60*time.Second)
	c := e.client(t)
	e.stop(t)
	next := e.ep.Restart(t)
	const n = 10
	errc := make(chan error, n)
	for i := range n {
		go func() {
			tag := fmt.Sprintf("queued-%d", i)
			resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: tag, Payload: bytes.Repeat([]byte{byte(i)}, 16)})
			if err == nil && resp.GetTag() != tag {
				err = fmt.Errorf("call %s got the reply of %q", tag, resp.GetTag())
			}
			errc <- err
		}()
	}
	time.Sleep(2 * time.Second) // the calls wait with no server at all
	e.serve(t, next)
	for range n {
		select {
		case err := <-errc:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("queued calls were not served after the server started")
		}
	}
	assert.Equal(t, int64(n), e.svc.echoes.Load(), "each queued call must execute exactly once")
}

// longSleep outlasts the moment a test cancels or closes; the handler's ctx
// ends before it does.
const longSleep = 2 * time.Second
