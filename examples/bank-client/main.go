// Command bank-client is a customer of a bank served by bank-server. It logs
// on to one account, given by --id, runs commands on it and logs off:
//
//	bank-client --id 7 deposit 100     one command, then exit
//	bank-client --id 7 transfer 8 30
//	bank-client --id 7                 an interactive prompt (or commands piped on stdin)
//	bank-client health                 is the bank serving? exit 0 if so, 1 if not
//
// --transport zmq|amqp, --addr and --bank choose the bank; every flag can
// also be set through a BANKRPC_<FLAG> environment variable (BANKRPC_ID=7),
// and a flag on the command line wins. Run bank-client --help for the rest.
//
// When the bank answers with an error, the client prints its code and
// reason, with advice that fits the code; "no answer" is only said of calls
// that got none.
//
// Exit status: 0 success, 1 the bank refused the operation (or cannot tell
// whether an earlier call was applied: ABORTED), 2 usage error (nothing was
// sent), 3 the bank could not be reached, did not answer in time, or
// answered that it did not run the call (UNAVAILABLE, CANCELED), 130
// interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// defaultTimeout bounds each call unless --timeout says otherwise.
const defaultTimeout = 5 * time.Second

// logOffTimeout bounds the log-off after an interruption: the user wants out.
const logOffTimeout = time.Second

// maxCallIDLen bounds --call-id; the bank records call ids of up to 255
// bytes.
const maxCallIDLen = 200

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills the program at once
	}()
	os.Exit(run(ctx, program{
		args:        os.Args[1:],
		lookupEnv:   os.LookupEnv,
		stdin:       os.Stdin,
		interactive: isTerminal(os.Stdin),
		stdout:      os.Stdout,
		stderr:      os.Stderr,
	}))
}

// isTerminal reports whether f is a terminal (a character device), without
// a dependency: the prompt is printed only then.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// program is what run needs from the process, so that tests can give their
// own.
type program struct {
	args           []string
	lookupEnv      func(string) (string, bool)
	stdin          io.Reader
	interactive    bool
	stdout, stderr io.Writer
}

// run is the program; it returns the exit status.
func run(ctx context.Context, p program) int {
	fs := flag.NewFlagSet("bank-client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		bf                  backend.Flags
		idFlag              string
		asJSON              bool
		clientName, callID  string
		logFormat, logLevel string
		wait                bool
	)
	bf.Register(fs, "how long each call may take before the client gives up with exit status 3", defaultTimeout)
	fs.StringVar(&idFlag, "id", "", "your account `id` (required): a positive 32-bit integer; the account is opened on first use")
	fs.BoolVar(&asJSON, "json", false, "print each reply as one JSON object: the response in protojson,\nor {\"error\":{\"code\":\"FAILED_PRECONDITION\",\"message\":\"...\"}}")
	fs.StringVar(&clientName, "client-name", "", "amqp only: a stable client `name` for the durable reply queues, kept while the\nclient is away; one process at a time may use it (default: a fresh name per run)")
	fs.StringVar(&callID, "call-id", "", "with one deposit, withdraw or transfer command: the call `id` this client printed\nfor a call whose outcome is unknown, to repeat it; the bank applies an id at most\nonce and answers a repeat with the recorded result (default: a fresh id)")
	fs.BoolVar(&wait, "wait", false, "with collect ID: wait until the bank has answered the call")
	fs.StringVar(&logFormat, "log-format", "text", "`format` of the transport's log lines on stderr: text or json")
	fs.StringVar(&logLevel, "log-level", "error", "the least `level` logged: debug, info, warn or error")

	set, err := cli.Parse(fs, p.args, p.lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		usage(p.stdout, fs)
		return cli.ExitOK
	}
	if err != nil {
		return usageFailure(p.stderr, err)
	}
	t, err := bf.Resolve(set)
	if err != nil {
		return usageFailure(p.stderr, err)
	}
	if fs.NArg() > 0 && fs.Arg(0) == cmdHealth {
		logger, err := cli.NewLogger(p.stderr, logFormat, logLevel)
		if err != nil {
			return usageFailure(p.stderr, err)
		}
		return healthCheck(ctx, t, fs.Args()[1:], logger, p.stdout, p.stderr)
	}
	if !set["id"] {
		return usageFailure(p.stderr, cli.Usagef("--id is required: your account id, a positive 32-bit integer (or set %s)", cli.EnvName("id")))
	}
	id, err := cli.ParseAccountID("--id", idFlag)
	if err != nil {
		return usageFailure(p.stderr, err)
	}
	var cmd *command
	later := fs.NArg() > 0 && (fs.Arg(0) == cmdSubmit || fs.Arg(0) == cmdCollect)
	var lc laterCommand
	if later {
		if err := checkSubmitTarget(t, clientName); err != nil {
			return usageFailure(p.stderr, err)
		}
		if lc, err = parseLater(fs.Args(), wait); err != nil {
			return usageFailure(p.stderr, err)
		}
	} else if fs.NArg() > 0 {
		c, err := parseCommand(fs.Args())
		if err != nil {
			return usageFailure(p.stderr, err)
		}
		switch c.name {
		case cmdHelp:
			fmt.Fprint(p.stdout, helpText)
			return cli.ExitOK
		case cmdQuit:
			return usageFailure(p.stderr, cli.Usagef("quit is a command of the interactive prompt: run bank-client --id %d without a command", id))
		}
		cmd = &c
	}
	if set["call-id"] {
		if err := checkCallID(callID, cmd); err != nil {
			return usageFailure(p.stderr, err)
		}
	}
	logger, err := cli.NewLogger(p.stderr, logFormat, logLevel)
	if err != nil {
		return usageFailure(p.stderr, err)
	}

	ct, err := backend.Dial(t, backend.ClientOptions{Account: id, ClientName: clientName, Logger: logger})
	if err != nil {
		return dialFailure(p.stderr, t, err)
	}
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(t.Timeout))
	defer conn.Close()
	if later {
		return runLater(ctx, conn, id, lc, t.Timeout, p)
	}
	s := &session{
		bank:      bankv1.NewBankClient(conn),
		id:        id,
		target:    t,
		newCallID: conn.NewCallID,
		json:      asJSON,
		out:       p.stdout,
		errOut:    p.stderr,
	}

	var status int
	if cmd != nil {
		if _, st := s.open(ctx, cmd.name); st != cli.ExitOK {
			return st
		}
		if callID == "" {
			callID = conn.NewCallID()
		}
		status = s.exec(ctx, *cmd, callID)
	} else {
		opened, st := s.open(ctx, "")
		if st != cli.ExitOK {
			return st
		}
		created := ""
		if opened.GetCreated() {
			created = " (new account)"
		}
		welcome := fmt.Sprintf("account %d logged on to %s: balance %d%s\ntype help for the commands, quit to log off\n",
			id, t, opened.GetBalance(), created)
		status = s.prompt(ctx, p.stdin, p.interactive, welcome)
	}

	logOffCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		logOffCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), logOffTimeout)
		defer cancel()
	}
	s.logOff(logOffCtx)
	return status
}

// runLater runs submit COMMAND or collect [ID] [--wait]: no log-on, as the
// bank need not run.
func runLater(ctx context.Context, conn *bankrpc.Conn, account int32, lc laterCommand, timeout time.Duration, p program) int {
	bank := bankv1.NewBankClient(conn)
	var (
		status int
		err    error
	)
	if lc.submit {
		status, err = submit(ctx, bank, account, lc.command, p.stdout, timeout)
	} else {
		if !lc.wait {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		status, err = collect(ctx, conn, bank, lc.id, lc.wait, p.stdout)
	}
	if err != nil {
		fmt.Fprintf(p.stderr, "bank-client: %s: %s\n", bankrpc.CodeOf(err), bankrpc.MessageOf(err))
	}
	return status
}

// checkCallID checks --call-id: it goes with one mutating command.
func checkCallID(id string, cmd *command) error {
	if cmd == nil || !cmd.mutating() {
		return cli.Usagef("--call-id goes with one deposit, withdraw or transfer command, e.g. bank-client --id 7 --call-id ID deposit 100")
	}
	if id == "" || len(id) > maxCallIDLen {
		return cli.Usagef("--call-id %q is not accepted: give 1 to %d printable ASCII characters", id, maxCallIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return cli.Usagef("--call-id %q is not accepted: give 1 to %d printable ASCII characters, no spaces", id, maxCallIDLen)
		}
	}
	if _, _, ok := bankrpc.ParseCallID(id); !ok {
		return cli.Usagef("--call-id %q is not a call id this client prints (<session>-<number>, e.g. 9c1e0b7d4f2a6e38-2): "+
			"the bank applies calls only under such ids", id)
	}
	return nil
}

// dialFailure reports that the backend could not even be set up: a
// malformed address (usage), or for AMQP a broker that does not answer or
// has no queue for the bank. Nothing was sent.
func dialFailure(w io.Writer, t backend.Target, err error) int {
	if bankrpc.CodeOf(err) == bankrpc.InvalidArgument {
		return usageFailure(w, cli.Usagef("%s", bankrpc.MessageOf(err)))
	}
	fmt.Fprintf(w, "cannot reach the bank over %s: %s\n", t, bankrpc.MessageOf(err))
	// Other codes (the bank's queue missing, the client name in use) come
	// with a message of their own that says what to do.
	if t.Kind == backend.AMQP && bankrpc.CodeOf(err) == bankrpc.Unavailable {
		fmt.Fprintf(w, "  check that RabbitMQ answers at %s (make broker starts one), and that\n"+
			"  bank-server --transport amqp --bank %s was started at least once: it declares the bank's queue.\n", backend.Redact(t.Addr), t.Bank)
	}
	fmt.Fprintln(w, "  nothing was sent.")
	return cli.ExitUnreachable
}

// usageFailure prints a usage error and returns ExitUsage.
func usageFailure(w io.Writer, err error) int {
	fmt.Fprintf(w, "bank-client: %v\nrun bank-client --help for usage\n", err)
	return cli.ExitUsage
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage: bank-client --id N [flags] [COMMAND [ARGS]]
       bank-client [flags] health [SERVICE]

Logs on to account N of a bank served by bank-server, runs COMMAND, prints the
reply and logs off. Without a COMMAND it reads commands from stdin, one per line:
an interactive prompt on a terminal; no prompt when stdin is a pipe or a file.

health asks the bank's health service (bankrpc.health.v1) without logging on and
prints SERVING, NOT_SERVING (the server is draining or cannot write) or
SERVICE_UNKNOWN; it exits 0 only for SERVING, 1 otherwise (also when nothing
answers within --timeout), for use as a container health check.

`)
	fmt.Fprint(w, helpText)
	fmt.Fprintln(w, "\nflags (each also read from the environment variable shown; a flag wins):")
	fs.SetOutput(w)
	cli.PrintDefaults(fs)
	fmt.Fprint(w, `
exit status: 0 success; 1 the bank refused the operation (insufficient funds, unknown
receiver, ...), or cannot tell whether an earlier call was applied (ABORTED); 2 usage
error, nothing was sent; 3 the bank could not be reached, did not answer within
--timeout, or answered that it did not run the call (UNAVAILABLE, CANCELED); 130
interrupted. At the prompt: that of the last command that did not succeed.
`)
}
