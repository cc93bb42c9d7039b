package harness

import (
	"context"
	"errors"
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// InprocResult is the per-call cost of one Deposit through the generated
// stub, the runtime and the inproc backend, measured as `go test -bench
// -benchmem -cpu N` would (transport/inproc's BenchmarkUnaryCall).
type InprocResult struct {
	CPU         int     // GOMAXPROCS
	NsPerOp     float64 // median of the rounds
	AllocsPerOp int64
	BytesPerOp  int64
	Rounds      []float64 // ns/op of each round
}

// fixedBalance answers Deposit without state: the measurement is the
// runtime's and the backend's cost, not a handler's.
type fixedBalance struct {
	bankv1.UnimplementedBankServer
}

func (fixedBalance) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	return &bankv1.DepositResponse{Balance: in.GetAmount()}, nil
}

// measureInproc runs the inproc benchmark for about d per round at
// GOMAXPROCS cpu, rounds times, and restores GOMAXPROCS.
func measureInproc(cpu, rounds int, d time.Duration) (InprocResult, error) {
	prev := runtime.GOMAXPROCS(cpu)
	defer runtime.GOMAXPROCS(prev)
	out := InprocResult{CPU: cpu}
	var allocs, bytes []float64
	for range rounds {
		r, err := inprocOnce(d)
		if err != nil {
			return out, err
		}
		out.Rounds = append(out.Rounds, float64(r.NsPerOp()))
		if r.N > 0 {
			// Finer than r.NsPerOp's integer nanoseconds.
			out.Rounds[len(out.Rounds)-1] = float64(r.T.Nanoseconds()) / float64(r.N)
		}
		allocs, bytes = append(allocs, float64(r.AllocsPerOp())), append(bytes, float64(r.AllocedBytesPerOp()))
	}
	out.NsPerOp = median(out.Rounds)
	out.AllocsPerOp, out.BytesPerOp = int64(median(allocs)), int64(median(bytes))
	return out, nil
}

// inprocOnce is testing.Benchmark of one Deposit, with b.N grown until
// the run lasts about d.
func inprocOnce(d time.Duration) (testing.BenchmarkResult, error) {
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, fixedBalance{})
	l := inproc.NewListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	conn := bankrpc.NewConn(l.Dial())
	client := bankv1.NewBankClient(conn)
	req := &bankv1.DepositRequest{AccountId: 7, Amount: 100}
	var callErr error
	res := benchmarkFor(d, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Deposit(context.Background(), req); err != nil {
				callErr = err
				b.FailNow()
			}
		}
	})
	err := errors.Join(callErr, conn.Close(), srv.Close())
	if serveErr := <-done; serveErr != nil && !errors.Is(serveErr, bankrpc.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return res, err
}

// benchmarkFor is testing.Benchmark with -test.benchtime d.
func benchmarkFor(d time.Duration, f func(*testing.B)) testing.BenchmarkResult {
	testing.Init() // registers the test flags, once; a no-op under go test
	if err := flag.Set("test.benchtime", d.String()); err != nil {
		panic(err) // the flag is testing's own, and d prints as it parses
	}
	return testing.Benchmark(f)
}
