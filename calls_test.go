package bankrpc_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
)

// counting is a TestService whose Sleep counts its runs and blocks until
// its ctx ends or release is closed.
type counting struct {
	testv1.UnimplementedTestServiceServer
	runs    atomic.Int64
	release chan struct{}
}

func (c *counting) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	c.runs.Add(1)
	return &testv1.EchoResponse{Tag: in.GetTag()}, nil
}

func (c *counting) Sleep(ctx context.Context, _ *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	c.runs.Add(1)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.release:
		return &testv1.SleepResponse{}, nil
	}
}

func request(t *testing.T, id, method string) []byte {
	t.Helper()
	return envelope.AppendRequest(nil, id, method, nil, 0, nil, 0)
}

func resultCode(t *testing.T, frame []byte) bankrpc.Code {
	t.Helper()
	res, err := envelope.DecodeResult(frame, 0)
	require.NoError(t, err)
	return bankrpc.Code(res.GetCode())
}

func TestReplyCacheBoundsByCountAndAge(t *testing.T) {
	svc := &counting{}
	srv := bankrpc.NewServer(bankrpc.WithReplyCache(2, 100*time.Millisecond))
	testv1.RegisterTestServiceServer(srv, svc)
	ctx := context.Background()
	echo := testv1.TestService_Echo_FullMethodName
	for _, id := range []string{"a", "b", "a", "c", "a"} {
		_, err := srv.HandleFrame(ctx, request(t, id, echo))
		require.NoError(t, err)
	}
	// a, b, (a cached), c evicts a, a runs again.
	assert.Equal(t, int64(4), svc.runs.Load())
	time.Sleep(150 * time.Millisecond)
	_, err := srv.HandleFrame(ctx, request(t, "c", echo))
	require.NoError(t, err)
	assert.Equal(t, int64(5), svc.runs.Load(), "a reply older than the cache's age is forgotten")

	none := bankrpc.NewServer(bankrpc.WithReplyCache(0, 0))
	testv1.RegisterTestServiceServer(none, svc)
	for range 2 {
		_, err := none.HandleFrame(ctx, request(t, "z", echo))
		require.NoError(t, err)
	}
	assert.Equal(t, int64(7), svc.runs.Load(), "a cache of size 0 keeps nothing")
}

func TestCancelBeforeTheRequestAnswersCanceled(t *testing.T) {
	svc := &counting{}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, svc)
	reply, err := srv.HandleFrame(context.Background(), envelope.AppendCancel(nil, "early"))
	require.NoError(t, err)
	assert.Nil(t, reply, "a cancel message gets no reply")
	reply, err = srv.HandleFrame(context.Background(), request(t, "early", testv1.TestService_Echo_FullMethodName))
	require.NoError(t, err)
	assert.Equal(t, bankrpc.Canceled, resultCode(t, reply))
	assert.Equal(t, int64(0), svc.runs.Load(), "a call canceled before it came is not run")
}

func TestCloseReleasesOwnersAndJoiners(t *testing.T) {
	svc := &counting{release: make(chan struct{})}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, svc)
	frame := request(t, "stuck", testv1.TestService_Sleep_FullMethodName)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			_, errs[i] = srv.HandleFrame(context.Background(), frame)
		})
	}
	require.Eventually(t, func() bool { return svc.runs.Load() == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond) // let the duplicates join
	require.NoError(t, srv.Close())
	wg.Wait()
	for _, err := range errs {
		assert.ErrorIs(t, err, transport.ErrNotServed, "an interrupted call is not answered: a durable backend redelivers it")
	}
	assert.Equal(t, int64(1), svc.runs.Load())

	_, err := srv.HandleFrame(context.Background(), request(t, "late", testv1.TestService_Echo_FullMethodName))
	assert.ErrorIs(t, err, transport.ErrNotServed, "a closed server takes no new call")
}

func TestShutdownRefusesNewCallsAndFinishesOld(t *testing.T) {
	svc := &counting{release: make(chan struct{})}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, svc)
	old := make(chan error, 1)
	go func() {
		reply, err := srv.HandleFrame(context.Background(), request(t, "old", testv1.TestService_Sleep_FullMethodName))
		if err == nil && resultCode(t, reply) != bankrpc.OK {
			err = bankrpc.NewError(resultCode(t, reply), "old call")
		}
		old <- err
	}()
	require.Eventually(t, func() bool { return svc.runs.Load() == 1 }, 5*time.Second, time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(context.Background()) }()
	n := 0
	require.Eventually(t, func() bool {
		n++
		_, err := srv.HandleFrame(context.Background(), request(t, fmt.Sprint("new-", n), testv1.TestService_Echo_FullMethodName))
		return err == transport.ErrNotServed
	}, 5*time.Second, time.Millisecond, "a draining server refuses new calls")
	close(svc.release)
	require.NoError(t, <-old, "a call in flight finishes during Shutdown")
	require.NoError(t, <-stopped)
}

func TestConnTellsTheFirstUnansweredSequence(t *testing.T) {
	var mu sync.Mutex
	var seen []uint64
	block := make(chan struct{})
	b := backendFunc(func(ctx context.Context, call *transport.Call) ([]byte, error) {
		var v envelope.RequestView
		require.NoError(t, envelope.DecodeRequestView(call.Frame, 0, &v))
		mu.Lock()
		seen = append(seen, v.FirstUnanswered)
		mu.Unlock()
		if v.Metadata != nil {
			select {
			case <-block:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return envelope.AppendResult(nil, v.CallID, 0, "", nil, nil, nil), nil
	})
	conn := bankrpc.NewConn(b)
	ctx := context.Background()
	call := func(ctx context.Context) error {
		return conn.Invoke(ctx, testv1.TestService_Echo_FullMethodName, &testv1.EchoRequest{}, &testv1.EchoResponse{})
	}
	require.NoError(t, call(ctx))                              // seq 1
	require.NoError(t, call(ctx))                              // seq 2
	slow := bankrpc.AppendToOutgoingContext(ctx, "block", "1") // seq 3 times out: outcome unknown
	tctx, cancel := context.WithTimeout(slow, 10*time.Millisecond)
	require.Error(t, call(tctx))
	cancel()
	require.NoError(t, call(ctx)) // seq 4: 3 is still unanswered
	id := conn.NewCallID()        // seq 5, reserved, not sent yet
	sess, seq, ok := bankrpc.ParseCallID(id)
	require.True(t, ok)
	assert.Len(t, sess, 16)
	assert.Equal(t, uint64(5), seq)
	close(block)
	require.NoError(t, conn.Invoke(slow, testv1.TestService_Echo_FullMethodName, &testv1.EchoRequest{}, &testv1.EchoResponse{}, bankrpc.WithCallID(sess+"-3")))
	require.NoError(t, call(ctx)) // seq 6: 3 answered by its retry; 5, reserved by NewCallID, is not
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []uint64{1, 2, 3, 3, 3, 5}, seen)
	_, _, ok = bankrpc.ParseCallID("hand-picked")
	assert.False(t, ok)
}

func TestRefusedCallsAreLoggedAtDebugAndRateLimited(t *testing.T) {
	var logs syncLog
	srv := bankrpc.NewServer(bankrpc.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	testv1.RegisterTestServiceServer(srv, &counting{})
	ctx := context.Background()
	expired := envelope.AppendRequest(nil, "old", testv1.TestService_Echo_FullMethodName, nil, time.Now().Add(-time.Second).UnixNano(), nil, 0)
	unknown := request(t, "nope", "/bankrpc.test.v1.TestService/Nope")
	undecodable := envelope.AppendRequest(nil, "bad", testv1.TestService_Echo_FullMethodName, []byte{0xff, 0xff}, 0, nil, 0)
	for _, f := range [][]byte{expired, unknown, undecodable} {
		_, _ = srv.HandleFrame(ctx, f)
	}
	// A call canceled before it came, a call id reused for another request,
	// a call that comes while the server stops: refused, each with a line.
	srv.CancelCall("early")
	_, _ = srv.HandleFrame(ctx, request(t, "early", testv1.TestService_Echo_FullMethodName))
	_, _ = srv.HandleFrame(ctx, request(t, "reused", testv1.TestService_Echo_FullMethodName))
	_, _ = srv.HandleFrame(ctx, envelope.AppendRequest(nil, "reused", testv1.TestService_Echo_FullMethodName, []byte{8, 1}, 0, nil, 0))
	for _, want := range []string{"kind=expired", "kind=\"unknown method\"", "kind=\"undecodable payload\"", "kind=\"canceled early\"", "kind=\"call id reused\""} {
		assert.Contains(t, logs.String(), want)
	}
	stopping := bankrpc.NewServer(bankrpc.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	testv1.RegisterTestServiceServer(stopping, &counting{})
	require.NoError(t, stopping.Shutdown(ctx))
	_, err := stopping.HandleFrame(ctx, request(t, "late", testv1.TestService_Echo_FullMethodName))
	require.ErrorIs(t, err, transport.ErrNotServed)
	assert.Contains(t, logs.String(), "kind=\"not served\"")
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, "refused a call") {
			assert.Contains(t, line, "level=DEBUG", "refused calls are logged at debug")
		}
	}

	// 10,000 garbage frames write a burst of lines, not 10,000.
	before := strings.Count(logs.String(), "\n")
	for range 10000 {
		_, _ = srv.HandleFrame(ctx, []byte("\xff\xff garbage"))
	}
	lines := strings.Count(logs.String(), "\n") - before
	assert.LessOrEqual(t, lines, 11, "log lines for 10,000 garbage frames")
	t.Logf("10,000 garbage frames: %d log lines (then one summary per 10s interval)", lines)
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// recorder is a StatsHandler that keeps every End.
type recorder struct {
	mu   sync.Mutex
	ends []string
}

func (r *recorder) Begin(ctx context.Context, _ *bankrpc.CallInfo) context.Context { return ctx }
func (r *recorder) End(_ context.Context, info *bankrpc.CallInfo, end *bankrpc.CallEnd) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, fmt.Sprintf("%s %s %s refused=%v %s dup=%v client=%v", info.Method, info.CallID, end.Code, end.Refused, end.RefusedReason, end.Duplicate, info.Client))
}

func TestStatsHandlerSeesRefusedAndDuplicateCalls(t *testing.T) {
	var server, client recorder
	srv := bankrpc.NewServer(bankrpc.WithStatsHandler(&server))
	testv1.RegisterTestServiceServer(srv, &counting{})
	ctx := context.Background()
	echo := testv1.TestService_Echo_FullMethodName
	for _, f := range [][]byte{
		request(t, "a", echo),
		request(t, "a", echo),
		request(t, "b", "/bankrpc.test.v1.TestService/Nope"),
		envelope.AppendRequest(nil, "c", echo, nil, 1, nil, 0),
		envelope.AppendRequest(nil, "d", echo, []byte{0xff}, 0, nil, 0),
		[]byte("\xff"),
	} {
		_, _ = srv.HandleFrame(ctx, f)
	}
	assert.Equal(t, []string{
		echo + " a OK refused=false  dup=false client=false",
		echo + " a OK refused=false  dup=true client=false",
		"/bankrpc.test.v1.TestService/Nope b UNIMPLEMENTED refused=true unknown method dup=false client=false",
		echo + " c DEADLINE_EXCEEDED refused=true expired dup=false client=false",
		echo + " d INVALID_ARGUMENT refused=true undecodable payload dup=false client=false",
		"  INVALID_ARGUMENT refused=true malformed frame dup=false client=false",
	}, server.ends)

	conn := bankrpc.NewConn(serving(srv), bankrpc.WithStatsHandler(&client))
	require.NoError(t, conn.Invoke(ctx, echo, &testv1.EchoRequest{}, &testv1.EchoResponse{}, bankrpc.WithCallID("x")))
	assert.Equal(t, []string{echo + " x OK refused=false  dup=false client=true"}, client.ends)
}

// TestExpiredRequestIsNotTheCallsOutcome pins PROTOCOL.md §2.2: a request
// refused because its deadline had passed did not run, so its
// DEADLINE_EXCEEDED is not cached as the call's reply: a repeat of the call
// id with a later deadline runs (once), and is then answered from the cache.
func TestExpiredRequestIsNotTheCallsOutcome(t *testing.T) {
	svc := &counting{}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, svc)
	ctx := context.Background()
	echo := testv1.TestService_Echo_FullMethodName
	reply, err := srv.HandleFrame(ctx, envelope.AppendRequest(nil, "late", echo, nil, time.Now().Add(-time.Second).UnixNano(), nil, 0))
	require.NoError(t, err)
	assert.Equal(t, bankrpc.DeadlineExceeded, resultCode(t, reply))
	assert.Zero(t, svc.runs.Load())
	for range 2 {
		reply, err = srv.HandleFrame(ctx, envelope.AppendRequest(nil, "late", echo, nil, time.Now().Add(time.Minute).UnixNano(), nil, 0))
		require.NoError(t, err)
		assert.Equal(t, bankrpc.OK, resultCode(t, reply))
	}
	assert.Equal(t, int64(1), svc.runs.Load(), "the repeat ran once, then its reply was cached")
}

// A result that invites a retry with the same call id (UNAVAILABLE: not
// served; DEADLINE_EXCEEDED: refused as expired) leaves the call's sequence
// pending, so the requests that follow still carry it as first unanswered
// and a session-recording server answers the retry instead of refusing it
// as forgotten; a definitive error settles it. (The bank refused such a
// retry ABORTED: TestPromiseZMQ.)
func TestRetryableResultsKeepTheSequencePending(t *testing.T) {
	codes := []bankrpc.Code{
		bankrpc.Unavailable,        // seq 1: stays pending
		bankrpc.OK,                 // seq 2
		bankrpc.FailedPrecondition, // seq 3: settled
		bankrpc.DeadlineExceeded,   // seq 4: stays pending
		bankrpc.OK,                 // seq 5
	}
	var seen []uint64
	b := backendFunc(func(ctx context.Context, call *transport.Call) ([]byte, error) {
		var v envelope.RequestView
		require.NoError(t, envelope.DecodeRequestView(call.Frame, 0, &v))
		code := codes[len(seen)]
		seen = append(seen, v.FirstUnanswered)
		return envelope.AppendResult(nil, v.CallID, uint32(code), "as asked", nil, nil, nil), nil
	})
	conn := bankrpc.NewConn(b)
	for _, code := range codes {
		err := conn.Invoke(context.Background(), testv1.TestService_Echo_FullMethodName, &testv1.EchoRequest{}, &testv1.EchoResponse{})
		assert.Equal(t, code, bankrpc.CodeOf(err))
	}
	assert.Equal(t, []uint64{1, 1, 1, 1, 1}, seen)
}

// The calls in flight are a list threaded through them: calls that end in
// any order leave it whole, so that Close still cancels every one left.
func TestCallsEndingInAnyOrderLeaveTheOthersCancelable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc := &counting{release: make(chan struct{})}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, svc)
	sleep := testv1.TestService_Sleep_FullMethodName

	const n = 5
	codes := make([]bankrpc.Code, n)
	errs := make([]error, n)
	var returned atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer returned.Add(1)
			var reply []byte
			reply, errs[i] = srv.HandleFrame(ctx, request(t, fmt.Sprintf("s%d", i), sleep))
			if errs[i] == nil {
				codes[i] = resultCode(t, reply)
			}
		})
	}
	require.Eventually(t, func() bool { return svc.runs.Load() == n }, 5*time.Second, time.Millisecond)
	// The first, a middle and the last started end by their caller's cancel.
	canceled := []int{0, 2, n - 1}
	for _, i := range canceled {
		srv.CancelCall(fmt.Sprintf("s%d", i))
	}
	require.Eventually(t, func() bool { return returned.Load() == int64(len(canceled)) }, 5*time.Second, time.Millisecond)
	require.NoError(t, srv.Close())
	wg.Wait() // hangs (and the test times out) if Close missed one
	for _, i := range canceled {
		require.NoError(t, errs[i])
		assert.Equal(t, bankrpc.Canceled, codes[i], "s%d was canceled by its caller", i)
	}
	for _, i := range []int{1, 3} {
		assert.ErrorIs(t, errs[i], transport.ErrNotServed, "s%d was stopped by Close", i)
	}
}

// The cache answers the latest replies with their own reply, not another
// call's, however many came and went before them.
func TestReplyCacheAnswersTheLatestWithTheirOwnReply(t *testing.T) {
	svc := &counting{}
	srv := bankrpc.NewServer(bankrpc.WithReplyCache(3, time.Minute))
	testv1.RegisterTestServiceServer(srv, svc)
	ctx := context.Background()
	echo := func(id string) []byte {
		t.Helper()
		payload, err := proto.Marshal(&testv1.EchoRequest{Tag: "tag of " + id})
		require.NoError(t, err)
		reply, err := srv.HandleFrame(ctx, envelope.AppendRequest(nil, id, testv1.TestService_Echo_FullMethodName, payload, 0, nil, 0))
		require.NoError(t, err)
		return reply
	}
	replies := map[string][]byte{}
	for i := range 20 {
		id := fmt.Sprintf("e%d", i)
		replies[id] = echo(id)
		if i%4 == 3 {
			// An early cancel of an unknown id takes a place in the cache too.
			srv.CancelCall(fmt.Sprintf("x%d", i))
		}
	}
	require.Equal(t, int64(20), svc.runs.Load())
	// The cache holds e18, e19 and the cancel of x19.
	for _, id := range []string{"e19", "e18"} {
		assert.Equal(t, replies[id], echo(id), "%s is answered from the cache", id)
	}
	assert.Equal(t, int64(20), svc.runs.Load())
	for _, id := range []string{"e17", "e0"} {
		assert.Equal(t, replies[id], echo(id), "%s runs again, with the same outcome", id)
	}
	assert.Equal(t, int64(22), svc.runs.Load())

	// The cancel of x19 answers x19 once; its next request runs, and its
	// reply outlives the eviction of that cancel.
	assert.Equal(t, bankrpc.Canceled, resultCode(t, echo("x19")))
	x19 := echo("x19")
	assert.Equal(t, bankrpc.OK, resultCode(t, x19))
	assert.Equal(t, int64(23), svc.runs.Load())
	echo("e20") // evicts the cancel of x19, then e18 and e19
	assert.Equal(t, x19, echo("x19"), "x19 is answered from the cache")
	assert.Equal(t, int64(24), svc.runs.Load())
}
