package amqp

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// brokerChannel is a channel's acknowledgement state as the broker keeps it:
// the deliveries not yet settled. It refuses, as RabbitMQ does with
// PRECONDITION_FAILED "unknown delivery tag", to settle a tag twice, and
// records what each frame settled.
type brokerChannel struct {
	mu          sync.Mutex
	unacked     map[uint64]bool
	outcome     map[uint64]string // "ack", "nack", "reject"
	frames      int
	errs        []string
	intentAcked func(tag uint64) bool // whether the server acked tag already
}

func (c *brokerChannel) settle(tag uint64, how string) {
	if !c.unacked[tag] {
		c.errs = append(c.errs, fmt.Sprintf("%s of unknown delivery tag %d", how, tag))
		return
	}
	delete(c.unacked, tag)
	c.outcome[tag] = how
}

func (c *brokerChannel) Ack(tag uint64, multiple bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames++
	if !multiple {
		c.settle(tag, "ack")
		return nil
	}
	for t := range c.unacked {
		if t <= tag {
			if !c.intentAcked(t) {
				c.errs = append(c.errs, fmt.Sprintf("multiple ack up to %d covers %d, which the server has not acked", tag, t))
			}
			c.settle(t, "ack")
		}
	}
	return nil
}

func (c *brokerChannel) Nack(tag uint64, multiple, requeue bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames++
	c.settle(tag, "nack")
	return nil
}

func (c *brokerChannel) Reject(tag uint64, requeue bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames++
	c.settle(tag, "reject")
	return nil
}

// TestBatchAckerSettlesEachDeliveryOnceAsAsked settles deliveries from many
// goroutines in random order, as handlers do, some with Nack or Reject, and
// checks what the broker sees: each delivery settled exactly once, the way
// the server asked, no multiple ack covering a delivery not acked yet, and
// every ack sent by the time close returns.
func TestBatchAckerSettlesEachDeliveryOnceAsAsked(t *testing.T) {
	const deliveries = 2000
	var intentMu sync.Mutex
	intent := map[uint64]string{}
	ch := &brokerChannel{unacked: map[uint64]bool{}, outcome: map[uint64]string{}, intentAcked: func(tag uint64) bool {
		intentMu.Lock()
		defer intentMu.Unlock()
		return intent[tag] == "ack"
	}}
	a := newBatchAcker(ch)
	go a.run()

	work := make(chan amqp091.Delivery, deliveries)
	for tag := uint64(1); tag <= deliveries; tag++ {
		ch.mu.Lock()
		ch.unacked[tag] = true
		ch.mu.Unlock()
		d := amqp091.Delivery{DeliveryTag: tag}
		a.track(&d)
		work <- d
	}
	close(work)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for d := range work {
				how := "ack"
				switch rand.IntN(10) {
				case 0:
					how = "nack"
				case 1:
					how = "reject"
				}
				// The intent is recorded before the call, as the server
				// decides before it settles.
				intentMu.Lock()
				intent[d.DeliveryTag] = how
				intentMu.Unlock()
				var err error
				switch how {
				case "ack":
					err = d.Ack(false)
				case "nack":
					err = d.Nack(false, true)
				default:
					err = d.Reject(false)
				}
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	a.close()

	ch.mu.Lock()
	defer ch.mu.Unlock()
	require.Empty(t, ch.errs)
	assert.Empty(t, ch.unacked, "deliveries left unsettled after close")
	for tag := uint64(1); tag <= deliveries; tag++ {
		assert.Equal(t, intent[tag], ch.outcome[tag], "delivery %d", tag)
	}
	t.Logf("%d deliveries settled with %d frames", deliveries, ch.frames)

	// After close an ack goes out at once.
	ch.unacked[deliveries+1] = true
	intent[deliveries+1] = "ack"
	ch.mu.Unlock()
	d := amqp091.Delivery{DeliveryTag: deliveries + 1}
	a.track(&d)
	require.NoError(t, d.Ack(false))
	ch.mu.Lock()
	assert.Equal(t, "ack", ch.outcome[deliveries+1])
}

// TestBatchAckerNeverCoversAnUnsettledDelivery: acks ready behind a
// delivery still running go out one by one, at once; the leading run of
// ready deliveries goes out as one multiple ack.
func TestBatchAckerNeverCoversAnUnsettledDelivery(t *testing.T) {
	intent := map[uint64]bool{}
	ch := &brokerChannel{unacked: map[uint64]bool{}, outcome: map[uint64]string{}, intentAcked: func(tag uint64) bool { return intent[tag] }}
	a := newBatchAcker(ch) // flushed by hand: run is not started
	ds := make([]amqp091.Delivery, 6)
	for i := range ds {
		ds[i].DeliveryTag = uint64(i + 1)
		ch.unacked[uint64(i+1)] = true
		a.track(&ds[i])
	}
	ack := func(i int) {
		intent[ds[i].DeliveryTag] = true
		require.NoError(t, ds[i].Ack(false))
	}
	ack(1) // tag 2, behind tag 1, which is still running
	ack(2)
	a.flush()
	assert.Equal(t, 2, ch.frames, "tags 2 and 3 acked one by one")
	assert.Equal(t, map[uint64]string{2: "ack", 3: "ack"}, ch.outcome)
	require.NoError(t, ds[0].Nack(false, true))
	ack(3)
	ack(4)
	ack(5)
	a.flush()
	assert.Equal(t, 4, ch.frames, "tag 1 nacked, then tags 4 to 6 with one multiple ack")
	assert.Equal(t, map[uint64]string{1: "nack", 2: "ack", 3: "ack", 4: "ack", 5: "ack", 6: "ack"}, ch.outcome)
	assert.Empty(t, ch.errs)
}
