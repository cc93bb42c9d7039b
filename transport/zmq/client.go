package zmq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/internal/calltrace"
	"github.com/bankrpc/bankrpc/internal/envelope"
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
// A call is written once per connection: it waits for its reply as long as
// the connection is up (ZMTP heartbeats tell a live server from a frozen
// one), and it is written again, with the same call id, only when the
// connection drops and comes back (a server restart). When the connection
// has been down for ClientConfig.DeadAfter the calls waiting fail with
// UNAVAILABLE. A caller that gives up (its ctx ends, or Close) sends the
// server a cancel message for its call, best-effort.
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

	connected     atomic.Bool            // a handshake completed and the connection has not dropped since
	everConnected bool                   // the handshake succeeded once: the next success is a reconnection
	downSince     atomic.Int64           // while not connected: when the connection was lost (or Dial), Unix ns
	reason        atomic.Pointer[string] // why the client is not connected, for errors

	// Owned by the caller that leads (see lead).
	poller                  *zmq4.Poller
	iDealer, iBox, iMonitor int
	batch                   []*request
	pending                 map[string]*request // by call id
	sent                    requestList         // written on the current connection, oldest first
	unsent                  requestList         // waiting for a connection, oldest first
	nextDead                time.Time           // while not connected: when the first call of unsent fails; zero: to compute
	sticky                  bool                // reason is a handshake failure, kept until a handshake succeeds
	dropped                 bool                // the connection just dropped: the next retry keeps that reason
	cancelFrame             []byte              // reused buffer for cancel messages
}

// request is one RoundTrip, or a notice that the caller of cancelOf gave up
// (see abandon). The first request of a call id is also the leader's entry
// for that id: it is in the pending map and in one of the lists, and carries
// the calls that joined it with the same id.
type request struct {
	id       string
	frame    []byte
	onStatus func([]byte) // the caller's Call.OnStatus; may be nil
	start    time.Time
	done     chan delivery // capacity 1: the reply or error, or the lead
	gaveUp   atomic.Bool   // the caller returned without a reply
	written  atomic.Bool   // the request was written to the socket at least once
	promoted bool          // handed the lead; guarded by Client.box.mu
	cancelOf *request      // set on a notice only

	// Owned by the leader.
	extra      []*request // later calls with the same id, answered by the same reply
	list       *requestList
	prev, next *request
}

// delivery is what a waiting caller receives: its reply or error, or the
// lead.
type delivery struct {
	reply []byte
	err   error
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

// closeLinger is how long Close lets libzmq write the cancel messages of the
// calls in flight before it discards them.
const closeLinger = 100 * time.Millisecond

// Dial returns a Client of the server at endpoint (tcp://host:port or
// ipc://path). It does not wait for the connection: ZeroMQ connects, and
// reconnects, in the background, and calls wait for it, up to
// ClientConfig.DeadAfter.
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
	c.downSince.Store(time.Now().UnixNano())
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
	opts := append(commonOptions(c.cfg.MaxFrameSize, c.cfg.HeartbeatInterval, c.cfg.HeartbeatTimeout),
		// Not ZMQ_IMMEDIATE: with it, libzmq discards replies received but not
		// yet read when the server disconnects, so the reply a server sends
		// just before a graceful stop was lost (15 of 200 in a test). Without
		// it a message written while no connection is up waits in the queue
		// for the next one; the client writes calls only while its monitor
		// reports a connection, so that happens only in the moment between a
		// connection's loss and its event, and the call id makes the copy
		// harmless.
		opt("ZMQ_IMMEDIATE", func(d *zmq4.Socket) error { return d.SetImmediate(false) }),
		opt("ZMQ_RECONNECT_IVL", func(d *zmq4.Socket) error { return d.SetReconnectIvl(ivl) }),
		opt("ZMQ_RECONNECT_IVL_MAX", func(d *zmq4.Socket) error { return d.SetReconnectIvlMax(ivlMax) }),
		opt("ZMQ_CONNECT_TIMEOUT", func(d *zmq4.Socket) error { return d.SetConnectTimeout(connectTimeout) }),
		// A server that accepts the TCP connection but never completes the
		// ZMTP handshake (a frozen process) is given up as a silent one is.
		opt("ZMQ_HANDSHAKE_IVL", func(d *zmq4.Socket) error { return d.SetHandshakeIvl(c.cfg.HeartbeatTimeout) }),
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
	// is down or up, which the client relies on: it writes calls only while
	// a connection is up, and writes them again only when one comes back.
	// Its cost while idle through an outage is one small event per attempt
	// (at most 10 a second), read at the next call or Close.
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
// returns the reply frame. It returns ctx.Err() when ctx ends while the
// server is connected (the server is then sent a cancel message), and
// UNAVAILABLE naming the endpoint and the reason when the connection has
// been down for DeadAfter, or when ctx's deadline passes while it is down.
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
	r := &request{id: call.ID, frame: call.Frame, onStatus: call.OnStatus, start: time.Now(), done: make(chan delivery, 1)}
	lead, ok := c.enter(r)
	if !ok {
		return nil, transport.ErrClosed
	}
	if !lead {
		select {
		case d := <-r.done:
			if !d.lead {
				return d.reply, d.err
			}
		case <-ctx.Done():
			c.abandon(r)
			return nil, c.ctxError(ctx, r)
		case <-c.closing:
			c.abandon(r)
			return nil, transport.ErrClosed
		}
	}
	d, done := c.lead(ctx, r)
	switch {
	case done:
		return d.reply, d.err
	case c.isClosing():
		return nil, transport.ErrClosed
	}
	return nil, c.ctxError(ctx, r)
}

// ctxError is the error of a call whose ctx ended: UNAVAILABLE when the
// deadline passed while the server is unreachable, ctx.Err() otherwise.
func (c *Client) ctxError(ctx context.Context, r *request) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !c.connected.Load() {
		return c.unavailable(r, time.Now())
	}
	return ctx.Err()
}

// unavailable is the error of a call that found no connection: for how long,
// and why.
func (c *Client) unavailable(r *request, now time.Time) error {
	why := *c.reason.Load()
	if !r.written.Load() {
		return status.Errorf(status.Unavailable, "zmq: no reply from %s: the request could not be sent in %v: %s",
			c.endpoint, now.Sub(r.start).Round(time.Millisecond), why)
	}
	down := now.Sub(later(r.start, time.Unix(0, c.downSince.Load()))).Round(time.Millisecond)
	return status.Errorf(status.Unavailable, "zmq: no reply from %s: the connection was lost with the call in flight and has been down for %v: %s",
		c.endpoint, down, why)
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

// Close closes the socket; calls in flight return transport.ErrClosed, and
// the server is sent a cancel message for each of them.
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
		// The events queued since the last call are read first, so that
		// none is left for libzmq's I/O thread to be stuck behind, and so
		// that the cancels go to a connection that is up.
		c.readEvents()
		if c.cancelAll() > 0 {
			if err := c.dealer.SetLinger(closeLinger); err != nil {
				c.log.Debug("zmq: set ZMQ_LINGER for the last cancel messages", "endpoint", c.endpoint, "error", err)
			}
		}
		// Stop the monitor before closing: libzmq then closes its end.
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

// abandon records that r's caller returns without its reply, and has the
// server told (cancelCall): by the leader, through a notice in the mailbox,
// or here if r had just been promoted to leader, in which case the lead
// then passes on.
func (c *Client) abandon(r *request) {
	m := c.box
	m.mu.Lock()
	defer m.mu.Unlock()
	r.gaveUp.Store(true)
	if r.promoted {
		// The lead came with, or before, the reason to give up (a Close
		// among them): it is passed on, or back to Close, never kept.
		<-r.done
		c.cancelCall(r.id)
		c.handoffLocked()
		return
	}
	if m.closed {
		return // Close cancels every call in flight
	}
	m.items = append(m.items, &request{id: r.id, cancelOf: r})
	m.signalLocked()
}

// handoffLocked passes the lead to a caller still waiting, or, when none
// waits, cancels what is left and leaves the socket idle. The caller holds
// the lead and c.box.mu.
func (c *Client) handoffLocked() {
	if !c.box.closed {
		if x := c.successorLocked(); x != nil {
			x.promoted = true
			x.done <- delivery{lead: true}
			return
		}
		// Nobody waits: the mailbox holds only notices and calls given up
		// before they were taken, and every call left in flight is
		// abandoned.
		clear(c.box.items)
		c.box.items = c.box.items[:0]
		c.cancelAll()
	}
	c.box.leading = false
	c.idle.Broadcast()
}

// successorLocked returns a caller that waits for a reply: one whose call is
// queued, else one whose call is in flight.
func (c *Client) successorLocked() *request {
	for _, x := range c.box.items {
		if x.cancelOf == nil && !x.gaveUp.Load() {
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

// lead runs the socket for every caller until r has its reply or error
// (done), its ctx ends or the client closes, then hands the lead on.
//
// Whoever leads owns the socket and the owner fields of Client; the lead
// passes between callers under c.box.mu, so one goroutine at a time uses
// the socket. A lone caller thus sends and receives on its own goroutine,
// as with a plain REQ socket, and concurrent callers share one poll.
func (c *Client) lead(ctx context.Context, r *request) (d delivery, done bool) {
	stopWake := context.AfterFunc(ctx, c.box.wake)
	defer stopWake()
	stop := func() bool { return c.isClosing() || ctx.Err() != nil }
	defer func() {
		if !done {
			r.gaveUp.Store(true) // the caller returns without its reply
			if !c.isClosing() {
				c.cancelCall(r.id)
			}
		}
		c.box.mu.Lock()
		c.handoffLocked()
		c.box.mu.Unlock()
	}()
	// Catch up with the connection's events first: an idle client reads
	// none, and a reconnection it missed must not requeue calls sent now.
	c.readEvents()
	for {
		c.batch = c.box.take(c.batch[:0])
		for i, x := range c.batch {
			c.take(x)
			c.batch[i] = nil
		}
		var deadAt time.Time
		if !c.connected.Load() {
			deadAt = c.failDead(time.Now())
		}
		select {
		case d := <-r.done:
			return d, true
		default:
		}
		if stop() {
			return delivery{}, false
		}
		timeout := time.Duration(-1)
		if !deadAt.IsZero() {
			// Rounded up: zmq_poll counts whole milliseconds.
			timeout = (max(0, time.Until(deadAt)) + time.Millisecond - 1).Truncate(time.Millisecond)
		}
		events := zmq4.POLLIN
		if c.unsent.head != nil && c.connected.Load() {
			events |= zmq4.POLLOUT
		}
		if _, err := c.poller.Update(c.iDealer, events); err != nil {
			c.stopOnError("poller", err)
			return delivery{}, false
		}
		polled, err := c.box.poll(c.poller, timeout, stop)
		if err != nil {
			c.stopOnError("poll", err)
			return delivery{}, false
		}
		if polled[c.iMonitor].Events&zmq4.POLLIN != 0 {
			c.readEvents()
		}
		if polled[c.iBox].Events&zmq4.POLLIN != 0 {
			c.box.drain()
		}
		if c.unsent.head != nil && c.connected.Load() {
			c.flush()
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

// take handles one item of the mailbox: a new call, or a notice.
func (c *Client) take(x *request) {
	switch {
	case x.cancelOf != nil:
		c.cancelCall(x.id)
	case x.gaveUp.Load():
		// Given up before it was sent; nothing to cancel.
	default:
		c.start(x)
	}
}

// start registers a new call and sends it, or joins it to a call in flight
// with the same id.
func (c *Client) start(r *request) {
	if e := c.pending[r.id]; e != nil {
		if e.live() {
			e.extra = append(e.extra, r)
			e.frame = r.frame // the latest deadline travels if the call is sent again
			return
		}
		c.drop(e)
	}
	c.pending[r.id] = r
	c.send(r)
}

// send writes r, or queues it in unsent until the socket has a connection.
// A call is written only while the monitor reports the handshake of the
// current connection: right after a disconnection the DEALER may still hold
// the dead connection's pipe for a moment, and a message written there is
// lost.
func (c *Client) send(r *request) {
	if c.unsent.head != nil || !c.connected.Load() || !c.write(r) {
		c.unsent.pushBack(r)
		return
	}
	c.sent.pushBack(r)
}

// write sends [call id, envelope] without blocking; false means no
// connection can take it now.
func (c *Client) write(r *request) bool {
	if !c.writeFrames(r.id, r.frame) {
		return false
	}
	if !r.written.Load() {
		r.written.Store(true)
	}
	return true
}

// writeFrames sends [id, body] without blocking.
func (c *Client) writeFrames(id string, body []byte) bool {
	idb := unsafe.Slice(unsafe.StringData(id), len(id)) // libzmq copies it; never written
	if _, err := c.dealer.SendBytes(idb, zmq4.SNDMORE|zmq4.DONTWAIT); err != nil {
		if !isEAGAIN(err) {
			c.log.Error("zmq: send a request", "endpoint", c.endpoint, "call_id", id, "error", err)
		}
		return false
	}
	if _, err := c.dealer.SendBytes(body, zmq4.DONTWAIT); err != nil {
		c.log.Error("zmq: send a request", "endpoint", c.endpoint, "call_id", id, "error", err)
		return false
	}
	calltrace.Mark(calltrace.ClientSent)
	return true
}

// flush sends the queued calls while the socket takes them; the caller has
// seen the connection up.
func (c *Client) flush() {
	for r := c.unsent.head; r != nil; r = c.unsent.head {
		if !r.live() {
			c.drop(r)
			continue
		}
		if !c.write(r) {
			return
		}
		c.unsent.remove(r)
		c.sent.pushBack(r)
	}
}

// cancelCall forgets the call id when no caller waits for it any more and,
// if its request is on the server now (written on the current connection),
// sends a cancel message, [call id, Request{call_id, cancel: true}], so that
// the server cancels the handler. Best-effort: a cancel the socket does not
// take at once is not sent.
func (c *Client) cancelCall(id string) {
	e := c.pending[id]
	if e == nil || e.live() {
		return
	}
	onServer := e.list == &c.sent
	c.drop(e)
	if onServer && c.connected.Load() {
		c.writeCancel(id)
	}
}

func (c *Client) writeCancel(id string) bool {
	c.cancelFrame = envelope.AppendCancel(c.cancelFrame[:0], id)
	if !c.writeFrames(id, c.cancelFrame) {
		c.log.Debug("zmq: cancel message not sent", "endpoint", c.endpoint, "call_id", id)
		return false
	}
	return true
}

// cancelAll forgets every call in flight, sending a cancel message for each
// one on the server, and returns how many were sent. Callers of the calls
// have all returned or are returning.
func (c *Client) cancelAll() (sent int) {
	connected := c.connected.Load()
	for r := c.sent.head; r != nil; r = c.sent.head {
		c.drop(r)
		if connected && c.writeCancel(r.id) {
			sent++
		}
	}
	for r := c.unsent.head; r != nil; r = c.unsent.head {
		c.drop(r)
	}
	return sent
}

// failDead fails with UNAVAILABLE the calls that have waited DeadAfter for
// a connection, counted from the later of their start and the connection's
// loss, and returns when the next one will; zero when none waits. The
// connection is down: every call in flight is in unsent.
func (c *Client) failDead(now time.Time) time.Time {
	if !c.nextDead.IsZero() && now.Before(c.nextDead) {
		return c.nextDead
	}
	down := time.Unix(0, c.downSince.Load())
	var next time.Time
	for r := c.unsent.head; r != nil; {
		e := r
		r = r.next
		if !e.live() {
			c.drop(e)
			continue
		}
		at := later(e.start, down).Add(c.cfg.DeadAfter)
		if now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		err := c.unavailable(e, now)
		c.log.Debug("zmq: no connection to the server in time; the call fails", "endpoint", c.endpoint, "call_id", e.id, "error", err)
		c.drop(e)
		e.done <- delivery{err: err}
		for _, x := range e.extra {
			x.done <- delivery{err: err}
		}
	}
	c.nextDead = next
	return next
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
		calltrace.Mark(calltrace.ClientReceived)
		body, st, ok := c.recvRest()
		if !ok {
			c.log.Warn("zmq: dropped a reply that is not [call id, envelope] nor [call id, status marker, status]", "endpoint", c.endpoint)
			emit(c.cfg.Events, transport.EventDroppedReply, reasonMalformed)
			continue
		}
		r := c.pending[string(id)]
		if st {
			if r != nil {
				r.status(body)
			}
			continue
		}
		if r == nil {
			c.log.Debug("zmq: dropped a reply to no call in flight", "endpoint", c.endpoint, "call_id", string(id))
			emit(c.cfg.Events, transport.EventDroppedReply, reasonNoCall)
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

// recvRest reads the rest of a message after its first frame: one more
// frame, the reply's envelope, or two, the status marker and a Status
// envelope (st).
func (c *Client) recvRest() (body []byte, st, ok bool) {
	var frames [][]byte
	for {
		more, err := c.dealer.GetRcvmore()
		if err != nil {
			return nil, false, false
		}
		if !more {
			break
		}
		b, err := c.dealer.RecvBytes(0)
		if err != nil {
			return nil, false, false
		}
		if len(frames) < 3 {
			frames = append(frames, b)
		}
	}
	switch {
	case len(frames) == 1:
		return frames[0], false, true
	case len(frames) == 2 && bytes.Equal(frames[0], statusMarker):
		return frames[1], true, true
	}
	return nil, false, false
}

// status hands a status frame to the callers of r that asked for statuses.
func (r *request) status(frame []byte) {
	if r.onStatus != nil && !r.gaveUp.Load() {
		r.onStatus(frame)
	}
	for _, x := range r.extra {
		if x.onStatus != nil && !x.gaveUp.Load() {
			x.onStatus(frame)
		}
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
			c.connected.Store(true)
			c.sticky = false
			c.log.Debug("zmq: connected", "endpoint", c.endpoint)
			if c.everConnected {
				emit(c.cfg.Events, transport.EventReconnect, reasonConnectionLost)
			}
			c.everConnected = true
		case zmq4.EVENT_DISCONNECTED:
			if c.connected.Swap(false) {
				c.dropped = true
				c.nonSticky("the connection to the server dropped and is not back")
				c.log.Info("zmq: connection lost; calls in flight will be sent again when it is back", "endpoint", c.endpoint, "calls", len(c.pending))
				c.downSince.Store(time.Now().UnixNano())
				c.nextDead = time.Time{}
				// The server forgets our routing id with the connection, so
				// no reply to a request written on it can arrive any more.
				c.unsent.takeAll(&c.sent)
			}
		case zmq4.EVENT_CONNECT_RETRIED:
			// libzmq reports a retry when it schedules one: right after a
			// connection drops, and after each attempt that failed.
			if !c.dropped {
				c.nonSticky("nothing accepts connections there (server down?)")
			}
			c.dropped = false
		case zmq4.EVENT_HANDSHAKE_FAILED_AUTH:
			c.failHandshake(fmt.Sprintf("the server refused this client's CURVE key (ZAP status %d)", value))
		case zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL:
			c.failHandshake(fmt.Sprintf("ZMTP handshake failed with protocol error %#x (do client and server agree on CURVE?)", value))
		case zmq4.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
			// Also what a handshake that timed out reports.
			c.failHandshake("the handshake failed: the server did not complete it (frozen? with CURVE: is ServerPublicKey the server's key?)")
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

var _ transport.StatusCapable = (*Client)(nil)

// CarriesStatus reports that the client delivers status messages to
// transport.Call.OnStatus: the server sends them to a DEALER client for
// requests that ask for them (Request.accept_status, which the runtime sets
// for a call with OnStatus or OnProgress).
func (c *Client) CarriesStatus() bool { return true }
