package metrics

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bankrpc/bankrpc"
)

// ServerMetrics counts the calls a bankrpc.Server answers, by service,
// method and code: every call, including those the server refuses before a
// handler runs and the duplicates it answers from its reply cache (it is a
// bankrpc.StatsHandler). It is a prometheus.Collector: register it on your
// registry, then pass Option to bankrpc.NewServer.
//
// Method labels are bounded: a method is labelled by its name once the
// server has shown it knows it — InitializeMetrics names the services up
// front, and a call that reaches a handler proves its method — and calls to
// any other method name (unknown methods, malformed frames, and refusals of
// a method not seen yet, such as an expired first call) are counted under
// service="unknown", method="unknown", so that a client sending made-up
// method names cannot grow the number of series. A method not known yet is
// counted in in_flight only once it is.
//
// A ServerMetrics is safe for concurrent use; one may serve several Servers.
type ServerMetrics struct {
	started    *prometheus.CounterVec
	handled    *prometheus.CounterVec
	handling   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	refused    *prometheus.CounterVec
	duplicates *prometheus.CounterVec

	known   table[serverSeries]
	unknown *serverSeries

	// Calls that began under a method not known yet, whose series End
	// picks from their outcome. pending counts them, so that the calls of
	// known methods skip the map.
	pending      atomic.Int64
	pendingCalls sync.Map // *bankrpc.CallInfo -> struct{}
}

type serverSeries struct {
	started, duplicates prometheus.Counter
	inFlight            prometheus.Gauge
	handling            prometheus.Observer
	handled             byCode
}

var _ bankrpc.StatsHandler = (*ServerMetrics)(nil)

// NewServerMetrics returns the server metrics; see the table in
// docs/observability.md.
func NewServerMetrics(opts ...Option) *ServerMetrics {
	c := newConfig(opts)
	m := &ServerMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_server_started_total", ConstLabels: c.constLabels,
			Help: "Calls the server received, refused and duplicate ones included.",
		}, []string{"service", "method"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_server_handled_total", ConstLabels: c.constLabels,
			Help: "Calls the server finished, by the code it answered.",
		}, []string{"service", "method", "code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bankrpc_server_handling_seconds", ConstLabels: c.constLabels, Buckets: c.buckets,
			Help: "Time from receiving a call to answering it, in seconds.",
		}, []string{"service", "method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bankrpc_server_in_flight", ConstLabels: c.constLabels,
			Help: "Calls the server is handling.",
		}, []string{"service", "method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_server_refused_total", ConstLabels: c.constLabels,
			Help: "Calls the server answered without running a handler, by reason (expired, unknown method, undecodable payload, bad metadata, call id reused, not served, malformed frame).",
		}, []string{"service", "method", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bankrpc_server_duplicates_total", ConstLabels: c.constLabels,
			Help: "Calls whose call id was running or answered already: they joined the run or got the cached reply.",
		}, []string{"service", "method"}),
	}
	m.known.make = m.newSeries
	m.unknown = m.newSeries(unknownLabel, unknownLabel)
	return m
}

func (m *ServerMetrics) newSeries(service, method string) *serverSeries {
	return &serverSeries{
		started:    m.started.WithLabelValues(service, method),
		duplicates: m.duplicates.WithLabelValues(service, method),
		inFlight:   m.inFlight.WithLabelValues(service, method),
		handling:   m.handling.WithLabelValues(service, method),
		handled:    byCode{vec: m.handled, service: service, method: method},
	}
}

// Option returns the server option that feeds these metrics.
func (m *ServerMetrics) Option() bankrpc.ServerOption { return bankrpc.WithStatsHandler(m) }

// InitializeMetrics names the methods of services as known, and makes their
// series (at zero) before the first call, as go-grpc-middleware's does, so
// that rates and alerts see them from the start. Call it with the services
// you register.
func (m *ServerMetrics) InitializeMetrics(services ...*bankrpc.ServiceDesc) {
	for _, d := range services {
		for _, md := range d.Methods {
			m.known.get("/" + d.ServiceName + "/" + md.MethodName).handled.makeOK()
		}
	}
}

// Begin implements bankrpc.StatsHandler.
func (m *ServerMetrics) Begin(ctx context.Context, info *bankrpc.CallInfo) context.Context {
	if info.Client {
		return ctx
	}
	if s, ok := m.known.lookup(info.Method); ok {
		s.started.Inc()
		s.inFlight.Inc()
		return ctx
	}
	m.pending.Add(1)
	m.pendingCalls.Store(info, struct{}{})
	return ctx
}

// End implements bankrpc.StatsHandler.
func (m *ServerMetrics) End(_ context.Context, info *bankrpc.CallInfo, end *bankrpc.CallEnd) {
	if info.Client {
		return
	}
	if m.pending.Load() > 0 {
		if _, ok := m.pendingCalls.LoadAndDelete(info); ok {
			m.pending.Add(-1)
			s := m.settle(info.Method, end)
			s.started.Inc()
			m.record(s, end)
			return
		}
	}
	s, _ := m.known.lookup(info.Method) // known at Begin, so known now
	s.inFlight.Dec()
	m.record(s, end)
}

// settle picks the series of a call that began under a method not known
// then: the method's own when the outcome proves the server has it (a
// handler ran, or the payload failed to decode into its request type) or
// another call proved it meanwhile; "unknown" otherwise.
func (m *ServerMetrics) settle(method string, end *bankrpc.CallEnd) *serverSeries {
	ran := !end.Refused && !end.Duplicate || end.Refused && end.RefusedReason == "undecodable payload"
	if ran {
		return m.known.get(method)
	}
	if s, ok := m.known.lookup(method); ok {
		return s
	}
	return m.unknown
}

func (m *ServerMetrics) record(s *serverSeries, end *bankrpc.CallEnd) {
	s.handled.inc(end.Code)
	s.handling.Observe(end.Duration.Seconds())
	if end.Duplicate {
		s.duplicates.Inc()
	}
	if end.Refused {
		m.refused.WithLabelValues(s.handled.service, s.handled.method, end.RefusedReason).Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *ServerMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.handling.Describe(ch)
	m.inFlight.Describe(ch)
	m.refused.Describe(ch)
	m.duplicates.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *ServerMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.handling.Collect(ch)
	m.inFlight.Collect(ch)
	m.refused.Collect(ch)
	m.duplicates.Collect(ch)
}
