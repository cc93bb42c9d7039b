package amqp

import (
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
)

// confirmOutcome is what became of a message published in confirm mode.
type confirmOutcome uint8

const (
	// confirmAcked: the broker took responsibility for the message (for a
	// persistent message routed to a durable queue: it is on disk).
	confirmAcked confirmOutcome = iota
	// confirmNacked: the broker refused the message (basic.nack).
	confirmNacked
	// confirmLost: the channel closed before the broker answered; the
	// message may or may not have been taken.
	confirmLost
)

// errSessionClosed is returned by publish once the channel is gone.
var errSessionClosed = status.Errorf(status.Unavailable, "amqp: connection to the broker lost")

// publisher publishes on one channel in confirm mode and reports each
// message's confirmation to a callback. Unlike the library's
// DeferredConfirmation, which reports a closed channel as a nack, it tells a
// refusal (confirmNacked) from a loss (confirmLost): a client resends a lost
// request but fails a refused one.
//
// It is safe for concurrent use. pubMu serializes the assignment of delivery
// tags with the publishes themselves; mu guards waiting and done. Callbacks
// run on the goroutine that runs run, must not block, and are called exactly
// once for every publish that returned nil.
type publisher struct {
	ch       *amqp091.Channel
	confirms chan amqp091.Confirmation

	pubMu sync.Mutex

	mu      sync.Mutex
	waiting map[uint64]func(confirmOutcome)
	done    bool
}

// newPublisher puts ch in confirm mode. The caller must run run.
func newPublisher(ch *amqp091.Channel) (*publisher, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	p := &publisher{ch: ch, waiting: make(map[uint64]func(confirmOutcome))}
	// The library gives up on a listener that blocks for 5 s and drops the
	// confirmation: run never blocks, and the buffer absorbs bursts.
	p.confirms = ch.NotifyPublish(make(chan amqp091.Confirmation, 1024))
	return p, nil
}

// publish sends msg; onConfirm, when not nil, receives its outcome. It
// returns nil exactly when onConfirm is (or was already) called.
func (p *publisher) publish(exchange, key string, mandatory bool, msg amqp091.Publishing, onConfirm func(confirmOutcome)) error {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	tag := p.ch.GetNextPublishSeqNo()
	if onConfirm != nil {
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			return errSessionClosed
		}
		// Registered before the publish: the confirmation may arrive before
		// Publish returns.
		p.waiting[tag] = onConfirm
		p.mu.Unlock()
	}
	if err := p.ch.Publish(exchange, key, mandatory, false, msg); err != nil {
		if onConfirm == nil {
			return errSessionClosed
		}
		p.mu.Lock()
		_, waiting := p.waiting[tag]
		delete(p.waiting, tag)
		p.mu.Unlock()
		if waiting {
			return errSessionClosed
		}
		// run already reported this message lost, as the channel closed.
	}
	return nil
}

// publishWait publishes msg and waits for its outcome.
func (p *publisher) publishWait(exchange, key string, mandatory bool, msg amqp091.Publishing) confirmOutcome {
	outcome := make(chan confirmOutcome, 1)
	if err := p.publish(exchange, key, mandatory, msg, func(o confirmOutcome) { outcome <- o }); err != nil {
		return confirmLost
	}
	return <-outcome
}

// run delivers confirmations until the channel closes, then reports every
// message still waiting as lost.
func (p *publisher) run() {
	for c := range p.confirms {
		p.mu.Lock()
		f := p.waiting[c.DeliveryTag]
		delete(p.waiting, c.DeliveryTag)
		p.mu.Unlock()
		if f == nil {
			continue
		}
		if c.Ack {
			f(confirmAcked)
		} else {
			f(confirmNacked)
		}
	}
	p.mu.Lock()
	p.done = true
	lost := p.waiting
	p.waiting = nil
	p.mu.Unlock()
	for _, f := range lost {
		f(confirmLost)
	}
}
