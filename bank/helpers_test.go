package bank

import (
	"context"
	"errors"
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
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = l.Serve(ctx, srv) })
	conn := bankrpc.NewConn(l.Dial())
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
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

// mustCall runs req with callID directly on b and returns its result,
// failing the test when the bank did not decide.
func mustCall(t testing.TB, ctx context.Context, b *Bank, callID string, req request) result {
	t.Helper()
	res, err := b.call(ctx, callID, req)
	require.NoError(t, err, "%s %+v", callID, req)
	return res
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
