// Command bankrpc-bench measures bankrpc against its baselines in one run
// and prints the tables of issue 16 with the ratios: raw TCP, grpc-go, raw
// pebbe/zmq4, bankrpc over ZeroMQ (in-memory handler and the durable bank),
// raw amqp091-go durable and bankrpc over AMQP, at 1, 16 and 64 closed-loop
// callers, in paired rounds (medians of the per-round ratios); the inproc
// per-call cost; the thesis's experiment (trivial calls over durable AMQP,
// one at a time and 16 in flight); server memory with many idle ZeroMQ
// clients and with requests queued in AMQP.
//
// From the repository's root:
//
//	make bench                 the short run (under 3 minutes): prints the tables
//	make bench-full            the full run: tables and SVG charts into bench/results/
//
// which are, from bench/:
//
//	go run ./cmd/bankrpc-bench
//	go run ./cmd/bankrpc-bench -full -out results
//
// The amqp rows need a RabbitMQ broker at BANKRPC_AMQP_URL (or -amqp-url);
// without one they are skipped, and the report says so. A progress bar goes
// to stderr, the tables to stdout. To see where a row's time goes:
//
//	go run ./cmd/bankrpc-bench -only zmq-raw,zmq -callers 1 -cpuprofile cpu.out
//	go tool pprof -top cpu.out
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/bankrpc/bankrpc/bench/harness"
)

func main() {
	harness.RunChildIfAsked()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bankrpc-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		full       = fs.Bool("full", false, "the full run: 5 rounds of 3 s after 1 s of warm-up per cell, 10,000-call thesis experiment, 10,000 idle clients (the defaults are the short run's)")
		callerList = fs.String("callers", "1,16,64", "comma-separated numbers of concurrent callers")
		duration   = fs.Duration("duration", 0, "measured time per cell (default 500ms, -full 3s)")
		warmUp     = fs.Duration("warmup", -1, "warm-up before each cell (default 200ms, -full 1s)")
		rounds     = fs.Int("rounds", 0, "paired rounds per callers level (default 3, -full 5)")
		only       = fs.String("only", "", "comma-separated scenario keys to run (tcp,grpc,zmq-raw,zmq,zmq-bank,amqp-raw,amqp); default all")
		thesisN    = fs.Int("thesis", -1, "calls in the thesis experiment, 0 skips it (default 1000, -full 10000)")
		memClients = fs.Int("mem-clients", -1, "idle zmq clients for the memory figure, 0 skips it (default 1000, -full 10000)")
		memQueued  = fs.Int("mem-queued", -1, "amqp requests queued for the memory figure, 0 skips it (default 1000, -full 10000)")
		inproc     = fs.Duration("inproc", -1, "time per inproc round, 0 skips it (default 300ms, -full 1s)")
		out        = fs.String("out", "", "directory for report.md and the SVG charts (default none; -full: results)")
		amqpURL    = fs.String("amqp-url", os.Getenv("BANKRPC_AMQP_URL"), "RabbitMQ broker for the amqp rows (default $BANKRPC_AMQP_URL; empty skips them)")
		quiet      = fs.Bool("quiet", false, "no progress bar")
		cpuProfile = fs.String("cpuprofile", "", "write a CPU profile of the whole run (callers and servers; with -only, of those rows) to this file, for go tool pprof")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	callers, err := parseInts(*callerList)
	if err != nil {
		fmt.Fprintf(stderr, "bankrpc-bench: -callers %q: %v\n", *callerList, err)
		return 2
	}
	cfg := harness.Config{
		Callers: callers, Duration: 500 * time.Millisecond, WarmUp: 200 * time.Millisecond, Rounds: 3,
		AMQPURL: *amqpURL, ThesisN: 1000, FsyncSamples: 20, InprocTime: 300 * time.Millisecond, InprocRounds: 3,
		MemClients: 1000, MemQueued: 1000, Progress: stderr,
	}
	if *full {
		cfg.Duration, cfg.WarmUp, cfg.Rounds = 3*time.Second, time.Second, 5
		cfg.ThesisN, cfg.FsyncSamples, cfg.InprocTime, cfg.InprocRounds = 10000, 40, time.Second, 5
		cfg.MemClients, cfg.MemQueued = 10000, 10000
		if *out == "" {
			*out = "results"
		}
	}
	set := func(dst *int, v int) {
		if v >= 0 {
			*dst = v
		}
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *warmUp >= 0 {
		cfg.WarmUp = *warmUp
	}
	if *rounds > 0 {
		cfg.Rounds = *rounds
	}
	set(&cfg.ThesisN, *thesisN)
	set(&cfg.MemClients, *memClients)
	set(&cfg.MemQueued, *memQueued)
	if *inproc >= 0 {
		cfg.InprocTime = *inproc
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if *quiet {
		cfg.Progress = nil
	}
	if cfg.AMQPURL == "" {
		fmt.Fprintln(stderr, "bankrpc-bench: BANKRPC_AMQP_URL is not set: SKIPPING the amqp rows, the thesis experiment and the amqp memory figure")
	}
	tmp, err := os.MkdirTemp("", "bankrpc-bench-")
	if err != nil {
		fmt.Fprintf(stderr, "bankrpc-bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	cfg.TempDir = tmp

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "bankrpc-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bankrpc-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := harness.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bankrpc-bench: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, rep.Markdown(false))
	if *out != "" {
		if err := rep.WriteDir(*out); err != nil {
			fmt.Fprintf(stderr, "bankrpc-bench: %v\n", err)
			return 1
		}
		abs, _ := filepath.Abs(*out)
		fmt.Fprintf(stdout, "\nReport and charts written to %s\n", abs)
	}
	if len(rep.Failed) > 0 {
		fmt.Fprintf(stderr, "bankrpc-bench: %d figures could not be taken: %s\n", len(rep.Failed), strings.Join(rep.Failed, "; "))
		return 1
	}
	return 0
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
