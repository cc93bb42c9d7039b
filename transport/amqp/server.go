package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// Server is the server half of the AMQP backend: a transport.ServerTransport
// that consumes the service's durable queue with manual acknowledgements and
// runs the handler on each request, up to ServerConfig.Concurrency at once.
// A request is acknowledged only after its reply (or its error-queue message)
// has been published and confirmed by the broker; a request whose reply could
// not be confirmed stays unacknowledged and is delivered again, to this
// server after it reconnects or to another replica.
//
// Several Servers, in one process or in many, may serve the same service:
// they share its queue, and the broker spreads requests across them (or,
// with ServerConfig.SingleActiveConsumer, sends them all to one).
//
// A Server is safe for concurrent use. Serve may be called once. Close is
// idempotent, may be called from any goroutine, and makes Serve stop as if
// its ctx had ended.
type Server struct {
	cfg       ServerConfig
	connector *connector
	logger    *slog.Logger
	user      string // the broker user of the URL: the user-id of the server's own copies

	mu      sync.Mutex // guards serving, closed
	serving bool
	closed  bool

	stop      chan struct{} // closed by Close
	closeOnce sync.Once
}

var _ transport.ServerTransport = (*Server)(nil)

// Listen connects to the broker at url and declares the service's topology:
// the request exchange, the service queue bound to it with the service name
// as routing key, and the dead-letter queue. Clients can Dial the service as
// soon as Listen returned, and their requests wait in the queue until Serve
// runs. The connection is closed again; Serve opens its own.
func Listen(url string, cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	uri, err := amqp091.ParseURI(url)
	if err != nil {
		return nil, status.Errorf(status.InvalidArgument, "amqp: broker URL %s: %v", redactURL(url), err)
	}
	logger := cfg.Logger.With("service", cfg.Service)
	s := &Server{
		cfg:       cfg,
		connector: newConnector(url, cfg.ConnectionName, cfg.Dial, cfg.ReconnectMin, cfg.ReconnectMax, logger),
		logger:    logger,
		user:      uri.Username,
		stop:      make(chan struct{}),
	}
	conn, err := s.connector.dial()
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	ch, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	if err := declareService(ch, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve consumes requests and runs h on each until ctx ends or Close is
// called. It reconnects, with backoff, whenever the connection is lost. On
// stopping it cancels its consumer, runs the requests the broker had already
// delivered, waits until their replies are confirmed and acknowledged, and
// returns nil. Handlers run with a ctx that carries ctx's values but is not
// canceled when Serve stops: a call in progress finishes.
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
	if s.serving || s.closed {
		s.mu.Unlock()
		return status.Errorf(status.FailedPrecondition, "amqp: Serve of service %q called twice or after Close", s.cfg.Service)
	}
	s.serving = true
	s.mu.Unlock()

	runCtx, cancel := context.WithCancel(context.Background())
	var watch sync.WaitGroup
	watch.Go(func() {
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-runCtx.Done():
		}
		cancel()
	})
	l := &serveLoop{
		s:    s,
		h:    h,
		base: context.WithoutCancel(ctx),
		sem:  make(chan struct{}, s.cfg.Concurrency),
	}
	s.connector.supervise(runCtx, nil, l.open)
	cancel()
	watch.Wait()
	l.handlers.Wait() // handlers of sessions lost earlier may still run
	return nil
}

// Close makes Serve stop. It does not wait for Serve to return.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	return nil
}

// serveLoop is the state of one Serve call, shared by its sessions.
type serveLoop struct {
	s        *Server
	h        transport.Handler
	base     context.Context
	sem      chan struct{}  // one token per handler running
	handlers sync.WaitGroup // every handler goroutine, across sessions
}

// open dials and sets up a session.
func (l *serveLoop) open() (session, error) {
	return openSession(l.s.connector, l.setup)
}

// serverSession is one connection: a channel consuming the service queue
// (requests are acknowledged on it) and a confirm-mode channel publishing
// replies, errors, statuses and dead letters.
type serverSession struct {
	l          *serveLoop
	conn       *amqp091.Connection
	pub        *publisher
	consumer   *amqp091.Channel
	tag        string
	deliveries <-chan amqp091.Delivery
	closed     [3]<-chan *amqp091.Error // connection, publishing channel, consuming channel
	handlers   sync.WaitGroup           // this session's handlers

	// acking holds, by call id, the originals of counted copies (see
	// overLimit) not acknowledged yet; a copy delivered here waits for it.
	acking sync.Map // string -> chan struct{}
}

func (l *serveLoop) setup(conn *amqp091.Connection) (*serverSession, error) {
	cfg := l.s.cfg
	ss := &serverSession{l: l, conn: conn, tag: consumerTag()}
	pubCh, err := conn.Channel()
	if err != nil {
		return nil, channelError(err)
	}
	// The topology is declared again on every connection: a broker restarted
	// without its data, or an operator's deletion, is repaired.
	if err := declareService(pubCh, cfg); err != nil {
		return nil, err
	}
	if ss.pub, err = newPublisher(pubCh); err != nil {
		return nil, channelError(err)
	}
	if ss.consumer, err = conn.Channel(); err != nil {
		return nil, channelError(err)
	}
	if err := ss.consumer.Qos(cfg.Prefetch, 0, false); err != nil {
		return nil, channelError(err)
	}
	if ss.deliveries, err = ss.consumer.Consume(ServiceQueue(cfg.Service), ss.tag, false, false, false, false, nil); err != nil {
		return nil, channelError(err)
	}
	ss.closed = [3]<-chan *amqp091.Error{notifyClose(conn), notifyClose(pubCh), notifyClose(ss.consumer)}
	return ss, nil
}

func consumerTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "bankrpc-server-" + hex.EncodeToString(b[:])
}

// run hands deliveries to handlers until the connection fails, or, when ctx
// ends, until the deliveries already made are answered.
func (ss *serverSession) run(ctx context.Context) error {
	var confirms sync.WaitGroup
	confirms.Go(ss.pub.run)
	defer func() {
		closeConn(ss.conn)
		confirms.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return ss.drain()
		case e := <-ss.closed[0]:
			return closedError("connection", e)
		case e := <-ss.closed[1]:
			return closedError("publishing channel", e)
		case e := <-ss.closed[2]:
			return closedError("consuming channel", e)
		case d, ok := <-ss.deliveries:
			if !ok {
				return closedError("consumer (canceled by the broker)", nil)
			}
			ss.dispatch(d)
		}
	}
}

// drain stops the consumer, runs what the broker had delivered already, and
// waits for every handler of this session to be answered.
func (ss *serverSession) drain() error {
	// After basic.cancel the deliveries in flight still arrive, then the
	// channel of deliveries closes (at once if the connection is gone).
	_ = ss.consumer.Cancel(ss.tag, false)
	for d := range ss.deliveries {
		ss.dispatch(d)
	}
	ss.handlers.Wait()
	return nil
}

// dispatch runs d's handler on its own goroutine once a slot is free.
func (ss *serverSession) dispatch(d amqp091.Delivery) {
	ss.l.sem <- struct{}{}
	ss.handlers.Add(1)
	ss.l.handlers.Add(1)
	go func() {
		defer func() {
			<-ss.l.sem
			ss.handlers.Done()
			ss.l.handlers.Done()
		}()
		ss.handle(d)
	}()
}

func (ss *serverSession) handle(d amqp091.Delivery) {
	if acked, ok := ss.acking.Load(d.CorrelationId); ok {
		<-acked.(chan struct{})
	}
	if ss.overLimit(d) {
		return
	}
	caller := identity(d, ss.l.s.user)
	if ss.l.s.cfg.OwnQueuesOnly && !ownReplyQueue(caller, d.ReplyTo) {
		ss.l.s.logger.Warn("amqp: refused a request whose reply_to is not its caller's", "call_id", d.CorrelationId, "user_id", caller, "reply_to", d.ReplyTo)
		ss.deadLetter(d, fmt.Sprintf("reply_to %q is not a result queue of user-id %q", d.ReplyTo, caller))
		return
	}
	ctx := transport.NewPeerContext(ss.l.base, transport.Peer{Transport: "amqp", Addr: d.ReplyTo, Identity: caller})
	ctx = transport.NewStatusContext(ctx, ss.statusSink(d))
	reply, err := ss.l.h.HandleFrame(ctx, d.Body)
	if err != nil {
		ss.refuse(d, err)
		return
	}
	if d.ReplyTo == "" {
		ss.l.s.logger.Warn("amqp: request has no reply_to: its reply is dropped", "call_id", d.CorrelationId)
		_ = d.Ack(false)
		return
	}
	ss.publishThenAck(d, d.ReplyTo, amqp091.Publishing{
		ContentType:   contentProto,
		Type:          typeResult,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: d.CorrelationId,
		Timestamp:     time.Now(),
		Body:          reply,
	})
}

// publishThenAck publishes msg to queue through the default exchange and
// acknowledges d once the broker confirmed msg. A refused msg returns d to
// the queue; a lost one leaves d unacknowledged, so it is delivered again.
func (ss *serverSession) publishThenAck(d amqp091.Delivery, queue string, msg amqp091.Publishing) {
	switch ss.pub.publishWait("", queue, false, msg) {
	case confirmAcked:
		_ = d.Ack(false) // a failed ack means a lost connection: d comes again
	case confirmNacked:
		_ = d.Nack(false, true)
	case confirmLost:
		// d was on the same connection: the broker requeues it.
	}
}

// refuse answers a request the handler could not decode: its error goes, as
// plain text, to the caller's error queue.
func (ss *serverSession) refuse(d amqp091.Delivery, err error) {
	text := status.MessageOf(err)
	ss.l.s.logger.Warn("amqp: refused a request", "call_id", d.CorrelationId, "reply_to", d.ReplyTo, "error", text)
	errorQueue, _, ok := companionQueues(d.ReplyTo)
	if !ok {
		ss.deadLetter(d, "refused and the caller named no reply queue: "+text)
		return
	}
	ss.publishThenAck(d, errorQueue, errorMessage(d.CorrelationId, status.CodeOf(err), text))
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

// deadLetter copies d into the dead-letter queue, with why, and acknowledges
// it once the copy is confirmed.
func (ss *serverSession) deadLetter(d amqp091.Delivery, why string) {
	headers := amqp091.Table{headerDeadReason: why}
	for k, v := range d.Headers {
		headers[k] = v
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
