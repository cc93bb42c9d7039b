package zmq

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq4 "github.com/pebbe/zmq4"

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
// goroutine take the lead if the handler is not done within 50µs.
//
// Server is safe for concurrent use. Close is idempotent and may be called
// from any goroutine, before, during or after Serve.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	zctx   *zmq4.Context
	router *zmq4.Socket
	zap    *zapHandler // nil without CURVE
	box    *mailbox[*job]
	addr   string

	mu       sync.Mutex // guards state
	state    serverState
	stopping atomic.Bool   // Serve stops reading requests and drains
	done     chan struct{} // closed once the sockets and context are closed
	closeErr error         // written before done is closed

	// Set by Serve before its goroutines start.
	h        transport.Handler
	base     context.Context
	jobs     chan *job     // requests for the pool
	leadCh   chan struct{} // holds the lead while no goroutine has it
	quit     chan struct{} // closed when the pool must exit
	finished chan error    // the last leader reports the end of serving
	standby  *time.Timer   // promotes a goroutine while the leader runs a handler

	leadMu   sync.Mutex // guards leadFree
	leadFree bool       // the leader runs a handler and nobody has the lead

	// Owned by the goroutine that leads (see lead).
	poller               *zmq4.Poller
	iRouter, iBox, iZAP  int
	inflight             int
	replies, batch, free []*job // free: recycled jobs
}

type serverState int

const (
	listening serverState = iota
	serving
	closed
)

// job is one request on its way through a worker and back to the owner.
type job struct {
	rid      []byte   // routing id of the peer's connection
	route    [][]byte // frames between the routing id and the envelope, echoed
	frame    []byte   // the request envelope
	reply    []byte   // the handler's reply; nil sends nothing
	identity string   // the peer's CURVE public key, when CURVE is on
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
		if s.zap, err = newZAPHandler(s.zctx, s.cfg.Curve.AllowedClients, s.log); err != nil {
			return err
		}
	}
	if s.box, err = newMailbox[*job](s.zctx, repliesEndpoint); err != nil {
		return err
	}
	opts := append(commonOptions(s.cfg.MaxFrameSize),
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

// Serve runs h for every request until ctx is done or Close is called. It
// then stops reading requests, waits for the handlers in flight, sends their
// replies, closes the socket (letting libzmq write the last replies for up
// to 500ms) and returns nil. Handlers receive a ctx that
// carries the caller's transport.Peer and that a shutdown does not cancel.
// Serve may be called once.
// Serve serves h until Shutdown or Close.
func (s *Server) Serve(h transport.Handler) error {
	return s.serve(context.Background(), h)
}

// Shutdown stops the server gracefully, or returns ctx's error when ctx
// ends first (interim: the backend's own stop does not yet bound handlers).
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) serve(ctx context.Context, h transport.Handler) error {
	s.mu.Lock()
	if s.state != listening {
		s.mu.Unlock()
		return status.Errorf(status.FailedPrecondition, "zmq: Serve on %s called twice or after Close", s.addr)
	}
	s.state = serving
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, s.requestStop)
	defer stop()

	s.h, s.base = h, context.WithoutCancel(ctx)
	s.jobs = make(chan *job, s.cfg.Workers)
	s.leadCh = make(chan struct{}, 1)
	s.quit = make(chan struct{})
	s.finished = make(chan error, 1)
	s.standby = time.AfterFunc(time.Hour, s.promote)
	s.standby.Stop()
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
	workers.Wait()
	s.standby.Stop()
	if err == nil {
		// The replies just queued may not be on the wire yet: LINGER 0
		// would discard them.
		if lerr := s.router.SetLinger(gracefulLinger); lerr != nil {
			s.log.Warn("zmq: set ZMQ_LINGER for a graceful stop; the last replies may be lost", "addr", s.addr, "error", lerr)
		}
	}
	s.closeErr = s.release()
	close(s.done)
	return err
}

// Close stops the server. During Serve it lets the handlers in flight finish
// and their replies go out, and returns once the socket is closed and its
// address free; Serve then returns. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	state := s.state
	s.state = closed
	s.mu.Unlock()
	switch state {
	case listening:
		s.closeErr = s.release()
		close(s.done)
	case serving:
		s.requestStop()
	}
	<-s.done
	return s.closeErr
}

func (s *Server) requestStop() {
	s.stopping.Store(true)
	s.box.wake()
}

// work is a pool goroutine: it runs the handler of the jobs it is given, or
// takes the lead.
func (s *Server) work() {
	for {
		select {
		case <-s.quit:
			return
		case j := <-s.jobs:
			j.reply = s.handle(j)
			s.box.put(j)
		case <-s.leadCh:
			s.lead()
		}
	}
}

// lead owns the socket: it reads requests while fewer than Workers are in
// flight, sends the replies handed back and answers ZAP requests. It returns
// when it handed the lead on (see runInline), or when a stop was requested
// and no request is in flight, after reporting on s.finished.
func (s *Server) lead() {
	for {
		stopping := s.stopping.Load()
		if stopping && s.inflight == 0 {
			s.finished <- nil
			return
		}
		var want zmq4.State
		if !stopping && s.inflight < s.cfg.Workers {
			want = zmq4.POLLIN
		}
		if _, err := s.poller.Update(s.iRouter, want); err != nil {
			s.finished <- status.Errorf(status.Internal, "zmq: server %s: poller: %v", s.addr, err)
			return
		}
		polled, err := s.box.poll(s.poller, -1, s.stopping.Load)
		if err != nil {
			s.log.Error("zmq: poll failed; the server stops", "addr", s.addr, "error", err)
			s.finished <- status.Errorf(status.Internal, "zmq: server %s: poll: %v", s.addr, err)
			return
		}
		if polled[s.iBox].Events&zmq4.POLLIN != 0 {
			s.box.drain()
		}
		s.replies = s.box.take(s.replies[:0])
		for i, j := range s.replies {
			s.done1(j)
			s.replies[i] = nil
		}
		if s.iZAP >= 0 && polled[s.iZAP].Events&zmq4.POLLIN != 0 {
			s.zap.serve()
		}
		if want == 0 {
			continue
		}
		s.batch = s.batch[:0]
		for s.inflight < s.cfg.Workers && !s.stopping.Load() {
			j := s.newJob()
			ok, more := s.recv(j)
			if !ok {
				j.reset()
				s.free = append(s.free, j)
				if !more {
					break
				}
				continue
			}
			s.inflight++
			s.batch = append(s.batch, j)
		}
		if len(s.batch) == 1 && s.inflight == 1 {
			// A lone request: run it here, sparing two goroutine switches.
			j := s.batch[0]
			s.batch[0] = nil
			if !s.runInline(j) {
				return
			}
			continue
		}
		for i, j := range s.batch {
			s.jobs <- j
			s.batch[i] = nil
		}
		if len(s.batch) > 0 {
			yield()
		}
	}
}

func (s *Server) newJob() *job {
	if n := len(s.free); n > 0 {
		j := s.free[n-1]
		s.free = s.free[:n-1]
		return j
	}
	return new(job)
}

// done1 sends j's reply and recycles j.
func (s *Server) done1(j *job) {
	s.send(j)
	s.inflight--
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
		s.log.Warn("zmq: dropped an empty request", "peer", hex.EncodeToString(rid))
		return false, true
	case routeFrames > maxRouteFrames || routeBytes > maxRouteBytes:
		s.log.Warn("zmq: dropped a request with too many routing frames",
			"peer", hex.EncodeToString(rid), "frames", frames,
			"limit", fmt.Sprintf("%d frames of %d bytes in all before the envelope", maxRouteFrames, maxRouteBytes))
		return false, true
	}
	if len(j.frame) > s.cfg.MaxFrameSize {
		s.log.Warn("zmq: request frame over the size limit", "peer", hex.EncodeToString(rid), "bytes", len(j.frame), "limit", s.cfg.MaxFrameSize)
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
	}
}

func (s *Server) handle(j *job) (reply []byte) {
	peer := transport.Peer{Transport: "zmq", Addr: hex.EncodeToString(j.rid), Identity: j.identity}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("zmq: handler panicked; no reply sent", "peer", peer.Addr, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reply = nil
		}
	}()
	reply, err := s.h.HandleFrame(transport.NewPeerContext(s.base, peer), j.frame)
	if err != nil {
		s.log.Warn("zmq: refused a request frame", "peer", peer.Addr, "identity", peer.Identity, "bytes", len(j.frame), "error", err)
	}
	return reply
}
