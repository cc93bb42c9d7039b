package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a real bank served in memory, and the output of the sessions
// made on it.
type fixture struct {
	bank     *bank.Bank
	lis      *inproc.Listener
	conn     *bankrpc.Conn
	out, err bytes.Buffer
}

func newFixture(t *testing.T, opts ...bank.Option) *fixture {
	t.Helper()
	b, err := bank.Open(t.TempDir(), opts...)
	require.NoError(t, err)
	f := serveFixture(t, b)
	f.bank = b
	t.Cleanup(func() { assert.NoError(t, b.Shutdown()) })
	return f
}

// serveFixture serves impl in memory; its server keeps no replies of
// finished calls, so that a repeat reaches impl.
func serveFixture(t *testing.T, impl bankv1.BankServer) *fixture {
	t.Helper()
	srv := bankrpc.NewServer(bankrpc.WithReplyCache(0, 0))
	bankv1.RegisterBankServer(srv, impl)
	lis := inproc.NewListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	f := &fixture{lis: lis}
	f.conn = f.newConn(t)
	t.Cleanup(func() {
		assert.NoError(t, srv.Close())
		assert.ErrorIs(t, <-served, bankrpc.ErrServerClosed)
	})
	return f
}

// newConn returns a new client Conn to the fixture: a new client session,
// as another bank-client process has.
func (f *fixture) newConn(t *testing.T) *bankrpc.Conn {
	conn := bankrpc.NewConn(f.lis.Dial(), bankrpc.WithDefaultTimeout(5*time.Second))
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (f *fixture) session(id int32, asJSON bool) *session {
	return f.sessionOn(f.conn, id, asJSON)
}

func (f *fixture) sessionOn(conn *bankrpc.Conn, id int32, asJSON bool) *session {
	return &session{
		bank:      bankv1.NewBankClient(conn),
		id:        id,
		target:    backend.Target{Kind: backend.ZMQ, Addr: backend.DefaultZMQAddr, Bank: "bank", Timeout: 5 * time.Second},
		newCallID: conn.NewCallID,
		json:      asJSON,
		out:       &f.out,
		errOut:    &f.err,
	}
}

func (f *fixture) balance(t *testing.T, id int32) int64 {
	t.Helper()
	for _, a := range f.bank.Accounts() {
		if a.ID == id {
			return a.Balance
		}
	}
	t.Fatalf("account %d does not exist", id)
	return 0
}

// do parses and runs one command line on s and returns its exit status.
func do(t *testing.T, ctx context.Context, s *session, line string) int {
	t.Helper()
	c, err := parseCommand(strings.Fields(line))
	require.NoError(t, err, line)
	return s.exec(ctx, c, s.newCallID())
}

func TestParseCommand(t *testing.T) {
	for line, want := range map[string]command{
		"deposit 100":    {name: cmdDeposit, amount: 100},
		"withdraw 50":    {name: cmdWithdraw, amount: 50},
		"transfer 8 30":  {name: cmdTransfer, to: 8, amount: 30},
		"balance":        {name: cmdBalance},
		"help":           {name: cmdHelp},
		"quit":           {name: cmdQuit},
		"exit":           {name: cmdQuit},
		"deposit 000150": {name: cmdDeposit, amount: 150},
	} {
		got, err := parseCommand(strings.Fields(line))
		require.NoError(t, err, line)
		assert.Equal(t, want, got, line)
	}
	for line, says := range map[string]string{
		"":                            "no command",
		"fly 3":                       `unknown command "fly"`,
		"deposit":                     "deposit takes 1 argument",
		"deposit 1 2":                 "deposit takes 1 argument",
		"deposit abc":                 "digits only",
		"withdraw -5":                 "digits only",
		"deposit 0":                   "must be positive",
		"deposit 1e3":                 "digits only",
		"deposit 9223372036854775808": "too large",
		"transfer 8":                  "transfer takes 2 arguments",
		"transfer 0 5":                "receiver account id must be positive",
		"transfer x 5":                "receiver account id",
		"transfer 8 2.5":              "digits only",
		"balance now":                 "balance takes no argument",
	} {
		_, err := parseCommand(strings.Fields(line))
		require.Error(t, err, line)
		assert.ErrorAs(t, err, new(*cli.UsageError), line)
		assert.Contains(t, err.Error(), says, line)
	}
}

func TestSessionHumanOutput(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s7, s8 := f.session(7, false), f.session(8, false)
	_, st := s7.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	_, st = s8.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)

	assert.Equal(t, cli.ExitOK, do(t, ctx, s7, "deposit 150"))
	assert.Equal(t, cli.ExitRefused, do(t, ctx, s7, "withdraw 500"))
	assert.Equal(t, cli.ExitOK, do(t, ctx, s7, "transfer 8 30"))
	assert.Equal(t, cli.ExitRefused, do(t, ctx, s7, "transfer 42 1"))
	assert.Equal(t, cli.ExitRefused, do(t, ctx, s7, "transfer 7 1"))
	assert.Equal(t, cli.ExitOK, do(t, ctx, s8, "balance"))
	assert.Equal(t, "balance 150\n"+
		"withdraw refused: insufficient funds (balance 150, asked 500)\n"+
		"balance 120\n"+
		"transfer refused: no such receiver 42\n"+
		"transfer refused: cannot transfer to the same account 7\n"+
		"balance 30\n", f.out.String())
	assert.Empty(t, f.err.String())
	assert.Equal(t, int64(120), f.balance(t, 7))
	assert.Equal(t, int64(30), f.balance(t, 8))

	s7.logOff(ctx)
	s8.logOff(ctx)
	assert.Equal(t, 0, f.bank.Online(), "both clients logged off")
}

func TestSessionJSONOutput(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, true)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	assert.Equal(t, cli.ExitOK, do(t, ctx, s, "balance"))
	assert.Equal(t, cli.ExitOK, do(t, ctx, s, "deposit 100"))
	assert.Equal(t, cli.ExitRefused, do(t, ctx, s, "withdraw 500"))
	assert.Equal(t, `{"balance":"0","creditLimit":"0"}`+"\n"+
		`{"balance":"100"}`+"\n"+
		`{"error":{"code":"FAILED_PRECONDITION","message":"insufficient funds (balance 100, asked 500)"}}`+"\n", f.out.String())
	for line := range strings.Lines(f.out.String()) {
		assert.True(t, json.Valid([]byte(line)), "each line is one JSON object: %s", line)
	}
}

func TestSessionRepeatedCallIDIsAppliedOnce(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	c := command{name: cmdDeposit, amount: 100}
	id := s.newCallID()
	assert.Equal(t, cli.ExitOK, s.exec(ctx, c, id))
	assert.Equal(t, cli.ExitOK, s.exec(ctx, c, id))
	other := f.sessionOn(f.newConn(t), 7, false)
	assert.Equal(t, cli.ExitOK, other.exec(ctx, c, id), "from another process (bank-client --call-id)")
	assert.Equal(t, "balance 100\nbalance 100\nbalance 100\n", f.out.String(), "the repeat gets the recorded reply")
	assert.Equal(t, int64(100), f.balance(t, 7))
}

// TestSessionCallTooOldToKnow: a repeat of a call whose outcome the bank
// can no longer tell (its client moved on) is refused with ABORTED; the
// client says so and what to do, and exits 1.
func TestSessionCallTooOldToKnow(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	id := s.newCallID()
	c := command{name: cmdDeposit, amount: 100}
	require.Equal(t, cli.ExitOK, s.exec(ctx, c, id))
	require.Equal(t, cli.ExitOK, do(t, ctx, s, "deposit 5")) // the reply of id is no longer awaited
	f.out.Reset()

	other := f.sessionOn(f.newConn(t), 7, false)
	assert.Equal(t, cli.ExitRefused, other.exec(ctx, c, id))
	assert.Contains(t, f.out.String(), "deposit failed: ABORTED: outcome unknown: call \""+id+"\"")
	assert.Contains(t, f.err.String(), "the bank cannot tell whether this deposit (call id "+id+") was applied before")
	assert.Contains(t, f.err.String(), "check your balance (bank-client --id 7 balance) before making the deposit again, without --call-id")
	assert.NotContains(t, f.err.String(), "no answer")
	assert.Equal(t, int64(105), f.balance(t, 7), "not applied again")
}

// TestSessionCredit: what came from credit is shown, as the lab's bank did.
func TestSessionCredit(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t, bank.WithCreditLimit(100))
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	assert.Equal(t, cli.ExitOK, do(t, ctx, s, "deposit 30"))
	assert.Equal(t, cli.ExitOK, do(t, ctx, s, "withdraw 50"))
	assert.Equal(t, cli.ExitOK, do(t, ctx, s, "balance"))
	assert.Equal(t, cli.ExitRefused, do(t, ctx, s, "withdraw 81"))
	assert.Equal(t, "balance 30\n"+
		"balance -20 (lack of funds: withdrew 20 from credit)\n"+
		"balance -20 (credit limit 100)\n"+
		"withdraw refused: insufficient funds (balance -20, credit limit 100, asked 81)\n", f.out.String())
	assert.Empty(t, f.err.String())
}

// diskFullBank answers as a bank whose disk filled up: it takes log-ons,
// and refuses changes with the error the bank gives after a failed write.
type diskFullBank struct {
	bankv1.UnimplementedBankServer
}

const diskFull = "bank: stopped acknowledging changes after a log failure: write /var/lib/bank/log.00000001: no space left on device"

func (diskFullBank) Open(context.Context, *bankv1.OpenRequest) (*bankv1.OpenResponse, error) {
	return &bankv1.OpenResponse{Balance: 120}, nil
}

func (diskFullBank) Deposit(context.Context, *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	return nil, bankrpc.Errorf(bankrpc.Unavailable, "%s", diskFull)
}

func (diskFullBank) Close(context.Context, *bankv1.CloseRequest) (*bankv1.CloseResponse, error) {
	return nil, bankrpc.Errorf(bankrpc.Unavailable, "%s", diskFull)
}

// TestBankErrorIsReportedAsTheBankSaidIt: when the bank answers at once
// with an error (here UNAVAILABLE, a full disk), the client prints the code
// and the reason once, with advice for that code, not the advice for a
// bank that did not answer ("raise --timeout"). It used to say "no answer
// ... within 5s".
func TestBankErrorIsReportedAsTheBankSaidIt(t *testing.T) {
	ctx := testContext(t)
	f := serveFixture(t, diskFullBank{})
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	id := s.newCallID()
	st = s.exec(ctx, command{name: cmdDeposit, amount: 100}, id)
	assert.Equal(t, cli.ExitUnreachable, st, "the bank cannot serve now: as for a bank out of reach, retry later")
	assert.Equal(t, "deposit failed: UNAVAILABLE: "+diskFull+"\n", f.out.String())
	msg := f.err.String()
	assert.Contains(t, msg, "the bank is running but cannot serve now (a full disk, a failed write: see bank-server's log)")
	assert.Contains(t, msg, "the deposit (call id "+id+") may or may not have been applied")
	assert.Contains(t, msg, "once the bank serves again, to find out without applying it twice, repeat it with the same call id")
	assert.Contains(t, msg, "bank-client --id 7 --call-id "+id+" deposit 100")
	assert.NotContains(t, msg, "no answer")
	assert.NotContains(t, msg, "raise --timeout")
	assert.NotContains(t, msg, "within 5s")
	assert.Equal(t, 1, strings.Count(f.out.String()+msg, "/var/lib/bank/log.00000001"), "the path once")

	f.out.Reset()
	f.err.Reset()
	s.json = true
	s.exec(ctx, command{name: cmdDeposit, amount: 100}, s.newCallID())
	assert.Equal(t, `{"error":{"code":"UNAVAILABLE","message":"`+diskFull+`"}}`+"\n", f.out.String())
}

func TestPrompt(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	in := "deposit 100\n\n# a comment\nfly away\nwithdraw 30\nwithdraw 1000\nbalance\nquit\nbalance\n"
	st = s.prompt(ctx, strings.NewReader(in), false, "welcome\n")
	assert.Equal(t, cli.ExitRefused, st, "the status of the last command that did not succeed")
	assert.Equal(t, "balance 100\nbalance 70\nwithdraw refused: insufficient funds (balance 70, asked 1000)\nbalance 70\n", f.out.String(),
		"no prompt and no welcome when stdin is not a terminal; nothing after quit")
	assert.Equal(t, "unknown command \"fly\": give deposit, withdraw, transfer, balance, help or quit\n", f.err.String())
}

func TestPromptInteractive(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, false)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	st = s.prompt(ctx, strings.NewReader("help\ndeposit 5\n"), true, "welcome\n")
	assert.Equal(t, cli.ExitOK, st, "the end of the input ends the session")
	assert.Equal(t, "welcome\n"+promptText+helpText+promptText+"balance 5\n"+promptText+"\n", f.out.String())
}

func TestPromptJSONGivesOneObjectPerCommand(t *testing.T) {
	ctx := testContext(t)
	f := newFixture(t)
	s := f.session(7, true)
	_, st := s.open(ctx, "")
	require.Equal(t, cli.ExitOK, st)
	st = s.prompt(ctx, strings.NewReader("deposit 5\nwithdraw 0\nhelp\nbalance\n"), false, "")
	assert.Equal(t, cli.ExitUsage, st)
	lines := strings.Split(strings.TrimSpace(f.out.String()), "\n")
	require.Len(t, lines, 3, f.out.String())
	assert.Equal(t, `{"balance":"5"}`, lines[0])
	assert.Contains(t, lines[1], `{"error":{"code":"INVALID_ARGUMENT","message":"amount must be positive`)
	assert.Equal(t, `{"balance":"5","creditLimit":"0"}`, lines[2])
	assert.Equal(t, helpText, f.err.String(), "help goes to stderr: stdout carries only JSON")
}

func TestPromptInterrupted(t *testing.T) {
	f := newFixture(t)
	s := f.session(7, false)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	// A reader that never ends, as a terminal: the interruption alone ends the session.
	r, w := newBlockingInput(t)
	defer w()
	assert.Equal(t, cli.ExitInterrupted, s.prompt(ctx, r, false, ""))
}

func TestUnknownOutcomeExplainsHowToRepeat(t *testing.T) {
	f := newFixture(t)
	for _, kind := range []backend.Kind{backend.ZMQ, backend.AMQP} {
		f.out.Reset()
		f.err.Reset()
		s := f.session(7, false)
		s.target.Kind = kind
		s.target.Bank = "east"
		if kind == backend.AMQP {
			s.target.Addr = "amqp://guest:secret@10.0.0.1:5672/"
		}
		st := s.failed(command{name: cmdDeposit, amount: 100}, "id-1", bankrpc.Errorf(bankrpc.DeadlineExceeded, "deadline exceeded"))
		assert.Equal(t, cli.ExitUnreachable, st)
		assert.Empty(t, f.out.String(), "no reply: nothing on stdout")
		msg := f.err.String()
		assert.Contains(t, msg, "within 5s")
		assert.Contains(t, msg, "may or may not have been applied")
		assert.Contains(t, msg, "--bank east --id 7 --call-id id-1 deposit 100")
		assert.NotContains(t, msg, "secret")
		if kind == backend.AMQP {
			assert.Contains(t, msg, "bank-client --transport amqp --addr amqp://guest:xxxxx@10.0.0.1:5672/")
			assert.Contains(t, msg, "it will not be applied from now on")
		} else {
			assert.Contains(t, msg, "--addr tcp://127.0.0.1:4040 runs")
		}
	}
}
