package amqp

import (
	"fmt"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// overLimit counts the deliveries of d that ended without an answer and, when
// d must not be handled now, disposes of it and reports true.
//
// Quorum queues count for us: x-delivery-count is the number of earlier
// deliveries returned to the queue. Classic queues only flag a redelivery, so
// a redelivered request is counted in a copy: the server publishes the
// request again into the service queue, with bankrpc-failed-deliveries one
// higher, through the confirming publisher, and acknowledges d only once the
// copy is confirmed. A crash at any point leaves the request in the queue
// (d, the copy, or both: a duplicate the call id makes harmless; each then
// counts on its own). The copy is a fresh delivery, run at its turn. Either way a request is handed to a
// handler at most DeliveryLimit times.
func (ss *serverSession) overLimit(d amqp091.Delivery) bool {
	cfg := ss.l.s.cfg
	if cfg.DeliveryLimit < 0 {
		return false
	}
	var failed int64
	switch cfg.QueueType {
	case QueueQuorum:
		failed, _ = intHeader(d.Headers, "x-delivery-count")
	default:
		if !d.Redelivered {
			return false
		}
		failed = failedDeliveries(d, ss.l.s.user) + 1
		if failed < int64(cfg.DeliveryLimit) {
			msg, live := countedCopy(d, failed, ss.l.s.user, time.Now())
			if !live {
				return false // past its deadline: the runtime answers DEADLINE_EXCEEDED without running it
			}
			// The copy may be delivered here before the original's ack is
			// written; it waits (see handle), so that a crash while it runs
			// does not bring the original back too.
			acked := make(chan struct{})
			ss.acking.Store(d.CorrelationId, acked)
			ss.publishThenAck(d, ServiceQueue(cfg.Service), msg)
			ss.acks.flush() // the ack is written now, not with the next batch
			ss.acking.CompareAndDelete(d.CorrelationId, acked)
			close(acked)
			return true
		}
	}
	if failed < int64(cfg.DeliveryLimit) {
		return false
	}
	if ss.answerFromCache(d) {
		return true // answered before: never INTERNAL for a call that was applied
	}
	ss.poison(d, failed)
	return true
}

// failedDeliveries returns the failed deliveries counted in d's
// bankrpc-failed-deliveries header, when a server of the service made d (its
// user-id is the servers' broker user, as on every counted copy), and 0 on
// any other message: a client that sets the header itself cannot send its
// request to the dead-letter queue early. The broker refuses a user-id other
// than the publisher's, so only a client connected as the servers' own user
// could, and it is as trusted as a server.
func failedDeliveries(d amqp091.Delivery, serverUser string) int64 {
	if serverUser == "" || d.UserId != serverUser {
		return 0
	}
	n, _ := intHeader(d.Headers, headerFailed)
	return max(n, 0)
}

// countedCopy returns the copy of a redelivered classic request that carries
// its failed deliveries, for a server whose broker user is serverUser:
// persistent, with d's properties, its headers but the broker's own (x-*),
// and the expiration left until its bankrpc-deadline (d's expiration without
// that header). live is false when the deadline has passed. The copy's
// user-id is always the server's (the broker refuses any other), which is
// what makes its count trusted (failedDeliveries); the caller's identity
// survives in the bankrpc-user-id header: the caller's user-id, or "" for a
// caller without one, absent when the caller is the server's own user.
func countedCopy(d amqp091.Delivery, failed int64, serverUser string, now time.Time) (msg amqp091.Publishing, live bool) {
	headers := amqp091.Table{}
	for k, v := range d.Headers {
		if !strings.HasPrefix(k, "x-") {
			headers[k] = v
		}
	}
	headers[headerFailed] = failed
	msg = amqp091.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp091.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		Expiration:      d.Expiration,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
	if ms, ok := intHeader(d.Headers, headerDeadline); ok {
		deadline := time.UnixMilli(ms)
		if !now.Before(deadline) {
			return msg, false
		}
		msg.Expiration = expiration(deadline, now)
	}
	caller := identity(d, serverUser)
	switch {
	case serverUser == "":
		// No user to publish as: the copy cannot be told from a client's
		// message, and its count will not be trusted.
		delete(headers, headerUserID)
		delete(headers, headerFailed)
	case caller == serverUser:
		delete(headers, headerUserID)
		msg.UserId = serverUser
	default:
		headers[headerUserID] = caller // "" for a caller without a user-id
		msg.UserId = serverUser
	}
	return msg, true
}

// identity returns the broker-validated identity of the caller of d: its
// user-id, or, on a copy a server made (user-id = the server's broker user),
// the bankrpc-user-id header ("" for a caller that had none). A client cannot forge that header: the broker
// refuses a user-id other than the publisher's, so only a client connected as
// the server's own user could, and it is as trusted as the server.
func identity(d amqp091.Delivery, serverUser string) string {
	if d.UserId != "" && d.UserId == serverUser {
		if v, ok := d.Headers[headerUserID].(string); ok {
			return v
		}
	}
	return d.UserId
}

// poison tells the caller that its request was given up, then moves the
// request to the dead-letter queue: a quorum queue does it itself on a
// rejection, a classic one (which dead-letters into itself) gets a copy.
func (ss *serverSession) poison(d amqp091.Delivery, failed int64) {
	cfg := ss.l.s.cfg
	text := fmt.Sprintf("amqp: request %s was delivered %d times without being answered (its server stopped or lost its connection each time); it was moved to the dead-letter queue %s",
		d.CorrelationId, failed, DeadLetterQueue(cfg.Service))
	ss.l.s.connector.emit(transport.EventDeadLetter, reasonPoison)
	ss.l.s.logger.Error("amqp: poison request", "call_id", d.CorrelationId, "reply_to", d.ReplyTo, "caller", identity(d, ss.l.s.user), "failed_deliveries", failed)
	if errorQueue, _, ok := companionQueues(d.ReplyTo); ok {
		switch ss.pub.publishWait("", errorQueue, false, errorMessage(d.CorrelationId, status.Internal, text)) {
		case confirmAcked:
		case confirmNacked:
			_ = d.Nack(false, true) // d comes again and is given up again
			return
		case confirmLost:
			return // d was on the same connection: the broker requeues it
		}
	}
	if cfg.QueueType == QueueQuorum {
		_ = d.Reject(false)
		return
	}
	// The dead-letter copy carries the count the error names, not the one
	// the last copy was published with.
	ss.deadLetter(d, fmt.Sprintf("delivered %d times without an answer", failed), failed)
}
