// Command bankrpc-bench measures bankrpc against raw baselines in the same
// run and prints the ratios: ZeroMQ (raw pebbe/zmq4 REQ per caller and a
// ROUTER echo server, versus Deposit-sized calls through the generated stubs
// over transport/zmq) and RabbitMQ (raw amqp091-go durable request/reply,
// versus bankrpc over transport/amqp), at several numbers of concurrent
// callers, plus the thesis's experiment (latency of 10,000 trivial calls).
//
// Each round measures the raw baseline and bankrpc back to back; the ratio
// reported is the median of the rounds' ratios, because a shared machine is
// noisy and medians of paired measurements resist it best.
//
//	bankrpc-bench [-transports zmq,amqp] [-callers 1,16,64] [-duration 2s] [-rounds 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp/amqpbench"
	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// run measures one side of a comparison.
type run func(ctx context.Context, callers int, d time.Duration) (loadgen.Result, error)

type scenario struct {
	name      string
	raw       string
	rawRun    run
	bankrpc   run
	available func() error
}

func main() {
	var (
		transports = flag.String("transports", "zmq,amqp", "comma-separated: zmq, amqp")
		callerList = flag.String("callers", "1,16,64", "comma-separated numbers of concurrent callers")
		duration   = flag.Duration("duration", 2*time.Second, "length of each measurement")
		rounds     = flag.Int("rounds", 3, "paired measurements per level; the median ratio is reported")
		amqpURL    = flag.String("amqp-url", envOr("BANKRPC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ broker for the amqp scenarios")
		thesisN    = flag.Int("thesis", 10000, "calls in the thesis experiment over AMQP (0 skips it)")
	)
	flag.Parse()
	callers, err := parseInts(*callerList)
	if err != nil || *rounds < 1 || *duration <= 0 {
		fmt.Fprintf(os.Stderr, "bankrpc-bench: bad flags: -callers %q, -rounds %d, -duration %v\n", *callerList, *rounds, *duration)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	scenarios := map[string]scenario{
		"zmq": {
			name: "ZeroMQ", raw: "raw pebbe/zmq4 REQ per caller, ROUTER echo",
			rawRun: zmqbench.RunRaw, bankrpc: zmqbench.RunBankrpc,
			available: func() error { return nil },
		},
		"amqp": {
			name: "RabbitMQ", raw: "raw amqp091-go durable (persistent, confirms, ack after reply)",
			rawRun: func(ctx context.Context, n int, d time.Duration) (loadgen.Result, error) {
				return amqpbench.RunRawDurable(ctx, *amqpURL, n, d)
			},
			bankrpc: func(ctx context.Context, n int, d time.Duration) (loadgen.Result, error) {
				return amqpbench.RunBankrpc(ctx, *amqpURL, n, d)
			},
			available: func() error { return reachable(*amqpURL) },
		},
	}
	failed := false
	for _, name := range strings.Split(*transports, ",") {
		sc, ok := scenarios[strings.TrimSpace(name)]
		if !ok {
			fmt.Fprintf(os.Stderr, "bankrpc-bench: unknown transport %q (want zmq or amqp)\n", name)
			os.Exit(2)
		}
		if err := sc.available(); err != nil {
			fmt.Printf("%s: skipped: %v\n\n", sc.name, err)
			continue
		}
		if err := compare(ctx, os.Stdout, sc, callers, *duration, *rounds); err != nil {
			fmt.Fprintf(os.Stderr, "bankrpc-bench: %s: %v\n", sc.name, err)
			failed = true
		}
		if name == "amqp" && *thesisN > 0 {
			if err := thesis(ctx, os.Stdout, *amqpURL, *thesisN); err != nil {
				fmt.Fprintf(os.Stderr, "bankrpc-bench: thesis experiment: %v\n", err)
				failed = true
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

func compare(ctx context.Context, out io.Writer, sc scenario, callers []int, d time.Duration, rounds int) error {
	fmt.Fprintf(out, "%s: bankrpc through generated stubs vs %s\n", sc.name, sc.raw)
	fmt.Fprintf(out, "%d rounds of %v each, medians\n", rounds, d)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "callers\traw req/s\traw p50\traw p99\tbankrpc req/s\tbankrpc p50\tbankrpc p99\tratio\tround ratios\t")
	for _, n := range callers {
		var raw, ours, ratios, rawP50, rawP99, p50, p99 []float64
		for range rounds {
			r, err := sc.rawRun(ctx, n, d)
			if err != nil {
				return fmt.Errorf("raw, %d callers: %w", n, err)
			}
			b, err := sc.bankrpc(ctx, n, d)
			if err != nil {
				return fmt.Errorf("bankrpc, %d callers: %w", n, err)
			}
			raw, ours = append(raw, r.PerSec), append(ours, b.PerSec)
			ratios = append(ratios, b.PerSec/r.PerSec)
			rawP50, rawP99 = append(rawP50, float64(r.P50)), append(rawP99, float64(r.P99))
			p50, p99 = append(p50, float64(b.P50)), append(p99, float64(b.P99))
		}
		roundRatios := make([]string, len(ratios))
		for i, r := range ratios {
			roundRatios[i] = fmt.Sprintf("%.2f", r)
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%v\t%v\t%.0f\t%v\t%v\t%.2fx\t%s\t\n", n,
			loadgen.Median(raw), dur(rawP50), dur(rawP99),
			loadgen.Median(ours), dur(p50), dur(p99),
			loadgen.Median(ratios), strings.Join(roundRatios, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return nil
}

func thesis(ctx context.Context, out io.Writer, brokerURL string, n int) error {
	fmt.Fprintf(out, "The thesis's experiment over RabbitMQ: %d trivial calls, latency from send to reply\n", n)
	fmt.Fprintln(out, "(the thesis measured mean 1.975 s, sigma 0.229 s)")
	for _, inFlight := range []int{1, 16} {
		r, err := amqpbench.RunThesis(ctx, brokerURL, n, inFlight)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %2d in flight: mean %v, sigma %v, p50 %v, p99 %v; %.0f calls/s; mean %.0fx below the thesis's\n",
			inFlight, r.Mean.Round(time.Microsecond), r.Stddev.Round(time.Microsecond), r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond),
			r.PerSec, 1.975/r.Mean.Seconds())
	}
	fmt.Fprintln(out)
	return nil
}

func dur(xs []float64) time.Duration {
	return time.Duration(loadgen.Median(xs)).Round(time.Microsecond)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// reachable tells whether something answers at the broker URL's address.
func reachable(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("bad broker URL %q: %w", rawURL, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return fmt.Errorf("no broker answers at %s (start one with scripts/broker.sh): %w", host, err)
	}
	return c.Close()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
