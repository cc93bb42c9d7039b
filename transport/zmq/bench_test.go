package zmq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// BenchmarkVersusRaw measures, in the same run, raw pebbe/zmq4 REQ/REP (a
// REQ socket per caller, a ROUTER echo server) and bankrpc Deposit calls
// through the generated stubs over one zmq.Client, at 1, 16 and 64
// concurrent callers, and reports both rates, their ratio and the latency
// percentiles. Each iteration measures for two seconds per side:
//
//	go test -run '^$' -bench VersusRaw -benchtime 1x -count 3 ./transport/zmq
func BenchmarkVersusRaw(b *testing.B) {
	const d = 2 * time.Second
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var raw, rpc zmqbench.Result
			for b.Loop() {
				var err error
				if raw, err = zmqbench.RunRaw(ctx, callers, d); err != nil {
					b.Fatal(err)
				}
				if rpc, err = zmqbench.RunBankrpc(ctx, callers, d); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(rpc.PerSec, "bankrpc-req/s")
			b.ReportMetric(raw.PerSec, "raw-req/s")
			b.ReportMetric(rpc.PerSec/raw.PerSec, "ratio")
			b.ReportMetric(float64(rpc.P50.Microseconds()), "bankrpc-p50-µs")
			b.ReportMetric(float64(rpc.P99.Microseconds()), "bankrpc-p99-µs")
			b.ReportMetric(float64(raw.P50.Microseconds()), "raw-p50-µs")
			b.ReportMetric(float64(raw.P99.Microseconds()), "raw-p99-µs")
		})
	}
}
