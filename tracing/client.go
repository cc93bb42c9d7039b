package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/bankrpc/bankrpc"
)

// ClientOption returns the dial option that traces a Conn's calls: a span of
// kind client per call, parent of the server's span, whose context travels
// in the call's metadata.
//
// It is a bankrpc.StatsHandler rather than a client interceptor: it sees
// every call, including those that fail before leaving the process, and it
// runs after the interceptors, so a retrying interceptor makes one span per
// attempt (as otelgrpc's stats handler does). The ctx its Begin returns is
// the one the Conn reads the outgoing metadata from, so it can inject the
// trace context there.
func ClientOption(opts ...Option) bankrpc.DialOption {
	tracer, prop := newTracer(opts)
	return bankrpc.WithStatsHandler(&clientHandler{tracer: tracer, prop: prop})
}

type clientHandler struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func (h *clientHandler) Begin(ctx context.Context, info *bankrpc.CallInfo) context.Context {
	if !info.Client {
		return ctx
	}
	name, attrs := names(info.Method)
	attrs = append(attrs, CallIDKey.String(info.CallID))
	ctx, _ = h.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(info.Begin), trace.WithAttributes(attrs...))
	var carrier outgoingCarrier
	h.prop.Inject(ctx, &carrier)
	if len(carrier) > 0 {
		ctx = bankrpc.AppendToOutgoingContext(ctx, carrier...)
	}
	return ctx
}

func (h *clientHandler) End(ctx context.Context, info *bankrpc.CallInfo, e *bankrpc.CallEnd) {
	if !info.Client {
		return
	}
	end(trace.SpanFromContext(ctx), e.Err, clientError)
}

// outgoingCarrier collects the injected fields as metadata pairs.
type outgoingCarrier []string

func (c *outgoingCarrier) Get(key string) string {
	key = strings.ToLower(key)
	for i := 0; i < len(*c); i += 2 {
		if (*c)[i] == key {
			return (*c)[i+1]
		}
	}
	return ""
}

func (c *outgoingCarrier) Set(key, value string) {
	*c = append(*c, strings.ToLower(key), value)
}

func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(*c)/2)
	for i := 0; i < len(*c); i += 2 {
		keys = append(keys, (*c)[i])
	}
	return keys
}
