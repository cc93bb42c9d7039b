package tracing

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/bankrpc/bankrpc"
)

// ServerOption returns the server option that traces the calls a Server
// runs: a span of kind server per call, child of the caller's span when the
// call's metadata carries a trace context. See UnaryServerInterceptor.
func ServerOption(opts ...Option) bankrpc.ServerOption {
	return bankrpc.UnaryInterceptor(UnaryServerInterceptor(opts...))
}

// UnaryServerInterceptor returns the interceptor ServerOption adds, for a
// program that orders its interceptors itself: put it first, so that its
// span covers the others.
//
// It is an interceptor, not a StatsHandler, because the server's
// StatsHandler begins before the request's metadata is decoded, and a span's
// parent is fixed when it starts. So calls the server refuses before running
// a handler (expired, unknown method, undecodable payload) and duplicates
// answered from the reply cache make no server span; the metrics and the
// call logs count them.
func UnaryServerInterceptor(opts ...Option) bankrpc.UnaryServerInterceptor {
	tracer, prop := newTracer(opts)
	return func(ctx context.Context, req any, info *bankrpc.UnaryServerInfo, handler bankrpc.UnaryHandler) (any, error) {
		md, _ := bankrpc.FromIncomingContext(ctx)
		ctx = prop.Extract(ctx, incomingCarrier(md))
		name, attrs := names(info.FullMethod)
		attrs = append(attrs, CallIDKey.String(bankrpc.CallIDFromContext(ctx)))
		if p, ok := bankrpc.PeerFromContext(ctx); ok {
			attrs = append(attrs, TransportKey.String(p.Transport))
		}
		ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		resp, err := handler(ctx, req)
		end(span, err, serverError)
		return resp, err
	}
}

// incomingCarrier reads a trace context from the caller's metadata.
type incomingCarrier bankrpc.MD

var _ propagation.TextMapCarrier = incomingCarrier(nil)

func (c incomingCarrier) Get(key string) string {
	if vs := bankrpc.MD(c).Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (c incomingCarrier) Set(key, value string) { bankrpc.MD(c).Set(key, value) }

func (c incomingCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
