// Package tracing traces bankrpc calls with OpenTelemetry, as otelgrpc does
// for gRPC: a client span per call and a server span per call run, named
// "package.Service/Method", with the RPC semantic conventions' attributes
// (rpc.system "bankrpc", rpc.service, rpc.method) and the call's code
// (rpc.bankrpc.status_code) and call id (rpc.bankrpc.call_id). The client
// puts its span's W3C trace context (traceparent, tracestate) in the call's
// metadata and the server's span is its child, over every transport —
// including a call that waited in an AMQP queue while no server ran, whose
// client span may have ended before the server span starts.
//
//	conn, err := bankrpc.Dial(ctx, addr, tracing.ClientOption())
//	srv := bankrpc.NewServer(tracing.ServerOption())
//
// Spans go to otel.GetTracerProvider() unless WithTracerProvider says
// otherwise; the trace context travels as W3C trace context unless
// WithPropagators says otherwise.
package tracing
