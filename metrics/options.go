package metrics

import "github.com/prometheus/client_golang/prometheus"

// DefaultBuckets are the bounds, in seconds, of the handling-time
// histograms: from 100 µs (a call over inproc or a LAN) to 10 s.
var DefaultBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Option configures the collectors of this package.
type Option func(*config)

type config struct {
	buckets     []float64
	constLabels prometheus.Labels
}

func newConfig(opts []Option) config {
	c := config{buckets: DefaultBuckets}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithHistogramBuckets sets the bounds, in seconds, of the handling-time
// histogram (default DefaultBuckets).
func WithHistogramBuckets(buckets []float64) Option {
	return func(c *config) { c.buckets = buckets }
}

// WithConstLabels adds labels with fixed values to every metric, e.g. the
// bank a process serves when several share a registry.
func WithConstLabels(labels prometheus.Labels) Option {
	return func(c *config) { c.constLabels = labels }
}
