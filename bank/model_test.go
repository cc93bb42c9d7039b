package bank

import (
	"fmt"
	"math"
	"math/big"
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
	horizon  time.Duration
	limit    int // accounts the bank may hold
	accounts map[int32]*modelAccount
	// sessions are never deleted: whether one is forgotten is decided when
	// it is looked up, from its last call and the bank time then.
	sessions map[string]*modelSession
}

type modelAccount struct {
	balance, limit int64
	online         bool
}

type modelSession struct {
	mark  uint64
	last  int64
	calls map[uint64]modelCall // the replies kept, by sequence number
}

type modelCall struct {
	req   request // as the client made it
	reply modelReply
}

// modelReply is what a caller sees.
type modelReply struct {
	code    bankrpc.Code
	msg     string
	balance int64
	created bool
}

func newModel(horizon time.Duration, limit int) *model {
	return &model{horizon: horizon, limit: limit, accounts: map[int32]*modelAccount{}, sessions: map[string]*modelSession{}}
}

func refusal(code bankrpc.Code, format string, args ...any) modelReply {
	return modelReply{code: code, msg: fmt.Sprintf(format, args...)}
}

// do is a call with call ref c at bank time now. An Open's amount is the
// credit limit the account gets if the Open creates it.
func (m *model) do(c callRef, req request, now int64) modelReply {
	invalid := func(format string, args ...any) modelReply { return refusal(bankrpc.InvalidArgument, format, args...) }
	switch {
	case req.account <= 0:
		return invalid("account id must be positive, got %d", req.account)
	case req.op == opTransfer && req.to <= 0:
		return invalid("receiver account id must be positive, got %d", req.to)
	case req.op == opTransfer && req.to == req.account:
		return invalid("cannot transfer to the same account %d", req.account)
	case (req.op == opDeposit || req.op == opWithdraw || req.op == opTransfer) && req.amount <= 0:
		return invalid("amount must be positive, got %d", req.amount)
	case req.op == opSetCreditLimit && req.amount < 0:
		return invalid("credit limit must not be negative, got %d", req.amount)
	}
	mine := req
	if mine.op == opOpen {
		mine.amount = 0
	}
	var s *modelSession
	if c.id != "" {
		if c.session == "" {
			return invalid("call id %q is not of the form <session>-<sequence number> (PROTOCOL.md 2.1), under which the bank records calls: "+
				"a call id of another form cannot be proven applied or not, so the bank does not apply it", c.id)
		}
		s = m.sessions[c.session]
		if s != nil && now-s.last >= int64(m.horizon) {
			s = nil
		}
		const advice = "it was not applied now, but it may have been applied before; check the account before making the call again, under a new call id"
		switch {
		case s != nil:
			if call, ok := s.calls[c.seq]; ok {
				if call.req != mine {
					return invalid("call id %q was already used on account %d for another request (%s)", c.id, call.req.account, call.req.op)
				}
				return call.reply
			}
			if c.seq < s.mark {
				return refusal(bankrpc.Aborted, "outcome unknown: call %q is below sequence number %d, under which the bank no longer keeps the replies of its session, and it has no record of it: %s", c.id, s.mark, advice)
			}
		case c.fu == 0:
			return refusal(bankrpc.Aborted, "outcome unknown: the bank has no record of the session of call %q (a session is forgotten %v after its last call), and the request does not show that the session is new (its first unanswered sequence number is 0: unknown): %s", c.id, m.horizon, advice)
		case c.fu < c.seq:
			return refusal(bankrpc.Aborted, "outcome unknown: the bank has no record of the session of call %q (a session is forgotten %v after its last call), and the request says that calls of the session from sequence number %d on are unanswered, so the session is not new: %s", c.id, m.horizon, c.fu, advice)
		}
	}
	reply := m.apply(req)
	if c.session != "" {
		if s == nil {
			s = &modelSession{mark: c.fu, calls: map[uint64]modelCall{}}
			m.sessions[c.session] = s
		}
		if c.fu > s.mark {
			s.mark = c.fu
		}
		for seq := range s.calls {
			if seq < s.mark {
				delete(s.calls, seq)
			}
		}
		if c.seq >= s.mark {
			s.calls[c.seq] = modelCall{req: mine, reply: reply}
			if len(s.calls) > maxSessionReplies {
				oldest := slices.Min(slices.Collect(func(yield func(uint64) bool) {
					for seq := range s.calls {
						if !yield(seq) {
							return
						}
					}
				}))
				delete(s.calls, oldest)
				s.mark = oldest + 1
			}
		}
		s.last = now
	}
	return reply
}

func (m *model) apply(req request) modelReply {
	a, ok := m.accounts[req.account]
	if !ok {
		if req.op == opOpen {
			if len(m.accounts) == m.limit {
				return refusal(bankrpc.ResourceExhausted, "cannot open account %d: the bank is full (%d accounts)", req.account, m.limit)
			}
			m.accounts[req.account] = &modelAccount{online: true, limit: req.amount}
			return modelReply{created: true}
		}
		return refusal(bankrpc.NotFound, "account %d was never opened: call Open first", req.account)
	}
	insufficient := func() modelReply {
		if a.limit > 0 {
			return refusal(bankrpc.FailedPrecondition, "insufficient funds (balance %d, credit limit %d, asked %d)", a.balance, a.limit, req.amount)
		}
		return refusal(bankrpc.FailedPrecondition, "insufficient funds (balance %d, asked %d)", a.balance, req.amount)
	}
	covers := func() bool { return sum(a.balance, a.limit).Cmp(big.NewInt(req.amount)) >= 0 }
	overflows := func(bal int64) bool { return !sum(bal, req.amount).IsInt64() }
	switch req.op {
	case opOpen:
		a.online = true
	case opClose:
		a.online = false
	case opDeposit:
		if overflows(a.balance) {
			return refusal(bankrpc.OutOfRange, "deposit of %d would overflow balance %d", req.amount, a.balance)
		}
		a.balance += req.amount
	case opWithdraw:
		if !covers() {
			return insufficient()
		}
		a.balance -= req.amount
	case opTransfer:
		to, ok := m.accounts[req.to]
		switch {
		case !ok:
			return refusal(bankrpc.NotFound, "no such receiver %d", req.to)
		case !covers():
			return insufficient()
		case overflows(to.balance):
			return refusal(bankrpc.OutOfRange, "transfer of %d would overflow the balance of account %d", req.amount, req.to)
		}
		a.balance -= req.amount
		to.balance += req.amount
	case opSetCreditLimit:
		if a.balance < -req.amount {
			return refusal(bankrpc.FailedPrecondition, "account %d owes %d (balance %d): its credit limit cannot go below that, asked %d", req.account, -a.balance, a.balance, req.amount)
		}
		a.limit = req.amount
	}
	return modelReply{balance: a.balance}
}

func sum(x, y int64) *big.Int { return new(big.Int).Add(big.NewInt(x), big.NewInt(y)) }

func (m *model) balance(id int32) modelReply {
	if id <= 0 {
		return refusal(bankrpc.InvalidArgument, "account id must be positive, got %d", id)
	}
	a, ok := m.accounts[id]
	if !ok {
		return refusal(bankrpc.NotFound, "account %d was never opened: call Open first", id)
	}
	return modelReply{balance: a.balance}
}

func (m *model) snapshot() ([]Account, int) {
	var out []Account
	online := 0
	for id, a := range m.accounts {
		out = append(out, Account{ID: id, Balance: a.balance, Online: a.online, CreditLimit: a.limit})
		if a.online {
			online++
		}
	}
	slices.SortFunc(out, func(x, y Account) int { return int(x.ID) - int(y.ID) })
	return out, online
}

// now returns the bank time now.
func (b *Bank) now() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clock.read()
}

// modelClient is a client session as the test drives it: the calls it
// made, and those whose replies it lacks.
type modelClient struct {
	name    string
	seq     uint64
	sent    map[uint64]request
	pending map[uint64]bool
}

// fu returns the first unanswered sequence number of a request for seq.
func (c *modelClient) fu(seq uint64) uint64 {
	fu := seq
	for p := range c.pending {
		fu = min(fu, p)
	}
	return fu
}

// TestBankMatchesModel runs random sequences of calls from client sessions
// (new calls, retries from the session's client and from other processes,
// reused call ids, replies lost), calls without or with other call ids,
// credit limits, time passing beyond the retention horizon, clean restarts
// (with another default credit limit) and crashes, against the bank and
// the model, and requires the same reply every time.
func TestBankMatchesModel(t *testing.T) {
	for run := range 3 {
		t.Run(fmt.Sprint("run=", run), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 60*time.Second)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, uint64(run)))
			dir := t.TempDir()
			const limit = 7 // of the 8 account ids used: the bank fills up
			const horizon = 2 * time.Hour
			m := newModel(horizon, limit)
			clock := newFakeClock()
			credit := int64(0)
			opts := func() []Option {
				return []Option{WithSnapshotEvery(97), withMaxAccounts(limit), WithSessionRetention(horizon), withClock(clock.now), WithCreditLimit(credit)}
			}
			b := openBank(t, dir, opts()...)
			clients := make([]*modelClient, 4)
			for i := range clients {
				clients[i] = &modelClient{name: fmt.Sprintf("%016x", rng.Uint64()), sent: map[uint64]request{}, pending: map[uint64]bool{}}
			}

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
			newRequest := func() request {
				req := request{op: op(rng.IntN(6) + 1), account: account()}
				switch req.op {
				case opTransfer:
					req.to = account()
					fallthrough
				case opDeposit, opWithdraw:
					req.amount = amount()
				case opSetCreditLimit:
					req.amount = rng.Int64N(300) - 10
				case opOpen:
					req.amount = credit
				}
				return req
			}
			const steps = 2000
			for step := range steps {
				switch n := rng.IntN(100); {
				case n < 2:
					require.NoError(t, b.Shutdown(), "step %d", step)
					credit = []int64{0, 50, 200}[rng.IntN(3)]
					b = openBank(t, dir, opts()...)
					continue
				case n < 4:
					b.crash()
					b = openBank(t, dir, opts()...)
					continue
				case n < 5:
					require.NoError(t, b.Snapshot())
					continue
				case n < 9:
					if rng.IntN(5) == 0 {
						clock.advance(horizon + time.Duration(rng.IntN(60))*time.Minute)
					} else {
						clock.advance(time.Duration(rng.IntN(30)+1) * time.Minute)
					}
					continue
				case n < 15:
					id := account()
					want := m.balance(id)
					bal, _, err := b.balance(ctx, id)
					got := modelReply{code: bankrpc.CodeOf(err), msg: bankrpc.MessageOf(err), balance: bal}
					if err != nil {
						got.balance = 0
					}
					require.Equal(t, want, got, "step %d: balance %d (seed %d)", step, id, seed)
					continue
				}
				req := newRequest()
				var c callRef
				var client *modelClient
				var seq uint64
				switch n := rng.IntN(100); {
				case n < 10: // no call id
				case n < 14: // a call id of another form
					c = callRefOf(fmt.Sprint("c", step), 0)
				case n < 19: // a session the bank may not know, mid-way
					seq = uint64(rng.IntN(5) + 1)
					c = callRefOf(fmt.Sprintf("n%d-%d", step, seq), []uint64{0, 1, seq}[rng.IntN(3)])
				case n < 70: // a new call of a client session
					client = clients[rng.IntN(len(clients))]
					client.seq++
					seq = client.seq
					client.sent[seq] = req
					client.pending[seq] = true
					c = callRefOf(fmt.Sprintf("%s-%d", client.name, seq), client.fu(seq))
				default: // a retry of an earlier call
					client = clients[rng.IntN(len(clients))]
					if client.seq == 0 {
						continue
					}
					seq = uint64(rng.IntN(int(client.seq))) + 1
					for p := range client.pending {
						if rng.IntN(2) == 0 {
							seq = p // mostly one whose outcome the client does not know
						}
					}
					req = client.sent[seq]
					if req.op == opOpen {
						req.amount = credit
					}
					if rng.IntN(6) == 0 {
						req = newRequest() // a reuse of the call id for another request
					}
					client.pending[seq] = true
					fu := client.fu(seq)
					if rng.IntN(3) == 0 {
						fu = 0 // from another process, that knows only the call id
					}
					c = callRefOf(fmt.Sprintf("%s-%d", client.name, seq), fu)
				}
				now := b.now()
				want := m.do(c, req, now)
				res, err := b.call(ctx, c, req)
				if err == nil {
					err = res.err(req, limit)
				}
				got := modelReply{code: bankrpc.CodeOf(err), msg: bankrpc.MessageOf(err)}
				if err == nil {
					got.balance, got.created = res.value, res.flags&resultCreated != 0
				}
				require.Equal(t, want, got, "step %d: call %+v %+v (seed %d)", step, c, req, seed)
				if client != nil && rng.IntN(5) > 0 {
					delete(client.pending, seq) // the reply reached the client
				}
			}
			wantAccts, wantOnline := m.snapshot()
			require.Equal(t, wantAccts, b.Accounts(), "seed %d", seed)
			require.Equal(t, wantOnline, b.Online(), "seed %d", seed)
		})
	}
}
