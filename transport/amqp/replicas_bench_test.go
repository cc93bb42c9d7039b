package amqp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp"
)

// stateless is a stateless service: Sleep stands for a handler's work
// (a database or a downstream call), Echo for none.
type stateless struct {
	testv1.UnimplementedTestServiceServer
}

func (stateless) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	t := time.NewTimer(time.Duration(in.GetNanos()))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return &testv1.SleepResponse{}, nil
}

func (stateless) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Payload: in.GetPayload()}, nil
}

// replicaConcurrency is each replica's handlers at once (ServerConfig's
// Prefetch and Concurrency): what one process of a real service can take.
const replicaConcurrency = 2

// BenchmarkReplicas measures a stateless service scaled out over AMQP:
// 1, 2 and 4 replicas, each with 2 handlers at once, consume the one service
// queue, and 64 callers (over 4 client connections) call it in a closed
// loop. With work=50ms a replica serves at most 2/50ms = 40 calls/s, so
// throughput grows with replicas until the broker limits it; with work=0
// the broker (persistent messages, confirms, acknowledgements) is the limit
// from the start. Each round measures the three replica counts, 2 s each,
// one after another; the medians over 5 rounds of the rates and of the
// per-round ratios to one replica are reported:
//
//	BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go test -run '^$' -bench Replicas -benchtime 1x ./transport/amqp
func BenchmarkReplicas(b *testing.B) {
	url := benchURL(b)
	const (
		d       = 2 * time.Second
		rounds  = 5
		callers = 64
		conns   = 4
	)
	counts := []int{1, 2, 4}
	for _, work := range []time.Duration{50 * time.Millisecond, 0} {
		b.Run(fmt.Sprintf("work=%v", work), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var suffix [4]byte
			_, _ = rand.Read(suffix[:])
			svc := "bench-replicas-" + hex.EncodeToString(suffix[:])
			// Four replicas, started and stopped as needed: replica i
			// serves while i < the count measured.
			replicas := make([]*replica, counts[len(counts)-1])
			defer func() {
				for _, r := range replicas {
					r.stop()
				}
			}()
			replicas[0] = startReplica(b, url, svc) // declares the service queue
			defer deleteServiceQueues(b, url, svc)
			clients := make([]testv1.TestServiceClient, conns)
			for i := range clients {
				ct, err := amqp.Dial(url+"?service="+svc, amqp.ClientConfig{QueueExpires: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				conn := bankrpc.NewConn(ct)
				defer conn.Close()
				clients[i] = testv1.NewTestServiceClient(conn)
			}
			call := func(ctx context.Context, caller int) error {
				c := clients[caller%conns]
				if work > 0 {
					_, err := c.Sleep(ctx, &testv1.SleepRequest{Nanos: int64(work)})
					return err
				}
				_, err := c.Echo(ctx, &testv1.EchoRequest{Payload: []byte("0123456789abcdef")})
				return err
			}
			rates := map[int][]float64{}
			ratios := map[int][]float64{}
			for b.Loop() {
				for range rounds {
					var one float64
					for _, n := range counts {
						for i, r := range replicas {
							switch {
							case i < n && r == nil:
								replicas[i] = startReplica(b, url, svc)
							case i >= n && r != nil:
								r.stop()
								replicas[i] = nil
							}
						}
						res, err := loadgen.ClosedLoop(ctx, callers, d, call)
						if err != nil {
							b.Fatal(err)
						}
						if n == 1 {
							one = res.PerSec
						}
						rates[n] = append(rates[n], res.PerSec)
						ratios[n] = append(ratios[n], res.PerSec/one)
					}
				}
			}
			for _, n := range counts {
				b.ReportMetric(loadgen.Median(rates[n]), fmt.Sprintf("req/s-%d-replicas", n))
				if n > 1 {
					b.ReportMetric(loadgen.Median(ratios[n]), fmt.Sprintf("ratio-%d-to-1", n))
				}
				b.Logf("work=%v, %d replicas: %.0f req/s (median of %d rounds; per round %.0f), x%.2f of one replica", work, n, loadgen.Median(rates[n]), len(rates[n]), rates[n], loadgen.Median(ratios[n]))
			}
		})
	}
}

// deleteServiceQueues deletes the service's queues from the shared broker.
func deleteServiceQueues(b *testing.B, url, svc string) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		b.Error(err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Error(err)
		return
	}
	for _, q := range []string{amqp.ServiceQueue(svc), amqp.DeadLetterQueue(svc)} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			b.Error(err)
		}
	}
}

// replica is one server process of the stateless service.
type replica struct {
	srv  *bankrpc.Server
	done chan error
}

func startReplica(b *testing.B, url, svc string) *replica {
	st, err := amqp.Listen(url+"?service="+svc, amqp.ServerConfig{Prefetch: replicaConcurrency, Concurrency: replicaConcurrency})
	if err != nil {
		b.Fatal(err)
	}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, stateless{})
	r := &replica{srv: srv, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(st) }()
	return r
}

func (r *replica) stop() {
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
	<-r.done
}
