package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bankrpc/bankrpc"
)

// ClientMetrics counts the calls a bankrpc.Conn makes, by service, method
// and code, including those that fail before reaching a server (a deadline
// already passed, a closed Conn). It is a bankrpc.StatsHandler and a
// prometheus.Collector: register it on your registry, then pass Option to
// bankrpc.Dial. It is safe for concurrent use; one may serve several Conns.
type ClientMetrics struct {
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec

	methods table[clientSeries]
}

type clientSeries struct {
	started  prometheus.Counter
	inFlight prometheus.Gauge
	handling prometheus.Observer
	handled  byCode
}

var _ bankrpc.StatsHandler = (*ClientMetrics)(nil)

// NewClientMetrics returns the client metrics; see the table in
// docs/observability.md.
func NewClientMetrics(opts ...Option) *ClientMetrics {
	c := newConfig(opts)
	m := &ClientMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_client_started_total", ConstLabels: c.constLabels,
			Help: "Calls the client started.",
		}, []string{"service", "method"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_client_handled_total", ConstLabels: c.constLabels,
			Help: "Calls the client finished, by the code the caller got.",
		}, []string{"service", "method", "code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bankrpc_client_handling_seconds", ConstLabels: c.constLabels, Buckets: c.buckets,
			Help: "Time from starting a call to its outcome, in seconds.",
		}, []string{"service", "method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bankrpc_client_in_flight", ConstLabels: c.constLabels,
			Help: "Calls the client is waiting for.",
		}, []string{"service", "method"}),
	}
	m.methods.make = func(service, method string) *clientSeries {
		return &clientSeries{
			started:  m.started.WithLabelValues(service, method),
			inFlight: m.inFlight.WithLabelValues(service, method),
			handling: m.handling.WithLabelValues(service, method),
			handled:  byCode{vec: m.handled, service: service, method: method},
		}
	}
	return m
}

// Option returns the dial option that feeds these metrics.
func (m *ClientMetrics) Option() bankrpc.DialOption { return bankrpc.WithStatsHandler(m) }

// Begin implements bankrpc.StatsHandler.
func (m *ClientMetrics) Begin(ctx context.Context, info *bankrpc.CallInfo) context.Context {
	if !info.Client {
		return ctx
	}
	s := m.methods.get(info.Method)
	s.started.Inc()
	s.inFlight.Inc()
	return ctx
}

// End implements bankrpc.StatsHandler.
func (m *ClientMetrics) End(_ context.Context, info *bankrpc.CallInfo, end *bankrpc.CallEnd) {
	if !info.Client {
		return
	}
	s := m.methods.get(info.Method)
	s.inFlight.Dec()
	s.handled.inc(end.Code)
	s.handling.Observe(end.Duration.Seconds())
}

// Describe implements prometheus.Collector.
func (m *ClientMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.handling.Describe(ch)
	m.inFlight.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *ClientMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.handling.Collect(ch)
	m.inFlight.Collect(ch)
}
