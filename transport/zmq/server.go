package zmq

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/bankrpc/bankrpc/internal/calltrace"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/internal/ratelog"
	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Limits on the frames a server echoes between the routing id and the
// envelope (see docs/protocol-zmq.md). A request over them is dropped: it
// cannot be answered in a way its sender could match.
const (
	maxRouteFrames = 8
	maxRouteBytes  = 64 << 10
)

// repliesEndpoint is the inproc endpoint of a Server's reply mailbox, unique
// in the Server's own zmq context.
const repliesEndpoint = "inproc://bankrpc.replies"

// gracefulLinger is how long a graceful stop lets libzmq go on writing the
// last replies after the socket is closed (ZMQ_LINGER); an abrupt stop
// discards them at once.
const gracefulLinger = 500 * time.Millisecond

// standbyDelay is how long a leader running a handler keeps the socket
// unattended before another goroutine takes the lead.
const standbyDelay = 50 * time.Microsecond

// Server is the server half of the ZeroMQ backend: a ROUTER socket that both
// REQ peers and Clients (DEALER) call. Serve runs handlers in a bounded pool
// of goroutines; one of them at a time, the leader, owns the socket: it
// reads requests, hands them to the others and sends the replies they hand
// back. A lone request is handled by the leader itself, which lets another
// goroutine take the lead if the handler is not done within 50µs. Cancel
// messages are handed to the Handler by the leader at once, ahead of the
// requests that wait for a free handler.
//
// Server is safe for concurrent use. Shutdown and Close are idempotent and
// may be called from any goroutine, before, during or after Serve.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	refused *ratelog.Logger // what the server refuses, rate-limited: a peer can send it as fast as the network goes
	zctx    *zmq4.Context
	router  *zmq4.Socket
	zap     *zapHandler // nil without CURVE
	box     *mailbox[*job]
	addr    string

	mu       sync.Mutex // guards state
	state    serverState
	stopping atomic.Bool   // Serve takes no new requests, and stops once none is in flight
	aborting atomic.Bool   // Serve stops at once, whatever is in flight; set before stopping
	done     chan struct{} // closed once the sockets and context are closed
	closeErr error         // written before done is closed

	// Set by Serve before its goroutines start.
	h        transport.Handler
	jobs     chan *job     // requests for the pool
	leadCh   chan struct{} // holds the lead while no goroutine has it
	quit     chan struct{} // closed when the pool must exit
	finished chan error    // the last leader reports the end of serving
	standby  *time.Timer   // promotes a goroutine while the leader runs a handler
	woken    func() bool   // s.stopChanged, bound once

	leadMu   sync.Mutex // guards leadFree
	leadFree bool       // the leader runs a handler and nobody has the lead

	// Owned by the goroutine that leads (see lead).
	poller              *zmq4.Poller
	iRouter, iBox, iZAP int
	inflight            int    // requests handed to a handler and not answered yet
	sawStopping         bool   // stopping as the leader last saw it
	backlog             []*job // requests read, waiting for a free handler
	replies, free       []*job // free: recycled jobs
}

type serverState int

const (
	listening serverState = iota
	serving
	closed // before Serve
)

// job is one request on its way through a worker and back to the owner.
type job struct {
	rid      []byte      // routing id of the peer's connection
	route    [][]byte    // frames between the routing id and the envelope, echoed
	frame    []byte      // the request envelope
	reply    []byte      // the handler's reply; nil sends nothing
	identity string      // the peer's CURVE public key, when CURVE is on
	status   *statusSlot // set on a job that carries a status, not a reply
}

// statusSlot holds the latest status of one call not sent yet: a handler's
// statuses replace each other while they wait for the socket (the latest
// wins), so a fast reporter never floods the mailbox. mu guards the rest.
type statusSlot struct {
	mu     sync.Mutex
	frame  []byte
	queued bool // a job for this slot is in the mailbox
}

// reset empties j for reuse, keeping the route slice's storage.
func (j *job) reset() {
	clear(j.route)
	*j = job{route: j.route[:0]}
}

var _ transport.ServerTransport = (*Server)(nil)

// Listen binds a ROUTER socket to endpoint (tcp://host:port or ipc://path;
// port 0 or * picks a free port, see Addr). Requests are queued by libzmq
// until Serve is called.
func Listen(endpoint string, cfg ServerConfig) (*Server, error) {
	if err := checkEndpoint(endpoint); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Curve != nil {
		if err := cfg.Curve.check(); err != nil {
			return nil, err
		}
	}
	zctx, err := newContext()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, zctx: zctx, done: make(chan struct{})}
	s.refused = ratelog.New(s.log, ratelog.DefaultBurst, ratelog.DefaultInterval)
	if err := s.open(endpoint); err != nil {
		_ = s.release()
		return nil, err
	}
	return s, nil
}

func (s *Server) open(endpoint string) error {
	var err error
	if s.cfg.Curve != nil {
		// Bound first: a CURVE handshake without a ZAP handler would accept
		// any client key.
		if s.zap, err = newZAPHandler(s.zctx, s.cfg.Curve.AllowedClients, s.log, s.cfg.Events); err != nil {
			return err
		}
	}
	if s.box, err = newMailbox[*job](s.zctx, repliesEndpoint); err != nil {
		return err
	}
	opts := append(commonOptions(s.cfg.MaxFrameSize, s.cfg.heartbeat, s.cfg.heartbeatTimeout),
		// A reply to a peer that is gone, or that does not read, fails
		// instead of vanishing, so the server can log it.
		opt("ZMQ_ROUTER_MANDATORY", func(r *zmq4.Socket) error { return r.SetRouterMandatory(1) }),
	)
	if c := s.cfg.Curve; c != nil {
		opts = append(opts,
			opt("ZMQ_CURVE_SERVER", func(r *zmq4.Socket) error { return r.SetCurveServer(1) }),
			opt("ZMQ_CURVE_SECRETKEY", func(r *zmq4.Socket) error { return r.SetCurveSecretkey(c.SecretKey) }),
			opt("ZMQ_ZAP_DOMAIN", func(r *zmq4.Socket) error { return r.SetZapDomain(zapDomain) }),
		)
	}
	if s.router, err = newSocket(s.zctx, zmq4.ROUTER, opts...); err != nil {
		return err
	}
	if err := s.router.Bind(endpoint); err != nil {
		return endpointError("listen on", endpoint, err)
	}
	if s.addr, err = s.router.GetLastEndpoint(); err != nil {
		return status.Errorf(status.Internal, "zmq: listen on %s: read the bound endpoint: %v", endpoint, err)
	}
	return nil
}

// release closes every socket and terminates the context.
func (s *Server) release() error {
	sockets := []*zmq4.Socket{s.router}
	if s.zap != nil {
		sockets = append(sockets, s.zap.sock)
	}
	if s.box != nil {
		s.box.close()
	}
	return closeAll(s.zctx, sockets...)
}

// Addr returns the bound endpoint, with the port libzmq picked when the
// endpoint asked for port 0 or *, e.g. "tcp://127.0.0.1:41234".
func (s *Server) Addr() string { return s.addr }

// URL returns the bound endpoint as a bankrpc address, for bankrpc.Dial:
// "zmq://127.0.0.1:41234", or "zmq+ipc:///path".
func (s *Server) URL() string { return addressOf(s.addr) }

// Serve runs h for every request until Shutdown or Close, and returns nil
// then. Handlers receive a ctx that carries the caller's transport.Peer;
// their cancellation is the Handler's business (a bankrpc.Server cancels
// them when their caller sends a cancel message, and when it stops). Serve
// may be called once.
func (s *Server) Serve(h transport.Handler) error {
	s.mu.Lock()
	if s.state != listening {
		s.mu.Unlock()
		return status.Errorf(status.FailedPrecondition, "zmq: Serve on %s called twice or after Close", s.addr)
	}
	s.state = serving
	s.mu.Unlock()

	s.h = h
	s.jobs = make(chan *job, s.cfg.Workers)
	s.leadCh = make(chan struct{}, 1)
	s.quit = make(chan struct{})
	s.finished = make(chan error, 1)
	s.standby = time.AfterFunc(time.Hour, s.promote)
	s.standby.Stop()
	s.woken = s.stopChanged
	s.poller = zmq4.NewPoller()
	s.iRouter = s.poller.Add(s.router, zmq4.POLLIN)
	s.iBox = s.poller.Add(s.box.rx, zmq4.POLLIN)
	s.iZAP = -1
	if s.zap != nil {
		s.iZAP = s.poller.Add(s.zap.sock, zmq4.POLLIN)
	}

	s.leadCh <- struct{}{} // the first worker to take it leads
	var workers sync.WaitGroup
	// One more goroutine than handlers may run, so that one is always free
	// to lead.
	for range s.cfg.Workers + 1 {
		workers.Go(s.work)
	}
	err := <-s.finished
	close(s.quit)
	s.standby.Stop()
	if err == nil && !s.aborting.Load() {
		// Graceful: no handler runs, every worker is on its way out.
		workers.Wait()
		// The replies just queued may not be on the wire yet: LINGER 0
		// would discard them.
		if lerr := s.router.SetLinger(gracefulLinger); lerr != nil {
			s.log.Warn("zmq: set ZMQ_LINGER for a graceful stop; the last replies may be lost", "addr", s.addr, "error", lerr)
		}
	}
	// Otherwise the workers still running a handler are not waited for:
	// they drop their replies and exit when their handler returns.
	s.closeErr = s.release()
	close(s.done)
	return err
}

// Shutdown stops the server gracefully: it stops taking requests (those
// that arrive now are left unanswered: a Client sends them again to the
// server that listens next, see docs/protocol-zmq.md), waits until every
// handler in flight has returned and its reply is written, and closes the
// socket, letting libzmq write the last replies for up to 500ms. When ctx
// ends first, it closes at once, as Close, and returns ctx's error. Before
// Serve it just closes.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.stop(false) {
		select {
		case <-s.done:
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		}
	}
	<-s.done
	return s.closeErr
}

// Close stops the server at once: it stops reading requests and closes the
// socket without waiting for the handlers in flight, whose replies are
// dropped (a Client sends those calls again when it connects to the next
// server). It returns once the socket is closed and its address free; Serve
// then returns nil.
func (s *Server) Close() error {
	s.stop(true)
	<-s.done
	return s.closeErr
}

// stop asks Serve to stop, at once when abort is set; before Serve it
// releases the socket itself. It reports whether Serve is running.
func (s *Server) stop(abort bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case listening:
		s.state = closed
		s.closeErr = s.release()
		close(s.done)
		return false
	case closed:
		return false
	}
	if abort {
		s.aborting.Store(true)
	}
	s.stopping.Store(true)
	s.box.wake()
	return true
}

// stopChanged reports whether the leader must look at the stop flags again
// before it sleeps.
func (s *Server) stopChanged() bool {
	return s.aborting.Load() || s.stopping.Load() != s.sawStopping
}

// work is a pool goroutine: it runs the handler of the jobs it is given, or
// takes the lead.
func (s *Server) work() {
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		select {
		case <-s.quit:
			return
		case j := <-s.jobs:
			j.reply = s.handle(j)
			s.box.put(j) // false once the server is closed: the reply is dropped
		case <-s.leadCh:
			s.lead()
		}
	}
}

// lead owns the socket: it reads requests while fewer than Workers wait for
// a handler, hands them to the pool, sends the replies handed back, runs
// cancel messages and answers ZAP requests. It returns when it handed the
// lead on (see runInline), or after reporting the end of serving on
// s.finished: at once when aborting, else when stopping and no request is in
// flight.
func (s *Server) lead() {
	for {
		if s.aborting.Load() || (s.stopping.Load() && s.inflight == 0) {
			s.finished <- nil
			return
		}
		s.sawStopping = s.stopping.Load()
		if s.sawStopping {
			s.dropBacklog()
		}
		var want zmq4.State
		if s.sawStopping || len(s.backlog) < s.cfg.Workers {
			want = zmq4.POLLIN
		}
		if _, err := s.poller.Update(s.iRouter, want); err != nil {
			s.finished <- status.Errorf(status.Internal, "zmq: server %s: poller: %v", s.addr, err)
			return
		}
		polled, err := s.box.poll(s.poller, -1, s.woken)
		if err != nil {
			s.log.Error("zmq: poll failed; the server stops", "addr", s.addr, "error", err)
			s.finished <- status.Errorf(status.Internal, "zmq: server %s: poll: %v", s.addr, err)
			return
		}
		if polled[s.iBox].Events&zmq4.POLLIN != 0 {
			s.box.drain()
		}
		s.sendMail()
		if s.iZAP >= 0 && polled[s.iZAP].Events&zmq4.POLLIN != 0 {
			s.zap.serve()
		}
		if want != 0 {
			s.read()
		}
		if !s.dispatch() {
			return
		}
	}
}

// read reads the queued requests: it runs cancel messages at once, keeps
// the others in the backlog, up to Workers of them, and, once stopping,
// drops them unanswered.
func (s *Server) read() {
	for !s.aborting.Load() {
		stopping := s.stopping.Load()
		if !stopping && len(s.backlog) >= s.cfg.Workers {
			return
		}
		j := s.newJob()
		ok, more := s.recv(j)
		switch {
		case !ok:
			s.recycle(j)
			if !more {
				return
			}
		case isCancel(j.frame):
			// Not a call: the Handler only cancels one and answers nothing,
			// so it runs here, never waiting for a free handler.
			j.reply = s.handle(j)
			s.send(j)
			s.recycle(j)
		case stopping:
			s.refused.Log(context.Background(), slog.LevelDebug, "zmq.stopping", "zmq: request left unanswered: the server is stopping", "peer", hex.EncodeToString(j.rid))
			s.recycle(j)
		default:
			s.backlog = append(s.backlog, j)
		}
	}
}

// dispatch hands requests of the backlog to the pool while fewer than
// Workers are in flight. It reports whether this goroutine still leads.
func (s *Server) dispatch() bool {
	n := min(len(s.backlog), s.cfg.Workers-s.inflight)
	if n <= 0 || s.stopping.Load() {
		return true
	}
	if n == 1 && s.inflight == 0 && len(s.backlog) == 1 {
		// A lone request: run it here, sparing two goroutine switches.
		j := s.backlog[0]
		s.backlog[0] = nil
		s.backlog = s.backlog[:0]
		s.inflight++
		return s.runInline(j)
	}
	for i, j := range s.backlog[:n] {
		s.jobs <- j
		s.backlog[i] = nil
	}
	s.inflight += n
	rest := copy(s.backlog, s.backlog[n:])
	clear(s.backlog[rest:])
	s.backlog = s.backlog[:rest]
	yield()
	return true
}

// dropBacklog forgets the requests read but not started: the server is
// stopping, and their callers send them again to the next server.
func (s *Server) dropBacklog() {
	for i, j := range s.backlog {
		s.recycle(j)
		s.backlog[i] = nil
	}
	s.backlog = s.backlog[:0]
}

func (s *Server) newJob() *job {
	if n := len(s.free); n > 0 {
		j := s.free[n-1]
		s.free = s.free[:n-1]
		return j
	}
	return new(job)
}

// sendMail sends the replies and statuses in the mailbox, in order.
func (s *Server) sendMail() {
	s.replies = s.box.take(s.replies[:0])
	for i, j := range s.replies {
		if j.status != nil {
			s.sendStatus(j)
		} else {
			s.done1(j)
		}
		s.replies[i] = nil
	}
}

// done1 sends j's reply and recycles j.
func (s *Server) done1(j *job) {
	s.send(j)
	s.inflight--
	s.recycle(j)
}

func (s *Server) recycle(j *job) {
	j.reset()
	s.free = append(s.free, j)
}

// runInline runs j's handler on the leader's goroutine, with the lead left
// free meanwhile: if the handler takes longer than standbyDelay, another
// goroutine takes the lead (promote), so a slow handler never stalls the
// socket. It reports whether this goroutine still leads afterwards; if not,
// the reply goes to the new leader.
func (s *Server) runInline(j *job) bool {
	s.leadMu.Lock()
	s.leadFree = true
	s.standby.Reset(standbyDelay)
	s.leadMu.Unlock()

	j.reply = s.handle(j)

	s.leadMu.Lock()
	kept := s.leadFree
	if kept {
		s.leadFree = false
		s.standby.Stop()
	}
	s.leadMu.Unlock()
	if !kept {
		s.box.put(j)
		return false
	}
	s.sendMail() // the handler's statuses go before its reply
	s.done1(j)
	return true
}

// promote hands a free lead to a pool goroutine.
func (s *Server) promote() {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadFree {
		s.leadFree = false
		s.leadCh <- struct{}{}
	}
}

// recv reads one request into j. ok reports a request to handle; more
// reports whether reading should go on (false when the queue is empty).
func (s *Server) recv(j *job) (ok, more bool) {
	rid, err := s.router.RecvBytes(zmq4.DONTWAIT)
	if err != nil {
		if !isEAGAIN(err) {
			s.log.Error("zmq: receive a request", "addr", s.addr, "error", err)
		}
		return false, false
	}
	calltrace.Mark(calltrace.ServerReceived)
	j.rid = rid
	// Route frames past the limits are read and discarded, not kept: the
	// request is dropped anyway.
	frames, routeFrames, routeBytes := 0, 0, 0
	for {
		hasMore, err := s.router.GetRcvmore()
		if err != nil {
			s.log.Error("zmq: receive a request", "addr", s.addr, "error", err)
			return false, true
		}
		if !hasMore {
			break
		}
		var b []byte
		if frames == 0 && s.zap != nil {
			var md map[string]string
			b, md, err = s.router.RecvBytesWithMetadata(0, "User-Id")
			j.identity = md["User-Id"]
		} else {
			b, err = s.router.RecvBytes(0)
		}
		if err != nil {
			s.log.Error("zmq: receive a request", "addr", s.addr, "error", err)
			return false, true
		}
		frames++
		if j.frame != nil {
			routeFrames++
			routeBytes += len(j.frame)
			if routeFrames <= maxRouteFrames && routeBytes <= maxRouteBytes {
				j.route = append(j.route, j.frame)
			}
		}
		j.frame = b
	}
	switch {
	case frames == 0:
		// A ROUTER never delivers a routing id alone; be safe anyway.
		emit(s.cfg.Events, transport.EventRefusedFrame, reasonEmpty)
		s.refused.Log(context.Background(), slog.LevelWarn, "zmq.empty", "zmq: dropped an empty request", "peer", hex.EncodeToString(rid))
		return false, true
	case routeFrames > maxRouteFrames || routeBytes > maxRouteBytes:
		emit(s.cfg.Events, transport.EventRefusedFrame, reasonRouting)
		s.refused.Log(context.Background(), slog.LevelWarn, "zmq.route", "zmq: dropped a request with too many routing frames",
			"peer", hex.EncodeToString(rid), "frames", frames,
			"limit", fmt.Sprintf("%d frames of %d bytes in all before the envelope", maxRouteFrames, maxRouteBytes))
		return false, true
	}
	if len(j.frame) > s.cfg.MaxFrameSize {
		emit(s.cfg.Events, transport.EventRefusedFrame, reasonOversized)
		s.refused.Log(context.Background(), slog.LevelWarn, "zmq.size", "zmq: request frame over the size limit", "peer", hex.EncodeToString(rid), "bytes", len(j.frame), "limit", s.cfg.MaxFrameSize)
	}
	return true, true
}

// send routes j's reply back through the frames it came with.
func (s *Server) send(j *job) {
	if j.reply == nil {
		return
	}
	if _, err := s.router.SendBytes(j.rid, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
		switch zmq4.AsErrno(err) {
		case zmq4.EHOSTUNREACH:
			s.log.Info("zmq: reply dropped: the peer disconnected", "peer", hex.EncodeToString(j.rid))
		case zmq4.Errno(syscall.EAGAIN):
			s.log.Warn("zmq: reply dropped: the peer's queue is full", "peer", hex.EncodeToString(j.rid), "hwm", DefaultHWM)
		default:
			s.log.Error("zmq: send a reply", "peer", hex.EncodeToString(j.rid), "error", err)
		}
		return
	}
	for _, r := range j.route {
		if _, err := s.router.SendBytes(r, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
			s.log.Error("zmq: send a reply", "peer", hex.EncodeToString(j.rid), "error", err)
			return
		}
	}
	if _, err := s.router.SendBytes(j.reply, zmq4.DONTWAIT); err != nil {
		s.log.Error("zmq: send a reply", "peer", hex.EncodeToString(j.rid), "error", err)
		return
	}
	calltrace.Mark(calltrace.ServerSent)
}

// statusMarker is the frame before a Status envelope in a status message,
// [route frames] [statusMarker] [Status], which a DEALER client tells from
// a reply, [route frames] [Result], by its number of frames.
var statusMarker = []byte("bankrpc.wire.v1.Status")

// statusSink returns the sink of the statuses of j's call, sent to its
// caller ahead of the reply when the request asked for them
// (Request.accept_status): the latest one not sent yet wins.
func (s *Server) statusSink(j *job) transport.StatusSink {
	slot := &statusSlot{}
	rid, route := j.rid, slices.Clone(j.route)
	return func(_ context.Context, frame []byte) error {
		slot.mu.Lock()
		slot.frame = append(slot.frame[:0], frame...)
		queue := !slot.queued
		slot.queued = true
		slot.mu.Unlock()
		if queue && !s.box.put(&job{rid: rid, route: route, status: slot}) {
			return status.Errorf(status.Unavailable, "zmq: server %s is closed", s.addr)
		}
		return nil
	}
}

// sendStatus sends the latest status of j's slot; best-effort: it is
// dropped when the peer's queue is full or the peer is gone.
func (s *Server) sendStatus(j *job) {
	j.status.mu.Lock()
	frame := append([]byte(nil), j.status.frame...)
	j.status.queued = false
	j.status.mu.Unlock()
	if _, err := s.router.SendBytes(j.rid, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
		s.log.Debug("zmq: status dropped", "peer", hex.EncodeToString(j.rid), "error", err)
		return
	}
	for _, r := range j.route {
		if _, err := s.router.SendBytes(r, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
			s.log.Error("zmq: send a status", "peer", hex.EncodeToString(j.rid), "error", err)
			return
		}
	}
	if _, err := s.router.SendBytes(statusMarker, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
		s.log.Error("zmq: send a status", "peer", hex.EncodeToString(j.rid), "error", err)
		return
	}
	if _, err := s.router.SendBytes(frame, zmq4.DONTWAIT); err != nil {
		s.log.Error("zmq: send a status", "peer", hex.EncodeToString(j.rid), "error", err)
	}
}

// handle runs the Handler for j and returns the reply to send, nil for none.
// A Handler that panics (a bankrpc.Server never does) is answered INTERNAL,
// as the runtime answers a handler's panic.
func (s *Server) handle(j *job) (reply []byte) {
	peer := transport.Peer{Transport: "zmq", Addr: hex.EncodeToString(j.rid), Identity: j.identity}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("zmq: handler panicked", "peer", peer.Addr, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reply = internalResult(j.frame)
		}
	}()
	ctx := transport.NewPeerContext(context.Background(), peer)
	if boolField(j.frame, requestAcceptStatusField) {
		ctx = transport.NewStatusContext(ctx, s.statusSink(j))
	}
	calltrace.Mark(calltrace.HandlerStart)
	reply, err := s.h.HandleFrame(ctx, j.frame)
	calltrace.Mark(calltrace.HandlerEnd)
	if err != nil && !errors.Is(err, transport.ErrNotServed) {
		// Refused, with an error result to send. ErrNotServed needs no log:
		// its UNAVAILABLE result is sent all the same, as ZeroMQ cannot give
		// the request back for later.
		s.refused.Log(context.Background(), slog.LevelWarn, "zmq.refused", "zmq: refused a request frame", "peer", peer.Addr, "identity", peer.Identity, "bytes", len(j.frame), "error", err)
	}
	return reply
}

// internalResult is the result of a request whose Handler panicked.
func internalResult(frame []byte) []byte {
	var req envelope.RequestView
	_ = envelope.DecodeRequestView(frame, 0, &req) // the call id, when it can be read
	return envelope.AppendResult(nil, req.CallID, uint32(status.Internal), "zmq: internal error in the handler", nil, nil, nil)
}

// isCancel reports whether frame is a cancel message (Request.cancel set),
// reading only its field tags: it is asked of every request.
func isCancel(frame []byte) bool { return boolField(frame, requestCancelField) }

// boolField reports whether the bool field want of the request frame is
// set, reading only field tags.
func boolField(frame []byte, want protowire.Number) bool {
	set := false
	for len(frame) > 0 {
		num, typ, n := protowire.ConsumeTag(frame)
		if n < 0 {
			return false
		}
		frame = frame[n:]
		if num == want && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(frame)
			if m < 0 {
				return false
			}
			set = v != 0 // the last one counts, as in protobuf
			frame = frame[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, frame)
		if m < 0 {
			return false
		}
		frame = frame[m:]
	}
	return set
}

// The numbers of bankrpc.wire.v1.Request.cancel and accept_status.
const (
	requestCancelField       protowire.Number = 6
	requestAcceptStatusField protowire.Number = 8
)
