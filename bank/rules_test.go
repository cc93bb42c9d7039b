package bank

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

func TestOpenRegistersOnFirstContactAndLogsOn(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	c := serve(t, b)

	r, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	assert.True(t, r.GetCreated(), "first Open creates the account")
	assert.Zero(t, r.GetBalance())
	assert.Equal(t, 1, b.Online())

	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 120})
	require.NoError(t, err)
	r, err = c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err, "opening an open account is fine")
	assert.False(t, r.GetCreated())
	assert.Equal(t, int64(120), r.GetBalance())
	assert.Equal(t, 1, b.Online(), "a second Open of the same account is one client")

	cl, err := c.Close(ctx, &bankv1.CloseRequest{AccountId: 7})
	require.NoError(t, err)
	assert.Equal(t, int64(120), cl.GetBalance())
	assert.Equal(t, 0, b.Online())
	assert.Equal(t, []Account{{ID: 7, Balance: 120}}, b.Accounts(), "the account and its money stay after Close")

	r, err = c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	assert.False(t, r.GetCreated())
	assert.Equal(t, int64(120), r.GetBalance())
	assert.Equal(t, []Account{{ID: 7, Balance: 120, Online: true}}, b.Accounts())
}

func TestDepositWithdrawTransferBalance(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	c := serve(t, b)
	for _, id := range []int32{9, 7, 8} {
		_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: id})
		require.NoError(t, err)
	}

	d, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 500})
	require.NoError(t, err)
	assert.Equal(t, int64(500), d.GetBalance())
	w, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 120})
	require.NoError(t, err)
	assert.Equal(t, int64(380), w.GetBalance())
	w, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 80})
	require.NoError(t, err)
	assert.Equal(t, int64(300), w.GetBalance())
	tr, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 8, Amount: 300})
	require.NoError(t, err, "a transfer of the whole balance")
	assert.Equal(t, int64(0), tr.GetBalance(), "Transfer returns the sender's balance")
	bal, err := c.Balance(ctx, &bankv1.BalanceRequest{AccountId: 8})
	require.NoError(t, err)
	assert.Equal(t, int64(300), bal.GetBalance())

	_, err = c.Close(ctx, &bankv1.CloseRequest{AccountId: 9})
	require.NoError(t, err)
	_, err = c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 8, ToAccountId: 9, Amount: 100})
	require.NoError(t, err, "a logged-off client still receives transfers")
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 9, Amount: 1})
	require.NoError(t, err, "an account whose client logged off stays usable")

	assert.Equal(t, []Account{{ID: 7, Balance: 0, Online: true}, {ID: 8, Balance: 200, Online: true}, {ID: 9, Balance: 101}}, b.Accounts(),
		"accounts are sorted by id")
}

// TestRefusals checks every rule's error code and exact message, and that a
// refused call changes nothing.
func TestRefusals(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	c := serve(t, b)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	_, err = c.Open(ctx, &bankv1.OpenRequest{AccountId: 8})
	require.NoError(t, err)
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 120})
	require.NoError(t, err)
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 8, Amount: math.MaxInt64 - 5})
	require.NoError(t, err)
	before := b.Accounts()

	cases := []struct {
		name string
		call func() error
		code bankrpc.Code
		msg  string
	}{
		{"withdraw more than the balance", func() error {
			_, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 500})
			return err
		}, bankrpc.FailedPrecondition, "insufficient funds (balance 120, asked 500)"},
		{"transfer more than the balance", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 8, Amount: 121})
			return err
		}, bankrpc.FailedPrecondition, "insufficient funds (balance 120, asked 121)"},
		{"transfer to an unknown receiver", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 42, Amount: 10})
			return err
		}, bankrpc.NotFound, "no such receiver 42"},
		{"transfer to oneself", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 7, Amount: 10})
			return err
		}, bankrpc.InvalidArgument, "cannot transfer to the same account 7"},
		{"transfer to a non-positive id", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: -1, Amount: 10})
			return err
		}, bankrpc.InvalidArgument, "receiver account id must be positive, got -1"},
		{"transfer of a negative amount", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 8, Amount: -5})
			return err
		}, bankrpc.InvalidArgument, "amount must be positive, got -5"},
		{"transfer that overflows the receiver", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 8, Amount: 10})
			return err
		}, bankrpc.OutOfRange, "transfer of 10 would overflow the balance of account 8"},
		{"deposit of zero", func() error {
			_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 0})
			return err
		}, bankrpc.InvalidArgument, "amount must be positive, got 0"},
		{"withdraw of a negative amount", func() error {
			_, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: -5})
			return err
		}, bankrpc.InvalidArgument, "amount must be positive, got -5"},
		{"deposit that overflows", func() error {
			_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 8, Amount: 10})
			return err
		}, bankrpc.OutOfRange, "deposit of 10 would overflow balance 9223372036854775802"},
		{"open id 0", func() error {
			_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 0})
			return err
		}, bankrpc.InvalidArgument, "account id must be positive, got 0"},
		{"deposit to a negative id", func() error {
			_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: -7, Amount: 1})
			return err
		}, bankrpc.InvalidArgument, "account id must be positive, got -7"},
		{"balance of id 0", func() error {
			_, err := c.Balance(ctx, &bankv1.BalanceRequest{AccountId: 0})
			return err
		}, bankrpc.InvalidArgument, "account id must be positive, got 0"},
		{"close id 0", func() error {
			_, err := c.Close(ctx, &bankv1.CloseRequest{AccountId: 0})
			return err
		}, bankrpc.InvalidArgument, "account id must be positive, got 0"},
		{"deposit to a never-opened account", func() error {
			_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 9, Amount: 1})
			return err
		}, bankrpc.NotFound, "account 9 was never opened: call Open first"},
		{"withdraw from a never-opened account", func() error {
			_, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 9, Amount: 1})
			return err
		}, bankrpc.NotFound, "account 9 was never opened: call Open first"},
		{"transfer from a never-opened account", func() error {
			_, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 9, ToAccountId: 7, Amount: 1})
			return err
		}, bankrpc.NotFound, "account 9 was never opened: call Open first"},
		{"balance of a never-opened account", func() error {
			_, err := c.Balance(ctx, &bankv1.BalanceRequest{AccountId: 9})
			return err
		}, bankrpc.NotFound, "account 9 was never opened: call Open first"},
		{"close a never-opened account", func() error {
			_, err := c.Close(ctx, &bankv1.CloseRequest{AccountId: 9})
			return err
		}, bankrpc.NotFound, "account 9 was never opened: call Open first"},
		{"call id too long", func() error {
			_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1}, bankrpc.WithCallID(strings.Repeat("x", 256)))
			return err
		}, bankrpc.InvalidArgument, "call id is 256 bytes long; the bank records call ids of up to 255 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := codeAndMessage(tc.call())
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.msg, msg)
		})
	}
	assert.Equal(t, before, b.Accounts(), "refused calls change nothing")
}

// TestCallCanceledBeforeItStartsIsNotApplied: a call whose context has
// ended before it reaches the bank is refused and changes nothing.
// TestCallCanceledWhileAwaitingFsync covers a cancellation after that.
func TestCallCanceledBeforeItStartsIsNotApplied(t *testing.T) {
	b := openBank(t, t.TempDir())
	ctx := testCtx(t, 10*time.Second)
	mustCall(t, ctx, b, "open", request{op: opOpen, account: 1})
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := b.call(canceled, once("d1"), request{op: opDeposit, account: 1, amount: 5})
	assert.Equal(t, bankrpc.Canceled, bankrpc.CodeOf(err))
	assert.Equal(t, []Account{{ID: 1, Online: true}}, b.Accounts())
}

// TestOpenRefusedWhenTheBankIsFull covers RESOURCE_EXHAUSTED: a new
// account is refused once the bank holds its limit, existing ones keep
// working, and the refusal is recorded like any other, through replay and
// snapshots.
func TestOpenRefusedWhenTheBankIsFull(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, withMaxAccounts(2))
	c := serve(t, b)
	for _, id := range []int32{1, 2} {
		_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: id})
		require.NoError(t, err)
	}
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 3})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.ResourceExhausted, code)
	assert.Equal(t, "cannot open account 3: the bank is full (2 accounts)", msg)
	r, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 1})
	require.NoError(t, err, "opening an existing account needs no room")
	assert.False(t, r.GetCreated())
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 2, Amount: 7})
	require.NoError(t, err)
	full := result{code: bankrpc.ResourceExhausted}
	assert.Equal(t, full, mustCall(t, ctx, b, "o3", request{op: opOpen, account: 3}))
	want := []Account{{ID: 1, Online: true}, {ID: 2, Balance: 7, Online: true}}
	assert.Equal(t, want, b.Accounts())

	b.crash()
	b = openBank(t, dir, withMaxAccounts(2))
	assert.Equal(t, want, b.Accounts(), "replay refuses the same Open again")
	assert.Equal(t, full, mustCall(t, ctx, b, "o3", request{op: opOpen, account: 3}), "the refusal is recorded")
	assert.Equal(t, full, mustCall(t, ctx, b, "o4", request{op: opOpen, account: 4}), "still full after replay")
	require.NoError(t, b.Shutdown())

	b = openBank(t, dir, withMaxAccounts(2))
	assert.Equal(t, full, mustCall(t, ctx, b, "o5", request{op: opOpen, account: 5}), "still full after a snapshot")
	require.NoError(t, b.Shutdown())

	b = openBank(t, dir, withMaxAccounts(3))
	assert.Equal(t, full, mustCall(t, ctx, b, "o3", request{op: opOpen, account: 3}), "a recorded refusal stays the answer to its call id")
	assert.Equal(t, result{flags: resultCreated}, mustCall(t, ctx, b, "o3-again", request{op: opOpen, account: 3}), "room for one more")
	assert.Len(t, b.Accounts(), 3)
}

func TestEmptyCallIDIsAppliedWithoutDedup(t *testing.T) {
	b := openBank(t, t.TempDir())
	ctx := testCtx(t, 10*time.Second)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	mustCall(t, ctx, b, "", request{op: opDeposit, account: 1, amount: 5})
	res := mustCall(t, ctx, b, "", request{op: opDeposit, account: 1, amount: 5})
	assert.Equal(t, int64(10), res.value, "both deposits without a call id are applied")
}

// TestTransfersConserveMoney runs concurrent transfers while an observer
// checks that the total never changes: a transfer is never seen half done.
func TestTransfersConserveMoney(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := openBank(t, t.TempDir())
	const accounts, each = 8, 1000
	for id := int32(1); id <= accounts; id++ {
		mustCall(t, ctx, b, "", request{op: opOpen, account: id})
		mustCall(t, ctx, b, "", request{op: opDeposit, account: id, amount: each})
	}
	var (
		wg        sync.WaitGroup
		stop      atomic.Bool
		refused   atomic.Int64
		observed  atomic.Int64
		violation atomic.Int64
	)
	wg.Go(func() {
		for !stop.Load() {
			if total(b.Accounts()) != accounts*each {
				violation.Add(1)
			}
			observed.Add(1)
		}
	})
	var senders sync.WaitGroup
	for g := range 8 {
		senders.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				from := rng.Int32N(accounts) + 1
				to := rng.Int32N(accounts-1) + 1
				if to >= from {
					to++
				}
				res := mustCall(t, ctx, b, "", request{op: opTransfer, account: from, to: to, amount: rng.Int64N(300) + 1})
				if res.code != bankrpc.OK {
					refused.Add(1)
				}
			}
		})
	}
	senders.Wait()
	stop.Store(true)
	wg.Wait()
	assert.Zero(t, violation.Load(), "observers saw money missing or doubled")
	assert.Positive(t, observed.Load())
	assert.Equal(t, int64(accounts*each), total(b.Accounts()))
}

func TestOnIdleOncePerTransition(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	idle := make(chan struct{}, 10)
	b := openBank(t, t.TempDir(), WithOnIdle(func() { idle <- struct{}{} }))
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	mustCall(t, ctx, b, "", request{op: opOpen, account: 2})
	mustCall(t, ctx, b, "", request{op: opClose, account: 1})
	mustCall(t, ctx, b, "", request{op: opClose, account: 1})
	assert.Equal(t, 1, b.Online())
	mustCall(t, ctx, b, "", request{op: opClose, account: 2})
	select {
	case <-idle:
	case <-ctx.Done():
		t.Fatal("OnIdle was not called when the last client logged off")
	}
	mustCall(t, ctx, b, "", request{op: opClose, account: 2})
	mustCall(t, ctx, b, "", request{op: opOpen, account: 2})
	mustCall(t, ctx, b, "", request{op: opClose, account: 2})
	select {
	case <-idle:
	case <-ctx.Done():
		t.Fatal("OnIdle was not called on the second transition")
	}
	require.NoError(t, b.Shutdown())
	assert.Empty(t, idle, "OnIdle is called once per transition to zero clients")
}

func TestOnIdleMayShutDown(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	done := make(chan error, 1)
	var b *Bank
	b = openBank(t, t.TempDir(), WithOnIdle(func() { done <- b.Shutdown() }))
	c := serve(t, b)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 1})
	require.NoError(t, err)
	_, err = c.Close(ctx, &bankv1.CloseRequest{AccountId: 1})
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Shutdown from OnIdle did not return")
	}
	_, err = c.Balance(ctx, &bankv1.BalanceRequest{AccountId: 1})
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err))
}

func TestShutdownStopsCalls(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	require.NoError(t, b.Shutdown())
	require.NoError(t, b.Shutdown(), "Shutdown is idempotent")

	_, err := b.call(ctx, once("x"), request{op: opDeposit, account: 1, amount: 1})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.Unavailable, code)
	assert.Equal(t, "bank: shut down", msg)
	_, _, err = b.balance(ctx, 1)
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err))
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(b.Snapshot()))

	b2 := openBank(t, dir)
	assert.Equal(t, []Account{{ID: 1, Online: true}}, b2.Accounts(), "Shutdown released the directory")
}

func TestShutdownWaitsForCallsInFlight(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	var acked atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				res, err := b.call(ctx, once(""), request{op: opDeposit, account: 1, amount: 1})
				if err != nil {
					code, msg := codeAndMessage(err)
					assert.Equal(t, bankrpc.Unavailable, code, "goroutine %d call %d", g, i)
					assert.Equal(t, "bank: shut down", msg)
					return
				}
				assert.Equal(t, bankrpc.OK, res.code)
				acked.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, b.Shutdown())
	wg.Wait()
	b2 := openBank(t, dir)
	assert.Equal(t, acked.Load(), b2.Accounts()[0].Balance, "every acknowledged deposit is in the snapshot, no other")
}
