package bank

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/transport"
)

// TestCreditLimit is the lab's credit account: a withdrawal or transfer
// beyond the balance but within the credit limit succeeds and says how much
// came from credit; beyond the limit it is refused as before. Money is
// conserved: the balances add up to deposits minus withdrawals, the credit
// showing as negative balances.
func TestCreditLimit(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, WithCreditLimit(300))
	c := serve(t, b)
	for _, id := range []int32{7, 8} {
		_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: id})
		require.NoError(t, err)
	}
	_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 100})
	require.NoError(t, err)

	w, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 150})
	require.NoError(t, err, "lack of funds: withdrawn from credit")
	assert.Equal(t, int64(-50), w.GetBalance())
	assert.Equal(t, int64(50), w.GetFromCredit())
	tr, err := c.Transfer(ctx, &bankv1.TransferRequest{AccountId: 7, ToAccountId: 8, Amount: 200})
	require.NoError(t, err)
	assert.Equal(t, int64(-250), tr.GetBalance())
	assert.Equal(t, int64(200), tr.GetFromCredit(), "all of it: the balance was already below zero")

	_, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 51})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.FailedPrecondition, code)
	assert.Equal(t, "insufficient funds (balance -250, credit limit 300, asked 51)", msg)
	w, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 50})
	require.NoError(t, err, "down to exactly minus the limit")
	assert.Equal(t, int64(-300), w.GetBalance())

	d, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 20})
	require.NoError(t, err)
	assert.Equal(t, int64(-280), d.GetBalance(), "a deposit pays the credit back")
	w, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 8, Amount: 150})
	require.NoError(t, err)
	assert.Equal(t, int64(50), w.GetBalance())
	assert.Zero(t, w.GetFromCredit(), "the balance covered it")

	bal, err := c.Balance(ctx, &bankv1.BalanceRequest{AccountId: 7})
	require.NoError(t, err)
	assert.Equal(t, int64(-280), bal.GetBalance())
	assert.Equal(t, int64(300), bal.GetCreditLimit())
	deposits, withdrawals := int64(100+20), int64(150+50+150)
	want := []Account{{ID: 7, Balance: -280, Online: true, CreditLimit: 300}, {ID: 8, Balance: 50, Online: true, CreditLimit: 300}}
	assert.Equal(t, want, b.Accounts())
	assert.Equal(t, deposits-withdrawals, total(b.Accounts()), "money is conserved")

	for round, restart := range restarts(t, dir, WithCreditLimit(0)) {
		b = restart(b)
		assert.Equal(t, want, b.Accounts(), "%s: the limits and negative balances are kept", restartNames[round])
	}
	c = serve(t, b)
	_, err = c.Open(ctx, &bankv1.OpenRequest{AccountId: 9})
	require.NoError(t, err)
	assert.Equal(t, int64(0), b.Accounts()[2].CreditLimit, "a new account gets the default in force when it is created")
	_, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 9, Amount: 1})
	code, msg = codeAndMessage(err)
	assert.Equal(t, bankrpc.FailedPrecondition, code)
	assert.Equal(t, "insufficient funds (balance 0, asked 1)", msg, "without credit, as before")
}

// TestSetCreditLimit covers the administrators' method: who may call it,
// a limit below what the account owes, and that the change is durable and
// recorded like any call.
func TestSetCreditLimit(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, WithAdmins("K3Y"))
	c := serve(t, b)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)

	r, err := c.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 500})
	require.NoError(t, err, "a caller in the same process (inproc) is trusted")
	assert.Equal(t, int64(500), r.GetCreditLimit())
	w, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 400})
	require.NoError(t, err)
	assert.Equal(t, int64(400), w.GetFromCredit())

	_, err = b.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 399})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.FailedPrecondition, code)
	assert.Equal(t, "account 7 owes 400 (balance -400): its credit limit cannot go below that, asked 399", msg)
	_, err = b.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: -1})
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err))
	_, err = b.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 8, CreditLimit: 1})
	assert.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(err))
	r, err = b.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 400})
	require.NoError(t, err, "a direct call by the program that hosts the bank")
	assert.Equal(t, int64(-400), r.GetBalance())

	for _, tc := range []struct {
		peer transport.Peer
		msg  string
	}{
		{transport.Peer{Transport: "zmq", Addr: "00a1"}, "SetCreditLimit is for the bank's administrators, and an unauthenticated caller over zmq is not one of them (bank-server --admin names them)"},
		{transport.Peer{Transport: "amqp", Identity: "mallory"}, "SetCreditLimit is for the bank's administrators, and caller mallory over amqp is not one of them (bank-server --admin names them)"},
	} {
		_, err := b.SetCreditLimit(remoteCall(ctx, tc.peer), &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 1000})
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.PermissionDenied, code)
		assert.Equal(t, tc.msg, msg)
	}
	_, err = b.SetCreditLimit(remoteCall(ctx, transport.Peer{Transport: "zmq", Identity: "K3Y"}), &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 1000})
	require.NoError(t, err, "an administrator")
	assert.Equal(t, []Account{{ID: 7, Balance: -400, Online: true, CreditLimit: 1000}}, b.Accounts())

	for round, restart := range restarts(t, dir) {
		b = restart(b)
		assert.Equal(t, []Account{{ID: 7, Balance: -400, Online: true, CreditLimit: 1000}}, b.Accounts(), restartNames[round])
	}
}

// remoteCall returns a ctx as the runtime hands it to a handler for a call
// from peer: it runs one through a server whose interceptor captures it.
func remoteCall(ctx context.Context, peer transport.Peer) context.Context {
	var got context.Context
	srv := bankrpc.NewServer(bankrpc.UnaryInterceptor(func(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, _ bankrpc.UnaryHandler) (any, error) {
		got = ctx
		return &bankv1.BalanceResponse{}, nil
	}))
	bankv1.RegisterBankServer(srv, &Bank{})
	frame, err := proto.Marshal(&wirev1.Request{CallId: "admin-1", Method: bankv1.Bank_Balance_FullMethodName, FirstUnanswered: 1})
	if err != nil {
		panic(err)
	}
	_, _ = srv.HandleFrame(transport.NewPeerContext(ctx, peer), frame)
	return context.WithoutCancel(got) // the call it came with has ended
}

// total returns the sum of the balances.
func total(accts []Account) int64 {
	var sum int64
	for _, a := range accts {
		sum += a.Balance
	}
	return sum
}
