package bank

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

var zmqBenchDuration = flag.Duration("bank.zmqbench.duration", 2*time.Second, "length of each measurement of BenchmarkDurableOverZMQ")

// BenchmarkDurableOverZMQ compares the durable bank with a trivial
// in-memory bank, both served over the ZeroMQ backend, at 1, 16 and 64
// closed-loop callers sharing one connection (as the issue 16 table does),
// and times one append + fdatasync of a log-sized record on the same disk.
// The durable bank runs twice: as it is, with two fsyncs of the log in
// flight, and with one at a time (the group commit it had before). Each
// iteration is one round of the four, back to back; the metrics are medians
// over the rounds:
//
//	go test -run '^$' -bench DurableOverZMQ -benchtime 5x ./bank/
//
// ratio is durable/in-memory requests per second (ratio-1sync: with one
// fsync at a time); p50/fsync is the durable bank's median latency over the
// median fsync.
func BenchmarkDurableOverZMQ(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var mem, dur, ratio, ratio1, memP50, durP50, dur1P50, fsync, p50PerFsync []float64
			for b.Loop() {
				rm, err := runOverZMQ(callers, *zmqBenchDuration, &memBank{balances: make(map[int32]int64)})
				if err != nil {
					b.Fatal(err)
				}
				dir := b.TempDir()
				durable := func(name string, opts ...Option) loadgen.Result {
					bk, err := Open(filepath.Join(dir, name), append(opts, WithSnapshotEvery(0))...)
					if err != nil {
						b.Fatal(err)
					}
					r, err := runOverZMQ(callers, *zmqBenchDuration, bk)
					if err = errors.Join(err, bk.Shutdown()); err != nil {
						b.Fatal(err)
					}
					return r
				}
				// Alternate which durable run comes first, so that neither
				// always follows the in-memory one.
				var rd, r1 loadgen.Result
				if len(ratio)%2 == 0 {
					rd, r1 = durable("bank"), durable("bank1", func(o *options) { o.logSyncers = 1 })
				} else {
					r1, rd = durable("bank1", func(o *options) { o.logSyncers = 1 }), durable("bank")
				}
				f, err := fsyncTime(dir, 200)
				if err != nil {
					b.Fatal(err)
				}
				mem = append(mem, rm.PerSec)
				dur = append(dur, rd.PerSec)
				ratio = append(ratio, rd.PerSec/rm.PerSec)
				ratio1 = append(ratio1, r1.PerSec/rm.PerSec)
				dur1P50 = append(dur1P50, float64(r1.P50.Microseconds()))
				memP50 = append(memP50, float64(rm.P50.Microseconds()))
				durP50 = append(durP50, float64(rd.P50.Microseconds()))
				fsync = append(fsync, float64(f.Microseconds()))
				p50PerFsync = append(p50PerFsync, float64(rd.P50)/float64(f))
			}
			b.ReportMetric(loadgen.Median(mem), "mem-req/s")
			b.ReportMetric(loadgen.Median(dur), "durable-req/s")
			b.ReportMetric(loadgen.Median(ratio), "ratio")
			b.ReportMetric(loadgen.Median(ratio1), "ratio-1sync")
			b.ReportMetric(loadgen.Median(dur1P50), "durable-1sync-p50-µs")
			b.ReportMetric(loadgen.Median(memP50), "mem-p50-µs")
			b.ReportMetric(loadgen.Median(durP50), "durable-p50-µs")
			b.ReportMetric(loadgen.Median(fsync), "fsync-µs")
			b.ReportMetric(loadgen.Median(p50PerFsync), "p50/fsync")
			b.Logf("ratio per round: %.2f; with one fsync at a time: %.2f", ratio, ratio1)
		})
	}
}

// runOverZMQ serves impl over ZeroMQ on 127.0.0.1 and runs Deposit calls
// through the generated stubs from callers goroutines sharing one
// connection, each on an account of its own.
func runOverZMQ(callers int, d time.Duration, impl bankv1.BankServer) (loadgen.Result, error) {
	ln, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	if err != nil {
		return loadgen.Result{}, err
	}
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, impl)
	served := make(chan error, 1)
	go func() { served <- ln.Serve(srv) }()
	cl, err := zmq.Dial(ln.Addr(), zmq.ClientConfig{})
	if err != nil {
		return loadgen.Result{}, errors.Join(err, ln.Close(), <-served)
	}
	conn := bankrpc.NewConn(cl, bankrpc.WithDefaultTimeout(30*time.Second))
	stub := bankv1.NewBankClient(conn)
	ctx := context.Background()
	for i := range callers {
		if _, err := stub.Open(ctx, &bankv1.OpenRequest{AccountId: int32(i + 1)}); err != nil {
			return loadgen.Result{}, errors.Join(err, conn.Close(), ln.Close(), <-served)
		}
	}
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, i int) error {
		_, err := stub.Deposit(ctx, &bankv1.DepositRequest{AccountId: int32(i + 1), Amount: 100})
		return err
	})
	return res, errors.Join(runErr, conn.Close(), ln.Close(), <-served)
}

// fsyncTime is the median time of appending a log-record-sized write to a
// file in dir and making it durable with fdatasync, as the bank's log
// writer does for a batch of one.
func fsyncTime(dir string, n int) (time.Duration, error) {
	f, err := os.OpenFile(filepath.Join(dir, "fsync-probe"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rec := make([]byte, 90)
	ts := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := f.Write(rec); err != nil {
			return 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		ts = append(ts, time.Since(t0))
	}
	slices.Sort(ts)
	return ts[len(ts)/2], nil
}

// memBank is the trivial in-memory bank of the comparison, as
// transport/zmq/zmqbench has it.
type memBank struct {
	bankv1.UnimplementedBankServer
	mu       sync.Mutex
	balances map[int32]int64
}

func (m *memBank) Open(_ context.Context, in *bankv1.OpenRequest) (*bankv1.OpenResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &bankv1.OpenResponse{Balance: m.balances[in.GetAccountId()]}, nil
}

func (m *memBank) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.balances[in.GetAccountId()] += in.GetAmount()
	return &bankv1.DepositResponse{Balance: m.balances[in.GetAccountId()]}, nil
}
