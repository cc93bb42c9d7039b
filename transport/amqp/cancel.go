package amqp

import (
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/bankrpc/bankrpc/internal/envelope"
)

// maxQueuedCancels bounds the cancel messages waiting for a connection; the
// oldest are dropped first (cancels are best-effort).
const maxQueuedCancels = 1024

// abandon drops pc, whose caller stopped waiting, from the calls in flight.
// When canceled, pc's request was published, and no other call with its id
// is in flight here, it queues a cancel message for the call id.
func (c *Client) abandon(pc *call, canceled bool) {
	c.mu.Lock()
	if !c.removeLocked(pc) || !canceled || pc.sentOn == nil || len(c.pending[pc.id]) > 0 || c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.cancels) >= maxQueuedCancels {
		c.cancels = c.cancels[1:]
		c.cancelling.done()
	}
	c.cancels = append(c.cancels, pc.id)
	c.cancelling.add()
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		s.signal()
	}
}

// nextCancel takes the oldest queued cancel, unless s is no longer the
// session calls are published on.
func (s *clientSession) nextCancel() (string, bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if len(s.c.cancels) == 0 || s.c.sess != s {
		return "", false
	}
	id := s.c.cancels[0]
	s.c.cancels = s.c.cancels[1:]
	return id, true
}

// sendCancel publishes the cancel message of call id: transient, not
// mandatory, its confirmation not waited for but counted (see
// flushCancels). A cancel lost with the connection is not sent again.
func (s *clientSession) sendCancel(id string) {
	done := func(confirmOutcome) { s.c.cancelling.done() }
	err := s.pub.publish(CancelExchange, s.c.cfg.Service, false, amqp091.Publishing{
		ContentType:   contentProto,
		Type:          typeRequest,
		DeliveryMode:  amqp091.Transient,
		CorrelationId: id,
		Timestamp:     time.Now(),
		UserId:        s.c.userID,
		Body:          envelope.AppendCancel(nil, id),
	}, done)
	if err != nil {
		done(confirmLost)
	}
}

// cancelFlushWait bounds how long Close waits for the cancels queued before
// it to be confirmed.
const cancelFlushWait = time.Second

// flushCancels waits, briefly, until the broker confirmed the cancel
// messages queued so far: closing the connection right after a publish can
// make the broker drop the message, and a caller that cancels a call and
// closes its Conn at once (a program interrupted) expects the cancel to go
// out. It does not wait while no connection is up or the broker blocks it.
func (c *Client) flushCancels() {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil || s.blocked.Load() {
		return
	}
	t := time.NewTimer(cancelFlushWait)
	defer t.Stop()
	select {
	case <-c.cancelling.idle():
	case <-t.C:
	}
}

// maxCancelFrame bounds a cancel message: a call id and a flag.
const maxCancelFrame = 4 << 10

// reqCancel is the field number of Request.cancel (envelope.proto).
const reqCancel protowire.Number = 6

// cancel hands the cancel message d to the handler (Handler.CancelCall),
// unless its sender may not cancel that call (see mayCancel). Cancels are
// best-effort: a message that is not a cancel is dropped, with a warning.
func (ss *serverSession) cancel(d amqp091.Delivery) {
	s := ss.l.s
	var req envelope.RequestView
	if err := envelope.DecodeRequestView(d.Body, maxCancelFrame, &req); err != nil || !req.Cancel || len(req.CallID) == 0 {
		s.logger.Warn("amqp: dropped a message of the cancel queue that is not a cancel", "call_id", d.CorrelationId, "error", err)
		return
	}
	id := string(req.CallID)
	who := identity(d, s.user)
	if !ss.l.mayCancel(id, who) {
		s.logger.Warn("amqp: dropped a cancel from a user other than the caller's", "call_id", id, "user_id", who)
		return
	}
	ss.l.h.CancelCall(id)
}

// mayCancel reports whether a cancel of call id sent by the broker user who
// (the validated user-id, "" without one) is to be honoured. A call running
// here is canceled only by its own caller, when the caller is known; a call
// not running here may be remembered by the handler for when it comes. With
// ServerConfig.OwnQueuesOnly a cancel must carry a user-id.
func (l *serveLoop) mayCancel(id, who string) bool {
	if l.s.cfg.OwnQueuesOnly && who == "" {
		return false
	}
	l.runMu.Lock()
	rc, ok := l.running[id]
	l.runMu.Unlock()
	return !ok || rc.caller == "" || rc.caller == who
}

// isCancel reports whether frame is a Request envelope with cancel set,
// without decoding the rest: a request in the service queue is decoded by the
// handler, not here. A malformed frame is not a cancel (the handler refuses
// it).
func isCancel(frame []byte) bool {
	for len(frame) > 0 {
		num, typ, n := protowire.ConsumeTag(frame)
		if n < 0 {
			return false
		}
		frame = frame[n:]
		if num == reqCancel && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(frame)
			if m < 0 {
				return false
			}
			if v != 0 {
				return true
			}
			frame = frame[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, frame)
		if m < 0 {
			return false
		}
		frame = frame[m:]
	}
	return false
}
