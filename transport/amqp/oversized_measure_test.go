package amqp

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/procstat"
)

// measureEnv turns on TestMeasureOversizedFlood, a measurement of a few
// minutes that loads a broker with gigabytes: it is not run by make test.
const measureEnv = "BANKRPC_MEASURE"

// oversizeServerEnv makes the test binary a server process
// (TestOversizeServerProcess): "<broker URL> <service>".
const oversizeServerEnv = "BANKRPC_AMQP_OVERSIZE_SERVER"

// TestOversizeServerProcess is the body of the server process of
// TestMeasureOversizedFlood: the default frame limit (4 MiB), prefetch and
// concurrency; it prints "ready" once serving and stops when its standard
// input closes.
func TestOversizeServerProcess(t *testing.T) {
	spec := os.Getenv(oversizeServerEnv)
	if spec == "" {
		t.Skip("run by TestMeasureOversizedFlood")
	}
	url, svc, _ := strings.Cut(spec, " ")
	s, err := Listen(url, ServerConfig{Service: svc, MaxFrameSize: bankrpc.DefaultMaxFrameSize, Logger: testLogger(t)})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(handlerFor(newLedger())) }()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	require.NoError(t, s.Close())
	require.NoError(t, <-done)
}

// TestMeasureOversizedFlood measures, for a server process with the default
// settings, its RSS and the latency of good callers while twenty 100 MiB
// requests are published into its queue, on a broker with the project's
// max_message_size (the private node of scripts/rabbitmq-node.sh) and on
// one with RabbitMQ's default 128 MiB. It prints the figures; the targets of
// issue 12 (RSS < 512 MB, p99 < 1 s with the setting) are checked with the
// setting only. BANKRPC_MEASURE=1 runs it:
//
//	BANKRPC_MEASURE=1 BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ \
//	  go test -count=1 -timeout 15m -run TestMeasureOversizedFlood -v ./transport/amqp/
//
// The figures depend on the machine: the broker reads every 100 MiB message
// whole before it refuses it, and persists those it takes.
func TestMeasureOversizedFlood(t *testing.T) {
	if os.Getenv(measureEnv) == "" {
		t.Skip(measureEnv + "=1 runs this measurement (minutes, gigabytes through a private broker)")
	}
	for _, c := range []struct {
		name string
		url  func(*testing.T) string
	}{
		{"with max_message_size 4259840", privateNodeURL},
		{"with RabbitMQ's default 128 MiB", lenientNode},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := measureFlood(t, c.url(t))
			t.Logf("%s: %s", c.name, m)
			if load, err := os.ReadFile("/proc/loadavg"); err == nil {
				t.Logf("load average during the run: %s", strings.TrimSpace(string(load)))
			}
			if strings.HasPrefix(c.name, "with max_message_size") {
				require.Less(t, m.peakRSS, int64(512<<20), "server RSS under the flood")
				require.Less(t, m.floodP99, time.Second, "good callers' p99 under the flood")
			}
		})
	}
}

type floodFigures struct {
	baseRSS, peakRSS, afterRSS int64
	baseP99, floodP99, maxLat  time.Duration
	baseRate, floodRate        float64
	refused, deadLettered      int
	floodTook                  time.Duration
}

func (f floodFigures) String() string {
	mb := func(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/1e6) }
	return fmt.Sprintf("server RSS %s before, %s peak, %s 5 s after; good callers p99 %v before, %v during (max %v); %.0f calls/s before, %.0f during; %d publishes refused by the broker, %d dead-lettered by the server; flood took %v",
		mb(f.baseRSS), mb(f.peakRSS), mb(f.afterRSS), f.baseP99.Round(time.Millisecond), f.floodP99.Round(time.Millisecond), f.maxLat.Round(time.Millisecond),
		f.baseRate, f.floodRate, f.refused, f.deadLettered, f.floodTook.Round(time.Millisecond))
}

func measureFlood(t *testing.T, url string) floodFigures {
	ctx := testCtx(t, 6*time.Minute)
	svc := uniqueName(t)
	deleteQueues(t, url, ServiceQueue(svc), DeadLetterQueue(svc))

	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestOversizeServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), oversizeServerEnv+"="+url+" "+svc)
	cmd.Stderr = io.Discard
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	require.True(t, sc.Scan() && sc.Text() == "ready", "the server process did not start: %q", sc.Text())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	pid := cmd.Process.Pid

	// RSS, sampled every 20 ms.
	var rssMu sync.Mutex
	var peak int64
	stopRSS := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			if n := procstat.RSS(pid); n > 0 {
				rssMu.Lock()
				peak = max(peak, n)
				rssMu.Unlock()
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	defer func() {
		close(stopRSS)
		sampler.Wait()
	}()

	// Good callers: 4 at once, back to back.
	c := dial(t, url, ClientConfig{Service: svc})
	echo := testv1.NewTestServiceClient(bankrpc.NewConn(c))
	type sample struct {
		start time.Time
		took  time.Duration
	}
	var latMu sync.Mutex
	var lats []sample
	goodFailed := 0
	stopGood := make(chan struct{})
	var good sync.WaitGroup
	for range 4 {
		good.Go(func() {
			for {
				select {
				case <-stopGood:
					return
				default:
				}
				start := time.Now()
				_, err := echo.Echo(ctx, &testv1.EchoRequest{Tag: "good"}, bankrpc.WithTimeout(60*time.Second))
				if err != nil {
					// Counted, not fatal: on a broker that takes the flood,
					// the good callers' connection may miss its heartbeats.
					latMu.Lock()
					goodFailed++
					latMu.Unlock()
					time.Sleep(100 * time.Millisecond) // a lost connection fails calls at once
					continue
				}
				latMu.Lock()
				lats = append(lats, sample{start, time.Since(start)})
				latMu.Unlock()
			}
		})
	}
	stats := func(from, to time.Time) (p99, worst time.Duration, rate float64) {
		latMu.Lock()
		defer latMu.Unlock()
		var d []time.Duration
		for _, s := range lats {
			if !s.start.Before(from) && s.start.Before(to) {
				d = append(d, s.took)
			}
		}
		if len(d) == 0 {
			return 0, 0, 0
		}
		slices.Sort(d)
		return d[len(d)*99/100], d[len(d)-1], float64(len(d)) / to.Sub(from).Seconds()
	}

	time.Sleep(3 * time.Second)
	var f floodFigures
	f.baseRSS = procstat.RSS(pid)
	rssMu.Lock()
	peak = f.baseRSS
	rssMu.Unlock()
	baseEnd := time.Now()
	f.baseP99, _, f.baseRate = stats(baseEnd.Add(-3*time.Second), baseEnd)

	// The flood: twenty 100 MiB requests, one after the other, each on a
	// channel of its own (the broker closes a channel that publishes above
	// its max_message_size).
	body := make([]byte, 100<<20)
	for i := range body {
		body[i] = byte(i)
	}
	floodStart := time.Now()
	accepted, failedPublishes := 0, 0
	func() {
		var conn *amqp091.Connection
		defer func() {
			if conn != nil {
				_ = conn.Close()
			}
		}()
		for i := range 20 {
			if conn == nil || conn.IsClosed() {
				var err error
				if conn, err = amqp091.Dial(url); err != nil {
					failedPublishes++
					conn = nil
					continue
				}
			}
			ch, err := conn.Channel()
			if err != nil {
				failedPublishes++
				_ = conn.Close()
				continue
			}
			closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
			confirm, err := func() (*amqp091.DeferredConfirmation, error) {
				if err := ch.Confirm(false); err != nil {
					return nil, err
				}
				return ch.PublishWithDeferredConfirmWithContext(ctx, RequestExchange, svc, false, false, amqp091.Publishing{
					CorrelationId: fmt.Sprintf("huge-%d", i), ReplyTo: "bankrpc.client.nobody.results", DeliveryMode: amqp091.Persistent, Body: body,
				})
			}()
			if err != nil {
				failedPublishes++
				_ = conn.Close()
				continue
			}
			select {
			case <-confirm.Done():
				if confirm.Acked() {
					accepted++
				}
			case e := <-closed:
				if e != nil && e.Code == amqp091.PreconditionFailed {
					f.refused++
				} else {
					failedPublishes++
				}
			case <-ctx.Done():
				t.Fatal("the flood did not end in time")
			}
			_ = ch.Close()
		}
	}()
	// Accepted requests are all dead-lettered by the server.
	deadline := time.Now().Add(3 * time.Minute)
	// (A publish whose connection was lost may have been taken too, and a
	// dead letter whose acknowledgement was lost is made again: at least
	// once.)
	for f.deadLettered = queueDepth(t, url, DeadLetterQueue(svc)); (f.deadLettered < accepted || queueDepth(t, url, ServiceQueue(svc)) > 0) && time.Now().Before(deadline); f.deadLettered = queueDepth(t, url, DeadLetterQueue(svc)) {
		time.Sleep(20 * time.Millisecond)
	}
	floodEnd := time.Now()
	f.floodTook = floodEnd.Sub(floodStart)
	time.Sleep(5 * time.Second)
	f.afterRSS = procstat.RSS(pid)
	close(stopGood)
	good.Wait()
	f.floodP99, f.maxLat, f.floodRate = stats(floodStart, floodEnd)
	rssMu.Lock()
	f.peakRSS = peak
	rssMu.Unlock()
	t.Logf("%d of 20 publishes accepted by the broker, %d failed otherwise (connection lost); %d good calls failed", accepted, failedPublishes, goodFailed)
	require.GreaterOrEqual(t, f.deadLettered, accepted, "every accepted oversized request dead-lettered")
	return f
}
