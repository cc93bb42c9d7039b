package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// Op is one mutating operation the driver attempted, with every attempt.
// All attempts of an op carry the same call id.
type Op struct {
	ID      string
	Kind    byte // opDeposit, opWithdraw, opTransfer
	Account int32
	To      int32
	Amount  int64

	Attempts []Attempt
	// Acked: the bank answered with a recorded outcome (OK or a refusal it
	// logs: FAILED_PRECONDITION, NOT_FOUND, OUT_OF_RANGE).
	Acked   bool
	AckCode bankrpc.Code
	// Aborted: the bank answered ABORTED (it cannot prove the call
	// unapplied and refuses it, never applying it).
	Aborted bool
}

// Attempt is one send of an op.
type Attempt struct {
	Start, End time.Time
	Deadline   time.Duration // the attempt's own deadline; 0: none
	Code       bankrpc.Code
}

// recordedRefusals are the codes the bank logs with the call (FORMAT.md).
func recorded(c bankrpc.Code) bool {
	switch c {
	case bankrpc.OK, bankrpc.FailedPrecondition, bankrpc.NotFound, bankrpc.OutOfRange:
		return true
	}
	return false
}

// retried are the codes after which the driver sends the op again, with
// the same call id: the outcome is unknown.
func retried(c bankrpc.Code) bool {
	switch c {
	case bankrpc.Unavailable, bankrpc.DeadlineExceeded, bankrpc.Canceled, bankrpc.Internal, bankrpc.Unknown:
		return true
	}
	return false
}

// History is every op of a scenario.
type History struct {
	mu  sync.Mutex
	ops []*Op
}

func (h *History) add(op *Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the ops; call it once the load has stopped.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Op(nil), h.ops...)
}

// Load runs bank clients that transfer, deposit and withdraw among
// Accounts accounts (ids 1..Accounts) until stopped.
type Load struct {
	// Dial opens worker w's connection; it is called again after a
	// failure to connect, until it succeeds or the load stops.
	Dial     func(ctx context.Context, w int) (*bankrpc.Conn, error)
	Workers  int
	Accounts int
	// AttemptTimeout is each attempt's deadline.
	AttemptTimeout time.Duration
	// OpBudget bounds the retries of one op after the load is told to stop.
	OpBudget time.Duration
	// Pause between ops of a worker (0: none).
	Pause time.Duration

	History History
}

// Open opens the accounts, retrying until done or ctx ends.
func (l *Load) Open(ctx context.Context) error {
	var conn *bankrpc.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for id := int32(1); id <= int32(l.Accounts); {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if conn == nil {
			c, err := l.Dial(ctx, -1)
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			conn = c
		}
		actx, cancel := context.WithTimeout(ctx, l.AttemptTimeout)
		_, err := bankv1.NewBankClient(conn).Open(actx, &bankv1.OpenRequest{AccountId: id})
		cancel()
		if err == nil {
			id++
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Run runs the workers until stop is closed; each then finishes its op
// (retrying within OpBudget) and returns. Run returns when all have.
func (l *Load) Run(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() { l.worker(ctx, w, stop) })
	}
	wg.Wait()
}

func (l *Load) worker(ctx context.Context, w int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var conn *bankrpc.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return ctx.Err() != nil
		}
	}
	for !stopped() {
		if conn == nil {
			c, err := l.Dial(ctx, w)
			if err != nil {
				sleep(stop, 200*time.Millisecond)
				continue
			}
			conn = c
		}
		op := l.newOp(rng, conn)
		l.History.add(op)
		l.do(ctx, conn, op, stop)
		if l.Pause > 0 {
			sleep(stop, l.Pause)
		}
	}
}

func (l *Load) newOp(rng *rand.Rand, conn *bankrpc.Conn) *Op {
	op := &Op{ID: conn.NewCallID(), Account: 1 + rng.Int32N(int32(l.Accounts)), Amount: 1 + rng.Int64N(50)}
	switch p := rng.IntN(10); {
	case p < 4:
		op.Kind = opDeposit
	case p < 5:
		op.Kind = opWithdraw
	default:
		op.Kind = opTransfer
		op.To = 1 + rng.Int32N(int32(l.Accounts-1))
		if op.To >= op.Account {
			op.To++
		}
	}
	return op
}

// do sends op until the bank gives a definitive answer, or, once stop is
// closed, until OpBudget has passed.
func (l *Load) do(ctx context.Context, conn *bankrpc.Conn, op *Op, stop <-chan struct{}) {
	client := bankv1.NewBankClient(conn)
	var stoppedAt time.Time
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, l.AttemptTimeout)
		a := Attempt{Start: time.Now(), Deadline: l.AttemptTimeout}
		var err error
		opt := bankrpc.WithCallID(op.ID)
		switch op.Kind {
		case opDeposit:
			_, err = client.Deposit(actx, &bankv1.DepositRequest{AccountId: op.Account, Amount: op.Amount}, opt)
		case opWithdraw:
			_, err = client.Withdraw(actx, &bankv1.WithdrawRequest{AccountId: op.Account, Amount: op.Amount}, opt)
		case opTransfer:
			_, err = client.Transfer(actx, &bankv1.TransferRequest{AccountId: op.Account, ToAccountId: op.To, Amount: op.Amount}, opt)
		}
		cancel()
		a.End = time.Now()
		a.Code = bankrpc.CodeOf(err)
		op.Attempts = append(op.Attempts, a)
		switch {
		case recorded(a.Code):
			op.Acked, op.AckCode = true, a.Code
			return
		case a.Code == bankrpc.Aborted:
			op.Aborted = true
			return
		case !retried(a.Code):
			return // a refusal that is not logged: counted as unacknowledged
		}
		select {
		case <-stop:
			if stoppedAt.IsZero() {
				stoppedAt = time.Now()
			}
			if time.Since(stoppedAt) > l.OpBudget {
				return
			}
		default:
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func sleep(stop <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
	case <-t.C:
	}
}
