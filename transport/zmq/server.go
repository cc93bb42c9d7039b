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

	zmq4 "github.com/pebbe/zmq4"

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

// Server is the server half of the ZeroMQ backend: a ROUTER socket that both
// REQ peers and Clients (DEALER) call. Serve runs the handler in a bounded
// pool of worker goroutines; one goroutine, the one running Serve, owns the
// socket and sends the replies the workers hand back.
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
		return transport.Errorf(transport.Internal, "zmq: listen on %s: read the bound endpoint: %v", endpoint, err)
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
// replies, closes the socket and returns nil. Handlers receive a ctx that
// carries the caller's transport.Peer and that a shutdown does not cancel.
// Serve may be called once.
func (s *Server) Serve(ctx context.Context, h transport.Handler) error {
	s.mu.Lock()
	if s.state != listening {
		s.mu.Unlock()
		return transport.Errorf(transport.FailedPrecondition, "zmq: Serve on %s called twice or after Close", s.addr)
	}
	s.state = serving
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, s.requestStop)
	defer stop()

	jobs := make(chan *job, s.cfg.Workers)
	var workers sync.WaitGroup
	base := context.WithoutCancel(ctx)
	for range s.cfg.Workers {
		workers.Go(func() { s.work(base, h, jobs) })
	}
	err := s.loop(jobs)
	close(jobs)
	workers.Wait()
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

// loop is the socket owner: it reads requests while there is a free worker,
// sends the replies the workers hand back and answers ZAP requests, until a
// stop is requested and no request is in flight.
func (s *Server) loop(jobs chan<- *job) error {
	poller := zmq4.NewPoller()
	iRouter := poller.Add(s.router, zmq4.POLLIN)
	iBox := poller.Add(s.box.rx, zmq4.POLLIN)
	iZAP := -1
	if s.zap != nil {
		iZAP = poller.Add(s.zap.sock, zmq4.POLLIN)
	}
	var (
		inflight int
		replies  []*job
		free     []*job // recycled jobs, owned by this goroutine
	)
	for {
		stopping := s.stopping.Load()
		if stopping && inflight == 0 {
			return nil
		}
		var want zmq4.State
		if !stopping && inflight < s.cfg.Workers {
			want = zmq4.POLLIN
		}
		if _, err := poller.Update(iRouter, want); err != nil {
			return transport.Errorf(transport.Internal, "zmq: server %s: poller: %v", s.addr, err)
		}
		polled, err := s.box.poll(poller, -1, s.stopping.Load)
		if err != nil {
			s.log.Error("zmq: poll failed; the server stops", "addr", s.addr, "error", err)
			return transport.Errorf(transport.Internal, "zmq: server %s: poll: %v", s.addr, err)
		}
		if polled[iBox].Events&zmq4.POLLIN != 0 {
			s.box.drain()
		}
		replies = s.box.take(replies[:0])
		for i, j := range replies {
			s.send(j)
			inflight--
			j.reset()
			free = append(free, j)
			replies[i] = nil
		}
		if iZAP >= 0 && polled[iZAP].Events&zmq4.POLLIN != 0 {
			s.zap.serve()
		}
		dispatched := 0
		for want != 0 && inflight < s.cfg.Workers && !s.stopping.Load() {
			var j *job
			if n := len(free); n > 0 {
				j, free = free[n-1], free[:n-1]
			} else {
				j = new(job)
			}
			ok, more := s.recv(j)
			if !ok {
				j.reset()
				free = append(free, j)
				if !more {
					break
				}
				continue
			}
			inflight++
			dispatched++
			jobs <- j
		}
		if dispatched > 0 {
			yield()
		}
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
	frames, routeBytes := 0, 0
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
			j.route = append(j.route, j.frame)
			routeBytes += len(j.frame)
		}
		j.frame = b
	}
	switch {
	case frames == 0:
		// A ROUTER never delivers a routing id alone; be safe anyway.
		s.log.Warn("zmq: dropped an empty request", "peer", hex.EncodeToString(rid))
		return false, true
	case len(j.route) > maxRouteFrames || routeBytes > maxRouteBytes:
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

// work runs the handler for each job and hands the job back to the owner.
func (s *Server) work(base context.Context, h transport.Handler, jobs <-chan *job) {
	for j := range jobs {
		j.reply = s.handle(base, h, j)
		s.box.put(j)
	}
}

func (s *Server) handle(base context.Context, h transport.Handler, j *job) (reply []byte) {
	peer := transport.Peer{Transport: "zmq", Addr: hex.EncodeToString(j.rid), Identity: j.identity}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("zmq: handler panicked; no reply sent", "peer", peer.Addr, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reply = nil
		}
	}()
	reply, err := h.HandleFrame(transport.NewPeerContext(base, peer), j.frame)
	if err != nil {
		s.log.Warn("zmq: refused a request frame", "peer", peer.Addr, "identity", peer.Identity, "bytes", len(j.frame), "error", err)
	}
	return reply
}
