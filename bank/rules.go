package bank

import (
	"fmt"
	"math"
	"slices"

	"github.com/bankrpc/bankrpc"
)

// op is a mutating operation, as numbered in the log (FORMAT.md).
type op uint8

const (
	opOpen op = 1 + iota
	opDeposit
	opWithdraw
	opTransfer
	opClose
	opSetCreditLimit
)

func (o op) valid() bool { return o >= opOpen && o <= opSetCreditLimit }

func (o op) String() string {
	switch o {
	case opOpen:
		return "open"
	case opDeposit:
		return "deposit"
	case opWithdraw:
		return "withdraw"
	case opTransfer:
		return "transfer"
	case opClose:
		return "close"
	case opSetCreditLimit:
		return "set credit limit"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// request is one mutating call: what the log records as the change.
type request struct {
	op      op
	account int32
	to      int32 // transfers only
	// amount is the amount of a deposit, withdrawal or transfer; the new
	// limit of a SetCreditLimit; and for an Open, the credit limit the
	// account gets if the Open creates it (the bank's default, not part of
	// the client's request: see client).
	amount int64
}

// client returns the request as the client made it: an Open's amount is the
// bank's, not the client's. A repeat of a call is recognised by it.
func (r request) client() request {
	if r.op == opOpen {
		r.amount = 0
	}
	return r
}

// validate checks what does not depend on the bank's state. A request it
// refuses is refused the same way every time, so such refusals are not
// recorded.
func (r request) validate() error {
	if r.account <= 0 {
		return bankrpc.Errorf(bankrpc.InvalidArgument, "account id must be positive, got %d", r.account)
	}
	if r.op == opTransfer {
		if r.to <= 0 {
			return bankrpc.Errorf(bankrpc.InvalidArgument, "receiver account id must be positive, got %d", r.to)
		}
		if r.to == r.account {
			return bankrpc.Errorf(bankrpc.InvalidArgument, "cannot transfer to the same account %d", r.account)
		}
	}
	switch r.op {
	case opDeposit, opWithdraw, opTransfer:
		if r.amount <= 0 {
			return bankrpc.Errorf(bankrpc.InvalidArgument, "amount must be positive, got %d", r.amount)
		}
	case opSetCreditLimit, opOpen:
		if r.amount < 0 {
			return bankrpc.Errorf(bankrpc.InvalidArgument, "credit limit must not be negative, got %d", r.amount)
		}
	}
	return nil
}

// Result flags.
const (
	// resultCreated: an Open created the account.
	resultCreated = 1 << iota
	// resultReceiver: the refusal concerns the transfer's receiver, and
	// value is the receiver's id.
	resultReceiver
)

// result is the recorded outcome of a request: what a repeat of the call is
// answered with. Refusals keep just enough to rebuild their message.
type result struct {
	code  bankrpc.Code
	flags uint8
	// value is the balance the reply carries when code is OK (the account's
	// balance after the call); for a refusal, the number its message names:
	// the balance for FAILED_PRECONDITION and a deposit's OUT_OF_RANGE, the
	// receiver's id when flags has resultReceiver, zero otherwise.
	value int64
	// aux is the account's credit limit when a withdrawal or transfer is
	// refused with FAILED_PRECONDITION; zero otherwise.
	aux int64
}

// codeOf converts a recorded code byte; only codes the rules produce are
// ever recorded (recordableCode).
func codeOf(c uint8) bankrpc.Code { return bankrpc.Code(c) }

// recordableCode reports whether c is a code apply can return.
func recordableCode(c bankrpc.Code) bool {
	switch c {
	case bankrpc.OK, bankrpc.NotFound, bankrpc.FailedPrecondition, bankrpc.OutOfRange, bankrpc.ResourceExhausted:
		return true
	}
	return false
}

// err returns the refusal of req as an error, nil when the call succeeded.
// limit is the number of accounts the bank may hold.
func (res result) err(req request, limit int) error {
	switch res.code {
	case bankrpc.OK:
		return nil
	case bankrpc.NotFound:
		if res.flags&resultReceiver != 0 {
			return bankrpc.Errorf(bankrpc.NotFound, "no such receiver %d", res.value)
		}
		return bankrpc.Errorf(bankrpc.NotFound, "account %d was never opened: call Open first", req.account)
	case bankrpc.FailedPrecondition:
		if req.op == opSetCreditLimit {
			return bankrpc.Errorf(bankrpc.FailedPrecondition, "account %d owes %d (balance %d): its credit limit cannot go below that, asked %d", req.account, -res.value, res.value, req.amount)
		}
		if res.aux > 0 {
			return bankrpc.Errorf(bankrpc.FailedPrecondition, "insufficient funds (balance %d, credit limit %d, asked %d)", res.value, res.aux, req.amount)
		}
		return bankrpc.Errorf(bankrpc.FailedPrecondition, "insufficient funds (balance %d, asked %d)", res.value, req.amount)
	case bankrpc.OutOfRange:
		if res.flags&resultReceiver != 0 {
			return bankrpc.Errorf(bankrpc.OutOfRange, "transfer of %d would overflow the balance of account %d", req.amount, res.value)
		}
		return bankrpc.Errorf(bankrpc.OutOfRange, "deposit of %d would overflow balance %d", req.amount, res.value)
	case bankrpc.ResourceExhausted:
		return bankrpc.Errorf(bankrpc.ResourceExhausted, "cannot open account %d: the bank is full (%d accounts)", req.account, limit)
	}
	return bankrpc.Errorf(res.code, "%s refused", req.op)
}

// fromCredit returns how much of a withdrawal or transfer of amount that
// left the balance at balance came from credit: the part below zero, at most
// the amount.
func fromCredit(amount, balance int64) int64 {
	if balance >= 0 {
		return 0
	}
	return min(amount, -balance)
}

// state is the bank's data: what a snapshot holds and the log's records
// change. It is not safe for concurrent use; Bank guards it with its mutex.
type state struct {
	accounts []account // sorted by id
	online   int       // accounts with the online flag
	limit    int       // how many accounts Open may create
	sessions sessionTable
	legacy   legacyTable
}

func newState() state {
	return state{limit: maxAccounts}
}

// available returns what an account with balance bal and credit limit lim
// may still spend, saturating at MaxInt64.
func available(bal, lim int64) int64 {
	if bal > 0 && lim > math.MaxInt64-bal {
		return math.MaxInt64
	}
	return bal + lim
}

// overflows reports whether adding amount (> 0) to bal overflows.
func overflows(bal, amount int64) bool {
	return bal > 0 && amount > math.MaxInt64-bal
}

// apply runs a validated request against the state and returns its result,
// changing the state only when the result is OK. It is deterministic: the
// log is replayed through it, and replay checks that it gives the recorded
// results again.
func (s *state) apply(req request) result {
	i, ok := findAccount(s.accounts, req.account)
	if !ok {
		if req.op != opOpen {
			return result{code: bankrpc.NotFound}
		}
		if len(s.accounts) >= s.limit {
			return result{code: bankrpc.ResourceExhausted}
		}
		s.accounts = slices.Insert(s.accounts, i, account{id: req.account, online: true, limit: req.amount})
		s.online++
		return result{flags: resultCreated}
	}
	a := &s.accounts[i]
	switch req.op {
	case opOpen:
		if !a.online {
			a.online = true
			s.online++
		}
	case opClose:
		if a.online {
			a.online = false
			s.online--
		}
	case opDeposit:
		if overflows(a.balance, req.amount) {
			return result{code: bankrpc.OutOfRange, value: a.balance}
		}
		a.balance += req.amount
	case opWithdraw:
		if req.amount > available(a.balance, a.limit) {
			return result{code: bankrpc.FailedPrecondition, value: a.balance, aux: a.limit}
		}
		a.balance -= req.amount
	case opTransfer:
		j, ok := findAccount(s.accounts, req.to)
		if !ok {
			return result{code: bankrpc.NotFound, flags: resultReceiver, value: int64(req.to)}
		}
		if req.amount > available(a.balance, a.limit) {
			return result{code: bankrpc.FailedPrecondition, value: a.balance, aux: a.limit}
		}
		to := &s.accounts[j]
		if overflows(to.balance, req.amount) {
			return result{code: bankrpc.OutOfRange, flags: resultReceiver, value: int64(req.to)}
		}
		a.balance -= req.amount
		to.balance += req.amount
	case opSetCreditLimit:
		if a.balance < -req.amount {
			return result{code: bankrpc.FailedPrecondition, value: a.balance}
		}
		a.limit = req.amount
	}
	return result{value: a.balance}
}
