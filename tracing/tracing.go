package tracing

import (
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/bankrpc/bankrpc"
)

// ScopeName is the instrumentation scope of the spans this package makes.
const ScopeName = "github.com/bankrpc/bankrpc/tracing"

// The attributes this package sets besides the RPC semantic conventions'
// rpc.system ("bankrpc"), rpc.service and rpc.method.
const (
	// StatusCodeKey is the call's canonical code as a number, as gRPC's
	// rpc.grpc.status_code.
	StatusCodeKey = attribute.Key("rpc.bankrpc.status_code")
	// CallIDKey is the call id, the same on both sides and on every retry,
	// to find the call in logs.
	CallIDKey = attribute.Key("rpc.bankrpc.call_id")
	// TransportKey names the backend that carried the call (server side).
	TransportKey = attribute.Key("rpc.bankrpc.transport")
)

var systemAttr = semconv.RPCSystemKey.String("bankrpc")

// Option configures the client and server tracing.
type Option func(*config)

type config struct {
	tp          trace.TracerProvider
	propagators propagation.TextMapPropagator
}

// WithTracerProvider sets where spans go (default otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithPropagators sets how the trace context travels in call metadata
// (default W3C trace context: traceparent and tracestate). Their header
// names are lower-cased, as bankrpc metadata keys are.
func WithPropagators(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagators = p }
}

func newTracer(opts []Option) (trace.Tracer, propagation.TextMapPropagator) {
	c := config{propagators: propagation.TraceContext{}}
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	return c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)), c.propagators
}

// spanName and the service and method attributes of a full method name,
// "/package.Service/Method": span "package.Service/Method".
func names(full string) (string, []attribute.KeyValue) {
	name := strings.TrimPrefix(full, "/")
	attrs := []attribute.KeyValue{systemAttr}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		attrs = append(attrs, semconv.RPCService(name[:i]), semconv.RPCMethod(name[i+1:]))
	} else {
		attrs = append(attrs, semconv.RPCMethod(name))
	}
	return name, attrs
}

// end sets the outcome of a call on span and ends it. isError says which
// codes make the span an error on this side.
func end(span trace.Span, err error, isError func(bankrpc.Code) bool) {
	code := bankrpc.CodeOf(err)
	span.SetAttributes(StatusCodeKey.Int(int(code)))
	if isError(code) {
		span.SetStatus(codes.Error, code.String()+": "+bankrpc.MessageOf(err))
	}
	span.End()
}

// clientError: on the client every failed call is an error, as in the
// semantic conventions for gRPC.
func clientError(c bankrpc.Code) bool { return c != bankrpc.OK }

// serverError: on the server only the codes that say the server failed are
// errors, as in the semantic conventions for gRPC; the others are the
// caller's mistakes or the application's answers.
func serverError(c bankrpc.Code) bool {
	switch c {
	case bankrpc.Unknown, bankrpc.DeadlineExceeded, bankrpc.Unimplemented, bankrpc.Internal, bankrpc.Unavailable, bankrpc.DataLoss:
		return true
	}
	return false
}
