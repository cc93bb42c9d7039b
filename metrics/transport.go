package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/transport"
)

// TransportMetrics counts what the backends report of their health —
// reconnections, resends, redeliveries, dead-lettered requests, refused
// frames, dropped replies — as bankrpc_transport_events_total{transport,
// kind,reason}. It is a prometheus.Collector; Sink is the transport.EventSink
// to give the backends. It is safe for concurrent use.
type TransportMetrics struct {
	events *prometheus.CounterVec
}

// NewTransportMetrics returns the transport metrics; see the table in
// docs/observability.md. Of opts, WithConstLabels applies.
func NewTransportMetrics(opts ...Option) *TransportMetrics {
	c := newConfig(opts)
	return &TransportMetrics{events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bankrpc_transport_events_total", ConstLabels: c.constLabels,
		Help: "Events the backends reported: reconnect, resend, redelivery, dead_letter, refused_frame, dropped_reply.",
	}, []string{"transport", "kind", "reason"})}
}

// Sink returns the transport.EventSink that counts the events it gets.
func (m *TransportMetrics) Sink() transport.EventSink {
	return func(e transport.Event) {
		m.events.WithLabelValues(e.Transport, string(e.Kind), e.Reason).Inc()
	}
}

// Option returns the option that gives this sink to the backend of a
// Server's listeners or a Conn.
func (m *TransportMetrics) Option() bankrpc.Option { return bankrpc.WithTransportEvents(m.Sink()) }

// Describe implements prometheus.Collector.
func (m *TransportMetrics) Describe(ch chan<- *prometheus.Desc) { m.events.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *TransportMetrics) Collect(ch chan<- prometheus.Metric) { m.events.Collect(ch) }
