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
// and 64 concurrent callers calling the bank directly, each call with a
// fresh call id, each caller on its own account. Every call returns only
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
				_, err := bk.call(ctx, "dep-"+strconv.FormatInt(n, 10), request{op: opDeposit, account: int32(c + 1), amount: 1})
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
// each opened by a call with a call id (so each has a dedup entry), and a
// log of 100,000 deposits with call ids on random accounts after it. It is
// built once per test binary and removed by TestMain.
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
	s := newState(DefaultDedupRetention)
	s.accounts = make([]account, 0, startupAccounts)
	for id := int32(1); id <= startupAccounts; id++ {
		req := request{op: opOpen, account: id}
		s.remember(keyOf(fmt.Sprintf("%016x-%d", id, id)), req, s.apply(req))
	}
	snap := encodeSnapshot(&s, snapshotMeta{lastLSN: startupAccounts, nextGen: 2})
	if err := os.WriteFile(filepath.Join(dir, snapshotFileName), snap, 0o644); err != nil {
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
				if _, err := b.call(ctx, fmt.Sprintf("%016x-dep-%d", n, n), request{op: opDeposit, account: id, amount: 1 + rng.Int64N(1000)}); err != nil {
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

// BenchmarkSnapshotEncode measures how long a snapshot holds the bank's
// mutex with a million accounts, each with one dedup entry.
func BenchmarkSnapshotEncode(b *testing.B) {
	s := newState(DefaultDedupRetention)
	s.accounts = make([]account, 0, startupAccounts)
	for id := int32(1); id <= startupAccounts; id++ {
		req := request{op: opOpen, account: id}
		s.remember(keyOf(strconv.Itoa(int(id))), req, s.apply(req))
	}
	var size int
	for b.Loop() {
		size = len(encodeSnapshot(&s, snapshotMeta{nextGen: 1}))
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}
