package bank

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

// model is a trivial bank: maps, no persistence, written from the rules in
// the issue and FORMAT.md, not from the bank's code.
type model struct {
	retention int
	limit     int // accounts the bank may hold
	accounts  map[int32]*modelAccount
	rings     map[int32][]modelCall // per account, oldest first
	orphans   []modelCall           // refusals on accounts that did not exist
}

type modelAccount struct {
	balance int64
	online  bool
}

type modelCall struct {
	id    string
	req   request
	reply modelReply
}

// modelReply is what a caller sees.
type modelReply struct {
	code    bankrpc.Code
	msg     string
	balance int64
	created bool
}

func newModel(retention, limit int) *model {
	return &model{retention: retention, limit: limit, accounts: map[int32]*modelAccount{}, rings: map[int32][]modelCall{}}
}

func (m *model) do(id string, req request) modelReply {
	invalid := func(format string, args ...any) modelReply {
		return modelReply{code: bankrpc.InvalidArgument, msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case req.account <= 0:
		return invalid("account id must be positive, got %d", req.account)
	case req.op == opTransfer && req.to <= 0:
		return invalid("receiver account id must be positive, got %d", req.to)
	case req.op == opTransfer && req.to == req.account:
		return invalid("cannot transfer to the same account %d", req.account)
	case req.op != opOpen && req.op != opClose && req.amount <= 0:
		return invalid("amount must be positive, got %d", req.amount)
	}
	if id != "" {
		for _, c := range slices.Concat(m.rings[req.account], m.orphans) {
			if c.id != id || c.req.account != req.account {
				continue
			}
			if c.req != req {
				return invalid("call id %q was already used on account %d for another request (%s)", id, req.account, c.req.op)
			}
			return c.reply
		}
	}
	reply := m.apply(req)
	if id != "" {
		c := modelCall{id: id, req: req, reply: reply}
		if _, ok := m.accounts[req.account]; ok {
			r := append(m.rings[req.account], c)
			if len(r) > m.retention {
				r = r[1:]
			}
			m.rings[req.account] = r
		} else {
			m.orphans = append(m.orphans, c)
			if len(m.orphans) > maxOrphans {
				m.orphans = m.orphans[1:]
			}
		}
	}
	return reply
}

func (m *model) apply(req request) modelReply {
	a, ok := m.accounts[req.account]
	if !ok {
		if req.op == opOpen {
			if len(m.accounts) == m.limit {
				return modelReply{code: bankrpc.ResourceExhausted, msg: fmt.Sprintf("cannot open account %d: the bank is full (%d accounts)", req.account, m.limit)}
			}
			m.accounts[req.account] = &modelAccount{online: true}
			return modelReply{created: true}
		}
		return modelReply{code: bankrpc.NotFound, msg: fmt.Sprintf("account %d was never opened: call Open first", req.account)}
	}
	switch req.op {
	case opOpen:
		a.online = true
	case opClose:
		a.online = false
	case opDeposit:
		if a.balance > math.MaxInt64-req.amount {
			return modelReply{code: bankrpc.OutOfRange, msg: fmt.Sprintf("deposit of %d would overflow balance %d", req.amount, a.balance)}
		}
		a.balance += req.amount
	case opWithdraw:
		if a.balance < req.amount {
			return modelReply{code: bankrpc.FailedPrecondition, msg: fmt.Sprintf("insufficient funds (balance %d, asked %d)", a.balance, req.amount)}
		}
		a.balance -= req.amount
	case opTransfer:
		to, ok := m.accounts[req.to]
		switch {
		case !ok:
			return modelReply{code: bankrpc.NotFound, msg: fmt.Sprintf("no such receiver %d", req.to)}
		case a.balance < req.amount:
			return modelReply{code: bankrpc.FailedPrecondition, msg: fmt.Sprintf("insufficient funds (balance %d, asked %d)", a.balance, req.amount)}
		case to.balance > math.MaxInt64-req.amount:
			return modelReply{code: bankrpc.OutOfRange, msg: fmt.Sprintf("transfer of %d would overflow the balance of account %d", req.amount, req.to)}
		}
		a.balance -= req.amount
		to.balance += req.amount
	}
	return modelReply{balance: a.balance}
}

func (m *model) balance(id int32) modelReply {
	if id <= 0 {
		return modelReply{code: bankrpc.InvalidArgument, msg: fmt.Sprintf("account id must be positive, got %d", id)}
	}
	a, ok := m.accounts[id]
	if !ok {
		return modelReply{code: bankrpc.NotFound, msg: fmt.Sprintf("account %d was never opened: call Open first", id)}
	}
	return modelReply{balance: a.balance}
}

func (m *model) snapshot() ([]Account, int) {
	var out []Account
	online := 0
	for id, a := range m.accounts {
		out = append(out, Account{ID: id, Balance: a.balance, Online: a.online})
		if a.online {
			online++
		}
	}
	slices.SortFunc(out, func(x, y Account) int { return int(x.ID) - int(y.ID) })
	return out, online
}

// TestBankMatchesModel runs random sequences of calls, with retries of
// earlier call ids, reused call ids, clean restarts and crashes, against the
// bank and the model, and requires the same reply every time.
func TestBankMatchesModel(t *testing.T) {
	for _, retention := range []int{1, 3, 16} {
		t.Run(fmt.Sprintf("retention=%d", retention), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 60*time.Second)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, uint64(retention)))
			dir := t.TempDir()
			const limit = 7 // of the 8 account ids used: the bank fills up
			m := newModel(retention, limit)
			opts := []Option{WithDedupRetention(retention), WithSnapshotEvery(97), withMaxAccounts(limit)}
			b := openBank(t, dir, opts...)
			var sent []modelCall // earlier calls with call ids, for retries

			amount := func() int64 {
				switch n := rng.IntN(20); {
				case n == 0:
					return -rng.Int64N(3)
				case n == 1:
					return math.MaxInt64 - rng.Int64N(1000)
				default:
					return rng.Int64N(200) + 1
				}
			}
			account := func() int32 {
				if rng.IntN(25) == 0 {
					return -rng.Int32N(2)
				}
				return rng.Int32N(8) + 1
			}
			const steps = 1500
			for step := range steps {
				switch n := rng.IntN(100); {
				case n < 2:
					require.NoError(t, b.Shutdown(), "step %d", step)
					b = openBank(t, dir, opts...)
				case n < 4:
					b.crash()
					b = openBank(t, dir, opts...)
				case n < 5:
					require.NoError(t, b.Snapshot())
				case n < 12:
					id := account()
					want := m.balance(id)
					bal, err := b.balance(ctx, id)
					got := modelReply{code: bankrpc.CodeOf(err), msg: bankrpc.MessageOf(err), balance: bal}
					if err != nil {
						got.balance = 0
					}
					require.Equal(t, want, got, "step %d: balance %d (seed %d)", step, id, seed)
					continue
				}
				req := request{op: op(rng.IntN(5) + 1), account: account()}
				switch req.op {
				case opTransfer:
					req.to = account()
					fallthrough
				case opDeposit, opWithdraw:
					req.amount = amount()
				}
				id := fmt.Sprint("c", step)
				switch n := rng.IntN(100); {
				case n < 10:
					id = ""
				case n < 35 && len(sent) > 0:
					req, id = sent[rng.IntN(len(sent))].req, sent[rng.IntN(len(sent))].id // mostly a reuse with another request
					if rng.IntN(4) > 0 {
						c := sent[rng.IntN(len(sent))] // an exact retry
						req, id = c.req, c.id
						if c.req.op == opTransfer && rng.IntN(3) == 0 {
							req.to = account() // a reuse with only the receiver changed
						}
					}
				}
				if id != "" {
					sent = append(sent, modelCall{id: id, req: req})
				}
				want := m.do(id, req)
				res, err := b.call(ctx, id, req)
				if err == nil {
					err = res.err(req, limit)
				}
				got := modelReply{code: bankrpc.CodeOf(err), msg: bankrpc.MessageOf(err)}
				if err == nil {
					got.balance, got.created = res.value, res.flags&resultCreated != 0
				}
				require.Equal(t, want, got, "step %d: call %q %+v (seed %d)", step, id, req, seed)
			}
			wantAccts, wantOnline := m.snapshot()
			require.Equal(t, wantAccts, b.Accounts(), "seed %d", seed)
			require.Equal(t, wantOnline, b.Online(), "seed %d", seed)
		})
	}
}
