package amqp

import (
	"fmt"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/transport"
)

// overLimit counts the deliveries of d that ended without an answer and, when
// d must not be handled now, disposes of it and reports true.
//
// Quorum queues count for us: x-delivery-count is the number of earlier
// deliveries returned to the queue. Classic queues only flag a redelivery, so
// a redelivered request is rejected without requeue: the queue dead-letters
// it into itself (x-dead-letter-routing-key is the queue), and the broker's
// x-death entry for (queue, "rejected") counts the failed deliveries across
// crashes of any number of servers. Either way a request is handed to a
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
		failed = rejections(d.Headers, ServiceQueue(cfg.Service)) + 1
		if failed < int64(cfg.DeliveryLimit) {
			// Back to the tail of the queue, counted.
			_ = d.Reject(false)
			return true
		}
	}
	if failed < int64(cfg.DeliveryLimit) {
		return false
	}
	ss.poison(d, failed)
	return true
}

// poison tells the caller that its request was given up, then moves the
// request to the dead-letter queue: a quorum queue does it itself on a
// rejection, a classic one (which dead-letters into itself) gets a copy.
func (ss *serverSession) poison(d amqp091.Delivery, failed int64) {
	cfg := ss.l.s.cfg
	text := fmt.Sprintf("amqp: request %s was delivered %d times without being answered (its server stopped or lost its connection each time); it was moved to the dead-letter queue %s",
		d.CorrelationId, failed, DeadLetterQueue(cfg.Service))
	ss.l.s.logger.Error("amqp: poison request", "call_id", d.CorrelationId, "reply_to", d.ReplyTo, "failed_deliveries", failed)
	if errorQueue, _, ok := companionQueues(d.ReplyTo); ok {
		switch ss.pub.publishWait("", errorQueue, false, errorMessage(d.CorrelationId, transport.Internal, text)) {
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
	ss.deadLetter(d, fmt.Sprintf("delivered %d times without an answer", failed))
}
