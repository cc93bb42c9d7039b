package bank

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// BenchmarkDurableDeposit measures durable deposits per second with 1, 16
// and 64 concurrent callers calling the bank directly, each caller a client
// session of its own (each call with a fresh call id) on its own account. Every call returns only
// once its record is fsynced: the ratio between the rates is group commit.
func BenchmarkDurableDeposit(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			bk := openBank(b, b.TempDir(), WithSnapshotEvery(0))
			ctx := context.Background()
			for c := range callers {
				mustCall(b, ctx, bk, "", request{op: opOpen, account: int32(c + 1)})
			}
			runCallers(b, callers, func(c int, n int64) error {
				c1 := strconv.Itoa(c + 1)
				_, err := bk.call(ctx, callRefOf("bench"+c1+"-"+strconv.FormatInt(n, 10), uint64(n)), request{op: opDeposit, account: int32(c + 1), amount: 1})
				return err
			})
		})
	}
}

// BenchmarkDurableDepositInproc is the same through the generated stubs,
// the transport runtime and the inproc backend: the whole path a call takes
// except the network.
func BenchmarkDurableDepositInproc(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			bk := openBank(b, b.TempDir(), WithSnapshotEvery(0))
			client := serve(b, bk)
			ctx := context.Background()
			for c := range callers {
				if _, err := client.Open(ctx, &bankv1.OpenRequest{AccountId: int32(c + 1)}); err != nil {
					b.Fatal(err)
				}
			}
			runCallers(b, callers, func(c int, _ int64) error {
				_, err := client.Deposit(ctx, &bankv1.DepositRequest{AccountId: int32(c + 1), Amount: 1})
				return err
			})
		})
	}
}

// runCallers runs b.N calls of fn spread over the given number of
// goroutines and reports the rate.
func runCallers(b *testing.B, callers int, fn func(caller int, n int64) error) {
	var next atomic.Int64
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				if err := fn(c, n); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
}

const (
	startupAccounts = 1_000_000
	startupRecords  = 100_000
)

// startupFixture is a bank directory with a snapshot of a million accounts,
// each opened by the one call of a client session (so the bank remembers a
// million sessions), and a log of 100,000 deposits on random accounts
// after it, each the one call of a session. It is built once per test
// binary and removed by TestMain.
var startupFixture struct {
	once sync.Once
	dir  string
	err  error
}

func removeFixtures() {
	if startupFixture.dir != "" {
		_ = os.RemoveAll(startupFixture.dir)
	}
}

func buildStartupFixture() (string, error) {
	dir, err := os.MkdirTemp("", "bank-startup-")
	if err != nil {
		return "", err
	}
	s := oneShotSessions(startupAccounts, time.Now().UnixNano())
	snap := encodeSnapshot(nil, &s, snapshotMeta{lastLSN: startupAccounts, nextGen: 2, time: time.Now().UnixNano()})
	if err := os.WriteFile(filepath.Join(dir, snapshotFileName), snap, 0o644); err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(dir, logFileName(2)), nil, 0o644); err != nil {
		return dir, err
	}
	b, err := Open(dir, WithSnapshotEvery(0))
	if err != nil {
		return dir, err
	}
	defer b.crash() // leave the log as it is: no snapshot
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		rng := rand.New(rand.NewPCG(uint64(g), 7))
		wg.Go(func() {
			for n := next.Add(1); n <= startupRecords; n = next.Add(1) {
				id := rng.Int32N(startupAccounts) + 1
				if _, err := b.call(ctx, callRefOf(fmt.Sprintf("d%015x-1", n), 1), request{op: opDeposit, account: id, amount: 1 + rng.Int64N(1000)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return dir, <-errs
}

// BenchmarkStartup measures Open of a bank with a million accounts in its
// snapshot and 100,000 records to replay, and the heap the open bank holds
// (after a GC, net of what the process held before).
func BenchmarkStartup(b *testing.B) {
	startupFixture.once.Do(func() { startupFixture.dir, startupFixture.err = buildStartupFixture() })
	if startupFixture.err != nil {
		b.Fatal(startupFixture.err)
	}
	var heap uint64
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		b.StartTimer()
		bk, err := Open(startupFixture.dir, WithSnapshotEvery(0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n := len(bk.Accounts()); n != startupAccounts {
			b.Fatalf("%d accounts, want %d", n, startupAccounts)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap = ms.HeapAlloc - before
		bk.crash() // no snapshot: the next iteration replays the same log
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
}

// oneShotSessions returns the state of a bank with n accounts, each opened
// by a client session that made that one call at bank time now: the
// sessions a million one-shot clients leave behind.
func oneShotSessions(n int, now int64) state {
	s := newState()
	s.accounts = make([]account, 0, n)
	for id := int32(1); id <= int32(n); id++ {
		req := request{op: opOpen, account: id}
		s.remember(callRefOf(fmt.Sprintf("%016x-1", id), 1), req, s.apply(req), now, DefaultSessionRetention)
	}
	return s
}

// BenchmarkSnapshotEncode measures how long a snapshot holds the bank's
// mutex with a million accounts and a million sessions, one reply each: the
// encoding into a buffer allocated beforehand, as Bank.snapshot does.
func BenchmarkSnapshotEncode(b *testing.B) {
	s := oneShotSessions(startupAccounts, 1)
	buf := snapshotBuffer(snapshotSize(&s))
	var size int
	for b.Loop() {
		size = len(encodeSnapshot(buf, &s, snapshotMeta{nextGen: 1, time: 1}))
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// BenchmarkSessionTableMemory measures the heap a million one-shot client
// sessions take in the session table (each with the reply of its last
// call, as a one-shot bank-client run leaves it: open, the command, close),
// the accounts they used aside. It reports bytes per session.
func BenchmarkSessionTableMemory(b *testing.B) {
	const sessions = 1_000_000
	keys := make([]sessionKey, sessions)
	for i := range keys {
		keys[i] = sessionKeyOf(fmt.Sprintf("%016x", i+1))
	}
	var perSession float64
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		b.StartTimer()
		var t sessionTable
		for i, k := range keys {
			// Open (seq 1), the command (seq 2), Close (seq 3): each
			// request's first unanswered is its own sequence number.
			for seq := uint64(1); seq <= 3; seq++ {
				t.record(k, seq, int64(i), DefaultSessionRetention, reply{seq: seq, account: int32(i%1000 + 1), op: opDeposit, value: 100})
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		perSession = float64(ms.HeapAlloc-before) / sessions
		if t.len() != sessions {
			b.Fatalf("%d sessions, want %d", t.len(), sessions)
		}
		runtime.KeepAlive(&t)
		b.StartTimer()
	}
	b.ReportMetric(perSession, "B/session")
}
