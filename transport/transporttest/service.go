package transporttest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
)

// testService implements bankrpc.test.v1.TestService with one named
// behaviour per method, and counts the calls it executes.
type testService struct {
	testv1.UnimplementedTestServiceServer

	echoes atomic.Int64
	sleeps atomic.Int64

	workMu  sync.Mutex
	runs    map[string]int64     // Work runs per key
	ctxDone map[string]time.Time // when a Work run's ctx ended, per key
	causes  map[string]error     // context.Cause of that end, per key
	release chan struct{}        // closed to let stuck handlers return

	barrierMu sync.Mutex
	barriers  map[string]*barrier
}

// barrier releases its callers once n of them are inside the handler at the
// same time: a way to prove handlers run concurrently without timing them.
type barrier struct {
	n       int
	arrived int
	open    chan struct{}
}

func newTestService() *testService {
	return &testService{
		barriers: make(map[string]*barrier),
		runs:     make(map[string]int64),
		ctxDone:  make(map[string]time.Time),
		causes:   make(map[string]error),
		release:  make(chan struct{}),
	}
}

// Work counts a run of in.Key, then works for in.Nanos: until its ctx ends,
// or, with IgnoreCancel, the whole time (until releaseStuck), recording when
// the ctx ended either way.
func (s *testService) Work(ctx context.Context, in *testv1.WorkRequest) (*testv1.WorkResponse, error) {
	s.workMu.Lock()
	s.runs[in.GetKey()]++
	run := s.runs[in.GetKey()]
	s.workMu.Unlock()
	record := func() {
		s.workMu.Lock()
		s.ctxDone[in.GetKey()] = time.Now()
		s.causes[in.GetKey()] = context.Cause(ctx)
		s.workMu.Unlock()
	}
	if in.GetPollErr() {
		return s.pollErr(ctx, in, run, record)
	}
	if in.GetChildCtx() {
		child, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		ctx = child // record reads the child's cause
	}
	stop := context.AfterFunc(ctx, record)
	defer func() {
		// Done is closed before AfterFunc starts its function: a handler
		// returning on Done can stop it before it runs, so record here then.
		if stop() && ctx.Err() != nil {
			record()
		}
	}()
	timer := time.NewTimer(time.Duration(in.GetNanos()))
	defer timer.Stop()
	done := ctx.Done()
	if in.GetIgnoreCancel() {
		done = nil
	}
	select {
	case <-timer.C:
		return &testv1.WorkResponse{Run: run, Interrupted: ctx.Err() != nil}, nil
	case <-done:
		return &testv1.WorkResponse{Run: run, Interrupted: true}, ctx.Err()
	case <-s.release:
		return &testv1.WorkResponse{Run: run, Interrupted: true}, nil
	}
}

// pollErr is Work for a handler that never calls Done on its ctx (nor
// anything that does, as context.AfterFunc): it works in steps of 200 µs
// and checks ctx.Err() between them, recording when it first saw an error.
func (s *testService) pollErr(ctx context.Context, in *testv1.WorkRequest, run int64, record func()) (*testv1.WorkResponse, error) {
	for end := time.Now().Add(time.Duration(in.GetNanos())); time.Now().Before(end); time.Sleep(200 * time.Microsecond) {
		if err := ctx.Err(); err != nil {
			record()
			return &testv1.WorkResponse{Run: run, Interrupted: true}, err
		}
	}
	return &testv1.WorkResponse{Run: run}, nil
}

// runsOf returns how many times Work ran for key.
func (s *testService) runsOf(key string) int64 {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	return s.runs[key]
}

// ctxDoneOf returns when the ctx of Work's run for key ended, and why.
func (s *testService) ctxDoneOf(key string) (time.Time, error) {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	return s.ctxDone[key], s.causes[key]
}

// releaseStuck lets every stuck Work handler return; idempotent.
func (s *testService) releaseStuck() {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

// Echo returns what the server saw. A tag "barrier:<name>:<n>" first waits
// until n calls with that tag are in the handler at once.
func (s *testService) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	s.echoes.Add(1)
	if rest, ok := strings.CutPrefix(in.GetTag(), "barrier:"); ok {
		if err := s.await(ctx, rest); err != nil {
			return nil, err
		}
	}
	for _, l := range in.GetLog() {
		bankrpc.Log(ctx, l)
	}
	out := &testv1.EchoResponse{
		Payload:  in.GetPayload(),
		Tag:      in.GetTag(),
		CallId:   bankrpc.CallIDFromContext(ctx),
		Metadata: metadataPairs(ctx),
	}
	if dl, ok := ctx.Deadline(); ok {
		out.DeadlineUnixNano = dl.UnixNano()
	}
	if p, ok := bankrpc.PeerFromContext(ctx); ok {
		out.PeerIdentity = p.Identity
	}
	return out, nil
}

func (s *testService) await(ctx context.Context, spec string) error {
	name, count, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	if err != nil || n <= 0 {
		return bankrpc.Errorf(bankrpc.InvalidArgument, "bad barrier tag %q", spec)
	}
	s.barrierMu.Lock()
	b := s.barriers[name]
	if b == nil {
		b = &barrier{n: n, open: make(chan struct{})}
		s.barriers[name] = b
	}
	b.arrived++
	if b.arrived == b.n {
		close(b.open)
	}
	s.barrierMu.Unlock()
	select {
	case <-b.open:
		return nil
	case <-ctx.Done():
		return bankrpc.Errorf(bankrpc.DeadlineExceeded, "barrier %s: only %d of %d calls ran concurrently", name, b.arrived, b.n)
	}
}

// Sleep waits for the given duration or until the call's ctx ends.
func (s *testService) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	s.sleeps.Add(1)
	select {
	case <-time.After(time.Duration(in.GetNanos())):
		return &testv1.SleepResponse{}, nil
	case <-ctx.Done():
		return &testv1.SleepResponse{Interrupted: true}, nil
	}
}

// zeroError asks Fail for a zero *bankrpc.Error, whose code is OK.
const zeroError = "a zero *bankrpc.Error"

// Fail returns the requested error.
func (s *testService) Fail(ctx context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	for _, l := range in.GetLog() {
		bankrpc.Log(ctx, l)
	}
	if in.GetMessage() == zeroError {
		return nil, &bankrpc.Error{}
	}
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

// Panic panics with the requested message.
func (s *testService) Panic(_ context.Context, in *testv1.PanicRequest) (*testv1.PanicResponse, error) {
	panic(in.GetMessage())
}

// Progress sends the requested number of statuses, then returns.
func (s *testService) Progress(ctx context.Context, in *testv1.ProgressRequest) (*testv1.ProgressResponse, error) {
	var sent int32
	for i := range in.GetSteps() {
		err := bankrpc.SendStatus(ctx, bankrpc.Status{Reason: fmt.Sprintf("step %d", i+1), Data: []byte{byte(i + 1)}})
		if err != nil {
			return nil, err
		}
		sent++
	}
	return &testv1.ProgressResponse{Sent: sent}, nil
}

// Steps reports the requested number of typed progress messages, pausing
// after each, then returns.
func (s *testService) Steps(ctx context.Context, in *testv1.StepsRequest) (*testv1.StepsResponse, error) {
	var reported int32
	for i := range in.GetSteps() {
		if testv1.ReportStepsProgress(ctx, &testv1.Step{Done: i + 1, Total: in.GetSteps()}) == nil {
			reported++
		}
		select {
		case <-time.After(time.Duration(in.GetPauseNanos())):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testv1.StepsResponse{Reported: reported}, nil
}

// metadataPairs lists the caller's metadata as sorted "key=value" strings.
func metadataPairs(ctx context.Context) []string {
	md, _ := bankrpc.FromIncomingContext(ctx)
	var out []string
	for k, vs := range md {
		for _, v := range vs {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}
