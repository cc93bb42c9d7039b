package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// flushPrefix starts the correlation id of the markers KeptResults
// publishes to the client's own result queue; no call id starts so (call
// ids of the runtime are "<16 hex>-<seq>").
const flushPrefix = "bankrpc-flush-"

// flushMarkerTTL is the expiration of a marker: one its process did not
// live to consume is dropped by the broker, or by the next process.
const flushMarkerTTL = "60000"

// ConfirmsSends reports that the client calls transport.Call.Sent once the
// broker confirmed a request: it is then durable, and the process may exit.
func (c *Client) ConfirmsSends() bool { return true }

// KeptResults returns the replies kept for calls not in flight here (see
// ClientConfig.OrphanReplies), once every reply that was in the client's
// result queue when it was called has reached the client: it publishes a
// marker to that queue and waits until it comes back, the queue being
// first in, first out.
func (c *Client) KeptResults(ctx context.Context) ([]transport.KeptResult, error) {
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	ids, os := c.orphans.all(time.Now())
	c.mu.Unlock()
	out := make([]transport.KeptResult, len(ids))
	for i, id := range ids {
		out[i] = transport.KeptResult{CallID: id, Frame: os[i].frame, Err: os[i].err}
	}
	return out, nil
}

// flush waits until a marker published now to the result queue comes back.
// It publishes on a channel of its own, so that a broker that refuses the
// publish (the client's user may not write to the default exchange: see
// docs/protocol-amqp.md, permissions) closes only that channel; it then
// waits instead until the result queue holds no ready message, and a moment
// more for the deliveries on their way.
func (c *Client) flush(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := flushPrefix + hex.EncodeToString(b[:])
	done := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return transport.ErrClosed
	}
	c.flushes[id] = done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.flushes, id)
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s != nil && !s.blocked.Load() {
			switch err := c.publishMarker(ctx, s, id); {
			case err == nil:
				select {
				case <-done:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				case <-c.done:
					return transport.ErrClosed
				}
			case errors.Is(err, errMarkerRefused):
				return c.waitDrained(ctx, s)
			case ctx.Err() != nil:
				return ctx.Err()
			}
		}
		// No connection, or the marker was lost with it: try again soon.
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return transport.ErrClosed
		}
	}
}

var errMarkerRefused = errors.New("amqp: the broker refused the flush marker")

// publishMarker publishes the marker id to the result queue on a channel of
// its own and waits for the broker's confirmation.
func (c *Client) publishMarker(ctx context.Context, s *clientSession, id string) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	err = ch.PublishWithContext(ctx, "", ResultQueue(c.cfg.ClientName), false, false, amqp091.Publishing{
		DeliveryMode:  amqp091.Transient,
		CorrelationId: id,
		Expiration:    flushMarkerTTL,
		Timestamp:     time.Now(),
		UserId:        c.userID,
	})
	if err != nil {
		return err
	}
	select {
	case cf, ok := <-confirms:
		if ok && cf.Ack {
			return nil
		}
		select {
		case e := <-closed:
			if e != nil && e.Code == amqp091.AccessRefused {
				return errMarkerRefused
			}
		default:
		}
		return errSessionClosed
	case e := <-closed:
		if e != nil && e.Code == amqp091.AccessRefused {
			return errMarkerRefused
		}
		return errSessionClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainSettle is how long waitDrained waits, once the result queue has no
// ready message, for the deliveries on their way to be handled.
const drainSettle = 200 * time.Millisecond

// waitDrained waits until the result queue holds no ready message, then
// drainSettle more.
func (c *Client) waitDrained(ctx context.Context, s *clientSession) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	for {
		q, err := ch.QueueDeclarePassive(ResultQueue(c.cfg.ClientName), true, false, false, false, queueTypeArgs(c.cfg.QueueType))
		if err != nil {
			return status.Errorf(status.Unavailable, "amqp: inspect result queue %s: %v", ResultQueue(c.cfg.ClientName), err)
		}
		if q.Messages == 0 {
			break
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
	if !sleep(ctx, drainSettle) {
		return ctx.Err()
	}
	return nil
}

// WaitResult returns the reply kept for the call id (see KeptResults),
// waiting for it until ctx ends. It stays kept until DropResult.
func (c *Client) WaitResult(ctx context.Context, callID string) (transport.KeptResult, error) {
	for {
		c.mu.Lock()
		o, ok := c.orphans.get(callID, time.Now())
		kept := c.kept
		closed := c.closed
		c.mu.Unlock()
		switch {
		case ok:
			return transport.KeptResult{CallID: callID, Frame: o.frame, Err: o.err}, nil
		case closed:
			return transport.KeptResult{}, transport.ErrClosed
		}
		select {
		case <-kept:
		case <-ctx.Done():
			return transport.KeptResult{}, status.FromContextError(ctx.Err())
		case <-c.done:
			return transport.KeptResult{}, transport.ErrClosed
		}
	}
}

// DropResult forgets the reply kept for the call id; a duplicate of it that
// arrives soon after is dropped too.
func (c *Client) DropResult(callID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.orphans.take(callID, time.Now())
	if ok {
		c.answered.add(callID)
	}
	return ok
}

// KeepResult keeps frame as the reply of a call not in flight (see
// transport.ResultKeeper): Close gives it back to the result queue.
func (c *Client) KeepResult(callID string, frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.orphans.put(callID, outcome{frame: frame}, time.Now())
	close(c.kept)
	c.kept = make(chan struct{})
}

// maxRecentIDs bounds recentIDs.
const maxRecentIDs = 4096

// recentIDs remembers the latest maxRecentIDs call ids added. Not safe for
// concurrent use (Client.mu guards it).
type recentIDs struct {
	set  map[string]struct{}
	ring []string
	next int
}

func (r *recentIDs) add(id string) {
	if r.set == nil {
		r.set = make(map[string]struct{}, maxRecentIDs)
		r.ring = make([]string, maxRecentIDs)
	}
	if _, ok := r.set[id]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % maxRecentIDs
}

func (r *recentIDs) has(id string) bool {
	_, ok := r.set[id]
	return ok
}

// keptReturnWait bounds how long Close spends giving the kept replies back
// to the broker.
const keptReturnWait = 3 * time.Second

// returnKept publishes the replies kept and not collected back to the
// client's durable queues, so that the next process with the client name
// gets them: they were acknowledged when they reached this one. It runs
// once the client's own connection is closed (its consumer would take them
// again), on a connection of its own, and waits for the broker's
// confirmations up to keptReturnWait. A reply goes back to the result
// queue; an error from the error queue goes back there, as text with its
// code. A crash of this process (no Close) loses them.
func (c *Client) returnKept() {
	c.mu.Lock()
	ids, os := c.orphans.all(time.Now())
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), keptReturnWait)
	defer cancel()
	acked, err := c.publishKept(ctx, ids, os)
	if err != nil || acked < len(ids) {
		c.connector.logger.Warn("amqp: kept replies not collected could not all be given back to the broker: those are lost", "count", len(ids), "confirmed", acked, "error", err)
	}
}

func (c *Client) publishKept(ctx context.Context, ids []string, os []outcome) (acked int, err error) {
	var ch *amqp091.Channel
	conn, err := c.connector.connect(ctx, func(conn *amqp091.Connection) error {
		var err error
		if ch, err = conn.Channel(); err != nil {
			return channelError(err)
		}
		return ch.Confirm(false)
	})
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, len(ids)))
	for i, id := range ids {
		msg := amqp091.Publishing{DeliveryMode: amqp091.Persistent, CorrelationId: id, Timestamp: time.Now(), UserId: c.userID}
		queue := ResultQueue(c.cfg.ClientName)
		if os[i].err != nil {
			queue = ErrorQueue(c.cfg.ClientName)
			msg.ContentType = "text/plain; charset=utf-8"
			msg.Body = []byte(status.MessageOf(os[i].err))
			msg.Headers = amqp091.Table{headerCode: int32(status.CodeOf(os[i].err))}
		} else {
			msg.ContentType, msg.Type, msg.Body = contentProto, typeResult, os[i].frame
		}
		if err := ch.PublishWithContext(ctx, "", queue, false, false, msg); err != nil {
			return acked, err
		}
	}
	for range ids {
		select {
		case cf, ok := <-confirms:
			if !ok {
				return acked, errSessionClosed
			}
			if cf.Ack {
				acked++
			}
		case <-ctx.Done():
			return acked, ctx.Err()
		}
	}
	return acked, nil
}
