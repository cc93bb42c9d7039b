package zmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Inproc endpoints of a Client, unique in the Client's own zmq context.
const (
	requestsEndpoint = "inproc://bankrpc.requests"
	monitorEndpoint  = "inproc://bankrpc.monitor"
)

// Client is the client half of the ZeroMQ backend: one DEALER socket that
// multiplexes any number of concurrent calls to one server, matched by call
// id. The socket has one user at a time, the leader: a caller that has no
// leader to hand its request to leads, sending the requests of every caller
// and delivering their replies, until its own reply arrives; it then hands
// the lead to a caller still waiting. A lone caller thus works the socket on
// its own goroutine, as with a plain REQ socket.
//
// Calls follow the Lazy Pirate pattern: a request without a reply after
// AttemptTimeout is sent again with the same call id, until the call's
// deadline (servers de-duplicate by call id; the client drops the extra
// replies). When the connection drops, every call in flight is resent as
// soon as it is back, so a server restart is survived.
//
// Client is safe for concurrent use. Close is idempotent; it fails the calls
// in flight with transport.ErrClosed and returns once the socket is closed.
type Client struct {
	endpoint string
	cfg      ClientConfig
	log      *slog.Logger
	zctx     *zmq4.Context
	dealer   *zmq4.Socket
	monitor  *zmq4.Socket
	box      *mailbox[*request]

	closeOnce   sync.Once
	closingOnce sync.Once
	closing     chan struct{} // closed by Close: calls return ErrClosed
	exited      chan struct{} // closed by Close once the sockets are closed
	closeErr    error         // written before exited is closed
	idle        sync.Cond     // on box.mu: signalled when nobody leads

	connected atomic.Bool            // a handshake completed and the connection has not dropped since
	reason    atomic.Pointer[string] // why the client is not connected, for errors

	// Owned by the caller that leads (see lead).
	poller                  *zmq4.Poller
	iDealer, iBox, iMonitor int
	batch                   []*request
	pending                 map[string]*request // by call id
	sent                    requestList         // written to the socket, oldest first
	unsent                  requestList         // waiting for a connection, oldest first
	forceAt                 time.Time           // when to try unsent calls even though no connection was seen
	handshakes              uint64              // handshakes read from the monitor so far
	sticky                  bool                // reason is a handshake failure, kept until a handshake succeeds
	purgeAt                 int                 // unsent length that triggers dropping abandoned calls
}

// request is one RoundTrip. The first request of a call id is also the
// leader's entry for that id: it is in the pending map and in one of the
// lists, and carries the calls that joined it with the same id.
type request struct {
	id       string
	frame    []byte
	done     chan delivery // capacity 1: the reply, or the lead
	gaveUp   atomic.Bool   // the caller returned without a reply
	attempts atomic.Int32
	promoted bool // handed the lead; guarded by Client.box.mu

	// Owned by the leader.
	extra []*request // later calls with the same id, answered by the same reply
	due   time.Time  // when the attempt in flight times out
	// blind is 1 + Client.handshakes when a copy of the call was written
	// while no connection was up, 0 for none: until the next handshake
	// that copy waits in the DEALER's queue, and the call is not written
	// again (see send).
	blind      uint64
	list       *requestList
	prev, next *request
}

// delivery is what a waiting caller receives: its reply, or the lead.
type delivery struct {
	reply []byte
	lead  bool
}

// live reports whether a caller still waits for the reply.
func (r *request) live() bool {
	if !r.gaveUp.Load() {
		return true
	}
	for _, x := range r.extra {
		if !x.gaveUp.Load() {
			return true
		}
	}
	return false
}

var _ transport.ClientTransport = (*Client)(nil)

// Dial returns a Client of the server at endpoint (tcp://host:port or
// ipc://path). It does not wait for the connection: ZeroMQ connects, and
// reconnects, in the background, and calls wait for it within their
// deadline.
func Dial(endpoint string, cfg ClientConfig) (*Client, error) {
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
	c := &Client{
		endpoint: endpoint,
		cfg:      cfg,
		log:      cfg.Logger,
		zctx:     zctx,
		closing:  make(chan struct{}),
		exited:   make(chan struct{}),
		pending:  make(map[string]*request),
	}
	c.setReason("no connection to the server yet")
	if err := c.open(); err != nil {
		if c.box != nil {
			c.box.close()
		}
		_ = closeAll(zctx, c.monitor, c.dealer)
		return nil, err
	}
	c.idle.L = &c.box.mu
	c.poller = zmq4.NewPoller()
	c.iDealer = c.poller.Add(c.dealer, zmq4.POLLIN)
	c.iBox = c.poller.Add(c.box.rx, zmq4.POLLIN)
	c.iMonitor = c.poller.Add(c.monitor, zmq4.POLLIN)
	return c, nil
}

func (c *Client) open() error {
	var err error
	if c.box, err = newMailbox[*request](c.zctx, requestsEndpoint); err != nil {
		return err
	}
	ivl, ivlMax := reconnectInterval, reconnectMax
	if c.cfg.reconnect > 0 {
		ivl, ivlMax = c.cfg.reconnect, c.cfg.reconnect
	}
	opts := append(commonOptions(c.cfg.MaxFrameSize),
		// Not ZMQ_IMMEDIATE: with it, libzmq discards replies received but not
		// yet read when the server disconnects, so the reply a server sends
		// just before a graceful stop was lost (15 of 200 in a test). Without
		// it a request sent while the server is away waits in the pipe and may
		// reach the server twice with the resend on reconnect: a duplicate
		// the call id makes harmless, where a lost reply was not.
		opt("ZMQ_IMMEDIATE", func(d *zmq4.Socket) error { return d.SetImmediate(false) }),
		opt("ZMQ_RECONNECT_IVL", func(d *zmq4.Socket) error { return d.SetReconnectIvl(ivl) }),
		opt("ZMQ_RECONNECT_IVL_MAX", func(d *zmq4.Socket) error { return d.SetReconnectIvlMax(ivlMax) }),
		opt("ZMQ_CONNECT_TIMEOUT", func(d *zmq4.Socket) error { return d.SetConnectTimeout(c.cfg.AttemptTimeout) }),
	)
	if k := c.cfg.Curve; k != nil {
		opts = append(opts,
			opt("ZMQ_CURVE_SERVERKEY", func(d *zmq4.Socket) error { return d.SetCurveServerkey(k.ServerPublicKey) }),
			opt("ZMQ_CURVE_PUBLICKEY", func(d *zmq4.Socket) error { return d.SetCurvePublickey(k.PublicKey) }),
			opt("ZMQ_CURVE_SECRETKEY", func(d *zmq4.Socket) error { return d.SetCurveSecretkey(k.SecretKey) }),
		)
	}
	if c.dealer, err = newSocket(c.zctx, zmq4.DEALER, opts...); err != nil {
		return err
	}
	events := zmq4.EVENT_CONNECT_RETRIED | zmq4.EVENT_DISCONNECTED |
		zmq4.EVENT_HANDSHAKE_SUCCEEDED | zmq4.EVENT_HANDSHAKE_FAILED_AUTH |
		zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq4.EVENT_HANDSHAKE_FAILED_NO_DETAIL
	if err := c.dealer.Monitor(monitorEndpoint, events); err != nil {
		return status.Errorf(status.Internal, "zmq: monitor the socket of %s: %v", c.endpoint, err)
	}
	// Connected before the DEALER connects: events with no reader are lost.
	// The queue of events is unbounded (RCVHWM 0 on the reading end makes the
	// inproc pipe so): libzmq sends them with a blocking send from its I/O
	// thread, so a full queue would stall the socket, and Close with it,
	// while an idle client collects an event per reconnection attempt. An
	// unbounded queue also never drops the event that tells the connection
	// is down or up. Its cost while idle through an outage is one small
	// event per attempt (at most 10 a second), read at the next call or
	// Close.
	if c.monitor, err = newSocket(c.zctx, zmq4.PAIR,
		opt("ZMQ_RCVHWM", func(m *zmq4.Socket) error { return m.SetRcvhwm(0) }),
	); err != nil {
		return err
	}
	if err := c.monitor.Connect(monitorEndpoint); err != nil {
		return endpointError("connect", monitorEndpoint, err)
	}
	if err := c.dealer.Connect(c.endpoint); err != nil {
		return endpointError("connect to", c.endpoint, err)
	}
	return nil
}

// RoundTrip sends call.Frame with call.ID as its correlation frame and
// returns the reply frame. It returns ctx.Err() when ctx is canceled, or when
// its deadline passes while the server is connected (a slow handler); when
// the deadline passes, or the MaxAttempts × AttemptTimeout limit of a call
// without deadline, while the server is unreachable, it returns UNAVAILABLE
// naming the endpoint and the reason.
func (c *Client) RoundTrip(ctx context.Context, call *transport.Call) ([]byte, error) {
	select {
	case <-c.closing:
		return nil, transport.ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if call.ID == "" {
		return nil, status.Errorf(status.InvalidArgument, "zmq: call to %s has no call id", c.endpoint)
	}
	if len(call.Frame) > c.cfg.MaxFrameSize {
		return nil, status.Errorf(status.ResourceExhausted, "zmq: request frame of %d bytes exceeds the limit of %d bytes", len(call.Frame), c.cfg.MaxFrameSize)
	}
	start := time.Now()
	r := &request{id: call.ID, frame: call.Frame, done: make(chan delivery, 1)}
	var limit time.Time // the overall limit of a call without deadline
	var limitC <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		d := time.Duration(c.cfg.MaxAttempts) * c.cfg.AttemptTimeout
		limit = start.Add(d)
		t := time.NewTimer(d)
		defer t.Stop()
		limitC = t.C
	}
	lead, ok := c.enter(r)
	if !ok {
		return nil, transport.ErrClosed
	}
	if !lead {
		select {
		case d := <-r.done:
			if !d.lead {
				return d.reply, nil
			}
		case <-ctx.Done():
			c.abandon(r)
			return nil, c.ctxError(ctx, r, start)
		case <-limitC:
			c.abandon(r)
			return nil, c.noReply(r, start)
		case <-c.closing:
			c.abandon(r)
			return nil, transport.ErrClosed
		}
	}
	reply, done := c.lead(ctx, r, limit)
	switch {
	case done:
		return reply, nil
	case c.isClosing():
		return nil, transport.ErrClosed
	case ctx.Err() != nil:
		return nil, c.ctxError(ctx, r, start)
	}
	return nil, c.noReply(r, start)
}

// ctxError is the error of a call whose ctx ended: UNAVAILABLE when the
// deadline passed while the server is unreachable, ctx.Err() otherwise.
func (c *Client) ctxError(ctx context.Context, r *request, start time.Time) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !c.connected.Load() {
		return c.noReply(r, start)
	}
	return ctx.Err()
}

func (c *Client) noReply(r *request, start time.Time) error {
	why := "the server is connected but sent no reply in time"
	if !c.connected.Load() {
		why = *c.reason.Load()
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	if n := r.attempts.Load(); n > 0 {
		return status.Errorf(status.Unavailable, "zmq: no reply from %s after %d attempt(s) in %v: %s", c.endpoint, n, elapsed, why)
	}
	return status.Errorf(status.Unavailable, "zmq: no reply from %s: the request could not be sent in %v: %s", c.endpoint, elapsed, why)
}

func (c *Client) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

func (c *Client) setReason(s string) { c.reason.Store(&s) }

// Close closes the socket; calls in flight return transport.ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.markClosing()
		m := c.box
		m.mu.Lock()
		m.signalLocked() // wakes the leader
		m.closed = true  // no caller enters, nobody is promoted
		for m.leading {
			c.idle.Wait()
		}
		m.leading = true // for good: Close owns the socket now
		m.mu.Unlock()
		// Stop the monitor before closing: libzmq then closes its end. The
		// events queued since the last call are read first, so that none is
		// left for libzmq's I/O thread to be stuck behind.
		c.readEvents()
		_ = c.dealer.Monitor("", 0)
		m.close()
		c.closeErr = closeAll(c.zctx, c.monitor, c.dealer)
		close(c.exited)
	})
	<-c.exited
	return c.closeErr
}

func (c *Client) markClosing() {
	c.closingOnce.Do(func() { close(c.closing) })
}

// enter queues r for the leader, or makes its caller the leader when nobody
// leads. ok is false once the client is closed.
func (c *Client) enter(r *request) (lead, ok bool) {
	m := c.box
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, false
	}
	m.items = append(m.items, r)
	if !m.leading {
		m.leading = true
		return true, true
	}
	m.signalLocked()
	return false, true
}

// abandon records that r's caller returns without its reply. If r had just
// been promoted to leader, the lead passes on.
func (c *Client) abandon(r *request) {
	m := c.box
	m.mu.Lock()
	defer m.mu.Unlock()
	r.gaveUp.Store(true)
	if r.promoted {
		<-r.done
		c.handoffLocked()
	}
}

// handoffLocked passes the lead to a caller still waiting, or leaves the
// socket idle. The caller holds the lead and c.box.mu.
func (c *Client) handoffLocked() {
	if !c.box.closed {
		if x := c.successorLocked(); x != nil {
			x.promoted = true
			x.done <- delivery{lead: true}
			return
		}
	}
	c.box.leading = false
	c.idle.Broadcast()
}

// successorLocked returns a caller that waits for a reply: one whose call is
// queued, else one whose call is in flight.
func (c *Client) successorLocked() *request {
	for _, x := range c.box.items {
		if !x.gaveUp.Load() {
			return x
		}
	}
	for _, l := range []*requestList{&c.sent, &c.unsent} {
		for e := l.head; e != nil; e = e.next {
			if !e.gaveUp.Load() {
				return e
			}
			for _, x := range e.extra {
				if !x.gaveUp.Load() {
					return x
				}
			}
		}
	}
	return nil
}

// lead runs the socket for every caller until r has its reply (done), its
// ctx ends, limit passes or the client closes, then hands the lead on.
//
// Whoever leads owns the socket and the owner fields of Client; the lead
// passes between callers under c.box.mu, so one goroutine at a time uses
// the socket. A lone caller thus sends and receives on its own goroutine,
// as with a plain REQ socket, and concurrent callers share one poll.
func (c *Client) lead(ctx context.Context, r *request, limit time.Time) (reply []byte, done bool) {
	stopWake := context.AfterFunc(ctx, c.box.wake)
	defer stopWake()
	stop := func() bool {
		return c.isClosing() || ctx.Err() != nil || (!limit.IsZero() && !time.Now().Before(limit))
	}
	defer func() {
		c.box.mu.Lock()
		if !done {
			r.gaveUp.Store(true) // the caller returns without its reply
		}
		c.handoffLocked()
		c.box.mu.Unlock()
	}()
	// Catch up with the connection's events first: an idle client reads
	// none, and a reconnection it missed must not requeue calls sent now.
	c.readEvents()
	for {
		now := time.Now()
		c.batch = c.box.take(c.batch[:0])
		for i, x := range c.batch {
			c.start(x, now)
			c.batch[i] = nil
		}
		c.expire(now)
		select {
		case d := <-r.done:
			return d.reply, true
		default:
		}
		if stop() {
			return nil, false
		}
		if !c.forceAt.IsZero() && !now.Before(c.forceAt) {
			c.flush(now) // the connection events may have been missed
		}
		timeout := time.Duration(-1)
		for _, at := range []time.Time{c.sentDue(), c.forceAt, limit} {
			if !at.IsZero() && (timeout < 0 || at.Sub(now) < timeout) {
				timeout = max(0, at.Sub(now))
			}
		}
		if timeout >= 0 {
			// Rounded up: zmq_poll counts whole milliseconds.
			timeout = (timeout + time.Millisecond - 1).Truncate(time.Millisecond)
		}
		events := zmq4.POLLIN
		if c.unsent.head != nil && c.connected.Load() {
			events |= zmq4.POLLOUT
		}
		if _, err := c.poller.Update(c.iDealer, events); err != nil {
			c.stopOnError("poller", err)
			return nil, false
		}
		polled, err := c.box.poll(c.poller, timeout, stop)
		if err != nil {
			c.stopOnError("poll", err)
			return nil, false
		}
		if polled[c.iMonitor].Events&zmq4.POLLIN != 0 {
			c.readEvents()
		}
		if polled[c.iBox].Events&zmq4.POLLIN != 0 {
			c.box.drain()
		}
		if c.unsent.head != nil && c.connected.Load() {
			c.flush(time.Now())
		}
		if polled[c.iDealer].Events&zmq4.POLLIN != 0 && c.readReplies(r) > 0 {
			yield()
		}
	}
}

// stopOnError closes the client for its callers after an unexpected socket
// error: calls in flight and later return ErrClosed.
func (c *Client) stopOnError(op string, err error) {
	c.log.Error("zmq: client stopped by a socket error", "endpoint", c.endpoint, "op", op, "error", err)
	c.markClosing()
}

// start registers a new call and sends it, or joins it to a call in flight
// with the same id.
func (c *Client) start(r *request, now time.Time) {
	if e := c.pending[r.id]; e != nil {
		if e.live() {
			e.extra = append(e.extra, r)
			e.frame = r.frame // the latest deadline travels on the next attempt
			return
		}
		e.list.remove(e)
		r.blind = e.blind // a copy of this call id may wait in the queue
	}
	c.pending[r.id] = r
	c.send(r, now)
}

// send writes r, or queues it in unsent until the socket has a connection.
// A call is written at once only while the monitor reports the handshake of
// the current connection: right after a disconnection the DEALER may still
// hold the dead connection's pipe for a moment, and a message written there
// is lost. Queued calls are written when the connection is up, or blindly
// by flush after an AttemptTimeout without one (in case its events were
// missed); a call with a blind copy already queued is not written again
// before a connection is up, so an outage queues one copy per call, not one
// per attempt timeout.
func (c *Client) send(r *request, now time.Time) {
	if r.list != nil {
		r.list.remove(r)
	}
	if c.queuedBlind(r) {
		r.due = now.Add(c.cfg.AttemptTimeout)
		c.sent.pushBack(r)
		return
	}
	if c.unsent.head != nil || !c.connected.Load() || !c.write(r) {
		c.unsent.pushBack(r)
		if c.forceAt.IsZero() {
			c.forceAt = now.Add(c.cfg.AttemptTimeout)
		}
		if c.unsent.n >= c.purgeAt {
			c.purgeUnsent()
		}
		return
	}
	r.due = now.Add(c.cfg.AttemptTimeout)
	c.sent.pushBack(r)
}

// write sends [call id, envelope] without blocking; false means no
// connection can take it now.
func (c *Client) write(r *request) bool {
	id := unsafe.Slice(unsafe.StringData(r.id), len(r.id)) // libzmq copies it; never written
	if _, err := c.dealer.SendBytes(id, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
		if !isEAGAIN(err) {
			c.log.Error("zmq: send a request", "endpoint", c.endpoint, "call_id", r.id, "error", err)
		}
		return false
	}
	if _, err := c.dealer.SendBytes(r.frame, zmq4.DONTWAIT); err != nil {
		c.log.Error("zmq: send a request", "endpoint", c.endpoint, "call_id", r.id, "error", err)
		return false
	}
	r.attempts.Add(1)
	if !c.connected.Load() {
		r.blind = c.handshakes + 1
	}
	return true
}

// queuedBlind reports whether a copy of r written while no connection was
// up still waits in the DEALER's queue for one.
func (c *Client) queuedBlind(r *request) bool {
	return r.blind == c.handshakes+1 && !c.connected.Load()
}

// sentDue is when the oldest attempt in flight times out; zero for none.
func (c *Client) sentDue() time.Time {
	if c.sent.head == nil {
		return time.Time{}
	}
	return c.sent.head.due
}

// flush sends the queued calls while the socket takes them. The caller has
// seen the connection up, or forces the attempt after AttemptTimeout in case
// connection events were lost.
func (c *Client) flush(now time.Time) {
	c.forceAt = time.Time{}
	for r := c.unsent.head; r != nil; r = c.unsent.head {
		if !r.live() {
			c.drop(r)
			continue
		}
		if !c.queuedBlind(r) && !c.write(r) {
			c.forceAt = now.Add(c.cfg.AttemptTimeout)
			return
		}
		c.unsent.remove(r)
		r.due = now.Add(c.cfg.AttemptTimeout)
		c.sent.pushBack(r)
	}
}

// expire resends the calls whose attempt timed out and forgets those whose
// callers gave up.
func (c *Client) expire(now time.Time) {
	for r := c.sent.head; r != nil && !r.due.After(now); r = c.sent.head {
		if !r.live() {
			c.drop(r)
			continue
		}
		c.log.Debug("zmq: no reply in time; resending", "endpoint", c.endpoint, "call_id", r.id, "attempt", r.attempts.Load()+1)
		c.send(r, now)
	}
}

// purgeUnsent forgets the queued calls whose callers gave up, so a long
// outage does not accumulate them.
func (c *Client) purgeUnsent() {
	for r := c.unsent.head; r != nil; {
		next := r.next
		if !r.live() {
			c.drop(r)
		}
		r = next
	}
	c.purgeAt = 2*c.unsent.n + 64
}

func (c *Client) drop(r *request) {
	r.list.remove(r)
	delete(c.pending, r.id)
}

// readReplies delivers every reply the socket holds and returns how many
// callers other than self it woke.
func (c *Client) readReplies(self *request) (woken int) {
	for {
		id, err := c.dealer.RecvBytes(zmq4.DONTWAIT)
		if err != nil {
			if !isEAGAIN(err) {
				c.log.Error("zmq: receive a reply", "endpoint", c.endpoint, "error", err)
			}
			return woken
		}
		body, ok := c.recvRest()
		if !ok {
			c.log.Warn("zmq: dropped a reply that is not [call id, envelope]", "endpoint", c.endpoint)
			continue
		}
		r := c.pending[string(id)]
		if r == nil {
			c.log.Debug("zmq: dropped a duplicate reply", "endpoint", c.endpoint, "call_id", string(id))
			continue
		}
		c.drop(r)
		r.done <- delivery{reply: body}
		for _, x := range r.extra {
			x.done <- delivery{reply: append([]byte(nil), body...)}
		}
		woken += len(r.extra)
		if r != self {
			woken++
		}
	}
}

// recvRest reads the rest of a reply after its first frame: exactly one
// more frame, the envelope.
func (c *Client) recvRest() ([]byte, bool) {
	frames := 0
	var body []byte
	for {
		more, err := c.dealer.GetRcvmore()
		if err != nil || !more {
			return body, err == nil && frames == 1
		}
		if body, err = c.dealer.RecvBytes(0); err != nil {
			return nil, false
		}
		frames++
	}
}

// readEvents follows the connection through the socket monitor.
func (c *Client) readEvents() {
	for {
		ev, _, value, err := c.monitor.RecvEvent(zmq4.DONTWAIT)
		if err != nil {
			return
		}
		switch ev {
		case zmq4.EVENT_HANDSHAKE_SUCCEEDED:
			c.handshakes++
			c.connected.Store(true)
			c.sticky = false
			c.log.Debug("zmq: connected", "endpoint", c.endpoint)
		case zmq4.EVENT_DISCONNECTED:
			if c.connected.Swap(false) {
				c.log.Info("zmq: connection lost; calls in flight will be resent", "endpoint", c.endpoint, "calls", len(c.pending))
				// The server forgets our routing id with the connection, so
				// no reply to an earlier attempt can arrive any more.
				c.unsent.takeAll(&c.sent)
			}
			c.nonSticky("the connection to the server dropped and is not back")
		case zmq4.EVENT_CONNECT_RETRIED:
			c.nonSticky("nothing accepts connections there (server down?)")
		case zmq4.EVENT_HANDSHAKE_FAILED_AUTH:
			c.failHandshake(fmt.Sprintf("the server refused this client's CURVE key (ZAP status %d)", value))
		case zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL:
			c.failHandshake(fmt.Sprintf("ZMTP handshake failed with protocol error %#x (do client and server agree on CURVE?)", value))
		case zmq4.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
			c.failHandshake("the handshake failed (with CURVE: is ServerPublicKey the server's key?)")
		}
	}
}

func (c *Client) nonSticky(reason string) {
	if !c.sticky && !c.connected.Load() {
		c.setReason(reason)
	}
}

func (c *Client) failHandshake(reason string) {
	c.sticky = true
	c.setReason(reason)
	c.log.Warn("zmq: handshake failed", "endpoint", c.endpoint, "reason", reason)
}

// requestList is an intrusive doubly linked list of requests, owned by the
// leader.
type requestList struct {
	head, tail *request
	n          int
}

func (l *requestList) pushBack(r *request) {
	r.list, r.prev, r.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = r
	} else {
		l.head = r
	}
	l.tail = r
	l.n++
}

func (l *requestList) remove(r *request) {
	if l == nil || r.list != l {
		return
	}
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		l.tail = r.prev
	}
	r.list, r.prev, r.next = nil, nil, nil
	l.n--
}

// takeAll moves every request of from to the back of l, in order.
func (l *requestList) takeAll(from *requestList) {
	for r := from.head; r != nil; r = from.head {
		from.remove(r)
		l.pushBack(r)
	}
}
