package bankrpc

import (
	"io"
	"log/slog"
	"time"

	"github.com/bankrpc/bankrpc/codec"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
)

// DefaultMaxFrameSize is the default limit on an encoded envelope: 4 MiB, as
// gRPC's default receive limit.
const DefaultMaxFrameSize = envelope.DefaultMaxFrameSize

// DialOption configures a Conn made by Dial or NewConn.
type DialOption interface{ applyDial(*dialOptions) }

// ServerOption configures a Server, and the listeners it opens.
type ServerOption interface{ applyServer(*serverOptions) }

// Option configures both sides: it is a DialOption and a ServerOption.
type Option interface {
	DialOption
	ServerOption
}

type dialOptions struct {
	codec        codec.Codec
	maxFrame     int
	maxMetadata  int
	timeout      time.Duration
	interceptors []UnaryClientInterceptor
	logger       *slog.Logger
	configs      []any
	stats        []StatsHandler
	events       []transport.EventSink
}

type serverOptions struct {
	codec        codec.Codec
	maxFrame     int
	maxMetadata  int
	interceptors []UnaryServerInterceptor
	logger       *slog.Logger
	configs      []any
	stats        []StatsHandler
	events       []transport.EventSink
	cacheSize    int
	cacheAge     time.Duration
	cacheBytes   int
}

func defaultDialOptions() dialOptions {
	return dialOptions{codec: codec.Proto{}, maxFrame: DefaultMaxFrameSize, maxMetadata: DefaultMaxMetadataSize, logger: discard}
}

func defaultServerOptions() serverOptions {
	return serverOptions{
		codec: codec.Proto{}, maxFrame: DefaultMaxFrameSize, maxMetadata: DefaultMaxMetadataSize, logger: discard,
		cacheSize: DefaultReplyCacheSize, cacheAge: DefaultReplyCacheAge, cacheBytes: DefaultReplyCacheBytes,
	}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

type dialFunc func(*dialOptions)

func (f dialFunc) applyDial(o *dialOptions) { f(o) }

type serverFunc func(*serverOptions)

func (f serverFunc) applyServer(o *serverOptions) { f(o) }

type bothFunc struct {
	dial   func(*dialOptions)
	server func(*serverOptions)
}

func (f bothFunc) applyDial(o *dialOptions)     { f.dial(o) }
func (f bothFunc) applyServer(o *serverOptions) { f.server(o) }

// WithLogger sets where the runtime and the backend report what they refuse,
// drop or recover from (a handler's panic with its stack, a malformed
// request, a reconnection). The default discards it.
func WithLogger(l *slog.Logger) Option {
	return bothFunc{
		dial:   func(o *dialOptions) { o.logger = l },
		server: func(o *serverOptions) { o.logger = l },
	}
}

// WithTransportConfig passes a backend-specific configuration value, such as
// a zmq.ClientConfig or an amqp.ServerConfig, to the backend the address
// names. A value of a type the backend does not know fails Dial or Listen
// with an error naming it; several values append.
func WithTransportConfig(cfg any) Option {
	return bothFunc{
		dial:   func(o *dialOptions) { o.configs = append(o.configs, cfg) },
		server: func(o *serverOptions) { o.configs = append(o.configs, cfg) },
	}
}

// WithTransportEvents adds a sink for the events of the backend the address
// names (reconnections, resends, redeliveries, dead letters, refused frames;
// see transport.Event), such as metrics.TransportMetrics's. Several append:
// each gets every event. A backend opened directly (NewConn, Serve of a
// listener not opened by Listen) takes its sink from its own config.
func WithTransportEvents(sink transport.EventSink) Option {
	return bothFunc{
		dial:   func(o *dialOptions) { o.events = append(o.events, sink) },
		server: func(o *serverOptions) { o.events = append(o.events, sink) },
	}
}

// eventSink passes events to every one of sinks; nil for none.
func eventSink(sinks []transport.EventSink) transport.EventSink {
	switch len(sinks) {
	case 0:
		return nil
	case 1:
		return sinks[0]
	}
	return func(e transport.Event) {
		for _, s := range sinks {
			s(e)
		}
	}
}

// WithMaxFrameSize sets the largest request frame the Conn sends and reply
// frame it accepts (default DefaultMaxFrameSize, 4 MiB).
func WithMaxFrameSize(n int) DialOption {
	return dialFunc(func(o *dialOptions) { o.maxFrame = n })
}

// WithCodec sets the payload codec (default codec.Proto).
func WithCodec(cd codec.Codec) DialOption {
	return dialFunc(func(o *dialOptions) { o.codec = cd })
}

// WithDefaultTimeout bounds every call that has no shorter deadline. Without
// it a call has only the deadline of its ctx, if any.
func WithDefaultTimeout(d time.Duration) DialOption {
	return dialFunc(func(o *dialOptions) { o.timeout = d })
}

// WithUnaryInterceptor adds a client interceptor. Options append: each
// interceptor given, in order, wraps the ones after it (the first is the
// outermost), as grpc-go's WithChainUnaryInterceptor.
func WithUnaryInterceptor(i UnaryClientInterceptor) DialOption {
	return WithChainUnaryInterceptor(i)
}

// WithChainUnaryInterceptor adds client interceptors, the first outermost.
func WithChainUnaryInterceptor(is ...UnaryClientInterceptor) DialOption {
	return dialFunc(func(o *dialOptions) { o.interceptors = append(o.interceptors, is...) })
}

// WithServerMaxFrameSize sets the largest request frame the server decodes
// and reply it sends (default DefaultMaxFrameSize, 4 MiB).
func WithServerMaxFrameSize(n int) ServerOption {
	return serverFunc(func(o *serverOptions) { o.maxFrame = n })
}

// WithServerCodec sets the payload codec (default codec.Proto).
func WithServerCodec(cd codec.Codec) ServerOption {
	return serverFunc(func(o *serverOptions) { o.codec = cd })
}

// WithMaxMetadataSize sets the limit on a call's metadata, counted as in
// gRPC: the lengths of every key and value plus 32 bytes per entry (default
// DefaultMaxMetadataSize, 8 KiB). A client refuses to send more, a server to
// accept more, with RESOURCE_EXHAUSTED.
func WithMaxMetadataSize(n int) Option {
	return bothFunc{
		dial:   func(o *dialOptions) { o.maxMetadata = n },
		server: func(o *serverOptions) { o.maxMetadata = n },
	}
}

// UnaryInterceptor adds a server interceptor. Options append: each
// interceptor given, in order, wraps the ones after it (the first is the
// outermost), as grpc-go's ChainUnaryInterceptor.
func UnaryInterceptor(i UnaryServerInterceptor) ServerOption {
	return ChainUnaryInterceptor(i)
}

// ChainUnaryInterceptor adds server interceptors, the first outermost.
func ChainUnaryInterceptor(is ...UnaryServerInterceptor) ServerOption {
	return serverFunc(func(o *serverOptions) { o.interceptors = append(o.interceptors, is...) })
}

// The reply cache's defaults: see WithReplyCache.
const (
	DefaultReplyCacheSize  = 10000
	DefaultReplyCacheAge   = 10 * time.Minute
	DefaultReplyCacheBytes = 64 << 20
)

// WithReplyCache bounds how long the server remembers the reply of a
// finished call, to answer a duplicate (a retry, a redelivery) without
// running the handler again: at most size replies, none older than age, and
// at most 64 MiB of reply frames. A duplicate of a call still running always
// joins it, whatever these bounds. size 0 keeps no finished replies.
func WithReplyCache(size int, age time.Duration) ServerOption {
	return serverFunc(func(o *serverOptions) { o.cacheSize, o.cacheAge = size, age })
}
