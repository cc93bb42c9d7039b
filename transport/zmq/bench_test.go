package zmq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc/internal/loadgen"
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

// BenchmarkLoneCallSegments splits one caller's calls into segments (see
// zmqbench.Segments), raw pebbe/zmq4 and bankrpc in turn, each iteration a
// pair of two-second measurements in alternating order; the metrics are
// medians over the pairs, in microseconds:
//
//	go test -run '^$' -bench LoneCallSegments -benchtime 5x ./transport/zmq
//
// It shows where a lone bankrpc call spends the time a raw REQ call does
// not: in the caller's and the server's own work (caller, server, return),
// and in the wire and wake-ups (out, back), where waking from zmq_poll on
// several sockets costs more than waking from a blocking receive.
func BenchmarkLoneCallSegments(b *testing.B) {
	const d = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var raw, rpc []zmqbench.Segments
	whole := func(s zmqbench.Segments, err error) zmqbench.Segments {
		if err != nil {
			b.Fatal(err)
		}
		if s.Calls == 0 {
			b.Fatal("no call was measured whole")
		}
		return s
	}
	for b.Loop() {
		measure := []func(){
			func() { raw = append(raw, whole(zmqbench.RawSegments(ctx, d))) },
			func() { rpc = append(rpc, whole(zmqbench.BankrpcSegments(ctx, d))) },
		}
		if len(raw)%2 == 1 {
			measure[0], measure[1] = measure[1], measure[0]
		}
		for _, m := range measure {
			m()
		}
	}
	for _, f := range zmqbench.SegmentFields {
		for _, side := range []struct {
			name string
			segs []zmqbench.Segments
		}{{"raw", raw}, {"bankrpc", rpc}} {
			if side.name == "raw" && f.Name == "handler" {
				continue
			}
			xs := make([]float64, len(side.segs))
			for i, s := range side.segs {
				xs[i] = float64(f.Get(s)) / float64(time.Microsecond)
			}
			b.ReportMetric(loadgen.Median(xs), side.name+"-"+f.Name+"-µs")
		}
	}
}
