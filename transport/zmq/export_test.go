package zmq

import "time"

// WithReconnectInterval returns cfg with the DEALER reconnecting every d,
// without backing off: a test hook for outages with many reconnections.
func WithReconnectInterval(cfg ClientConfig, d time.Duration) ClientConfig {
	cfg.reconnect = d
	return cfg
}
