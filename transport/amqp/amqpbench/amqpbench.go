// Package amqpbench measures the AMQP backend against raw amqp091-go in the
// same process and run, so that a report can print ratios rather than
// absolute figures that vary between machines and broker states.
//
// All measurements run against the broker at the given URL, with a server
// and a client in this process, each on its own connection as the two
// processes of a deployment would be, and with queues of their own, deleted
// afterwards.
//
//   - RunRawDurable: the BASELINE.md scenario written directly on amqp091-go:
//     a 16 byte request published persistent with a publisher confirm to a
//     durable queue, consumed with manual acknowledgements, answered with a
//     persistent, confirmed reply to a durable reply queue, and acknowledged
//     only once the reply is confirmed. Closed loop: each caller sends its
//     next request when its reply arrived.
//   - RunBankrpc: the same closed loop through the generated stubs of
//     bankrpc.test.v1.TestService (Echo with a 16 byte payload) over
//     amqp.Client and amqp.Server.
//   - RunThesis: the thesis's experiment, n trivial calls (an empty Echo)
//     through bankrpc, inFlight at a time, with the latency of each.
package amqpbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp"
)

// PayloadSize is the size of a benchmark request's payload, that of an
// encoded Deposit request.
const PayloadSize = 16

// Prefetch is the server's prefetch in both measurements.
const Prefetch = 64

// Result is one measurement: the number of calls, the rate, and the
// latency percentiles, mean and standard deviation.
type Result = loadgen.Result

// RunRawDurable measures raw amqp091-go durable request/reply for duration d
// with the given number of callers.
func RunRawDurable(ctx context.Context, url string, callers int, d time.Duration) (Result, error) {
	name := "bankrpc.bench.raw." + randomHex()
	requests, replies := name+".requests", name+".replies"
	server, err := startRawServer(url, requests)
	if err != nil {
		return Result{}, err
	}
	client, err := dialRawClient(url, requests, replies)
	if err != nil {
		return Result{}, errors.Join(err, server.close(), DeleteQueues(url, requests))
	}
	payload := make([]byte, PayloadSize)
	res, err := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, _ int) error {
		return client.call(ctx, payload)
	})
	return res, errors.Join(err, client.close(), server.close(), DeleteQueues(url, requests, replies))
}

// rawServer answers each request with its own body, acknowledging it once
// the reply is confirmed.
type rawServer struct {
	conn *amqp091.Connection
	wg   sync.WaitGroup
}

func startRawServer(url, queue string) (*rawServer, error) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return nil, err
	}
	s := &rawServer{conn: conn}
	fail := func(err error) (*rawServer, error) { return nil, errors.Join(err, conn.Close()) }
	consume, err := conn.Channel()
	if err != nil {
		return fail(err)
	}
	if _, err := consume.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fail(err)
	}
	if err := consume.Qos(Prefetch, 0, false); err != nil {
		return fail(err)
	}
	publish, err := conn.Channel()
	if err != nil {
		return fail(err)
	}
	if err := publish.Confirm(false); err != nil {
		return fail(err)
	}
	deliveries, err := consume.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return fail(err)
	}
	s.wg.Go(func() {
		var handlers sync.WaitGroup
		defer handlers.Wait()
		for d := range deliveries {
			handlers.Go(func() {
				dc, err := publish.PublishWithDeferredConfirm("", d.ReplyTo, false, false, amqp091.Publishing{
					DeliveryMode:  amqp091.Persistent,
					CorrelationId: d.CorrelationId,
					Body:          d.Body,
				})
				if err == nil && dc.Wait() {
					_ = d.Ack(false)
				}
			})
		}
	})
	return s, nil
}

func (s *rawServer) close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

// rawClient publishes requests with confirms and matches replies by
// correlation id.
type rawClient struct {
	conn    *amqp091.Connection
	pub     *amqp091.Channel
	queue   string
	replyTo string
	seq     uint64
	mu      sync.Mutex // guards seq, waiting
	waiting map[string]chan []byte
	wg      sync.WaitGroup
}

func dialRawClient(url, queue, replyTo string) (*rawClient, error) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return nil, err
	}
	c := &rawClient{conn: conn, queue: queue, replyTo: replyTo, waiting: make(map[string]chan []byte)}
	fail := func(err error) (*rawClient, error) { return nil, errors.Join(err, conn.Close()) }
	if c.pub, err = conn.Channel(); err != nil {
		return fail(err)
	}
	if err := c.pub.Confirm(false); err != nil {
		return fail(err)
	}
	consume, err := conn.Channel()
	if err != nil {
		return fail(err)
	}
	if _, err := consume.QueueDeclare(replyTo, true, false, false, false, nil); err != nil {
		return fail(err)
	}
	if err := consume.Qos(256, 0, false); err != nil {
		return fail(err)
	}
	replies, err := consume.Consume(replyTo, "", false, false, false, false, nil)
	if err != nil {
		return fail(err)
	}
	c.wg.Go(func() {
		for d := range replies {
			c.mu.Lock()
			w := c.waiting[d.CorrelationId]
			delete(c.waiting, d.CorrelationId)
			c.mu.Unlock()
			if w != nil {
				w <- d.Body
			}
			_ = d.Ack(false)
		}
	})
	return c, nil
}

func (c *rawClient) call(ctx context.Context, payload []byte) error {
	reply := make(chan []byte, 1)
	c.mu.Lock()
	c.seq++
	id := strconv.FormatUint(c.seq, 10)
	c.waiting[id] = reply
	c.mu.Unlock()
	dc, err := c.pub.PublishWithDeferredConfirm("", c.queue, false, false, amqp091.Publishing{
		DeliveryMode:  amqp091.Persistent,
		CorrelationId: id,
		ReplyTo:       c.replyTo,
		Body:          payload,
	})
	if err != nil {
		return err
	}
	if ok, err := dc.WaitContext(ctx); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("amqpbench: request %s refused by the broker", id)
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *rawClient) close() error {
	err := c.conn.Close()
	c.wg.Wait()
	return err
}

// echo is the benchmark's TestService: Echo returns the payload.
type echo struct {
	testv1.UnimplementedTestServiceServer
}

func (echo) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Payload: in.GetPayload()}, nil
}

// bankrpcPair is a served amqp.Server and a stub on an amqp.Client.
type bankrpcPair struct {
	url     string
	service string
	client  string
	stub    testv1.TestServiceClient
	conn    *bankrpc.Conn
	srv     *amqp.Server
	served  chan error
}

func startBankrpc(url string) (*bankrpcPair, error) {
	p := &bankrpcPair{url: url, service: "bench-" + randomHex(), client: "bench-" + randomHex(), served: make(chan error, 1)}
	srv, err := amqp.Listen(url, amqp.ServerConfig{Service: p.service, Prefetch: Prefetch})
	if err != nil {
		return nil, err
	}
	p.srv = srv
	handler := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(handler, echo{})
	go func() { p.served <- srv.Serve(handler) }()
	cl, err := amqp.Dial(url, amqp.ClientConfig{Service: p.service, ClientName: p.client})
	if err != nil {
		return nil, errors.Join(err, p.stopServer(), DeleteQueues(url, amqp.ServiceQueue(p.service), amqp.DeadLetterQueue(p.service)))
	}
	p.conn = bankrpc.NewConn(cl, bankrpc.WithDefaultTimeout(time.Minute))
	p.stub = testv1.NewTestServiceClient(p.conn)
	return p, nil
}

func (p *bankrpcPair) stopServer() error {
	return errors.Join(p.srv.Close(), <-p.served)
}

func (p *bankrpcPair) close() error {
	return errors.Join(p.conn.Close(), p.stopServer(), DeleteQueues(p.url,
		amqp.ServiceQueue(p.service), amqp.DeadLetterQueue(p.service), amqp.ResultQueue(p.client), amqp.ErrorQueue(p.client)))
}

// RunBankrpc measures Echo calls with a 16 byte payload through the
// generated stubs over the AMQP backend for duration d, with the given number
// of callers sharing one client.
func RunBankrpc(ctx context.Context, url string, callers int, d time.Duration) (Result, error) {
	p, err := startBankrpc(url)
	if err != nil {
		return Result{}, err
	}
	req := &testv1.EchoRequest{Payload: make([]byte, PayloadSize)}
	res, err := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, _ int) error {
		_, err := p.stub.Echo(ctx, req)
		return err
	})
	return res, errors.Join(err, p.close())
}

// RunThesis makes n trivial calls (an empty Echo) through bankrpc, at most
// inFlight at a time, and returns the latency of each summarised: the
// thesis measured a mean of 1.975 s with a standard deviation of 0.229 s for
// n = 10,000, one at a time.
func RunThesis(ctx context.Context, url string, n, inFlight int) (Result, error) {
	p, err := startBankrpc(url)
	if err != nil {
		return Result{}, err
	}
	req := &testv1.EchoRequest{}
	res, err := loadgen.Count(ctx, n, inFlight, func(ctx context.Context, _ int) error {
		_, err := p.stub.Echo(ctx, req)
		return err
	})
	return res, errors.Join(err, p.close())
}

// DeleteQueues deletes queues (a measurement's, when it ends) on the broker at url.
func DeleteQueues(url string, queues ...string) error {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("amqpbench: delete queue %s: %w", q, err)
		}
	}
	return nil
}

func randomHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
