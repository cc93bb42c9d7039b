// Package amqptest gives tests the RabbitMQ broker they run against: the one
// named by BANKRPC_AMQP_URL. Tests that need it skip when the variable is
// unset (a bare go test ./...) and fail loudly when it is set and nothing
// answers, so that a run meant to use the broker never passes without it.
package amqptest

import (
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// EnvURL names the variable that turns the RabbitMQ tests on. `make test`
// sets it to amqp://guest:guest@127.0.0.1:5672/.
const EnvURL = "BANKRPC_AMQP_URL"

var (
	once   sync.Once
	dialed error
)

// URL returns the broker URL of the tests, checked once per process with an
// AMQP handshake. It skips t when BANKRPC_AMQP_URL is unset and fails it when
// the broker does not answer.
func URL(t testing.TB) string {
	t.Helper()
	raw := os.Getenv(EnvURL)
	if raw == "" {
		t.Skipf("RabbitMQ tests are off: set %s (make test sets %s=amqp://guest:guest@127.0.0.1:5672/)", EnvURL, EnvURL)
	}
	once.Do(func() {
		conn, err := amqp091.DialConfig(raw, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
		if err != nil {
			dialed = err
			return
		}
		dialed = conn.Close()
	})
	if dialed != nil {
		t.Fatalf("%s=%s is set but the broker does not answer: %v (start one with scripts/broker.sh, or make broker)", EnvURL, redact(raw), dialed)
	}
	return raw
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// DeleteQueues deletes the queues a test declared on the broker at url, now.
// It logs what it could not delete: a queue never declared is fine.
func DeleteQueues(t testing.TB, url string, queues ...string) {
	t.Helper()
	conn, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Logf("could not delete queues %v: %v", queues, err)
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			t.Logf("could not delete queue %s: %v", q, err)
			return
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Logf("could not delete queue %s: %v", q, err)
		}
		_ = ch.Close()
	}
}
