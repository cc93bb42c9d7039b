// Command nodeloss runs the node-loss scenario of package cluster on a
// private three-node RabbitMQ cluster it starts (scripts/rabbitmq-node.sh)
// and removes, and prints the figures of each run. It exits with status 1
// when a run breaks a promise (an acknowledged transfer lost or applied
// twice, money not conserved, a queue not drained, an INTERNAL answer, a
// client not answered again within -recover of a loss), 2 when the cluster
// could not be started or driven.
//
//	go run ./examples/cluster/nodeloss -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc/examples/cluster"
)

func main() {
	var (
		runs     = flag.Int("runs", 1, "runs in a row, each on a fresh cluster")
		clients  = flag.Int("clients", 16, "transferring clients")
		accounts = flag.Int("accounts", 100, "accounts")
		faults   = flag.String("faults", "kill-leader,kill-connected,stop-other", "the node losses, in order: kill-leader, kill-connected, stop-other")
		recover_ = flag.Duration("recover", 30*time.Second, "the bound on the time every client waits for an answer after a loss")
		script   = flag.String("script", "scripts/rabbitmq-node.sh", "the node script")
		dir      = flag.String("dir", "", "the cluster's directory (default: a temporary one)")
		logFile  = flag.String("log", "", "write the transports' and the bank's logs (info and above) to this `file`")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := cluster.Config{
		Clients: *clients, Accounts: *accounts, RecoverWithin: *recover_,
		Progress: func(format string, args ...any) { fmt.Printf(time.Now().Format("15:04:05 ")+format+"\n", args...) },
	}
	for _, f := range strings.Split(*faults, ",") {
		cfg.Faults = append(cfg.Faults, cluster.FaultKind(strings.TrimSpace(f)))
	}
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		cfg.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	failed := 0
	for run := 1; run <= *runs; run++ {
		d := *dir
		if d == "" {
			tmp, err := os.MkdirTemp("", "bankrpc-cluster-")
			if err != nil {
				fail(err)
			}
			defer os.RemoveAll(tmp)
			d = filepath.Join(tmp, "cluster")
		}
		fmt.Printf("run %d/%d: starting a three-node cluster in %s\n", run, *runs, d)
		c, err := cluster.Start(ctx, *script, d, 3)
		if err != nil {
			fail(err)
		}
		rep, err := cluster.RunNodeLoss(ctx, c, cfg)
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if serr := c.Stop(sctx); serr != nil {
			fmt.Fprintln(os.Stderr, "nodeloss: stop the cluster:", serr)
		}
		cancel()
		if err != nil {
			fail(err)
		}
		fmt.Printf("run %d/%d:\n%s", run, *runs, rep)
		if !rep.OK() {
			failed++
		}
	}
	if failed > 0 {
		fmt.Printf("nodeloss: %d of %d runs FAILED\n", failed, *runs)
		os.Exit(1)
	}
	fmt.Printf("nodeloss: %d of %d runs OK\n", *runs, *runs)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "nodeloss:", err)
	os.Exit(2)
}
