package amqp

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Client is the client half of the AMQP backend: a transport.ClientTransport
// that publishes requests to a service's queue and matches the replies in the
// client's own queues by call id (the correlation-id property).
//
// A call counts as sent once the broker confirmed its request; a request not
// confirmed when the connection broke is published again, with the same call
// id, on the next connection. Several calls with the same call id may be in
// flight at once (a caller retrying, or joining, a call): each publishes its
// request, the server runs the call once and answers each, and the first
// reply ends them all; the later ones are duplicates. Replies for calls no
// longer in flight (the results of calls submitted by an earlier process of
// the client name, in particular) are kept until collected (KeptResults,
// WaitResult, DropResult: the runtime's Conn.Collect) or taken by a call
// re-issued with the same id, up to ClientConfig.OrphanReplies; duplicates
// of a reply delivered lately are dropped.
//
// A call whose ctx is canceled before its reply publishes a cancel message
// (CancelExchange), best-effort, so that the server running it cancels the
// handler's ctx; see docs/protocol-amqp.md. A call that ends at its deadline
// sends none: the deadline is in the request, and the server ends the
// handler at it.
//
// Requests are written to the broker by a goroutine of the connection, never
// by the caller: RoundTrip returns when its ctx ends even if the broker
// stopped reading (a memory or disk alarm blocks publishing connections, see
// connection.blocked). While the broker reports the connection blocked,
// nothing is written; the requests wait in the client and are published when
// it is unblocked or on the next connection.
//
// A Client is safe for concurrent use. Close is idempotent, may be called
// from any goroutine, and fails the calls in flight with transport.ErrClosed;
// their requests stay queued and their replies wait in the durable result
// queue for a client restarted with the same ClientName. Close returns
// promptly even when a write to the broker is stuck: it closes the
// connection, which ends the write. mu guards the fields named on it;
// cancelling counts itself.
type Client struct {
	cfg       ClientConfig
	connector *connector
	userID    string

	mu       sync.Mutex         // guards pending, orphans, kept, answered, flushes, cancels, sess, closed
	pending  map[string][]*call // calls in flight by call id, oldest first
	orphans  orphans
	kept     chan struct{}            // closed, and replaced, when a reply is added to orphans
	answered recentIDs                // call ids answered or collected here lately: their duplicates are dropped
	flushes  map[string]chan struct{} // flush markers published by KeptResults, closed when consumed
	cancels  []string                 // call ids whose cancel message is to be published, oldest first
	sess     *clientSession           // the session calls are published on; nil while reconnecting
	closed   bool

	cancelling inflight // cancel messages queued or not confirmed yet

	done      chan struct{} // closed by Close
	stop      context.CancelFunc
	wg        sync.WaitGroup // the supervisor goroutine
	closeOnce sync.Once
}

var (
	_ transport.ClientTransport = (*Client)(nil)
	_ transport.StatusCapable   = (*Client)(nil)
	_ transport.SendConfirmer   = (*Client)(nil)
	_ transport.ResultKeeper    = (*Client)(nil)
)

// call is one call in flight.
type call struct {
	id       string
	frame    []byte
	deadline time.Time
	onStatus func([]byte)
	sent     func()       // called when the broker confirmed the request; may be nil
	outcome  chan outcome // buffered 1: receives the one outcome of the call

	// Guarded by Client.mu.
	sentOn    *clientSession // the session of the last publish, to publish once per session
	confirmed bool           // the broker holds the request: never publish it again
	nacks     int            // how many times the broker refused the request
}

// maxRequestNacks is how many times a request refused by the broker
// (basic.nack) is published again, with back-off and on a fresh channel,
// before its call fails with UNAVAILABLE: enough to ride out the election
// of a quorum queue's new leader (seconds), not to hide a queue that refuses
// for good (a full queue with overflow reject-publish).
const maxRequestNacks = 12

// Dial connects to the broker at url (amqp://user:password@host:port/vhost),
// checks that the service's exchanges and queue exist (a server of the
// service declares them), and declares the client's queues. It returns an
// error when the first connection fails; later connection losses are
// repaired in the background. The URL may carry the parameters service,
// client and queue of an address (see the package documentation), which
// take precedence over cfg's Service, ClientName and QueueType.
func Dial(url string, cfg ClientConfig) (*Client, error) {
	return dialContext(context.Background(), url, cfg)
}

func dialContext(ctx context.Context, url string, cfg ClientConfig) (*Client, error) {
	brokers, err := cfg.fromAddress(url)
	if err != nil {
		return nil, err
	}
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	user, err := brokerUser(brokers)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		connector: newConnector(brokers, cfg.ConnectionName, cfg.Dial, cfg.ReconnectMin, cfg.ReconnectMax, cfg.Logger.With("client", cfg.ClientName, "service", cfg.Service)),
		pending:   make(map[string][]*call),
		orphans:   newOrphans(cfg.OrphanReplies, cfg.OrphanTTL),
		kept:      make(chan struct{}),
		flushes:   make(map[string]chan struct{}),
		done:      make(chan struct{}),
	}
	c.connector.events = cfg.Events
	if !cfg.NoUserID {
		c.userID = user
	}
	first, err := c.openFirst(ctx)
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	c.stop = stop
	c.wg.Go(func() { c.connector.supervise(life, first, c.open) })
	return c, nil
}

// Name returns the client name its queues derive from (random unless
// ClientConfig.ClientName was set).
func (c *Client) Name() string { return c.cfg.ClientName }

// CarriesStatus reports that the client delivers status messages to
// transport.Call.OnStatus.
func (c *Client) CarriesStatus() bool { return true }

// RoundTrip hands call's request to the connection's writer and waits for its
// reply, the end of ctx or Close, whichever comes first; it never waits for a
// write to the broker. A call whose id has a reply kept from before (see
// ClientConfig.OrphanReplies) gets that reply without publishing anything.
// When ctx is canceled (not at its deadline) after the request was
// published, and no other call with the same id is in flight here, a cancel
// message for the call id is queued for the writer; RoundTrip does not wait
// for it.
func (c *Client) RoundTrip(ctx context.Context, tc *transport.Call) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if tc.ID == "" {
		return nil, status.Errorf(status.InvalidArgument, "amqp: call to %s has no call id", tc.Method)
	}
	if c.cfg.MaxFrameSize > 0 && len(tc.Frame) > c.cfg.MaxFrameSize {
		return nil, status.Errorf(status.ResourceExhausted, "amqp: %s request frame of %d bytes exceeds the limit of %d bytes", tc.Method, len(tc.Frame), c.cfg.MaxFrameSize)
	}
	pc := &call{id: tc.ID, frame: tc.Frame, deadline: tc.Deadline, onStatus: tc.OnStatus, sent: tc.Sent, outcome: make(chan outcome, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, transport.ErrClosed
	}
	if o, ok := c.orphans.take(tc.ID, time.Now()); ok {
		c.answered.add(tc.ID)
		c.mu.Unlock()
		return o.frame, o.err
	}
	c.pending[tc.ID] = append(c.pending[tc.ID], pc)
	s := c.sess
	if s != nil {
		s.queue = append(s.queue, pc)
	}
	c.mu.Unlock()

	if s != nil {
		s.signal()
	}
	select {
	case o := <-pc.outcome:
		return o.frame, o.err
	case <-ctx.Done():
		c.abandon(pc, errors.Is(ctx.Err(), context.Canceled))
		return nil, ctx.Err()
	case <-c.done:
		c.abandon(pc, false)
		return nil, transport.ErrClosed
	}
}

// Close stops the client: calls in flight fail with transport.ErrClosed, the
// connection is closed and the background goroutines have ended when it
// returns. The calls in flight are not canceled: their requests stay queued
// (a client restarted with the same name learns their outcome by issuing
// them again). Cancel messages of calls canceled before are given up to a
// second to be confirmed by the broker. Replies kept for calls not in flight
// and not collected (see KeptResults) are given back to the client's durable
// queues on a connection of their own, for up to 3 seconds, so that the
// next process with the client name gets them.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.flushCancels()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		c.stop()
		c.wg.Wait()
		c.returnKept()
	})
	return nil
}

// removeLocked drops pc from the calls in flight and reports whether it was
// there.
func (c *Client) removeLocked(pc *call) bool {
	calls := c.pending[pc.id]
	i := slices.Index(calls, pc)
	if i < 0 {
		return false
	}
	if len(calls) == 1 {
		delete(c.pending, pc.id)
	} else {
		c.pending[pc.id] = slices.Delete(calls, i, i+1)
	}
	return true
}

// isPendingLocked reports whether pc is in flight.
func (c *Client) isPendingLocked(pc *call) bool {
	return slices.Contains(c.pending[pc.id], pc)
}

// finish ends pc with o unless it already ended.
func (c *Client) finish(pc *call, o outcome) {
	c.mu.Lock()
	mine := c.removeLocked(pc)
	c.mu.Unlock()
	if mine {
		pc.outcome <- o
	}
}

// deliver ends every call in flight with the call id with o, or keeps o for
// Collect or a re-issued call when none is, unless it is a duplicate of a
// reply delivered lately, or a KeptResults marker.
func (c *Client) deliver(id string, o outcome) {
	c.mu.Lock()
	if strings.HasPrefix(id, flushPrefix) {
		if done := c.flushes[id]; done != nil {
			delete(c.flushes, id)
			close(done)
		}
		c.mu.Unlock()
		return // a marker of this process, or a stale one of an earlier process
	}
	calls := c.pending[id]
	duplicate, evicted := false, c.orphans.evicted
	switch {
	case calls != nil:
		delete(c.pending, id)
		c.answered.add(id)
	case c.answered.has(id):
		duplicate = true
	default:
		c.orphans.put(id, o, time.Now())
		close(c.kept)
		c.kept = make(chan struct{})
	}
	evicted = c.orphans.evicted - evicted
	c.mu.Unlock()
	for _, pc := range calls {
		pc.outcome <- o
	}
	switch {
	case duplicate:
		c.connector.logger.Debug("amqp: dropped a duplicate reply", "call_id", id)
	case calls == nil:
		c.connector.logger.Debug("amqp: kept a reply for a call not in flight", "call_id", id)
		c.connector.emit(transport.EventDroppedReply, reasonNoCall)
	}
	if evicted > 0 {
		c.connector.logger.Warn("amqp: dropped the oldest kept replies: more replies for calls not in flight than ClientConfig.OrphanReplies", "dropped", evicted, "limit", c.cfg.OrphanReplies)
	}
}

// status hands a status frame to the OnStatus of the calls with its id.
func (c *Client) status(id string, frame []byte) {
	c.mu.Lock()
	calls := slices.Clone(c.pending[id])
	c.mu.Unlock()
	for _, pc := range calls {
		if pc.onStatus != nil {
			pc.onStatus(frame)
		}
	}
}

// confirmed records the broker's answer to a request published on s.
func (c *Client) confirmed(s *clientSession, pc *call, o confirmOutcome) {
	switch o {
	case confirmAcked:
		c.mu.Lock()
		pc.confirmed = true
		c.mu.Unlock()
		if pc.sent != nil {
			pc.sent()
		}
	case confirmNacked:
		// The refusal replaced s's publishing channel (see pubChannel): the
		// request is published again on the fresh one, after a back-off.
		c.mu.Lock()
		pc.nacks++
		n := pc.nacks
		c.mu.Unlock()
		if n > maxRequestNacks {
			c.finish(pc, outcome{err: status.Errorf(status.Unavailable, "amqp: the broker refused request %s for service %q %d times (basic.nack)", pc.id, c.cfg.Service, n)})
			return
		}
		time.AfterFunc(republishBackoff(n), func() { c.republish(s, pc) })
	case confirmLost:
		// Lost with a replaced channel of a live session: published again
		// at once. Lost with the connection: published again on the next
		// one, by attach.
		if s.pub.alive() {
			c.republish(s, pc)
		}
	}
}

// republish queues again on s a request published on s that the broker
// did not take, unless the call ended, the request was confirmed since, or s
// is no longer the current session (attach of the next one queued it).
func (c *Client) republish(s *clientSession, pc *call) {
	c.mu.Lock()
	if c.sess != s || pc.sentOn != s || pc.confirmed || !c.isPendingLocked(pc) {
		c.mu.Unlock()
		return
	}
	pc.sentOn = nil
	s.queue = append(s.queue, pc)
	c.mu.Unlock()
	s.signal()
}

// openFirst opens the first session. A client restarted right after its
// previous process died may find the broker still cleaning up the old
// connection and its exclusive status queue: that is waited for, briefly.
func (c *Client) openFirst(ctx context.Context) (session, error) {
	deadline := time.Now().Add(nameReleaseWait)
	for {
		s, err := c.open(ctx)
		var inUse *nameInUseError
		if err == nil || !errors.As(err, &inUse) || time.Now().After(deadline) {
			return s, err
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, status.FromContextError(ctx.Err())
		}
	}
}

// open dials and sets up a session.
func (c *Client) open(ctx context.Context) (session, error) {
	return openSession(ctx, c.connector, c.setup)
}

// clientSession is one connection: a confirm-mode channel publishing
// requests, a channel consuming replies, and one consuming errors and
// statuses. Requests are published by its writer goroutine (write), from
// queue.
type clientSession struct {
	c        *Client
	conn     *amqp091.Connection
	pub      *pubChannel
	results  <-chan amqp091.Delivery
	errs     <-chan amqp091.Delivery
	statuses <-chan amqp091.Delivery
	returns  chan amqp091.Return // from every publishing channel of the session
	blocks   <-chan amqp091.Blocking
	closed   [3]<-chan *amqp091.Error // connection, result and auxiliary channels (the publishing side reports through pub.done)
	stop     chan struct{}            // closed when run returns

	queue   []*call       // requests to publish, oldest first; guarded by Client.mu
	wake    chan struct{} // buffered 1: the writer has work, or blocked changed
	blocked atomic.Bool   // the broker reported the connection blocked
}

func (c *Client) setup(conn *amqp091.Connection) (*clientSession, error) {
	s := &clientSession{c: c, conn: conn, wake: make(chan struct{}, 1), returns: make(chan amqp091.Return, 64), stop: make(chan struct{})}
	// Buffered: the library waits at most a few seconds for a listener.
	s.blocks = conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	pubCh, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	if err := declareClient(pubCh, c.cfg); err != nil {
		return nil, err
	}
	s.forwardReturns(pubCh)
	if s.pub, err = newPubChannel(conn, pubCh, func(ch *amqp091.Channel) error {
		s.forwardReturns(ch)
		return nil
	}, c.connector.logger); err != nil {
		return nil, channelError(err)
	}
	// Replies have a channel of their own, so that they can be acknowledged
	// in batches (see ackBatch); errors and statuses share another.
	resCh, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	if err := resCh.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return nil, channelError(err)
	}
	if s.results, err = resCh.Consume(ResultQueue(c.cfg.ClientName), "", false, false, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	auxCh, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	if err := auxCh.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return nil, channelError(err)
	}
	if s.errs, err = auxCh.Consume(ErrorQueue(c.cfg.ClientName), "", false, false, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	// Statuses are best-effort: acknowledged on delivery.
	if s.statuses, err = auxCh.Consume(StatusQueue(c.cfg.ClientName), "", true, true, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	s.closed = [3]<-chan *amqp091.Error{notifyClose(conn), notifyClose(resCh), notifyClose(auxCh)}
	return s, nil
}

// forwardReturns passes the requests ch returns (unroutable) to the
// session's returns, until ch closes. The library waits for a listener, so
// once the session stopped reading they are drained.
func (s *clientSession) forwardReturns(ch *amqp091.Channel) {
	src := ch.NotifyReturn(make(chan amqp091.Return, 64))
	go func() {
		for r := range src {
			select {
			case s.returns <- r:
			case <-s.stop:
				for range src {
				}
				return
			}
		}
	}()
}

// run attaches the session, then dispatches replies, errors, statuses and
// returned requests until the connection fails or ctx ends. The end of ctx
// (Close) closes the connection at once, from another goroutine: a write
// stuck on a broker that stopped reading ends with it.
func (s *clientSession) run(ctx context.Context) error {
	var workers sync.WaitGroup
	quit := make(chan struct{})
	s.pub.start()
	workers.Go(s.watchBlocked)
	workers.Go(func() { s.write(quit) })
	var closer sync.WaitGroup
	closer.Add(1)
	stopCloser := context.AfterFunc(ctx, func() {
		defer closer.Done()
		s.closeConn()
	})
	defer func() {
		s.c.detach(s)
		close(quit)
		if stopCloser() {
			closer.Done()
		}
		s.closeConn()
		closer.Wait()
		s.pub.close()
		close(s.stop)
		workers.Wait()
	}()
	s.c.attach(s)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-s.closed[0]:
			return closedError("connection", e)
		case err := <-s.pub.done():
			return err
		case e := <-s.closed[1]:
			return closedError("result channel", e)
		case e := <-s.closed[2]:
			return closedError("error and status channel", e)
		case d, ok := <-s.results:
			if !ok {
				return closedError("result consumer", nil)
			}
			s.ackBatch(s.reply(d))
		case d, ok := <-s.errs:
			if !ok {
				return closedError("error consumer", nil)
			}
			s.c.deliver(d.CorrelationId, outcome{err: errorFromQueue(d)})
			_ = d.Ack(false)
		case d, ok := <-s.statuses:
			if !ok {
				return closedError("status consumer", nil)
			}
			s.c.status(d.CorrelationId, d.Body)
		case r := <-s.returns:
			s.c.returned(r)
			// A refusal too: the channel may hold a stale view of the queue.
			s.pub.refused(s.pub.current(), "basic.return")
		}
	}
}

// maxAckBatch bounds the replies acknowledged at once.
const maxAckBatch = 64

// reply delivers a reply to its call.
func (s *clientSession) reply(d amqp091.Delivery) amqp091.Delivery {
	// Statuses sent before the reply usually arrived before it.
	s.drainStatuses()
	o := outcome{frame: d.Body}
	if limit := s.c.cfg.MaxFrameSize; limit > 0 && len(d.Body) > limit {
		o = outcome{err: status.Errorf(status.ResourceExhausted, "amqp: reply frame of %d bytes exceeds the limit of %d bytes", len(d.Body), limit)}
	}
	s.c.deliver(d.CorrelationId, o)
	return d
}

// ackBatch delivers the replies already waiting behind last too, then
// acknowledges them all with one frame (multiple): fewer frames for the
// broker, and no reply waits for another. The result consumer is alone on
// its channel, so "multiple" covers exactly the replies delivered here. A
// failed acknowledgement means a lost connection: the replies come again and
// are dropped as duplicates.
func (s *clientSession) ackBatch(last amqp091.Delivery) {
batch:
	for range maxAckBatch - 1 {
		select {
		case d, ok := <-s.results:
			if !ok {
				break batch // run sees the closed consumer next
			}
			last = s.reply(d)
		default:
			break batch
		}
	}
	_ = last.Ack(true)
}

func (s *clientSession) drainStatuses() {
	for {
		select {
		case d, ok := <-s.statuses:
			if !ok {
				return
			}
			s.c.status(d.CorrelationId, d.Body)
		default:
			return
		}
	}
}

// closeConn closes the session's connection; without waiting for the
// broker's answer when the broker said it stopped reading.
func (s *clientSession) closeConn() {
	wait := closeWait
	if s.blocked.Load() {
		wait = 0
	}
	closeConnWithin(s.conn, wait)
}

// attach makes s the session calls are published on, and queues on it every
// request the broker has not confirmed yet.
func (c *Client) attach(s *clientSession) {
	c.mu.Lock()
	c.sess = s
	resend := 0
	for _, calls := range c.pending {
		for _, pc := range calls {
			if !pc.confirmed {
				s.queue = append(s.queue, pc)
				if pc.sentOn != nil {
					resend++
				}
			}
		}
	}
	c.mu.Unlock()
	s.signal()
	if resend > 0 {
		c.connector.logger.Info("amqp: publishing unconfirmed requests again", "count", resend)
		for range resend {
			c.connector.emit(transport.EventResend, reasonUnconfirmed)
		}
	}
}

// signal wakes the writer up.
func (s *clientSession) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// write publishes the queued cancels and requests, one at a time, cancels
// first, until quit is closed; it writes nothing while the broker reports the
// connection blocked.
func (s *clientSession) write(quit <-chan struct{}) {
	for {
		select {
		case <-quit:
			return
		case <-s.wake:
		}
		for !s.blocked.Load() {
			if id, ok := s.nextCancel(); ok {
				s.sendCancel(id)
				continue
			}
			pc := s.next()
			if pc == nil {
				break
			}
			s.send(pc)
		}
	}
}

// next takes the oldest queued request; nil when none is left.
func (s *clientSession) next() *call {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	pc := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return pc
}

// watchBlocked follows connection.blocked and connection.unblocked until the
// connection closes; the writer resumes on unblocked.
func (s *clientSession) watchBlocked() {
	for b := range s.blocks {
		s.blocked.Store(b.Active)
		if b.Active {
			s.c.connector.logger.Warn("amqp: the broker blocked the connection: requests wait until it is unblocked", "reason", b.Reason)
		} else {
			s.c.connector.logger.Info("amqp: the broker unblocked the connection")
		}
		s.signal()
	}
}

func (c *Client) detach(s *clientSession) {
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	c.mu.Unlock()
}

// send publishes pc's request on s, unless s is no longer current, the
// request was already published on s or confirmed, or the call has ended.
func (s *clientSession) send(pc *call) {
	c := s.c
	c.mu.Lock()
	if c.sess != s || pc.sentOn == s || pc.confirmed || !c.isPendingLocked(pc) {
		c.mu.Unlock()
		return
	}
	pc.sentOn = s
	c.mu.Unlock()

	now := time.Now()
	if !pc.deadline.IsZero() && !now.Before(pc.deadline) {
		return // the caller's ctx ends now: nothing to send
	}
	msg := amqp091.Publishing{
		ContentType:   contentProto,
		Type:          typeRequest,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: pc.id,
		ReplyTo:       ResultQueue(c.cfg.ClientName),
		Expiration:    expiration(pc.deadline, now),
		Timestamp:     now,
		UserId:        c.userID,
		Body:          pc.frame,
	}
	if !pc.deadline.IsZero() {
		msg.Headers = amqp091.Table{headerDeadline: pc.deadline.UnixMilli()}
	}
	// mandatory: a request no queue takes comes back (see returned) instead
	// of vanishing. A failed publish means a lost connection (attach
	// publishes the request again on the next one) or a publishing channel
	// replaced meanwhile (published again on the fresh one).
	if err := s.pub.publish(RequestExchange, c.cfg.Service, true, msg, func(o confirmOutcome) { c.confirmed(s, pc, o) }); err != nil && s.pub.alive() {
		c.republish(s, pc)
	}
}

// returned fails the calls with the id of a request no queue took: the
// others with that id would not be routed either.
func (c *Client) returned(r amqp091.Return) {
	c.mu.Lock()
	calls := slices.Clone(c.pending[r.CorrelationId])
	c.mu.Unlock()
	for _, pc := range calls {
		c.finish(pc, outcome{err: status.Errorf(status.Unavailable, "amqp: request %s was not routed: exchange %s has no queue bound for service %q (%d %s)",
			pc.id, r.Exchange, r.RoutingKey, r.ReplyCode, r.ReplyText)})
	}
}

// errorFromQueue turns a plain-text error-queue message into an error with
// the code of its bankrpc-code header (Internal without one).
func errorFromQueue(d amqp091.Delivery) error {
	code := status.Internal
	if n, ok := intHeader(d.Headers, headerCode); ok && n > 0 && n <= 1<<31-1 {
		code = status.Code(n)
	}
	return status.NewError(code, string(d.Body))
}

// channelError describes a failure to open or set up a channel.
func channelError(err error) error {
	return status.Errorf(status.Unavailable, "amqp: set up channel: %v", err)
}
