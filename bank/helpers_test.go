package bank

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// testCtx returns a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// openBank opens the bank in dir and shuts it down at the end of the test
// (a no-op when the test did).
func openBank(t testing.TB, dir string, opts ...Option) *Bank {
	t.Helper()
	b, err := Open(dir, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Shutdown() })
	return b
}

// errCrashed fails the calls a crash catches in flight.
var errCrashed = errors.New("crashed (test)")

// crash drops the bank as a kill -9 would: no snapshot, records not yet
// written are lost, the lock is released. Calls in flight fail.
func (b *Bank) crash() {
	b.shutdownOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		if b.failed == nil {
			b.failed = errCrashed
		}
		b.mu.Unlock()
		close(b.stop)
		<-b.snapperDone
		<-b.writerDone
		_ = b.lock.Close()
		b.shutdownErr = errCrashed
	})
}

// withLogOpener makes the bank open its log files with fn.
func withLogOpener(fn func(path string) (logFile, error)) Option {
	return func(o *options) { o.openLog = fn }
}

// withDirSyncer makes the bank fsync directories with fn.
func withDirSyncer(fn func(dir string) error) Option {
	return func(o *options) { o.syncDir = fn }
}

// withMaxAccounts sets how many accounts the bank may hold (default
// maxAccounts, which no test can reach).
func withMaxAccounts(n int) Option {
	return func(o *options) { o.maxAccounts = n }
}

// serve serves b over inproc and returns a client of it, through the
// generated stubs and the transport runtime.
func serve(t testing.TB, b *Bank) bankv1.BankClient {
	t.Helper()
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, b)
	l := inproc.NewListener()
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(l) })
	conn := bankrpc.NewConn(l.Dial())
	t.Cleanup(func() {
		_ = conn.Close()
		_ = srv.Close()
		wg.Wait()
	})
	return bankv1.NewBankClient(conn)
}

// logRecorder is a slog.Handler that keeps the messages logged through it,
// for tests to read: slog.New(&logRecorder{}).
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// once returns the call ref of a client session named name that makes one
// call: call id "<name>-1", first unanswered 1. Tests that care about one
// call at a time name each call this way; "" is a call without a call id.
func once(name string) callRef {
	if name == "" {
		return callRef{}
	}
	return callRefOf(name+"-1", 1)
}

// mustCall runs req directly on b as the single call of session name (see
// once) and returns its result, failing the test when the bank did not
// decide.
func mustCall(t testing.TB, ctx context.Context, b *Bank, name string, req request) result {
	t.Helper()
	return mustCallRef(t, ctx, b, once(name), req)
}

// mustCallRef runs req with call ref c directly on b and returns its result,
// failing the test when the bank did not decide.
func mustCallRef(t testing.TB, ctx context.Context, b *Bank, c callRef, req request) result {
	t.Helper()
	res, err := b.call(ctx, c, req)
	require.NoError(t, err, "%+v %+v", c, req)
	return res
}

// testSession is a client session as bankrpc.Conn runs one: call ids
// "<name>-<seq>", and each request's first unanswered sequence number is
// the lowest of the calls it has not had a reply to.
type testSession struct {
	name    string
	seq     uint64
	pending map[uint64]bool
}

func newTestSession(name string) *testSession {
	return &testSession{name: name, pending: map[uint64]bool{}}
}

// next starts a call: it returns its ref, the call being pending.
func (s *testSession) next() callRef {
	s.seq++
	s.pending[s.seq] = true
	return s.ref(s.seq)
}

// ref returns the ref of a call (a first send or a retry) of seq now.
func (s *testSession) ref(seq uint64) callRef {
	fu := seq
	for p := range s.pending {
		fu = min(fu, p)
	}
	return callRefOf(fmt.Sprintf("%s-%d", s.name, seq), fu)
}

// answered records that the reply of seq arrived.
func (s *testSession) answered(seq uint64) { delete(s.pending, seq) }

// do makes the next call of the session on b and returns its result and
// ref; answered says whether the client gets the reply.
func (s *testSession) do(t testing.TB, ctx context.Context, b *Bank, req request, answered bool) (result, callRef) {
	t.Helper()
	c := s.next()
	res := mustCallRef(t, ctx, b, c, req)
	if answered {
		s.answered(c.seq)
	}
	return res, c
}

// fakeClock is a wall clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// withClock makes the bank's time advance with clock.
func withClock(clock func() time.Time) Option {
	return func(o *options) { o.clock = clock }
}

// codeAndMessage returns err's code and message, for comparisons.
func codeAndMessage(err error) (bankrpc.Code, string) {
	return bankrpc.CodeOf(err), bankrpc.MessageOf(err)
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}

// recordedCall says what b has recorded for the call with call id id: 1
// and its reply when the bank has it, 2 when the call is below its
// session's mark (forgotten), 0 when the bank knows nothing of it.
func (b *Bank) recordedCall(id string) (int, reply) {
	c := callRefOf(id, 0)
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.st.sessions.get(sessionKeyOf(c.session), b.clock.read(), b.opts.retention)
	if !ok {
		return 0, reply{}
	}
	var buf [1]reply
	if r, ok := findReply(b.st.sessions.replies(i, &buf), c.seq); ok {
		return 1, r
	}
	if c.seq < b.st.sessions.slot(i).mark {
		return 2, reply{}
	}
	return 0, reply{}
}
