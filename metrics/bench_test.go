package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/logging"
	"github.com/bankrpc/bankrpc/metrics"
	"github.com/bankrpc/bankrpc/tracing"
)

// BenchmarkCallInproc measures a whole call over inproc — client stub,
// runtime, server, handler — with no observability, then with the server's
// and the client's metrics, then with metrics, tracing (every span sampled,
// none exported) and call logs at the level a production server runs (Info:
// the line of a successful call is not written). The differences are the
// cost per call of each layer, both sides together.
func BenchmarkCallInproc(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts func(b *testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption)
	}{
		{"none", func(*testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) { return nil, nil }},
		// The runtime's own cost of having a StatsHandler (a CallInfo per
		// call, the clock read twice): the floor under any of them.
		{"noop-stats-handler", func(*testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) {
			return []bankrpc.ServerOption{bankrpc.WithStatsHandler(noopStats{})}, []bankrpc.DialOption{bankrpc.WithStatsHandler(noopStats{})}
		}},
		{"metrics", func(*testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) {
			srvMetrics, cliMetrics := metrics.NewServerMetrics(), metrics.NewClientMetrics()
			prometheus.NewRegistry().MustRegister(srvMetrics, cliMetrics)
			srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
			return []bankrpc.ServerOption{srvMetrics.Option()}, []bankrpc.DialOption{cliMetrics.Option()}
		}},
		{"tracing", func(b *testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return []bankrpc.ServerOption{tracing.ServerOption(tracing.WithTracerProvider(tp))}, []bankrpc.DialOption{tracing.ClientOption(tracing.WithTracerProvider(tp))}
		}},
		{"logging", func(*testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) {
			logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
			return []bankrpc.ServerOption{logging.Option(logger)}, []bankrpc.DialOption{logging.Option(logger)}
		}},
		{"metrics+tracing+logging", func(b *testing.B) ([]bankrpc.ServerOption, []bankrpc.DialOption) {
			srvMetrics, cliMetrics := metrics.NewServerMetrics(), metrics.NewClientMetrics()
			prometheus.NewRegistry().MustRegister(srvMetrics, cliMetrics)
			srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
			return []bankrpc.ServerOption{srvMetrics.Option(), tracing.ServerOption(tracing.WithTracerProvider(tp)), logging.Option(logger)},
				[]bankrpc.DialOption{cliMetrics.Option(), tracing.ClientOption(tracing.WithTracerProvider(tp)), logging.Option(logger)}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srvOpts, dialOpts := bc.opts(b)
			_, conn := pair(b, srvOpts, dialOpts...)
			c := testv1.NewTestServiceClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req := &testv1.EchoRequest{Payload: []byte("0123456789abcdef")}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Echo(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type noopStats struct{}

func (noopStats) Begin(ctx context.Context, _ *bankrpc.CallInfo) context.Context { return ctx }
func (noopStats) End(context.Context, *bankrpc.CallInfo, *bankrpc.CallEnd)       {}

// BenchmarkStatsHandler measures the metrics alone, without a call: one
// Begin and End on each side.
func BenchmarkStatsHandler(b *testing.B) {
	srvMetrics, cliMetrics := metrics.NewServerMetrics(), metrics.NewClientMetrics()
	prometheus.NewRegistry().MustRegister(srvMetrics, cliMetrics)
	srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
	ctx := context.Background()
	srvInfo := &bankrpc.CallInfo{Method: testv1.TestService_Echo_FullMethodName, CallID: "c", Begin: time.Now()}
	cliInfo := &bankrpc.CallInfo{Method: testv1.TestService_Echo_FullMethodName, CallID: "c", Client: true, Begin: time.Now()}
	end := &bankrpc.CallEnd{Code: bankrpc.OK, Duration: 42 * time.Microsecond}
	b.Run("server", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srvMetrics.End(srvMetrics.Begin(ctx, srvInfo), srvInfo, end)
		}
	})
	b.Run("client", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cliMetrics.End(cliMetrics.Begin(ctx, cliInfo), cliInfo, end)
		}
	})
	b.Run("server-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				srvMetrics.End(srvMetrics.Begin(ctx, srvInfo), srvInfo, end)
			}
		})
	})
}
