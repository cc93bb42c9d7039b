package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
)

// Result is the outcome of one scenario.
type Result struct {
	Name, Fault string
	Skipped     string // why the scenario did not run; empty when it ran
	External    bool   // the figures are printed by another program (Extra)
	Took        time.Duration

	Attempted, Acked, Refused, Unacked, Aborted int
	Applied, AppliedTwice, AckedLost, Differ    int
	Resends, Suppressed, AcrossRestart          int
	Faults                                      int
	Money, Deposited, Withdrawn                 int64
	Accounts                                    int
	Slowest                                     time.Duration
	Hung                                        int
	Extra                                       []string // scenario-specific figures
	Violations                                  []string
}

// Failed reports a violation.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

func (r *Result) violate(format string, args ...any) {
	if len(r.Violations) < 20 {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	} else if len(r.Violations) == 20 {
		r.Violations = append(r.Violations, "(more violations not listed)")
	}
}

// hangGrace is how long past its deadline an attempt may return before the
// client counts as hung.
const hangGrace = 2 * time.Second

// verify checks the history against the ledger of the bank in dataDir, and
// against the bank itself, opened on dataDir once nothing serves it:
// every acknowledged op is in the log exactly once with the acknowledged
// outcome, no op is in it twice, the log's replay and the bank agree on
// every balance, and the money equals what was deposited minus withdrawn.
//
// Duplicates suppressed are counted where they are certain: a re-send by the
// driver that started after the ledger had read the call's record, and a
// call durable before a kill of the server whose answer came after the next
// server process served (re-sent by the zmq client, redelivered by the
// broker): the bank answered it from its record.
func verifyOps(r *Result, ops []*Op, ledger *Ledger, restarts []restart) {
	for _, op := range ops {
		r.Attempted++
		recs := ledger.Of(op.ID)
		if len(recs) > 0 {
			r.Applied++
		}
		if len(recs) > 1 {
			r.AppliedTwice++
			r.violate("call %s applied %d times (log records %d and %d)", op.ID, len(recs), recs[0].LSN, recs[1].LSN)
		}
		switch {
		case op.Acked:
			r.Acked++
			if op.AckCode != bankrpc.OK {
				r.Refused++
			}
			if len(recs) == 0 {
				r.AckedLost++
				r.violate("call %s was acknowledged (%v) but is not in the log", op.ID, op.AckCode)
			} else if bankrpc.Code(recs[0].Code) != op.AckCode {
				r.Differ++
				r.violate("call %s was answered %v but the log records %v", op.ID, op.AckCode, bankrpc.Code(recs[0].Code))
			}
		case op.Aborted:
			r.Aborted++
			if len(recs) > 0 {
				r.violate("call %s was answered ABORTED (never applied) but the log has it", op.ID)
			}
		default:
			r.Unacked++
		}
		if len(recs) > 0 && (recs[0].Op != op.Kind || recs[0].Account != op.Account || recs[0].To != op.To || recs[0].Amount != op.Amount) {
			r.violate("call %s: the log records another request (%+v) than the one sent (%+v)", op.ID, recs[0], *op)
		}
		for i, a := range op.Attempts {
			for _, k := range restarts {
				if a.Start.Before(k.killed) && a.End.After(k.serving) {
					r.AcrossRestart++
					if len(recs) > 0 && recs[0].Observed.Before(k.killed) && recorded(a.Code) {
						r.Suppressed++
					}
					break
				}
			}
			if i > 0 {
				r.Resends++
				if len(recs) > 0 && a.Start.After(recs[0].Observed) && recorded(a.Code) {
					r.Suppressed++
				}
			}
			d := a.End.Sub(a.Start)
			r.Slowest = max(r.Slowest, d)
			if a.Deadline > 0 && d > a.Deadline+hangGrace {
				r.Hung++
				r.violate("call %s: an attempt took %v, past its deadline of %v", op.ID, d.Round(time.Millisecond), a.Deadline)
			}
		}
	}
}

// add adds o's operation figures to r's, and its violations.
func (r *Result) add(o *Result, what string) {
	r.Attempted += o.Attempted
	r.Acked += o.Acked
	r.Refused += o.Refused
	r.Unacked += o.Unacked
	r.Aborted += o.Aborted
	r.Applied += o.Applied
	r.AppliedTwice += o.AppliedTwice
	r.AckedLost += o.AckedLost
	r.Differ += o.Differ
	r.Resends += o.Resends
	r.Suppressed += o.Suppressed
	r.AcrossRestart += o.AcrossRestart
	r.Slowest = max(r.Slowest, o.Slowest)
	r.Hung += o.Hung
	for _, v := range o.Violations {
		r.violate("%s: %s", what, v)
	}
}

// checkMoney compares the bank's balances (the bank opened on dataDir, which
// replays its files) with the ledger's replay, and the total with the
// deposits minus the withdrawals the log holds.
func checkMoney(r *Result, ledger *Ledger, dataDir string) {
	b, err := bank.Open(dataDir)
	if err != nil {
		r.violate("the bank does not open on its data after the run: %v", err)
		return
	}
	defer func() {
		if err := b.Shutdown(); err != nil {
			r.violate("the bank does not shut down: %v", err)
		}
	}()
	fromLog := ledger.Balances()
	var total int64
	for _, a := range b.Accounts() {
		total += a.Balance
		r.Accounts++
		if got, ok := fromLog[a.ID]; !ok || got != a.Balance {
			r.violate("account %d: the bank says %d, the log's replay %d", a.ID, a.Balance, got)
		}
		delete(fromLog, a.ID)
	}
	for id := range fromLog {
		r.violate("account %d is in the log but not in the bank", id)
	}
	for _, rec := range ledger.records {
		if rec.Code != 0 {
			continue
		}
		switch rec.Op {
		case opDeposit:
			r.Deposited += rec.Amount
		case opWithdraw:
			r.Withdrawn += rec.Amount
		}
	}
	r.Money = total
	if total != r.Deposited-r.Withdrawn {
		r.violate("money not conserved: the accounts hold %d, deposits %d minus withdrawals %d make %d", total, r.Deposited, r.Withdrawn, r.Deposited-r.Withdrawn)
	}
}

// Print writes the scenario's figures and verdict.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "== %s: %s\n", r.Name, r.Fault)
	if r.Skipped != "" {
		fmt.Fprintf(w, "   SKIPPED: %s\n", r.Skipped)
		return
	}
	if r.External {
		for _, e := range r.Extra {
			fmt.Fprintf(w, "   %s\n", e)
		}
		r.printVerdict(w)
		return
	}
	fmt.Fprintf(w, "   operations: attempted %d, acknowledged %d (%d of them refusals the bank records), unacknowledged %d, aborted %d\n",
		r.Attempted, r.Acked, r.Refused, r.Unacked, r.Aborted)
	fmt.Fprintf(w, "   applied (in the log): %d; applied twice: %d; acknowledged but lost: %d; answers differing from the log: %d\n",
		r.Applied, r.AppliedTwice, r.AckedLost, r.Differ)
	fmt.Fprintf(w, "   re-sends by the clients (same call id): %d; calls in flight across a server restart: %d; duplicates suppressed (answered from the record of a call already durable): %d\n",
		r.Resends, r.AcrossRestart, r.Suppressed)
	fmt.Fprintf(w, "   faults injected: %d\n", r.Faults)
	fmt.Fprintf(w, "   money: %d in %d accounts = deposits %d - withdrawals %d (the bank and the log's replay agree: %v)\n",
		r.Money, r.Accounts, r.Deposited, r.Withdrawn, !slices.ContainsFunc(r.Violations, func(v string) bool { return strings.Contains(v, "replay") }))
	fmt.Fprintf(w, "   slowest attempt: %v; attempts hung past their deadline (+%v): %d\n", r.Slowest.Round(time.Millisecond), hangGrace, r.Hung)
	for _, e := range r.Extra {
		fmt.Fprintf(w, "   %s\n", e)
	}
	r.printVerdict(w)
}

func (r *Result) printVerdict(w io.Writer) {
	for _, v := range r.Violations {
		fmt.Fprintf(w, "   VIOLATION: %s\n", v)
	}
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "   verdict: %s (%v)\n", verdict, r.Took.Round(100*time.Millisecond))
}
