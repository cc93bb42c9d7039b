// Package metrics exports Prometheus metrics of bankrpc calls, modelled on
// go-grpc-middleware's providers/prometheus: calls started, finished by code,
// handling time and calls in flight, by service and method, on the server
// and the client; the calls a server refuses (by reason) and the duplicates
// it answers from its reply cache; and the backends' events (reconnections,
// resends, redeliveries, dead letters, refused frames). docs/observability.md
// lists every metric.
//
// The collectors go on a registry of the program's own (nothing is
// registered globally) and one option adds each to a Server or a Conn:
//
//	reg := metrics.NewRegistry()
//	srvMetrics := metrics.NewServerMetrics()
//	reg.MustRegister(srvMetrics)
//	srv := bankrpc.NewServer(srvMetrics.Option())
//	srvMetrics.InitializeMetrics(&bankv1.Bank_ServiceDesc)
//	http.Handle("/metrics", metrics.Handler(reg))
//
// The metrics are built on bankrpc.StatsHandler, which sees every call,
// including those refused before a handler runs; they cost about 0.1 µs per
// call on each side.
package metrics
