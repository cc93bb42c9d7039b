package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Example runs the quickstart as `go run ./examples/quickstart` does and
// checks what it prints.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, "inproc://quickstart", os.Stdout); err != nil {
		fmt.Println("error:", err)
	}
	// Output:
	// serving quickstart.greeter.v1.GreeterService at inproc://quickstart
	// client: SayHello(name="Ada")
	//   server: SayHello(name="Ada") over inproc
	// client: got "hello, Ada"
	// client: SayHello(name="Grace")
	//   server: SayHello(name="Grace") over inproc
	// client: got "hello, Grace"
	// client: SayHello(name="")
	//   server: SayHello(name="") over inproc
	// client: refused as expected: code INVALID_ARGUMENT, message "greeter: name must not be empty"
}

// TestOverEachTransport runs the quickstart over the network backends: the
// same program and output, only --addr changes. The RabbitMQ run needs
// BANKRPC_AMQP_URL (make test sets it).
func TestOverEachTransport(t *testing.T) {
	t.Run("zmq", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		runOver(t, "zmq://127.0.0.1:"+strconv.Itoa(port), "zmq")
	})
	t.Run("amqp", func(t *testing.T) {
		u, err := url.Parse(amqptest.URL(t))
		require.NoError(t, err)
		// A fresh service name: a queue of its own in the shared broker,
		// deleted afterwards.
		service := fmt.Sprintf("quickstart-test-%d", time.Now().UnixNano())
		broker := u.String()
		t.Cleanup(func() { deleteServiceQueues(t, broker, service) })
		u.RawQuery = url.Values{"service": {service}}.Encode()
		if u.Path == "" {
			u.Path = "/"
		}
		runOver(t, u.String(), "amqp")
	})
}

func runOver(t *testing.T, addr, transport string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, addr, &out))
	u, err := url.Parse(addr)
	require.NoError(t, err)
	want := strings.ReplaceAll(`serving quickstart.greeter.v1.GreeterService at ADDR
client: SayHello(name="Ada")
  server: SayHello(name="Ada") over T
client: got "hello, Ada"
client: SayHello(name="Grace")
  server: SayHello(name="Grace") over T
client: got "hello, Grace"
client: SayHello(name="")
  server: SayHello(name="") over T
client: refused as expected: code INVALID_ARGUMENT, message "greeter: name must not be empty"
`, " T\n", " "+transport+"\n")
	assert.Equal(t, strings.Replace(want, "ADDR", u.Redacted(), 1), out.String())
}

// deleteServiceQueues removes the durable queues a run left in the broker
// (the client's own expire by themselves).
func deleteServiceQueues(t *testing.T, broker, service string) {
	conn, err := amqp091.DialConfig(broker, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Errorf("delete the queues of service %s: %v", service, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("delete the queues of service %s: %v", service, err)
		return
	}
	for _, q := range []string{amqp.ServiceQueue(service), amqp.DeadLetterQueue(service)} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("delete queue %s: %v", q, err)
			return // an error closes the channel
		}
	}
}
