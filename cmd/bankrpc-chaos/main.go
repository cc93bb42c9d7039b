// Command bankrpc-chaos is the fault suite of bankrpc: it runs the bank as
// real processes (bank-server, bank-client, built from this module) under
// faults, with a load of clients that deposit, withdraw and transfer among
// 20 accounts, and checks the promise of docs/RELIABILITY.md against the
// bank's own log: every acknowledged operation applied exactly once, none
// applied twice, money conserved, no client hung past its deadline.
//
//	go run ./cmd/bankrpc-chaos            the full suite (make chaos), ~40s of faults per scenario
//	go run ./cmd/bankrpc-chaos -short     the short variant (also run by go test, so by make test)
//	go run ./cmd/bankrpc-chaos -run 'zmq' only the scenarios whose name matches
//
// Each scenario prints the operations attempted, acknowledged and applied,
// the duplicates suppressed, the faults injected, the final money and a
// verdict. The exit status is 1 when any scenario found a violation, 2 on a
// usage error. The amqp scenarios start a private RabbitMQ node with
// scripts/rabbitmq-node.sh (never the shared broker); the disk-full scenario
// mounts a tmpfs and needs root. A scenario that cannot run here says why
// and is skipped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Options choose what a run does.
type Options struct {
	Short    bool
	Run      *regexp.Regexp
	Duration time.Duration // 0: 40s, or 5s with Short
	Work     string        // "" : a temporary directory, removed after a run without violations
	Root     string        // the module root; "": found from the working directory
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bankrpc-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       Options
		pattern string
	)
	fs.BoolVar(&o.Short, "short", false, "the short variant: a few seconds of faults per scenario")
	fs.StringVar(&pattern, "run", "", "run only the scenarios whose name matches this `regexp`")
	fs.DurationVar(&o.Duration, "duration", 0, "how long the faults of each scenario last (default 40s, 5s with -short)")
	fs.StringVar(&o.Work, "work", "", "keep the servers' data and logs in this `directory` (default: a temporary one, removed when every scenario passes)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if pattern != "" {
		re, err := regexp.Compile(pattern)
		if err != nil {
			fmt.Fprintf(stderr, "bankrpc-chaos: -run: %v\n", err)
			return 2
		}
		o.Run = re
	}
	results, err := Run(ctx, o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "bankrpc-chaos: %v\n", err)
		return 1
	}
	for _, r := range results {
		if r.Failed() {
			return 1
		}
	}
	return 0
}

// Run runs the scenarios and prints each one's figures to out.
func Run(ctx context.Context, o Options, out io.Writer) ([]*Result, error) {
	root := o.Root
	if root == "" {
		var err error
		if root, err = moduleRoot(); err != nil {
			return nil, err
		}
	}
	work := o.Work
	keep := work != ""
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "bankrpc-chaos-"); err != nil {
			return nil, err
		}
	}
	e := &Env{Root: root, Bin: filepath.Join(work, "bin"), Work: work, Out: out, Short: o.Short, Duration: o.Duration}
	if e.Duration == 0 {
		e.Duration = 40 * time.Second
		if o.Short {
			e.Duration = 5 * time.Second
		}
	}
	fmt.Fprintf(out, "bankrpc-chaos: building bank-server and bank-client; work in %s\n", work)
	if err := Build(ctx, root, e.Bin); err != nil {
		return nil, err
	}
	var results []*Result
	failed := false
	for _, s := range Scenarios() {
		if o.Run != nil && !o.Run.MatchString(s.Name) {
			continue
		}
		r := &Result{Name: s.Name, Fault: s.Fault}
		start := time.Now()
		err := s.Run(ctx, e, r)
		r.Took = time.Since(start)
		switch {
		case errors.Is(err, errSkip):
			r.Skipped = err.Error()
		case err != nil:
			r.violate("the scenario could not run: %v", err)
		}
		r.Print(out)
		failed = failed || r.Failed()
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := e.Close(cctx); err != nil {
		fmt.Fprintf(out, "warning: stop the private RabbitMQ node: %v\n", err)
	}
	printSummary(out, results)
	if !failed && !keep {
		_ = os.RemoveAll(work)
	} else {
		fmt.Fprintf(out, "data and logs kept in %s\n", work)
	}
	return results, nil
}

func printSummary(out io.Writer, results []*Result) {
	fmt.Fprintf(out, "\n%-24s %9s %9s %9s %7s %5s %9s %7s %s\n", "scenario", "attempted", "acked", "applied", "twice", "lost", "suppressed", "faults", "verdict")
	for _, r := range results {
		verdict := "PASS"
		switch {
		case r.Skipped != "":
			verdict = "SKIPPED"
		case r.Failed():
			verdict = "FAIL"
		}
		fmt.Fprintf(out, "%-24s %9d %9d %9d %7d %5d %9d %7d %s\n", r.Name, r.Attempted, r.Acked, r.Applied, r.AppliedTwice, r.AckedLost, r.Suppressed, r.Faults, verdict)
	}
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above: run bankrpc-chaos from the bankrpc module")
		}
		dir = parent
	}
}
