package amqp

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/ratelog"
	"github.com/bankrpc/bankrpc/internal/status"
)

// FrameHeadroom is what a request body may exceed the frame limit
// (MaxFrameSize) by and still be answered RESOURCE_EXHAUSTED as a request
// slightly too big; the same 64 KiB as ZeroMQ's ZMQ_MAXMSGSIZE headroom.
// A broker should refuse anything larger: see BrokerMaxMessageSize.
const FrameHeadroom = 64 << 10

// BrokerMaxMessageSize returns the max_message_size a RabbitMQ broker
// serving bankrpc with frame limit maxFrame should be given: maxFrame plus
// FrameHeadroom, 4259840 bytes for the default 4 MiB. The broker then
// refuses a larger publish (the publisher's channel is closed with
// PRECONDITION_FAILED) instead of delivering up to its default 128 MiB to a
// server, which the AMQP client library assembles in memory whole before
// the server can look at it (docs/protocol-amqp.md, section 12, Message size and memory).
func BrokerMaxMessageSize(maxFrame int) int { return maxFrame + FrameHeadroom }

// headerBodyBytes, on a dead letter whose body was dropped, is the size in
// bytes of the body the request had.
const headerBodyBytes = "bankrpc-body-bytes"

// releaseDelay is how long after the last oversized delivery the server
// returns the freed memory to the operating system.
const releaseDelay = time.Second

// oversizeGuard is a Server's handling of deliveries above the frame limit
// plus FrameHeadroom, which only a broker whose max_message_size is above
// the protocol's limit delivers. It is safe for concurrent use.
type oversizeGuard struct {
	warned   atomic.Bool // the once-per-Server warning was logged
	refused  atomic.Int64
	initOnce sync.Once
	lines    *ratelog.Logger

	mu      sync.Mutex // guards release
	release *time.Timer
}

// dropOversized takes d when its body is above the frame limit plus
// FrameHeadroom: it answers and dead-letters d at once, on a goroutine of
// its own that takes no handler slot, and reports true. The body is not
// copied anywhere and is dropped as soon as d is acknowledged.
func (ss *serverSession) dropOversized(d amqp091.Delivery) bool {
	s := ss.l.s
	limit := s.cfg.MaxFrameSize
	if limit <= 0 || len(d.Body) <= BrokerMaxMessageSize(limit) {
		return false
	}
	size := len(d.Body)
	d.Body = nil
	ss.handlers.add()
	ss.l.handlers.add()
	go func() {
		defer func() {
			ss.handlers.done()
			ss.l.handlers.done()
		}()
		ss.refuseOversized(d, size, limit)
	}()
	return true
}

// refuseOversized tells d's caller, when it named an error queue, that its
// request was too big, moves d to the dead-letter queue without its body,
// with the reason and the body's size, and acknowledges it. It logs the
// broker's setting once per Server; each refusal is logged at debug level,
// rate-limited.
func (ss *serverSession) refuseOversized(d amqp091.Delivery, size, limit int) {
	s := ss.l.s
	g := &s.oversize
	g.initOnce.Do(func() { g.lines = ratelog.New(s.logger, ratelog.DefaultBurst, ratelog.DefaultInterval) })
	n := g.refused.Add(1)
	caller := identity(d, s.user)
	if g.warned.CompareAndSwap(false, true) {
		s.logger.Warn("amqp: the broker admits messages above the protocol's limit: set its max_message_size to "+
			fmt.Sprint(BrokerMaxMessageSize(limit))+" (docs/protocol-amqp.md, section 12, Message size and memory); until then this server's memory is bounded only by prefetch × the broker's max_message_size, and such requests are dead-lettered without their body",
			"bytes", size, "limit", limit, "max_message_size", BrokerMaxMessageSize(limit), "prefetch", s.cfg.Prefetch,
			"call_id", d.CorrelationId, "caller", caller)
	}
	g.lines.Log(context.Background(), slog.LevelDebug, "amqp.oversized", "amqp: dead-lettered an oversized request without its body",
		"call_id", d.CorrelationId, "caller", caller, "reply_to", d.ReplyTo, "bytes", size, "limit", limit, "refused", n)
	defer g.releaseSoon()

	dead := DeadLetterQueue(s.cfg.Service)
	why := fmt.Sprintf("request of %d bytes exceeds the frame limit of %d bytes (+%d headroom): the broker admits messages above the protocol's limit; the body was dropped", size, limit, FrameHeadroom)
	if errorQueue, _, ok := companionQueues(d.ReplyTo); ok {
		text := fmt.Sprintf("amqp: request frame of %d bytes exceeds the limit of %d bytes; it was not run, and was moved without its body to the dead-letter queue %s", size, limit, dead)
		if ss.pub.publishWait("", errorQueue, false, errorMessage(d.CorrelationId, status.ResourceExhausted, text)) == confirmLost {
			return // d was on the same connection: the broker requeues it, and it is refused again
		}
		// A refused error message (its queue is gone) changes nothing: d is
		// dead-lettered all the same, not delivered again.
	}
	d.Headers = maps.Clone(d.Headers)
	if d.Headers == nil {
		d.Headers = amqp091.Table{}
	}
	d.Headers[headerBodyBytes] = int64(size)
	ss.deadLetter(d, why, failedDeliveries(d, ss.l.s.user))
}

// releaseSoon returns the memory of oversized bodies to the operating system
// releaseDelay after the last one: the Go runtime would otherwise keep it
// until enough other allocations trigger a collection, which, with a heap
// goal raised by the bodies, may take long.
func (g *oversizeGuard) releaseSoon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.release == nil {
		g.release = time.AfterFunc(releaseDelay, debug.FreeOSMemory)
		return
	}
	g.release.Reset(releaseDelay)
}
