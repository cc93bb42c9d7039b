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
)

func (o op) valid() bool { return o >= opOpen && o <= opClose }

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
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// request is one mutating call: what the log records as the change.
type request struct {
	op      op
	account int32
	to      int32 // transfers only
	amount  int64 // deposits, withdrawals and transfers only
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

// state is the bank's data: what a snapshot holds and the log's records
// change. It is not safe for concurrent use; Bank guards it with its mutex.
type state struct {
	accounts []account // sorted by id
	online   int       // accounts with the online flag
	limit    int       // how many accounts Open may create
	dedup    dedupStore
	orphans  orphanTable
}

func newState(retention int) state {
	return state{limit: maxAccounts, dedup: newDedupStore(retention)}
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
		s.accounts = slices.Insert(s.accounts, i, account{id: req.account, word: onlineBit})
		s.online++
		return result{flags: resultCreated}
	}
	a := &s.accounts[i]
	bal := a.balance()
	switch req.op {
	case opOpen:
		if !a.online() {
			a.setOnline(true)
			s.online++
		}
	case opClose:
		if a.online() {
			a.setOnline(false)
			s.online--
		}
	case opDeposit:
		if req.amount > math.MaxInt64-bal {
			return result{code: bankrpc.OutOfRange, value: bal}
		}
		bal += req.amount
		a.setBalance(bal)
	case opWithdraw:
		if req.amount > bal {
			return result{code: bankrpc.FailedPrecondition, value: bal}
		}
		bal -= req.amount
		a.setBalance(bal)
	case opTransfer:
		j, ok := findAccount(s.accounts, req.to)
		if !ok {
			return result{code: bankrpc.NotFound, flags: resultReceiver, value: int64(req.to)}
		}
		if req.amount > bal {
			return result{code: bankrpc.FailedPrecondition, value: bal}
		}
		to := &s.accounts[j]
		if req.amount > math.MaxInt64-to.balance() {
			return result{code: bankrpc.OutOfRange, flags: resultReceiver, value: int64(req.to)}
		}
		bal -= req.amount
		a.setBalance(bal)
		to.setBalance(to.balance() + req.amount)
	}
	return result{value: bal}
}

// recorded returns the result recorded for key on the request's account.
func (s *state) recorded(id int32, key callKey) (dedupEntry, bool) {
	if i, ok := findAccount(s.accounts, id); ok {
		if e, ok := s.dedup.find(&s.accounts[i], key); ok {
			return e, true
		}
	}
	return s.orphans.find(id, key)
}

// remember records the result of a call that carried a call id.
func (s *state) remember(key callKey, req request, res result) {
	e := entryOf(key, req, res)
	if i, ok := findAccount(s.accounts, req.account); ok {
		s.dedup.add(&s.accounts[i], e)
		return
	}
	s.orphans.add(req.account, e)
}
