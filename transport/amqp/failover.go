package amqp

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// What a session does when the broker refuses its publishes.
//
// On a cluster, a channel can keep a stale view of a quorum queue whose
// leader was lost with its node: every publish it makes to the queue is then
// refused (basic.nack), over and over, while a fresh channel publishes to the
// same queue fine. Retrying on the same channel retries into the same state,
// so the session's publishing channel is replaced by a fresh one on the same
// connection as soon as the broker nacks a message on it; the consuming
// channels, and with them the deliveries not acknowledged yet, are kept. When
// fresh channels keep being refused for refusalEscalation, the session ends
// and the connection manager opens a new connection, to the next node of the
// cluster.
const (
	// refusalEscalation is how long refusals may go on, across reopened
	// channels and without any publish confirmed in between, before the
	// connection itself is given up.
	refusalEscalation = 5 * time.Second
	// minChannelsBeforeEscalation: the connection is given up only after at
	// least this many fresh channels were refused too.
	minChannelsBeforeEscalation = 3
	// republishMin and republishMax bound the back-off between publishes of
	// a message the broker refused.
	republishMin = 25 * time.Millisecond
	republishMax = time.Second
	// confirmTimeout: a message the broker has neither confirmed nor
	// refused after this long counts as a refusal. A channel with a stale
	// view of a quorum queue may also hold its publishes without an answer
	// at all, as long as the connection lives.
	confirmTimeout = 3 * time.Second
)

// errRefused ends a session whose fresh channels the broker keeps refusing.
var errRefused = errors.New("the broker kept refusing publishes on fresh channels")

// pubChannel is a session's publishing side: a publisher (confirm mode) on a
// channel of the session's connection, replaced by a fresh channel when the
// broker refuses a message on it (see refusalEscalation). Publishes go to
// the current channel; a message in flight on a replaced channel is reported
// lost (confirmLost) although the connection lives on, so its publisher
// publishes it again.
//
// It is safe for concurrent use. Its callbacks run as the publisher's.
type pubChannel struct {
	conn   *amqp091.Connection
	onOpen func(*amqp091.Channel) error // set up a fresh channel (before confirm mode); may be nil
	logger *slog.Logger

	mu           sync.Mutex
	cur          *publisher
	reopening    bool      // a replacement of cur is under way
	streakStart  time.Time // first refusal since the last confirmed publish; zero when none
	reopened     int       // channels opened during the streak
	ended        bool      // the session must end; no channel is opened any more
	shuttingDown bool      // close was called

	runs   sync.WaitGroup // the publishers' run loops and the watchdog
	failed chan error     // buffered 1: why the session must end
	quit   chan struct{}  // closed by close: the watchdog stops

	// unconfirmed holds the publishes waiting for their outcome, by token,
	// with their publisher and time; guarded by mu.
	unconfirmed map[uint64]pending
	nextToken   uint64
}

type pending struct {
	p    *publisher
	sent time.Time
}

// newPubChannel starts a pubChannel on ch, a channel of conn already set up
// (declarations done, onOpen applied), not yet in confirm mode. run must be
// called.
func newPubChannel(conn *amqp091.Connection, ch *amqp091.Channel, onOpen func(*amqp091.Channel) error, logger *slog.Logger) (*pubChannel, error) {
	p, err := newPublisher(ch)
	if err != nil {
		return nil, err
	}
	return &pubChannel{conn: conn, onOpen: onOpen, logger: logger, cur: p, failed: make(chan error, 1),
		quit: make(chan struct{}), unconfirmed: make(map[uint64]pending)}, nil
}

// start runs the confirmation loop of the first channel, and the watchdog
// of unanswered publishes.
func (pc *pubChannel) start() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.runLocked(pc.cur)
	pc.runs.Go(pc.watch)
}

// watch treats a publish of the current channel left without an answer for
// confirmTimeout as a refusal (see refused).
func (pc *pubChannel) watch() {
	t := time.NewTicker(confirmTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-pc.quit:
			return
		case <-t.C:
		}
		pc.mu.Lock()
		cur, stale := pc.cur, false
		for _, u := range pc.unconfirmed {
			if u.p == cur && time.Since(u.sent) > confirmTimeout {
				stale = true
				break
			}
		}
		pc.mu.Unlock()
		if stale {
			pc.refused(cur, "no confirmation within "+confirmTimeout.String())
		}
	}
}

// runLocked runs p's confirmation loop. When p's channel closes while p is
// still the current channel (not replaced, not shut down), the session ends.
func (pc *pubChannel) runLocked(p *publisher) {
	pc.runs.Go(func() {
		p.run()
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if p == pc.cur && !pc.shuttingDown {
			pc.endLocked(errors.New("publishing channel closed"))
		}
	})
}

// endLocked makes the session end with err, once.
func (pc *pubChannel) endLocked(err error) {
	if pc.ended {
		return
	}
	pc.ended = true
	pc.failed <- err
}

// done returns the channel on which the session learns that it must end.
func (pc *pubChannel) done() <-chan error { return pc.failed }

// alive reports whether publishing may go on in this session: a message
// reported lost is worth publishing again.
func (pc *pubChannel) alive() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return !pc.ended && !pc.shuttingDown && !pc.conn.IsClosed()
}

// close stops the current channel's loop from ending the session and waits
// for the loops to end; the connection must be closed (or closing).
func (pc *pubChannel) close() {
	pc.mu.Lock()
	if !pc.shuttingDown {
		pc.shuttingDown = true
		close(pc.quit)
	}
	pc.mu.Unlock()
	pc.runs.Wait()
}

// publish publishes msg on the current channel (see publisher.publish).
func (pc *pubChannel) publish(exchange, key string, mandatory bool, msg amqp091.Publishing, onConfirm func(confirmOutcome)) error {
	pc.mu.Lock()
	p := pc.cur
	var token uint64
	if onConfirm != nil {
		pc.nextToken++
		token = pc.nextToken
		pc.unconfirmed[token] = pending{p: p, sent: time.Now()}
	}
	pc.mu.Unlock()
	var f func(confirmOutcome)
	if onConfirm != nil {
		f = func(o confirmOutcome) {
			pc.mu.Lock()
			delete(pc.unconfirmed, token)
			pc.mu.Unlock()
			pc.observe(p, o)
			onConfirm(o)
		}
	}
	err := p.publish(exchange, key, mandatory, msg, f)
	if err != nil && onConfirm != nil {
		pc.mu.Lock()
		delete(pc.unconfirmed, token)
		pc.mu.Unlock()
	}
	return err
}

// publishWait publishes msg and waits for its outcome.
func (pc *pubChannel) publishWait(exchange, key string, mandatory bool, msg amqp091.Publishing) confirmOutcome {
	outcome := make(chan confirmOutcome, 1)
	if err := pc.publish(exchange, key, mandatory, msg, func(o confirmOutcome) { outcome <- o }); err != nil {
		return confirmLost
	}
	return <-outcome
}

// observe learns from the outcome of a message published on p.
func (pc *pubChannel) observe(p *publisher, o confirmOutcome) {
	switch o {
	case confirmAcked:
		pc.mu.Lock()
		if p == pc.cur {
			pc.streakStart, pc.reopened = time.Time{}, 0
		}
		pc.mu.Unlock()
	case confirmNacked:
		pc.refused(p, "basic.nack")
	case confirmLost:
	}
}

// refused records that the broker refused a message published on p (a nack,
// or for a client a mandatory request returned unroutable): p's channel is
// replaced, or, when refusals went on too long across fresh channels, the
// session ends.
func (pc *pubChannel) refused(p *publisher, how string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if p != pc.cur || pc.reopening || pc.ended || pc.shuttingDown {
		return
	}
	now := time.Now()
	if pc.streakStart.IsZero() {
		pc.streakStart = now
	}
	if pc.reopened >= minChannelsBeforeEscalation && now.Sub(pc.streakStart) >= refusalEscalation {
		pc.logger.Warn("amqp: the broker keeps refusing publishes on fresh channels: reopening the connection",
			"channels", pc.reopened, "for", now.Sub(pc.streakStart).Round(time.Millisecond))
		pc.endLocked(fmt.Errorf("%w (%s on %d channels for %v)", errRefused, how, pc.reopened+1, now.Sub(pc.streakStart).Round(time.Millisecond)))
		return
	}
	pc.reopening = true
	// Not on this goroutine: it may be the publisher's run loop, which
	// must keep reading confirmations while the new channel opens.
	go pc.reopen(p, how)
}

// reopen replaces old, the current publisher, by one on a fresh channel, and
// closes old's channel (its messages still in flight are reported lost).
func (pc *pubChannel) reopen(old *publisher, how string) {
	p, err := pc.openChannel()
	pc.mu.Lock()
	pc.reopening = false
	if err != nil || pc.ended || pc.shuttingDown {
		if err != nil {
			pc.endLocked(fmt.Errorf("reopen the publishing channel: %w", err))
		}
		pc.mu.Unlock()
		if p != nil {
			_ = p.ch.Close()
		}
		return
	}
	pc.cur = p
	pc.reopened++
	pc.runLocked(p)
	pc.mu.Unlock()
	pc.logger.Info("amqp: the broker refused a publish: publishing on a fresh channel", "refusal", how)
	_ = old.ch.Close()
}

func (pc *pubChannel) openChannel() (*publisher, error) {
	ch, err := pc.conn.Channel()
	if err != nil {
		return nil, err
	}
	if pc.onOpen != nil {
		if err := pc.onOpen(ch); err != nil {
			_ = ch.Close()
			return nil, err
		}
	}
	p, err := newPublisher(ch)
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	return p, nil
}

// current returns the current publisher (for a refusal reported outside a
// confirmation, such as a returned message).
func (pc *pubChannel) current() *publisher {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.cur
}

// backoff returns the wait before the n-th (from 1) republish of a refused
// message.
func republishBackoff(n int) time.Duration {
	d := republishMin
	for i := 1; i < n && d < republishMax; i++ {
		d *= 2
	}
	return min(d, republishMax)
}

// The bounds of a server's reply cache (see replyCache).
const (
	replyCacheEntries = 4096
	replyCacheBytes   = 16 << 20
	replyCacheAge     = 10 * time.Minute
)

// replyCache keeps the replies a server published lately and the broker
// confirmed, by call id and reply queue, so that a request that reaches its delivery limit although
// it was answered (its acknowledgement lost with connection after
// connection) gets its reply again instead of an INTERNAL error: a caller
// never gets INTERNAL for a call that was applied. The runtime's own reply
// cache answers every other redelivery; this one is consulted only at the
// limit, where the request is not handed to the handler. Oldest entries go
// first. It is safe for concurrent use.
type replyCache struct {
	mu       sync.Mutex
	entries  map[replyKey]cachedReply
	order    []replyKey // insertion order, oldest first
	bytes    int
	maxN     int
	maxBytes int
	maxAge   time.Duration
}

type replyKey struct{ callID, replyTo string }

type cachedReply struct {
	frame []byte
	at    time.Time
}

func newReplyCache(n, bytes int, age time.Duration) *replyCache {
	return &replyCache{entries: make(map[replyKey]cachedReply), maxN: n, maxBytes: bytes, maxAge: age}
}

// put remembers frame as the reply of call id to replyTo.
func (rc *replyCache) put(id, replyTo string, frame []byte) {
	if len(frame) > rc.maxBytes {
		return
	}
	k := replyKey{id, replyTo}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if old, ok := rc.entries[k]; ok {
		rc.bytes -= len(old.frame)
	} else {
		rc.order = append(rc.order, k)
	}
	rc.entries[k] = cachedReply{frame: frame, at: time.Now()}
	rc.bytes += len(frame)
	for len(rc.entries) > rc.maxN || rc.bytes > rc.maxBytes {
		rc.evictOldestLocked()
	}
}

func (rc *replyCache) evictOldestLocked() {
	k := rc.order[0]
	rc.order[0] = replyKey{}
	rc.order = rc.order[1:]
	if e, ok := rc.entries[k]; ok {
		rc.bytes -= len(e.frame)
		delete(rc.entries, k)
	}
}

// get returns the reply of call id to replyTo, if it is kept and young enough.
func (rc *replyCache) get(id, replyTo string) ([]byte, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for len(rc.order) > 0 {
		e, ok := rc.entries[rc.order[0]]
		if ok && time.Since(e.at) < rc.maxAge {
			break
		}
		rc.evictOldestLocked()
	}
	e, ok := rc.entries[replyKey{id, replyTo}]
	return e.frame, ok
}

// answerFromCache publishes the kept reply of d's call, if there is one, and
// acknowledges d once it is confirmed; it reports whether it did.
func (ss *serverSession) answerFromCache(d amqp091.Delivery) bool {
	frame, ok := ss.l.s.replies.get(d.CorrelationId, d.ReplyTo)
	if !ok || d.ReplyTo == "" {
		return false
	}
	ss.l.s.logger.Warn("amqp: request at its delivery limit was answered before: sending its reply again", "call_id", d.CorrelationId, "reply_to", d.ReplyTo)
	ss.publishThenAck(d, d.ReplyTo, amqp091.Publishing{
		ContentType:   contentProto,
		Type:          typeResult,
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: d.CorrelationId,
		Timestamp:     time.Now(),
		Body:          frame,
	})
	return true
}
