package banktest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

var nameChars = regexp.MustCompile(`[^A-Za-z0-9]+`)

// uniqueBank returns a bank name no other test or test run uses. Over AMQP
// it also deletes the bank's queues from the broker when the test ends
// (after its processes are gone: cleanups run last-registered first).
func uniqueBank(t *testing.T, prefix string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.Trim(nameChars.ReplaceAllString(t.Name(), "-"), "-")
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	name := prefix + "-" + base + "-" + hex.EncodeToString(b[:])
	if url := os.Getenv(amqptest.EnvURL); url != "" {
		t.Cleanup(func() { deleteQueues(t, url, amqp.ServiceQueue(name), amqp.DeadLetterQueue(name)) })
	}
	return name
}

// deleteQueues removes queues a test left on the shared broker.
func deleteQueues(t *testing.T, url string, queues ...string) {
	amqptest.DeleteQueues(t, url, queues...)
}

// queueState returns the ready messages and consumers of a queue.
func queueState(t *testing.T, url, queue string) (messages, consumers int) {
	t.Helper()
	conn, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("connect to the broker: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open a channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages, q.Consumers
}
