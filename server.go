package bankrpc

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/internal/ratelog"
	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Server dispatches requests to registered services. Generated Register
// functions add services to it; it serves them on one or several backends
// at once (Serve, ListenAndServe), and it is the transport.Handler those
// backends feed.
//
// The call contract it enforces on every backend is written in
// docs/semantics.md: at most one run of a handler per call id while the
// server runs (a duplicate joins the call in flight or gets its cached
// reply), cancellation of the handler's ctx when the caller cancels, panics
// turned into INTERNAL, and Shutdown/Close that never wait for a stuck
// handler beyond their bound.
//
// A Server is safe for concurrent use. Services are registered before
// serving starts. Shutdown and Close are idempotent; a Server cannot serve
// again after them.
type Server struct {
	o           serverOptions
	interceptor UnaryServerInterceptor
	seed        maphash.Seed
	refusals    *ratelog.Logger // what the server refuses, rate-limited

	mu      sync.RWMutex // guards methods
	methods map[string]method

	calls callTable

	life      sync.Mutex // guards state and listeners
	state     serverState
	listeners map[transport.ServerTransport]struct{}
	stopped   chan struct{} // closed once the server is closed: joiners stop waiting
}

type serverState int

const (
	running serverState = iota
	draining
	stopped
)

type method struct {
	name    string
	impl    any
	handler MethodHandler
}

var _ transport.Handler = (*Server)(nil)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or
// Close.
var ErrServerClosed = errors.New("bankrpc: server closed")

// Why a handler's ctx was canceled, as context.Cause tells it.
var (
	// ErrCanceledByClient is the cause of a handler's ctx canceled because
	// its caller canceled the call (or gave up on it).
	ErrCanceledByClient = status.NewError(status.Canceled, "bankrpc: the caller canceled the call")
	// ErrServerStopping is the cause of a handler's ctx canceled because the
	// server is stopping: Close, or the end of Shutdown's ctx.
	ErrServerStopping = status.NewError(status.Unavailable, "bankrpc: the server is stopping")
)

// NewServer returns a Server with no services.
func NewServer(opts ...ServerOption) *Server {
	s := &Server{
		o:         defaultServerOptions(),
		seed:      maphash.MakeSeed(),
		methods:   make(map[string]method),
		listeners: make(map[transport.ServerTransport]struct{}),
		stopped:   make(chan struct{}),
	}
	for _, o := range opts {
		o.applyServer(&s.o)
	}
	s.interceptor = chainServer(s.o.interceptors)
	s.refusals = ratelog.New(s.o.logger, ratelog.DefaultBurst, ratelog.DefaultInterval)
	s.calls.init(s.o.cacheSize, s.o.cacheAge, s.o.cacheBytes)
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

// HandleFrame decodes a request envelope, runs the method it names (once per
// call id, see Server) and returns the encoded result. It never panics. It
// implements transport.Handler, which says what backends do with its
// results.
func (s *Server) HandleFrame(ctx context.Context, frame []byte) ([]byte, error) {
	var req envelope.RequestView
	if err := envelope.DecodeRequestView(frame, s.o.maxFrame, &req); err != nil {
		e := Errorf(InvalidArgument, "bankrpc: %v", err)
		var tooLarge *envelope.FrameTooLargeError
		if errors.As(err, &tooLarge) {
			e = Errorf(ResourceExhausted, "bankrpc: %v", err)
		}
		s.refusals.Log(ctx, slog.LevelWarn, "malformed frame", "bankrpc: refused a request frame", "error", err, "bytes", len(frame), "call_id", string(req.CallID))
		if len(s.o.stats) > 0 {
			info := s.statsInfo(ctx, &req)
			statsEnd(statsBegin(ctx, s.o.stats, info), s.o.stats, info, &CallEnd{Code: e.Code(), Err: e, Refused: true, RefusedReason: "malformed frame"})
		}
		return resultFrame(req.CallID, e, nil), e
	}
	if req.Cancel {
		s.CancelCall(string(req.CallID))
		return nil, nil
	}
	if len(s.o.stats) == 0 {
		var end CallEnd
		return s.handle(ctx, &req, &end)
	}
	info := s.statsInfo(ctx, &req)
	ctx = statsBegin(ctx, s.o.stats, info)
	var end CallEnd
	reply, err := s.handle(ctx, &req, &end)
	statsEnd(ctx, s.o.stats, info, &end)
	return reply, err
}

func (s *Server) statsInfo(ctx context.Context, req *envelope.RequestView) *CallInfo {
	info := &CallInfo{Method: string(req.Method), CallID: string(req.CallID), Begin: time.Now()}
	info.Peer, _ = transport.PeerFromContext(ctx)
	return info
}

// handle answers a decoded request: it joins the call id's run, or runs it,
// and fills end with the outcome.
func (s *Server) handle(ctx context.Context, req *envelope.RequestView, end *CallEnd) ([]byte, error) {
	fp := s.fingerprint(req.Method, req.Payload)
	a, err := s.calls.begin(ctx, req.CallID, fp, req.DeadlineUnixNano, s.acceptingNew())
	switch {
	case errors.Is(err, transport.ErrNotServed):
		*end = CallEnd{Code: Unavailable, Err: transport.ErrNotServed, Refused: true, RefusedReason: "not served"}
		s.refusals.Log(ctx, slog.LevelDebug, "not served", "bankrpc: refused a call", "method", string(req.Method), "call_id", string(req.CallID), "error", "the server is shutting down: the call is given back unanswered")
		return resultFrame(req.CallID, transport.ErrNotServed, nil), transport.ErrNotServed
	case err != nil:
		e := status.Convert(err)
		*end = CallEnd{Code: e.Code(), Err: e, Refused: true, RefusedReason: "call id reused"}
		s.refusals.Log(ctx, slog.LevelDebug, "call id reused", "bankrpc: refused a call", "method", string(req.Method), "call_id", string(req.CallID), "error", e.Message())
		return resultFrame(req.CallID, e, nil), nil
	case a.early:
		// A cancel came before the request: answered CANCELED, not run.
		*end = CallEnd{Code: Canceled, Err: Errorf(Canceled, "bankrpc: the caller canceled the call before it started"), Refused: true, RefusedReason: "canceled early"}
		s.refusals.Log(ctx, slog.LevelDebug, "canceled early", "bankrpc: refused a call", "method", string(req.Method), "call_id", string(req.CallID), "error", "a cancel of this call id came before it")
		return a.done.reply, nil
	case a.run == nil:
		// The call finished: its cached reply.
		*end = CallEnd{Code: a.done.code, Duplicate: true}
		if a.done.e != nil { // a nil *Error in an error interface is not nil
			end.Err = a.done.e
		}
		return a.done.reply, nil
	case !a.owner:
		c := a.run
		reply, err := s.join(ctx, c, a.wait, req.CallID)
		if err != nil {
			*end = CallEnd{Code: Unavailable, Err: err, Refused: true, RefusedReason: "not served"}
		} else {
			*end = CallEnd{Code: c.code, Duplicate: true}
			if c.e != nil { // a nil *Error in an error interface is not nil
				end.Err = c.e
			}
		}
		return reply, err
	}
	c := a.run
	reply, e, interrupted := s.run(&c.cc, c.id, req, end)
	if interrupted {
		s.calls.abandon(c)
		*end = CallEnd{Code: Unavailable, Err: transport.ErrNotServed}
		return resultFrame(req.CallID, transport.ErrNotServed, nil), transport.ErrNotServed
	}
	end.Code, end.Err = OK, nil
	if e != nil {
		end.Code, end.Err = e.Code(), e
	}
	// A request refused because its deadline had passed did not run: its
	// answer is not the call's outcome, and a repeat with a later deadline
	// must reach the handler (the bank answers it from its record).
	s.calls.finish(c, reply, end.Code, e, !(end.Refused && end.RefusedReason == "expired"))
	return reply, nil
}

// join waits for the call c another request runs, on wait, closed when c
// ends, and returns its reply.
func (s *Server) join(ctx context.Context, c *call, wait <-chan struct{}, callID []byte) ([]byte, error) {
	select {
	case <-wait:
		return c.reply, c.err
	case <-ctx.Done():
	case <-s.stopped:
	}
	return resultFrame(callID, transport.ErrNotServed, nil), transport.ErrNotServed
}

// CancelCall cancels the handler's ctx of the call with that id, if it runs
// here, with cause ErrCanceledByClient. A cancel for a call not seen yet is
// remembered within the reply cache's bounds: that call, if it comes, is
// answered CANCELED without running. It implements transport.Handler.
func (s *Server) CancelCall(callID string) {
	if callID == "" {
		return
	}
	s.calls.cancel(callID, func() []byte {
		return resultFrame([]byte(callID), Errorf(Canceled, "bankrpc: the caller canceled the call before it started"), nil)
	})
}

func (s *Server) fingerprint(method, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	_, _ = h.Write(method)
	_ = h.WriteByte(0)
	_, _ = h.Write(payload)
	return h.Sum64() | 1 // 0 is the wildcard of a cancel that came first
}

// run runs the call in ctx, which begin made cancelable, and returns its
// encoded result and error, or interrupted when the server stopped it before
// it finished (the call is then not answered). It records a refusal in end.
func (s *Server) run(ctx *callContext, id string, req *envelope.RequestView, end *CallEnd) (reply []byte, e *Error, interrupted bool) {
	resp, lines, e := s.dispatch(ctx, id, req, end)
	if e != nil && errors.Is(context.Cause(ctx), ErrServerStopping) {
		return nil, e, true
	}
	if e == nil {
		var err error
		reply, err = envelope.AppendResultFunc(make([]byte, 0, len(req.CallID)+len(req.Method)+10+payloadHint), req.CallID, 0, "", func(dst []byte) ([]byte, error) {
			return appendPayload(s.o.codec, dst, resp)
		}, lines, nil)
		if err == nil {
			reply = envelope.AppendResultMethod(reply, string(req.Method))
		} else {
			e = Errorf(Internal, "bankrpc: encode %s response: %w", req.Method, err)
		}
	}
	if e != nil {
		reply = callErrorFrame(req.CallID, req.Method, e, lines)
	}
	if s.o.maxFrame > 0 && len(reply) > s.o.maxFrame {
		e = Errorf(ResourceExhausted, "bankrpc: %s reply of %d bytes exceeds the limit of %d bytes", req.Method, len(reply), s.o.maxFrame)
		reply = callErrorFrame(req.CallID, req.Method, e, nil)
	}
	return reply, e, false
}

// dispatch runs the call and returns the response or the error, and the log
// lines for its result.
func (s *Server) dispatch(cc *callContext, id string, req *envelope.RequestView, end *CallEnd) (any, []string, *Error) {
	if req.DeadlineUnixNano != 0 {
		// The handler's ctx ends by this deadline (begin gave it).
		dl := time.Unix(0, req.DeadlineUnixNano)
		if !time.Now().Before(dl) {
			return nil, nil, s.refuse(cc, req, end, "expired", Errorf(DeadlineExceeded, "bankrpc: %s: deadline passed before the call started (%s ago)", req.Method, time.Since(dl).Round(time.Microsecond)))
		}
	}
	if err := checkPairs(req.Metadata, s.o.maxMetadata); err != nil {
		return nil, nil, s.refuse(cc, req, end, "bad metadata", status.Convert(err))
	}
	s.mu.RLock()
	m, ok := s.methods[string(req.Method)]
	s.mu.RUnlock()
	if !ok {
		return nil, nil, s.refuse(cc, req, end, "unknown method", Errorf(Unimplemented, "bankrpc: unknown method %s", req.Method))
	}
	// cc is not shared yet, but for its lazyCancelCtx (CancelCall, the
	// server's stop).
	cc.info = callInfo{id: id, method: m.name, md: req.Metadata, status: transport.StatusSinkFromContext(cc.parent), codec: s.o.codec, firstUnanswered: req.FirstUnanswered}
	cc.payload, cc.refusals = req.Payload, s.refusals
	resp, err := s.call(cc, m)
	if cc.undecodable {
		end.Refused, end.RefusedReason = true, "undecodable payload"
	}
	if err != nil {
		e := handlerError(err)
		return nil, cc.info.log.take(e), e
	}
	return resp, cc.info.log.take(nil), nil
}

// refuse logs a call the server refuses without running it, at debug and
// rate-limited by kind, and returns e.
func (s *Server) refuse(ctx context.Context, req *envelope.RequestView, end *CallEnd, kind string, e *Error) *Error {
	end.Refused, end.RefusedReason = true, kind
	s.refusals.Log(ctx, slog.LevelDebug, kind, "bankrpc: refused a call", "method", string(req.Method), "call_id", string(req.CallID), "code", e.Code().String(), "error", e.Message())
	return e
}

// handlerError gives a handler's error its code: its own, or the context's
// for a context error, or Unknown. An *Error carrying OK (a zero Error)
// becomes Unknown: a failed call never reads as a success.
func handlerError(err error) *Error {
	e := status.Convert(FromContextError(err))
	if e.Code() == OK {
		return NewError(Unknown, "bankrpc: the handler returned an error with code OK: "+e.Message())
	}
	return e
}

// call runs the method handler, turning a panic into Internal with a
// generic message; the panic's value and stack go to the server's logger.
func (s *Server) call(cc *callContext, m method) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.o.logger.ErrorContext(cc, "bankrpc: handler panicked", "method", m.name, "call_id", cc.info.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, Errorf(Internal, "bankrpc: %s: internal error in the handler", m.name)
		}
	}()
	return m.handler(m.impl, cc, cc.decode, s.interceptor)
}

// resultFrame encodes the result of a call: payload when e is nil, e otherwise.
func resultFrame(callID []byte, e *Error, payload []byte) []byte {
	if e == nil {
		return envelope.AppendResult(make([]byte, 0, len(callID)+len(payload)+8), callID, 0, "", payload, nil, nil)
	}
	return envelope.AppendResult(nil, callID, uint32(wireCode(e)), wireReason(e), nil, e.Log(), e.Details())
}

// wireCode is e's code as a result carries it: never OK.
func wireCode(e *Error) Code {
	if e.Code() == OK {
		return Unknown
	}
	return e.Code()
}

// wireReason is e's message as valid UTF-8: protobuf strings must be, a
// handler's message need not be.
func wireReason(e *Error) string {
	reason := e.Message()
	if !utf8.ValidString(reason) {
		reason = strings.ToValidUTF8(reason, "\ufffd")
	}
	return reason
}

// callErrorFrame encodes the error result of a call that reached dispatch:
// as resultFrame, with the method and the log lines (which replace e's own,
// as they include them).
func callErrorFrame(callID, method []byte, e *Error, log []string) []byte {
	frame := envelope.AppendResult(nil, callID, uint32(wireCode(e)), wireReason(e), nil, log, e.Details())
	return envelope.AppendResultMethod(frame, string(method))
}

// SendStatus sends a progress message for the call being handled, through
// the backend's status channel. It returns an Unimplemented error when the
// backend carries no statuses; callers usually ignore that.
func SendStatus(ctx context.Context, st Status) error {
	ci, ok := ctx.Value(callInfoKey{}).(*callInfo)
	if !ok || ci.status == nil {
		return Errorf(Unimplemented, "bankrpc: this transport carries no status messages")
	}
	frame, err := envelope.EncodeStatus(&wirev1.Status{CallId: ci.id, Code: uint32(st.Code), Reason: st.Reason, Data: st.Data})
	if err != nil {
		return Errorf(Internal, "bankrpc: encode status: %w", err)
	}
	return ci.status(ctx, frame)
}
