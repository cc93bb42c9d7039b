package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bankrpc/bankrpc/codec"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
)

// Server dispatches request frames to registered services. It is the Handler
// that backends serve, and the ServiceRegistrar generated Register functions
// take. It is safe for concurrent use; services are registered before
// serving starts.
type Server struct {
	mu          sync.RWMutex // guards methods
	methods     map[string]method
	codec       codec.Codec
	maxFrame    int
	logger      *slog.Logger
	interceptor UnaryServerInterceptor
}

type method struct {
	name    string
	impl    any
	handler MethodHandler
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithLogger sets where the server reports malformed requests and handler
// panics (with their stack). The default discards them.
func WithLogger(l *slog.Logger) ServerOption {
	return func(s *Server) { s.logger = l }
}

// WithServerMaxFrameSize sets the largest request frame the server decodes
// and reply it sends (default codec.DefaultMaxFrameSize, 4 MiB).
func WithServerMaxFrameSize(n int) ServerOption {
	return func(s *Server) { s.maxFrame = n }
}

// WithServerCodec sets the payload codec (default codec.Proto).
func WithServerCodec(cd codec.Codec) ServerOption {
	return func(s *Server) { s.codec = cd }
}

// WithUnaryInterceptor wraps every method call.
func WithUnaryInterceptor(i UnaryServerInterceptor) ServerOption {
	return func(s *Server) { s.interceptor = i }
}

// NewServer returns a Server with no services.
func NewServer(opts ...ServerOption) *Server {
	s := &Server{
		methods:  make(map[string]method),
		codec:    codec.Proto{},
		maxFrame: codec.DefaultMaxFrameSize,
		logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// RegisterService registers impl for every method of desc. It panics when impl
// is nil or does not implement desc.HandlerType, or when the service is
// already registered: these are programming errors found at start-up.
func (s *Server) RegisterService(desc *ServiceDesc, impl any) {
	if impl == nil || isNilPointer(impl) {
		panic(fmt.Sprintf("bankrpc: RegisterService(%s): the implementation is nil", desc.ServiceName))
	}
	if desc.HandlerType != nil {
		want := reflect.TypeOf(desc.HandlerType).Elem()
		if got := reflect.TypeOf(impl); !got.Implements(want) {
			panic(fmt.Sprintf("bankrpc: RegisterService(%s): %v does not implement %v", desc.ServiceName, got, want))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range desc.Methods {
		name := "/" + desc.ServiceName + "/" + m.MethodName
		if _, dup := s.methods[name]; dup {
			panic(fmt.Sprintf("bankrpc: RegisterService(%s): method %s is already registered", desc.ServiceName, name))
		}
		s.methods[name] = method{name: name, impl: impl, handler: m.Handler}
	}
}

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// CheckEmbeddedByValue runs check, a generated call of a value method of the
// service's Unimplemented<S>Server on impl, and turns the panic that occurs
// when that type was embedded by nil pointer into a clear one. A nil impl is
// left to RegisterService, which reports it as such. Generated Register
// functions call it.
func CheckEmbeddedByValue(service string, impl any, check func()) {
	if isNilPointer(impl) {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			panic(fmt.Sprintf("bankrpc: Register %s: Unimplemented%sServer is embedded by pointer and is nil; embed it by value", service, lastDotted(service)))
		}
	}()
	check()
}

func lastDotted(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}

// HandleFrame decodes a request envelope, runs the method it names and
// returns the encoded result. It never panics. See Handler.
func (s *Server) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	var req codec.RequestView
	if err := codec.DecodeRequestView(frame, s.maxFrame, &req); err != nil {
		e := &Error{Code: InvalidArgument, Message: "bankrpc: " + err.Error()}
		var tooLarge *codec.FrameTooLargeError
		if errors.As(err, &tooLarge) {
			e.Code = ResourceExhausted
		}
		s.logger.WarnContext(ctx, "bankrpc: refused a request frame", "error", err, "bytes", len(frame), "call_id", string(req.CallID))
		return resultFrame(req.CallID, e, nil), e
	}
	payload, e := s.dispatch(ctx, &req)
	reply := resultFrame(req.CallID, e, payload)
	if s.maxFrame > 0 && len(reply) > s.maxFrame {
		e = Errorf(ResourceExhausted, "bankrpc: %s reply of %d bytes exceeds the limit of %d bytes", req.Method, len(reply), s.maxFrame)
		reply = resultFrame(req.CallID, e, nil)
	}
	return reply, nil
}

// dispatch runs the call and returns the response payload or the error.
func (s *Server) dispatch(ctx context.Context, req *codec.RequestView) ([]byte, *Error) {
	if req.DeadlineUnixNano != 0 {
		dl := time.Unix(0, req.DeadlineUnixNano)
		if !time.Now().Before(dl) {
			return nil, Errorf(DeadlineExceeded, "bankrpc: %s: deadline passed before the call started (%s ago)", req.Method, time.Since(dl).Round(time.Microsecond))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	s.mu.RLock()
	m, ok := s.methods[string(req.Method)]
	s.mu.RUnlock()
	if !ok {
		return nil, Errorf(Unimplemented, "bankrpc: unknown method %s", req.Method)
	}
	cc := &callContext{Context: ctx, info: callInfo{id: string(req.CallID), method: m.name, metadata: req.Metadata}}
	if sink, ok := ctx.Value(statusKey{}).(StatusSink); ok {
		cc.info.status = sink
	}
	ctx = cc

	resp, err := s.call(ctx, m, req.Payload)
	if err != nil {
		return nil, toError(FromContextError(err))
	}
	payload, err := s.codec.Marshal(resp)
	if err != nil {
		return nil, Errorf(Internal, "bankrpc: encode %s response: %v", m.name, err)
	}
	return payload, nil
}

// call runs the method handler, turning a panic into Internal.
func (s *Server) call(ctx context.Context, m method, payload []byte) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.ErrorContext(ctx, "bankrpc: handler panicked", "method", m.name, "call_id", CallIDFromContext(ctx), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, Errorf(Internal, "bankrpc: %s: handler panicked: %v", m.name, r)
		}
	}()
	dec := func(v any) error {
		if err := s.codec.Unmarshal(payload, v); err != nil {
			return Errorf(InvalidArgument, "bankrpc: decode %s request: %v", m.name, err)
		}
		return nil
	}
	return m.handler(m.impl, ctx, dec, s.interceptor)
}

// resultFrame encodes the result of a call: payload when e is nil, e otherwise.
func resultFrame(callID []byte, e *Error, payload []byte) []byte {
	if e == nil {
		return codec.AppendResult(make([]byte, 0, len(callID)+len(payload)+8), callID, 0, "", payload, nil)
	}
	reason := e.Message
	if !utf8.ValidString(reason) {
		// protobuf strings must be UTF-8; a handler's message need not be.
		reason = strings.ToValidUTF8(reason, "\ufffd")
	}
	return codec.AppendResult(nil, callID, uint32(e.Code), reason, nil, e.Log)
}

// SendStatus sends a progress message for the call being handled, through
// the backend's status channel. It returns an Unimplemented error when the
// backend carries no statuses; callers usually ignore that.
func SendStatus(ctx context.Context, st Status) error {
	ci, ok := ctx.Value(callInfoKey{}).(*callInfo)
	if !ok || ci.status == nil {
		return Errorf(Unimplemented, "bankrpc: this transport carries no status messages")
	}
	frame, err := codec.EncodeStatus(&wirev1.Status{CallId: ci.id, Code: uint32(st.Code), Reason: st.Reason, Data: st.Data})
	if err != nil {
		return Errorf(Internal, "bankrpc: encode status: %v", err)
	}
	return ci.status(ctx, frame)
}
