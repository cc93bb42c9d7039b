package zmq

import "time"

// WithReconnectInterval returns cfg with the DEALER reconnecting every d,
// without backing off: a test hook for outages with many reconnections.
func WithReconnectInterval(cfg ClientConfig, d time.Duration) ClientConfig {
	cfg.reconnect = d
	return cfg
}

// WithServerHeartbeat returns cfg with the server's ZMTP heartbeats every
// interval, dropping a peer silent for timeout after a PING: a test hook,
// since the default interval is 30 s.
func WithServerHeartbeat(cfg ServerConfig, interval, timeout time.Duration) ServerConfig {
	cfg.heartbeat, cfg.heartbeatTimeout = interval, timeout
	return cfg
}
