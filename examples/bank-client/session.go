package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// session is one logged-on client: it runs commands for one account and
// prints one line per reply. It is used by one goroutine.
type session struct {
	bank   bankv1.BankClient
	id     int32
	target backend.Target
	// newCallID returns a fresh call id, unique across processes.
	newCallID func() string
	json      bool
	out       io.Writer // replies
	errOut    io.Writer // explanations of calls that got no reply, usage errors
	// unreachable is set when the last call got no answer: logging off
	// would only wait for the timeout again.
	unreachable bool
}

// open logs the client on. It prints nothing on success, but a line on
// failure, and returns the exit status. nothingSent names the command that
// was not sent because of the failure, if any.
func (s *session) open(ctx context.Context, nothingSent string) (*bankv1.OpenResponse, int) {
	resp, err := s.bank.Open(ctx, &bankv1.OpenRequest{AccountId: s.id})
	if err == nil {
		return resp, cli.ExitOK
	}
	code := bankrpc.CodeOf(err)
	s.unreachable = noAnswer(err)
	if s.json {
		s.printError(code, bankrpc.MessageOf(err))
	}
	switch {
	case noAnswer(err):
		fmt.Fprintf(s.errOut, "log-on of account %d: no answer from the bank over %s within %v: %s\n",
			s.id, s.target, s.target.Timeout, bankrpc.MessageOf(err))
		fmt.Fprint(s.errOut, s.checkHint())
	case interrupted(err):
		fmt.Fprintf(s.errOut, "log-on of account %d: interrupted.\n", s.id)
	case !s.json:
		fmt.Fprintf(s.out, "log-on %s: %s\n", verdict(code), describe(code, err))
		if !cli.Refusal(code) {
			fmt.Fprint(s.errOut, s.answeredHint(code))
		}
	}
	if nothingSent != "" && (noAnswer(err) || !cli.Refusal(code)) {
		fmt.Fprintf(s.errOut, "  the %s was not sent.\n", nothingSent)
	}
	return nil, exitStatus(err)
}

// noAnswer reports whether a call that failed with err got no answer from
// the bank: the transport gave up or the time ran out on this side. An
// error the bank sent (bankrpc.IsWireError), whatever its code, is an
// answer: its code and reason are what to report.
func noAnswer(err error) bool {
	return cli.Unreachable(bankrpc.CodeOf(err)) && !bankrpc.IsWireError(err)
}

// interrupted reports whether a call that failed with err was interrupted
// here (the user's SIGINT), rather than answered CANCELED by the server.
func interrupted(err error) bool {
	return bankrpc.CodeOf(err) == bankrpc.Canceled && !bankrpc.IsWireError(err)
}

// exitStatus returns the exit status for a call that failed with err. A
// CANCELED the server sent (it did not run the call: an earlier attempt with
// its call id was given up) is not an interruption of this client: as for
// a bank that cannot serve now, the call may be tried again.
func exitStatus(err error) int {
	if bankrpc.IsWireError(err) && bankrpc.CodeOf(err) == bankrpc.Canceled {
		return cli.ExitUnreachable
	}
	return cli.ExitStatus(bankrpc.CodeOf(err))
}

// logOff logs the client off, unless the bank was just found unreachable.
// A failure is reported on errOut but does not change the exit status: the
// command itself is done.
func (s *session) logOff(ctx context.Context) {
	if s.unreachable {
		return
	}
	if _, err := s.bank.Close(ctx, &bankv1.CloseRequest{AccountId: s.id}); err != nil {
		fmt.Fprintf(s.errOut, "log-off of account %d failed: %v\n", s.id, err)
	}
}

// exec runs one bank command with the given call id (used by mutating
// commands) and prints its reply. It returns the exit status.
func (s *session) exec(ctx context.Context, c command, callID string) int {
	var (
		resp    proto.Message
		balance int64
		err     error
		opt     = bankrpc.WithCallID(callID)
	)
	var note string // after the balance, in the human output
	switch c.name {
	case cmdDeposit:
		var r *bankv1.DepositResponse
		r, err = s.bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: s.id, Amount: c.amount}, opt)
		resp, balance = r, r.GetBalance()
	case cmdWithdraw:
		var r *bankv1.WithdrawResponse
		r, err = s.bank.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: s.id, Amount: c.amount}, opt)
		resp, balance, note = r, r.GetBalance(), creditNote(r.GetFromCredit())
	case cmdTransfer:
		var r *bankv1.TransferResponse
		r, err = s.bank.Transfer(ctx, &bankv1.TransferRequest{AccountId: s.id, ToAccountId: c.to, Amount: c.amount}, opt)
		resp, balance, note = r, r.GetBalance(), creditNote(r.GetFromCredit())
	case cmdBalance:
		var r *bankv1.BalanceResponse
		r, err = s.bank.Balance(ctx, &bankv1.BalanceRequest{AccountId: s.id})
		resp, balance = r, r.GetBalance()
		if l := r.GetCreditLimit(); l > 0 {
			note = fmt.Sprintf(" (credit limit %d)", l)
		}
	default:
		panic("bank-client: exec of " + c.name) // parseCommand and the callers keep other names out
	}
	if err != nil {
		return s.failed(c, callID, err)
	}
	s.unreachable = false
	if s.json {
		s.printJSON(resp)
	} else {
		fmt.Fprintf(s.out, "balance %d%s\n", balance, note)
	}
	return cli.ExitOK
}

// creditNote says how much of a withdrawal or transfer came from credit, as
// the lab's bank did ("OK: lack of funds withdrew from credit account").
func creditNote(fromCredit int64) string {
	if fromCredit == 0 {
		return ""
	}
	return fmt.Sprintf(" (lack of funds: withdrew %d from credit)", fromCredit)
}

// failed prints why c failed and returns the exit status. When the bank
// answered, its code and reason are printed with advice for that code; the
// "no answer" explanation is for calls that got none.
func (s *session) failed(c command, callID string, err error) int {
	code := bankrpc.CodeOf(err)
	s.unreachable = noAnswer(err)
	if s.json {
		s.printError(code, bankrpc.MessageOf(err))
	} else if !noAnswer(err) && !interrupted(err) {
		fmt.Fprintf(s.out, "%s %s: %s\n", c.name, verdict(code), describe(code, err))
	}
	switch {
	case noAnswer(err):
		fmt.Fprintf(s.errOut, "%s: no answer from the bank over %s within %v: %s\n", c.name, s.target, s.target.Timeout, bankrpc.MessageOf(err))
		fmt.Fprint(s.errOut, s.checkHint())
		if c.mutating() {
			fmt.Fprint(s.errOut, s.unknownOutcome(c, callID, false))
		}
	case interrupted(err):
		fmt.Fprintf(s.errOut, "%s: interrupted before the bank answered.\n", c.name)
		if c.mutating() {
			fmt.Fprint(s.errOut, s.unknownOutcome(c, callID, false))
		}
	case code == bankrpc.Aborted:
		fmt.Fprintf(s.errOut, "  the bank cannot tell whether this %s (call id %s) was applied before: it keeps the outcome of a call\n"+
			"  only for a while, and not once the client that made it has moved on. It did not apply it now.\n"+
			"  check your balance (%s) before making the %s again, without --call-id.\n",
			c.name, callID, s.command(command{name: cmdBalance}, ""), c.name)
	case cli.Refusal(code):
	default:
		fmt.Fprint(s.errOut, s.answeredHint(code))
		if c.mutating() {
			fmt.Fprint(s.errOut, s.unknownOutcome(c, callID, true))
		}
	}
	return exitStatus(err)
}

// answeredHint says what to make of an error the bank answered with that is
// not a refusal of the request.
func (s *session) answeredHint(code bankrpc.Code) string {
	switch code {
	case bankrpc.Unavailable:
		return "  the bank is running but cannot serve now (a full disk, a failed write: see bank-server's log);\n" +
			"  its operator must act, and restart it. Raising --timeout would not help.\n"
	case bankrpc.DeadlineExceeded:
		return "  the bank took longer than the call may last (bank-server --timeout, or this client's --timeout).\n"
	case bankrpc.Canceled:
		return "  the server did not run the call: an earlier attempt with this call id was given up.\n"
	}
	return "  the bank failed to handle the call: see bank-server's log.\n"
}

// checkHint says what to check when the bank did not answer.
func (s *session) checkHint() string {
	if s.target.Kind == backend.AMQP {
		return fmt.Sprintf("  check that bank-server --transport amqp --bank %s runs and reaches the same broker, or raise --timeout.\n", s.target.Bank)
	}
	return fmt.Sprintf("  check that bank-server --transport %s --addr %s runs (and that nothing blocks the port), or raise --timeout.\n", s.target.Kind, s.target.Addr)
}

// unknownOutcome explains what may have become of a mutating call that got
// no answer, or an answer that does not say (answered), and how to find out
// without applying it twice.
func (s *session) unknownOutcome(c command, callID string, answered bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  the %s (call id %s) may or may not have been applied.\n", c.name, callID)
	if answered {
		b.WriteString("  once the bank serves again, ")
	} else if s.target.Kind == backend.AMQP {
		// The request carries its deadline as its AMQP expiration: the
		// broker discards it if it is still queued then, and the runtime of
		// a bank that receives it later refuses it with DEADLINE_EXCEEDED
		// before the bank sees it (docs/protocol-amqp.md, Deadlines).
		b.WriteString("  it will not be applied from now on: the request carried its deadline, so RabbitMQ discards it if it is\n" +
			"  still queued, and a bank that receives it late refuses it. A bank that took it in time may have applied it.\n")
	}
	if !answered {
		b.WriteString("  ")
	}
	b.WriteString("to find out without applying it twice, repeat it with the same call id: the bank applies a call id\n" +
		"  at most once and answers a repeat with the recorded result (for 7 days by default, bank-server\n" +
		"  --session-retention; after that it says the outcome is unknown, and still does not apply it):\n    ")
	b.WriteString(s.repeatCommand(c, callID))
	b.WriteString("\n")
	return b.String()
}

// repeatCommand is the bank-client command line that repeats c with the
// same call id.
func (s *session) repeatCommand(c command, callID string) string {
	return s.command(c, callID)
}

// command is the bank-client command line that runs c, with callID if not
// empty.
func (s *session) command(c command, callID string) string {
	words := []string{"bank-client"}
	if s.target.Kind != backend.ZMQ {
		words = append(words, "--transport", string(s.target.Kind))
	}
	if s.target.Addr != backend.DefaultZMQAddr && s.target.Addr != backend.DefaultAMQPAddr {
		words = append(words, "--addr", backend.Redact(s.target.Addr))
	}
	if s.target.Bank != backend.DefaultBank {
		words = append(words, "--bank", s.target.Bank)
	}
	if s.json {
		words = append(words, "--json")
	}
	words = append(words, "--id", fmt.Sprint(s.id))
	if callID != "" {
		words = append(words, "--call-id", callID)
	}
	words = append(words, c.args()...)
	return strings.Join(words, " ")
}

// verdict is "refused" when the bank turned the request down, "failed"
// otherwise.
func verdict(code bankrpc.Code) string {
	if cli.Refusal(code) {
		return "refused"
	}
	return "failed"
}

// describe is the message of a refusal, or the code and message of another
// failure.
func describe(code bankrpc.Code, err error) string {
	if cli.Refusal(code) {
		return bankrpc.MessageOf(err)
	}
	return code.String() + ": " + bankrpc.MessageOf(err)
}

// jsonMarshal gives every field, zeros included, so that a balance of 0
// reads "0" rather than being left out.
var jsonMarshal = protojson.MarshalOptions{EmitUnpopulated: true}

// printJSON prints resp as protojson on one line.
func (s *session) printJSON(resp proto.Message) {
	b, err := jsonMarshal.Marshal(resp)
	if err != nil {
		s.printError(bankrpc.Internal, fmt.Sprintf("encode the reply as JSON: %v", err))
		return
	}
	var line bytes.Buffer
	// protojson varies its whitespace on purpose; compact it to one line.
	if err := json.Compact(&line, b); err != nil {
		s.printError(bankrpc.Internal, fmt.Sprintf("compact the JSON reply: %v", err))
		return
	}
	line.WriteByte('\n')
	_, _ = s.out.Write(line.Bytes())
}

// jsonError is the --json form of a failed call.
type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// printError prints {"error":{"code":"...","message":"..."}} on one line.
func (s *session) printError(code bankrpc.Code, msg string) {
	b, _ := json.Marshal(jsonError{Error: jsonErrorBody{Code: code.String(), Message: msg}}) // two strings always encode
	_, _ = s.out.Write(append(b, '\n'))
}
