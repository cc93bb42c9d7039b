package amqp_test

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp/amqpbench"
)

func benchURL(b *testing.B) string {
	url := os.Getenv("BANKRPC_AMQP_URL")
	if url == "" {
		b.Skip("set BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ to run the RabbitMQ benchmarks")
	}
	return url
}

// BenchmarkVersusRawDurable measures, in the same run, raw amqp091-go durable
// request/reply (persistent, publisher confirms, acknowledgement after the
// confirmed reply) and bankrpc Echo calls with the same 16 byte payload
// through the generated stubs, at 1, 16 and 64 concurrent callers. Each
// iteration alternates the two, two seconds each, three times, so that a
// change in the machine's load hits both alike, and reports the medians of
// the rates, of the per-round ratios, of the latencies and of the CPU time
// this process spends per call:
//
//	BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go test -run '^$' -bench VersusRawDurable -benchtime 1x ./transport/amqp
func BenchmarkVersusRawDurable(b *testing.B) {
	url := benchURL(b)
	const (
		d      = 2 * time.Second
		rounds = 3
	)
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var raw, rpc []amqpbench.Result
			var ratios, rawCPUs, rpcCPUs []float64
			for b.Loop() {
				for range rounds {
					r, rawCPU, err := cpuPerCall(func() (amqpbench.Result, error) { return amqpbench.RunRawDurable(ctx, url, callers, d) })
					if err != nil {
						b.Fatal(err)
					}
					p, rpcCPU, err := cpuPerCall(func() (amqpbench.Result, error) { return amqpbench.RunBankrpc(ctx, url, callers, d) })
					if err != nil {
						b.Fatal(err)
					}
					raw, rpc = append(raw, r), append(rpc, p)
					ratios = append(ratios, p.PerSec/r.PerSec)
					rawCPUs, rpcCPUs = append(rawCPUs, rawCPU), append(rpcCPUs, rpcCPU)
				}
			}
			b.ReportMetric(median(rpc, func(r amqpbench.Result) float64 { return r.PerSec }), "bankrpc-req/s")
			b.ReportMetric(median(raw, func(r amqpbench.Result) float64 { return r.PerSec }), "raw-req/s")
			b.ReportMetric(loadgen.Median(ratios), "ratio")
			b.ReportMetric(median(rpc, func(r amqpbench.Result) float64 { return float64(r.P50.Microseconds()) }), "bankrpc-p50-µs")
			b.ReportMetric(median(rpc, func(r amqpbench.Result) float64 { return float64(r.P99.Microseconds()) }), "bankrpc-p99-µs")
			b.ReportMetric(median(raw, func(r amqpbench.Result) float64 { return float64(r.P50.Microseconds()) }), "raw-p50-µs")
			b.ReportMetric(median(raw, func(r amqpbench.Result) float64 { return float64(r.P99.Microseconds()) }), "raw-p99-µs")
			b.ReportMetric(loadgen.Median(rpcCPUs), "bankrpc-cpu-µs/call")
			b.ReportMetric(loadgen.Median(rawCPUs), "raw-cpu-µs/call")
			b.Logf("%d callers: per-round ratios %.2f", callers, ratios)
		})
	}
}

// cpuPerCall runs f and returns the CPU time this process (client and
// server) spent per call: a measure of the library's own cost that the load
// of a shared machine disturbs less than throughput.
func cpuPerCall(f func() (amqpbench.Result, error)) (amqpbench.Result, float64, error) {
	before := processCPU()
	r, err := f()
	if err != nil || r.Requests == 0 {
		return r, 0, err
	}
	return r, float64((processCPU() - before).Microseconds()) / float64(r.Requests), nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(rs []amqpbench.Result, f func(amqpbench.Result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return loadgen.Median(xs)
}

// BenchmarkThesis runs the thesis's experiment: 10,000 trivial calls, the
// latency of each, one call at a time and with 16 in flight (the thesis:
// mean 1.975 s, standard deviation 0.229 s, one at a time):
//
//	BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go test -run '^$' -bench Thesis -benchtime 1x -count 3 ./transport/amqp
func BenchmarkThesis(b *testing.B) {
	url := benchURL(b)
	const n = 10000
	for _, inFlight := range []int{1, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inFlight), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var res amqpbench.Result
			for b.Loop() {
				var err error
				if res, err = amqpbench.RunThesis(ctx, url, n, inFlight); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(res.Mean.Microseconds()), "mean-µs")
			b.ReportMetric(float64(res.Stddev.Microseconds()), "stddev-µs")
			b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
			b.ReportMetric(res.PerSec, "req/s")
		})
	}
}
