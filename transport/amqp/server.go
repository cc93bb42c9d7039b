package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/ratelog"
	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Server is the server half of the AMQP backend: a transport.ServerTransport
// that consumes the service's durable queue with manual acknowledgements and
// hands each request to the handler, up to ServerConfig.Concurrency at once.
// A request is acknowledged only after its reply (or its error-queue message)
// has been published and confirmed by the broker; a request whose reply could
// not be confirmed stays unacknowledged and is delivered again, to this
// server after it reconnects or to another replica. A request the handler
// did not serve (transport.ErrNotServed: the server is shutting down) is
// given back to the queue at once (basic.nack with requeue).
//
// Each connection also consumes a queue of its own bound to CancelExchange,
// through which the cancel messages of the service's clients reach every
// replica; the server hands them to the handler (Handler.CancelCall).
//
// Several Servers, in one process or in many, may serve the same service:
// they share its queue, and the broker spreads requests across them (or,
// with ServerConfig.SingleActiveConsumer, sends them all to one).
//
// A Server is safe for concurrent use. Serve may be called once. Shutdown
// and Close are idempotent and may be called from any goroutine, before,
// during or after Serve; after either, Serve returns nil.
type Server struct {
	cfg       ServerConfig
	connector *connector
	logger    *slog.Logger
	user      string // the broker user of the URL: the user-id of the server's own copies
	oversize  oversizeGuard
	refused   *ratelog.Logger // what the server refuses, rate-limited: a client can publish it as fast as the broker takes it

	mu      sync.Mutex // guards serving, and orders it with drain and kill
	serving bool

	replies *replyCache // the replies this server published lately, by call id

	stopping context.Context    // ends at Shutdown or Close: take no more requests
	drain    context.CancelFunc // ends stopping
	killed   context.Context    // ends at Close, or when Shutdown's ctx ends: stop at once
	kill     context.CancelFunc // ends killed (and stopping)
	served   chan struct{}      // closed when Serve returns
}

var _ transport.ServerTransport = (*Server)(nil)

// Listen connects to the broker at url and declares the service's topology:
// the request and cancel exchanges, the service queue bound to the first
// with the service name as routing key, and the dead-letter queue. Clients
// can Dial the service as soon as Listen returned, and their requests wait
// in the queue until Serve runs. The connection is closed again; Serve opens
// its own. The URL may carry the parameters service and queue of an address
// (see the package documentation), which take precedence over cfg's Service
// and QueueType.
func Listen(url string, cfg ServerConfig) (*Server, error) {
	return listenContext(context.Background(), url, cfg)
}

func listenContext(ctx context.Context, url string, cfg ServerConfig) (*Server, error) {
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
	logger := cfg.Logger.With("service", cfg.Service)
	s := &Server{
		cfg:       cfg,
		connector: newConnector(brokers, cfg.ConnectionName, cfg.Dial, cfg.ReconnectMin, cfg.ReconnectMax, logger),
		logger:    logger,
		refused:   ratelog.New(logger, ratelog.DefaultBurst, ratelog.DefaultInterval),
		user:      user,
		served:    make(chan struct{}),
		replies:   newReplyCache(replyCacheEntries, replyCacheBytes, replyCacheAge),
	}
	s.connector.events = cfg.Events
	conn, err := s.connector.connect(ctx, func(conn *amqp091.Connection) error {
		ch, err := conn.Channel()
		if err != nil {
			return channelError(err)
		}
		return declareService(ch, cfg)
	})
	if err != nil {
		return nil, err
	}
	closeConn(conn)
	s.killed, s.kill = context.WithCancel(context.Background())
	s.stopping, s.drain = context.WithCancel(s.killed)
	return s, nil
}

// Serve consumes requests and cancels and hands them to h until Shutdown or
// Close, reconnecting, with backoff, whenever the connection is lost; then
// it returns nil. After Shutdown it returns once the requests in flight are
// answered (their replies confirmed and the requests acknowledged); after
// Close at once, without waiting for the handlers still running.
func (s *Server) Serve(h transport.Handler) error {
	s.mu.Lock()
	if s.serving || s.stopping.Err() != nil {
		s.mu.Unlock()
		return status.Errorf(status.FailedPrecondition, "amqp: Serve of service %q called twice or after Shutdown or Close", s.cfg.Service)
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.served)

	l := &serveLoop{
		s:       s,
		h:       h,
		sem:     make(chan struct{}, s.cfg.Concurrency),
		paused:  make(chan struct{}),
		running: make(map[string]runningCall),
	}
	s.connector.supervise(s.stopping, nil, l.open)
	// After Shutdown, handlers of a connection lost earlier may still run.
	select {
	case <-l.handlers.idle():
	case <-s.killed.Done():
	}
	return nil
}

// Shutdown stops the server gracefully: it cancels the consumer, so that the
// broker sends no more requests (those already on their way are given back
// unhandled), waits until every request in flight has been answered (its
// reply confirmed and the request acknowledged, or given back when the
// handler did not serve it), and closes the connection. When ctx ends first
// it closes at once, as Close, and returns ctx's error: the requests not
// answered go back to the queue, nothing is lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.drain()
	serving := s.serving
	s.mu.Unlock()
	if !serving {
		return s.Close()
	}
	select {
	case <-s.served:
		return s.Close()
	case <-ctx.Done():
		_ = s.Close()
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the connection, so that the
// broker delivers the unacknowledged requests again (to another replica, or
// to the next server), and returns once the server's own goroutines have
// ended. It does not wait for handlers still running: their replies are
// dropped.
func (s *Server) Close() error {
	s.mu.Lock()
	s.kill()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.served
	}
	return nil
}

// serveLoop is the state of one Serve call, shared by its sessions.
type serveLoop struct {
	s        *Server
	h        transport.Handler
	sem      chan struct{} // one token per handler running
	handlers inflight      // every handler goroutine, across sessions

	// paused is closed when h first answers transport.ErrNotServed: it is
	// shutting down, so the sessions stop consuming requests.
	paused    chan struct{}
	pauseOnce sync.Once

	runMu   sync.Mutex
	running map[string]runningCall // by call id: the calls handed to h and not returned yet
}

// runningCall is a call id some handler goroutines run, and its caller.
type runningCall struct {
	caller string // the validated identity of the first request's caller
	n      int
}

// track records that the call id of a request by caller is handed to the
// handler, until the returned func is called.
func (l *serveLoop) track(id, caller string) (untrack func()) {
	l.runMu.Lock()
	rc, ok := l.running[id]
	if !ok {
		rc.caller = caller
	}
	rc.n++
	l.running[id] = rc
	l.runMu.Unlock()
	return func() {
		l.runMu.Lock()
		defer l.runMu.Unlock()
		rc := l.running[id]
		if rc.n--; rc.n == 0 {
			delete(l.running, id)
		} else {
			l.running[id] = rc
		}
	}
}

// open dials and sets up a session.
func (l *serveLoop) open(ctx context.Context) (session, error) {
	return openSession(ctx, l.s.connector, l.setup)
}

// serverSession is one connection: a channel consuming the service queue
// (requests are acknowledged on it) and the connection's cancel queue, and a
// confirm-mode channel publishing replies, errors, statuses and dead
// letters.
type serverSession struct {
	l          *serveLoop
	conn       *amqp091.Connection
	pub        *pubChannel
	consumer   *amqp091.Channel
	acks       *batchAcker // the Acknowledger of the requests delivered on consumer
	tag        string
	deliveries <-chan amqp091.Delivery
	cancels    <-chan amqp091.Delivery
	closed     [2]<-chan *amqp091.Error // connection, consuming channel (the publishing side reports through pub.done)
	handlers   inflight                 // this session's handlers
	stopped    chan struct{}            // closed once the session consumes no more requests
	stopOnce   sync.Once

	// acking holds, by call id, the originals of counted copies (see
	// overLimit) not acknowledged yet; a copy delivered here waits for it.
	acking sync.Map // string -> chan struct{}
}

func (l *serveLoop) setup(conn *amqp091.Connection) (*serverSession, error) {
	cfg := l.s.cfg
	id := randomHex()
	ss := &serverSession{l: l, conn: conn, tag: "bankrpc-server-" + id, stopped: make(chan struct{})}
	pubCh, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	// The topology is declared again on every connection: a broker restarted
	// without its data, or an operator's deletion, is repaired.
	if err := declareService(pubCh, cfg); err != nil {
		return nil, err
	}
	cancelQueue, err := declareCancelQueue(pubCh, cfg.Service, id)
	if err != nil {
		return nil, err
	}
	if ss.pub, err = newPubChannel(conn, pubCh, nil, l.s.logger); err != nil {
		return nil, channelError(err)
	}
	if ss.consumer, err = conn.Channel(); err != nil {
		return nil, channelError(err)
	}
	if err := ss.consumer.Qos(cfg.Prefetch, 0, false); err != nil {
		return nil, channelError(err)
	}
	ss.acks = newBatchAcker(ss.consumer)
	// Cancels are consumed first, so that they flow before any request does;
	// without acknowledgements, so unbounded by the prefetch.
	if ss.cancels, err = ss.consumer.Consume(cancelQueue, ss.tag+".cancels", true, true, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	if ss.deliveries, err = ss.consumer.Consume(ServiceQueue(cfg.Service), ss.tag, false, false, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	ss.closed = [2]<-chan *amqp091.Error{notifyClose(conn), notifyClose(ss.consumer)}
	return ss, nil
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// run hands requests to handlers and cancels to the handler until the
// connection fails or the server is closed. When ctx ends (Shutdown) it
// stops consuming (see stopConsuming) and returns once this session's
// handlers are answered. The server's Close closes the connection at once,
// from another goroutine, even while run waits for the broker.
func (ss *serverSession) run(ctx context.Context) error {
	killed := ss.l.s.killed
	ss.pub.start()
	go ss.acks.run()
	var closer sync.WaitGroup
	closer.Add(1)
	stopCloser := context.AfterFunc(killed, func() {
		defer closer.Done()
		closeConn(ss.conn)
	})
	defer func() {
		ss.acks.close() // the acks made ready go out before the connection closes
		if stopCloser() {
			closer.Done()
		}
		closeConn(ss.conn)
		closer.Wait()
		ss.markStopped()
		ss.pub.close()
	}()
	var (
		deliveries = ss.deliveries
		consuming  = true
		stopping   = ctx.Done()      // nil once draining
		paused     = ss.l.paused     // nil once consuming stopped
		held       *amqp091.Delivery // a request waiting for a free handler
		handled    <-chan struct{}   // once draining: closed when this session's handlers are done
		idle       bool              // once draining: they are
	)
	stopConsuming := func() {
		if consuming {
			consuming, paused = false, nil
			ss.stopConsuming(held)
			held = nil
		}
	}
	for {
		in, slot := deliveries, chan<- struct{}(nil)
		if held != nil {
			in, slot = nil, ss.l.sem
		}
		select {
		case <-killed.Done():
			return nil
		case <-paused:
			stopConsuming()
		case <-stopping:
			stopping = nil
			stopConsuming()
			handled = ss.handlers.idle()
		case <-handled:
			handled, idle = nil, true
			if deliveries == nil {
				return nil
			}
		case d, ok := <-in:
			if ok {
				ss.acks.track(&d)
			}
			switch {
			case !ok && !consuming:
				deliveries = nil
				if idle {
					return nil
				}
			case !ok:
				return closedError("consumer (canceled by the broker)", nil)
			case !consuming:
				_ = d.Nack(false, true) // not taken: another server runs it
			case ss.dropOversized(d):
				// Above what the broker should admit: refused at once, without a handler slot.
			default:
				select {
				case ss.l.sem <- struct{}{}:
					ss.start(d)
				default:
					held = &d
				}
			}
		case slot <- struct{}{}:
			ss.start(*held)
			held = nil
		case d, ok := <-ss.cancels:
			if !ok {
				return closedError("cancel consumer", nil)
			}
			ss.cancel(d)
		case e := <-ss.closed[0]:
			return closedError("connection", e)
		case err := <-ss.pub.done():
			return err
		case e := <-ss.closed[1]:
			return closedError("consuming channel", e)
		}
	}
}

// stopConsuming cancels the request consumer and gives held, a request not
// handed to a handler yet, back to the queue. After basic.cancel the
// deliveries already on their way still arrive (run gives them back too),
// then the channel of deliveries closes. Cancels are still consumed.
func (ss *serverSession) stopConsuming(held *amqp091.Delivery) {
	_ = ss.consumer.Cancel(ss.tag, false)
	if held != nil {
		_ = held.Nack(false, true)
	}
	ss.markStopped()
}

// markStopped records that the session no longer consumes requests: a
// request given back now goes to another consumer, not to this one again.
func (ss *serverSession) markStopped() {
	ss.stopOnce.Do(func() { close(ss.stopped) })
}

// giveBack returns d, which the handler did not serve, to the queue. The
// handler stopped serving, so the server stops consuming first: given back
// while this server still consumed, d would come straight back to it, and
// again, each time counted as a failed delivery.
func (ss *serverSession) giveBack(d amqp091.Delivery) {
	ss.l.pauseOnce.Do(func() { close(ss.l.paused) })
	select {
	case <-ss.stopped:
	case <-ss.l.s.killed.Done():
		return // the connection is closed: the broker gives d back
	}
	_ = d.Nack(false, true) // a failed nack means a lost connection: d comes again
}

// start runs d's handler on its own goroutine; the caller took a slot of
// the semaphore for it.
func (ss *serverSession) start(d amqp091.Delivery) {
	ss.handlers.add()
	ss.l.handlers.add()
	go func() {
		defer func() {
			<-ss.l.sem
			ss.handlers.done()
			ss.l.handlers.done()
		}()
		ss.handle(d)
	}()
}

// handle runs the handler on d and answers by its result (see
// transport.Handler): a reply is published, then d acknowledged once the
// reply is confirmed; a call not served is given back to the queue; a
// refused frame gets an error-queue message. After Close nothing is sent:
// the broker delivers d again.
func (ss *serverSession) handle(d amqp091.Delivery) {
	if acked, ok := ss.acking.Load(d.CorrelationId); ok {
		<-acked.(chan struct{})
	}
	if isCancel(d.Body) {
		// A cancel sent into the service queue: as one from the cancel queue.
		ss.cancel(d)
		_ = d.Ack(false)
		return
	}
	if d.Redelivered {
		ss.l.s.connector.emit(transport.EventRedelivery, "")
	}
	if ss.overLimit(d) {
		return
	}
	s := ss.l.s
	caller := identity(d, s.user)
	if s.cfg.OwnQueuesOnly && !ownReplyQueue(caller, d.ReplyTo) {
		s.refused.Log(context.Background(), slog.LevelWarn, "amqp.reply_to", "amqp: refused a request whose reply_to is not its caller's", "call_id", d.CorrelationId, "user_id", caller, "reply_to", d.ReplyTo)
		ss.l.s.connector.emit(transport.EventRefusedFrame, reasonForeignReplyTo)
		ss.deadLetter(d, fmt.Sprintf("reply_to %q is not a result queue of user-id %q", d.ReplyTo, caller), failedDeliveries(d, s.user))
		return
	}
	if limit := s.cfg.MaxFrameSize; limit > 0 && len(d.Body) > limit {
		s.connector.emit(transport.EventRefusedFrame, reasonOversized)
		ss.refuse(d, status.Errorf(status.ResourceExhausted, "amqp: request frame of %d bytes exceeds the limit of %d bytes", len(d.Body), limit))
		return
	}
	ctx := transport.NewPeerContext(context.Background(), transport.Peer{Transport: "amqp", Addr: d.ReplyTo, Identity: caller})
	ctx = transport.NewStatusContext(ctx, ss.statusSink(d))
	untrack := ss.l.track(d.CorrelationId, caller)
	reply, err := ss.l.h.HandleFrame(ctx, d.Body)
	untrack()
	if s.killed.Err() != nil {
		return // the connection is closed: the broker gives d back
	}
	switch {
	case errors.Is(err, transport.ErrNotServed):
		ss.giveBack(d)
	case err != nil:
		ss.refuse(d, err)
	case reply == nil:
		_ = d.Ack(false)
	case d.ReplyTo == "":
		s.refused.Log(context.Background(), slog.LevelWarn, "amqp.no_reply_to", "amqp: request has no reply_to: its reply is dropped", "call_id", d.CorrelationId)
		_ = d.Ack(false)
	default:
		if ss.publishThenAck(d, d.ReplyTo, amqp091.Publishing{
			ContentType:   contentProto,
			Type:          typeResult,
			DeliveryMode:  amqp091.Persistent,
			CorrelationId: d.CorrelationId,
			Timestamp:     time.Now(),
			Body:          reply,
		}) {
			// The caller can get it: kept in case d comes back at its
			// delivery limit (its acknowledgement lost, again and again).
			s.replies.put(d.CorrelationId, d.ReplyTo, reply)
		}
	}
}

// publishThenAck publishes msg to queue through the default exchange and
// acknowledges d once the broker confirmed msg. A refused msg (basic.nack:
// on a cluster, typically a channel's stale view of a quorum queue that lost
// its leader) is published again, from the message in hand, with back-off,
// on the session's current publishing channel, which the refusal replaced
// (see pubChannel); so is a msg lost with a replaced channel. d stays
// unacknowledged meanwhile: it is not given back to the queue, so it is
// neither run again nor counted toward the delivery limit. When the
// connection is lost, d is left to the broker, which delivers it again. It
// reports whether the broker confirmed msg.
func (ss *serverSession) publishThenAck(d amqp091.Delivery, queue string, msg amqp091.Publishing) bool {
	killed := ss.l.s.killed.Done()
	for n := 1; ; n++ {
		o := ss.pub.publishWait("", queue, false, msg)
		if o == confirmAcked {
			_ = d.Ack(false) // a failed ack means a lost connection: d comes again
			return true
		}
		if !ss.pub.alive() {
			return false // d was on the same connection: the broker requeues it
		}
		if o == confirmNacked {
			ss.l.s.logger.Debug("amqp: the broker refused a message: publishing it again", "call_id", d.CorrelationId, "queue", queue, "attempt", n)
		}
		t := time.NewTimer(republishBackoff(n))
		select {
		case <-t.C:
		case <-killed:
			t.Stop()
			return false
		}
	}
}

// refuse answers a request the handler could not decode: its error goes, as
// plain text, to the caller's error queue; without one (no reply-to, or one
// that does not end in .results), the request is dead-lettered with why.
func (ss *serverSession) refuse(d amqp091.Delivery, err error) {
	text := status.MessageOf(err)
	s := ss.l.s
	s.refused.Log(context.Background(), slog.LevelWarn, "amqp.refused", "amqp: refused a request", "call_id", d.CorrelationId, "reply_to", d.ReplyTo, "error", text)
	errorQueue, _, ok := companionQueues(d.ReplyTo)
	if !ok {
		ss.deadLetter(d, noErrorQueue(d.ReplyTo)+": "+text, failedDeliveries(d, s.user))
		return
	}
	ss.publishThenAck(d, errorQueue, errorMessage(d.CorrelationId, status.CodeOf(err), text))
}

// noErrorQueue says why replyTo names no error queue.
func noErrorQueue(replyTo string) string {
	if replyTo == "" {
		return "refused and the caller named no reply queue"
	}
	return fmt.Sprintf("refused and the caller's reply_to %q does not end in %q, so it names no error queue", replyTo, resultSuffix)
}

// ownReplyQueue reports whether replyTo is the result queue of a client name
// that is userID or starts with userID and a dot.
func ownReplyQueue(userID, replyTo string) bool {
	rest, ok := strings.CutPrefix(replyTo, clientQueuePrefix)
	if !ok || userID == "" {
		return false
	}
	client, ok := strings.CutSuffix(rest, resultSuffix)
	return ok && (client == userID || strings.HasPrefix(client, userID+"."))
}

func errorMessage(callID string, code status.Code, text string) amqp091.Publishing {
	return amqp091.Publishing{
		ContentType:   contentText,
		Type:          typeError,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: callID,
		Timestamp:     time.Now(),
		Headers:       amqp091.Table{headerCode: int32(code)},
		Body:          []byte(text),
	}
}

// deadLetter copies d into the dead-letter queue, with why and the failed
// deliveries counted (the header is left out when 0), and acknowledges it
// once the copy is confirmed.
func (ss *serverSession) deadLetter(d amqp091.Delivery, why string, failed int64) {
	headers := amqp091.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[headerDeadReason] = why
	delete(headers, headerFailed)
	if failed > 0 {
		headers[headerFailed] = failed
	}
	if caller := identity(d, ss.l.s.user); caller != "" {
		headers[headerUserID] = caller
	} else {
		delete(headers, headerUserID)
	}
	ss.publishThenAck(d, DeadLetterQueue(ss.l.s.cfg.Service), amqp091.Publishing{
		Headers:       headers,
		ContentType:   d.ContentType,
		Type:          d.Type,
		AppId:         d.AppId,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: d.CorrelationId,
		MessageId:     d.MessageId,
		ReplyTo:       d.ReplyTo,
		Timestamp:     d.Timestamp,
		Body:          d.Body,
	})
}

// statusSink publishes a handler's statuses to the caller's status queue,
// best-effort: transient, unconfirmed, dropped when the queue does not exist
// or the connection is gone.
func (ss *serverSession) statusSink(d amqp091.Delivery) transport.StatusSink {
	_, statusQueue, ok := companionQueues(d.ReplyTo)
	return func(_ context.Context, frame []byte) error {
		if !ok {
			return status.Errorf(status.FailedPrecondition, "amqp: call %s named no status queue (reply_to %q)", d.CorrelationId, d.ReplyTo)
		}
		_ = ss.pub.publish("", statusQueue, false, amqp091.Publishing{
			ContentType:   contentProto,
			Type:          typeStatus,
			DeliveryMode:  amqp091.Transient,
			CorrelationId: d.CorrelationId,
			Body:          frame,
		}, nil)
		return nil
	}
}
