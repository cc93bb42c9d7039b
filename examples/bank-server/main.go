// Command bank-server serves one bank over ZeroMQ or RabbitMQ:
//
//	bank-server                                 bank "bank", tcp://127.0.0.1:4040, data in ./data/bank
//	bank-server --bank b2 --addr tcp://127.0.0.1:4041
//	bank-server --transport amqp --bank b2      the same bank over RabbitMQ
//
// The accounts live in the data directory (--data, default ./data/<bank>),
// which one process at a time may use; every acknowledged change is on disk
// before the client hears of it. SIGINT or SIGTERM stops the server
// gracefully: it stops taking requests, finishes those in flight, writes a
// snapshot and exits 0. --exit-when-idle also stops it, the same way, when
// the last logged-on client logs off.
//
// Every flag can also be set through a BANKRPC_<FLAG> environment variable;
// a flag on the command line wins. Logs go to stderr; the address served on
// is printed on stdout once the server takes requests.
//
// Exit status: 0 stopped cleanly, 1 could not start (data directory in use,
// address in use, damaged data) or failed, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// defaultTimeout bounds each call on the server unless --timeout says
// otherwise; a call's own deadline, when shorter, wins.
const defaultTimeout = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the server at once; the log keeps every acknowledged change
	}()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is the program; it returns the exit status. It serves until ctx ends
// (a signal) or, with --exit-when-idle, until the last client logs off.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bank-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		bf                  backend.Flags
		dataDir             string
		exitWhenIdle        bool
		logFormat, logLevel string
	)
	bf.Register(fs, "the longest a call may run on the server; a client's shorter deadline wins", defaultTimeout)
	fs.StringVar(&dataDir, "data", "", "the `directory` holding the accounts (default ./data/<bank>); one server at a time")
	fs.BoolVar(&exitWhenIdle, "exit-when-idle", false, "stop, saving, when the last logged-on client logs off")
	fs.StringVar(&logFormat, "log-format", "text", "`format` of the log lines on stderr: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "the least `level` logged: debug (one line per call), info, warn or error")

	set, err := cli.Parse(fs, args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout, fs)
		return cli.ExitOK
	}
	if err != nil {
		return usageFailure(stderr, err)
	}
	t, err := bf.Resolve(set)
	if err != nil {
		return usageFailure(stderr, err)
	}
	if dataDir == "" {
		dataDir = filepath.Join("data", t.Bank)
	}
	logger, err := cli.NewLogger(stderr, logFormat, logLevel)
	if err != nil {
		return usageFailure(stderr, err)
	}
	logger = logger.With("bank", t.Bank)

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	opts := []bank.Option{bank.WithLogger(logger)}
	var b *bank.Bank // set before serving starts, so before any OnIdle
	if exitWhenIdle {
		opts = append(opts, bank.WithOnIdle(func() {
			// A client may have logged on since the log-off that made the
			// bank idle: then keep serving until the next idle moment.
			if b.Online() > 0 {
				return
			}
			logger.Info("the last client logged off: stopping (--exit-when-idle)")
			stopServing()
		}))
	}
	b, err = bank.Open(dataDir, opts...)
	if err != nil {
		return openFailure(stderr, t, dataDir, err)
	}
	accounts := len(b.Accounts())

	srv := bankrpc.NewServer(bankrpc.WithLogger(logger), bankrpc.UnaryInterceptor(boundCalls(t.Timeout, logger)))
	bankv1.RegisterBankServer(srv, b)
	lis, addr, err := backend.Listen(t, logger)
	if err != nil {
		status := listenFailure(stderr, t, err)
		if serr := b.Shutdown(); serr != nil {
			fmt.Fprintf(stderr, "bank-server: %v\n", serr)
		}
		return status
	}
	logger.Info("serving", "transport", t.Kind, "addr", addr)
	fmt.Fprintf(stdout, "bank %q serving over %s at %s; data in %s (%s)\n", t.Bank, t.Kind, addr, dataDir, countAccounts(accounts))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	var serveErr error
	select {
	case serveErr = <-served:
	case <-serveCtx.Done():
		// Calls run at most --timeout each (boundCalls), so the drain ends
		// by then; a handler stuck past it is canceled.
		logger.Info("stopping: no new requests; finishing the calls in flight")
		drainCtx, cancel := context.WithTimeout(context.Background(), t.Timeout+time.Second)
		if err := srv.Shutdown(drainCtx); err != nil {
			logger.Warn("stopping: calls still running were canceled", "error", err)
		}
		cancel()
		serveErr = <-served
	}
	if errors.Is(serveErr, bankrpc.ErrServerClosed) {
		serveErr = nil
	}
	if serveErr != nil {
		logger.Error("serving failed", "error", serveErr)
	}
	accounts = len(b.Accounts())
	if err := b.Shutdown(); err != nil {
		logger.Error("shutdown failed", "error", err)
		fmt.Fprintf(stderr, "bank-server: %v\n", err)
		return cli.ExitFailure
	}
	logger.Info("stopped: snapshot written", "data", dataDir, "accounts", accounts)
	fmt.Fprintf(stdout, "bank %q stopped: %s saved in %s\n", t.Bank, countAccounts(accounts), dataDir)
	if serveErr != nil {
		return cli.ExitFailure
	}
	return cli.ExitOK
}

func countAccounts(n int) string {
	if n == 1 {
		return "1 account"
	}
	return fmt.Sprintf("%d accounts", n)
}

// boundCalls bounds every call to d and logs each one at debug level.
func boundCalls(d time.Duration, logger *slog.Logger) bankrpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *bankrpc.UnaryServerInfo, handler bankrpc.UnaryHandler) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		start := time.Now()
		resp, err := handler(ctx, req)
		if logger.Enabled(ctx, slog.LevelDebug) {
			logger.DebugContext(ctx, "call", "method", info.FullMethod, "call_id", bankrpc.CallIDFromContext(ctx), "code", bankrpc.CodeOf(err).String(), "error", bankrpc.MessageOf(err), "took", time.Since(start))
		}
		return resp, err
	}
}

// openFailure explains why the data directory could not be opened.
func openFailure(w io.Writer, t backend.Target, dir string, err error) int {
	fmt.Fprintf(w, "bank-server: cannot open bank %q: %v\n", t.Bank, err)
	var locked *bank.LockedError
	var corrupt *bank.CorruptError
	switch {
	case errors.As(err, &locked):
		fmt.Fprintf(w, "  another bank-server already serves the data in %s; stop it first, or give this one its own --data (and --bank).\n", dir)
	case errors.As(err, &corrupt):
		fmt.Fprintf(w, "  the bank refuses to guess: %s needs an operator's attention (keep a copy before changing anything).\n", corrupt.File)
	}
	return cli.ExitFailure
}

// listenFailure explains why the server could not listen.
func listenFailure(w io.Writer, t backend.Target, err error) int {
	if bankrpc.CodeOf(err) == bankrpc.InvalidArgument {
		return usageFailure(w, cli.Usagef("%s", bankrpc.MessageOf(err)))
	}
	fmt.Fprintf(w, "bank-server: cannot serve over %s: %s\n", t, bankrpc.MessageOf(err))
	if t.Kind == backend.AMQP {
		fmt.Fprintf(w, "  check that RabbitMQ answers at %s (make broker starts one).\n", backend.Redact(t.Addr))
	} else {
		fmt.Fprintf(w, "  is another bank-server, or another program, using %s? Pick another --addr.\n", t.Addr)
	}
	return cli.ExitFailure
}

// usageFailure prints a usage error and returns ExitUsage.
func usageFailure(w io.Writer, err error) int {
	fmt.Fprintf(w, "bank-server: %v\nrun bank-server --help for usage\n", err)
	return cli.ExitUsage
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage: bank-server [flags]

Serves one bank over ZeroMQ (--transport zmq, the default) or RabbitMQ (--transport amqp),
keeping its accounts in --data. SIGINT or SIGTERM stops it cleanly, saving a snapshot.

flags (each also read from the environment variable shown; a flag wins):
`)
	fs.SetOutput(w)
	cli.PrintDefaults(fs)
	fmt.Fprint(w, `
exit status: 0 stopped cleanly; 1 could not start (data directory in use, address in use,
damaged data) or failed; 2 usage error.
`)
}
