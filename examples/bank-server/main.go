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
// Clients' calls are applied at most once: the bank remembers each client
// session for --session-retention after its last call (7 days of the server
// running, by default) and refuses, never applies, a call it can no longer
// prove unapplied. Accounts get --credit-limit of credit when they are
// created (0 by default); the administrators named by --admin may change an
// account's limit. If the newest log file ends with bytes that a crash does
// not explain, the server refuses to start and says so; --repair-log-tail
// then cuts them off, keeping a copy.
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
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	healthv1 "github.com/bankrpc/bankrpc/gen/bankrpc/health/v1"
	"github.com/bankrpc/bankrpc/health"
	"github.com/bankrpc/bankrpc/logging"
	"github.com/bankrpc/bankrpc/metrics"
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
		retention           time.Duration
		maxSessions         int
		creditLimit         int64
		admins              string
		repairTail          bool
		metricsAddr         string
		withPprof           bool
		drainDelay          time.Duration
	)
	bf.Register(fs, "the longest a call may run on the server; a client's shorter deadline wins", defaultTimeout)
	fs.StringVar(&dataDir, "data", "", "the `directory` holding the accounts (default ./data/<bank>); one server at a time")
	fs.BoolVar(&exitWhenIdle, "exit-when-idle", false, "stop, saving, when the last logged-on client logs off")
	fs.DurationVar(&retention, "session-retention", bank.DefaultSessionRetention, "how long the bank remembers a client session after its last call, counted while\nthe server runs: a retry with a call id is answered from the record within it")
	fs.IntVar(&maxSessions, "max-sessions", bank.DefaultMaxSessions, "the most client sessions the bank remembers at once; beyond, new sessions are\nrefused (RESOURCE_EXHAUSTED) until old ones expire")
	fs.Int64Var(&creditLimit, "credit-limit", 0, "the credit `limit` a new account gets, in minor units: its balance may go down\nto minus this (accounts keep the limit they were created with)")
	fs.StringVar(&admins, "admin", "", "comma-separated authenticated caller `identities` (AMQP user-id, CURVE public key)\nallowed to call the administrators' methods (SetCreditLimit)")
	fs.BoolVar(&repairTail, "repair-log-tail", false, "cut off damaged bytes at the end of the newest log file, which the bank otherwise\nrefuses to start with; a copy of them is kept next to the file")
	fs.StringVar(&logFormat, "log-format", "text", "`format` of the log lines on stderr: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "the least `level` logged: debug (one line per call), info, warn or error")
	fs.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`host:port`/metrics (off by default)")
	fs.BoolVar(&withPprof, "pprof", false, "also serve /debug/pprof/ on --metrics-addr")
	fs.DurationVar(&drainDelay, "drain-delay", 0, "on SIGTERM, how long to keep serving with health NOT_SERVING before draining, so that health checks and load balancers turn traffic away")

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
	if retention <= 0 {
		return usageFailure(stderr, cli.Usagef("--session-retention %v: give a positive duration, e.g. 168h", retention))
	}
	if maxSessions < 1 {
		return usageFailure(stderr, cli.Usagef("--max-sessions %d: give at least 1", maxSessions))
	}
	if creditLimit < 0 {
		return usageFailure(stderr, cli.Usagef("--credit-limit %d: give 0 or more", creditLimit))
	}

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	hs := health.NewServer()
	hs.SetServingStatus(bankv1.Bank_ServiceDesc.ServiceName, health.Serving)
	opts := []bank.Option{
		bank.WithLogger(logger),
		bank.WithOnFailure(func(err error) {
			logger.Error("health: NOT_SERVING: the bank cannot write", "error", err)
			hs.SetServingStatus("", health.NotServing)
			hs.SetServingStatus(bankv1.Bank_ServiceDesc.ServiceName, health.NotServing)
		}),
		bank.WithSessionRetention(retention),
		bank.WithMaxSessions(maxSessions),
		bank.WithCreditLimit(creditLimit),
	}
	for id := range strings.SplitSeq(admins, ",") {
		if id = strings.TrimSpace(id); id != "" {
			opts = append(opts, bank.WithAdmins(id))
		}
	}
	if repairTail {
		opts = append(opts, bank.WithRepairLogTail())
	}
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

	reg := metrics.NewRegistry()
	srvMetrics, transportMetrics := metrics.NewServerMetrics(), metrics.NewTransportMetrics()
	reg.MustRegister(srvMetrics, transportMetrics)
	srv := bankrpc.NewServer(bankrpc.WithLogger(logger), srvMetrics.Option(),
		logging.Option(logger), bankrpc.UnaryInterceptor(boundCalls(t.Timeout)))
	bankv1.RegisterBankServer(srv, b)
	hs.Register(srv)
	srvMetrics.InitializeMetrics(&bankv1.Bank_ServiceDesc, &healthv1.Health_ServiceDesc)
	if metricsAddr != "" {
		stopMetrics, err := serveMetrics(metricsAddr, metrics.Handler(reg), withPprof, logger)
		if err != nil {
			fmt.Fprintf(stderr, "bank-server: --metrics-addr %s: %v\n", metricsAddr, err)
			if serr := b.Shutdown(); serr != nil {
				fmt.Fprintf(stderr, "bank-server: %v\n", serr)
			}
			return cli.ExitFailure
		}
		defer stopMetrics()
	}
	lis, addr, err := backend.Listen(t, backend.ServerOptions{Logger: logger, Events: transportMetrics.Sink()})
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
		hs.Shutdown() // every status NOT_SERVING
		if drainDelay > 0 {
			logger.Info("stopping: health NOT_SERVING; still serving", "for", drainDelay)
			time.Sleep(drainDelay)
		}
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

// boundCalls bounds every call to d. (logging.Option logs each call, the
// refused ones too.)
func boundCalls(d time.Duration) bankrpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, handler bankrpc.UnaryHandler) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return handler(ctx, req)
	}
}

// serveMetrics serves h at /metrics (and /debug/pprof/ when asked) on addr
// until the returned stop is called.
func serveMetrics(addr string, h http.Handler, withPprof bool, logger *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hsrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server failed", "error", err)
		}
	}()
	logger.Info("serving metrics", "url", "http://"+l.Addr().String()+"/metrics", "pprof", withPprof)
	return func() { _ = hsrv.Close() }, nil
}

// openFailure explains why the data directory could not be opened.
func openFailure(w io.Writer, t backend.Target, dir string, err error) int {
	fmt.Fprintf(w, "bank-server: cannot open bank %q: %v\n", t.Bank, err)
	var locked *bank.LockedError
	var corrupt *bank.CorruptError
	var incomplete *bank.IncompleteError
	switch {
	case errors.As(err, &locked):
		fmt.Fprintf(w, "  another bank-server already serves the data in %s; stop it first, or give this one its own --data (and --bank).\n", dir)
	case errors.As(err, &corrupt) && corrupt.TailBytes > 0:
		fmt.Fprintf(w, "  if those %d bytes hold no change that a client was told of, start again with --repair-log-tail:\n"+
			"  the bank cuts them off and keeps a copy next to %s.\n", corrupt.TailBytes, corrupt.File)
	case errors.As(err, &corrupt):
		fmt.Fprintf(w, "  the bank refuses to guess: %s needs an operator's attention (keep a copy before changing anything).\n", corrupt.File)
	case errors.As(err, &incomplete):
		fmt.Fprintf(w, "  the bank refuses to start without %s: it would lose changes without a word.\n", incomplete.Missing)
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
