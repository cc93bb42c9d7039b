package bank

import (
	"context"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// The bank.v1.Bank methods. Each mutating method is applied at most once per
// call id (transport.CallIDFromContext); a request without one is applied
// without that protection.

// Open registers the account on first contact and logs its client on. It
// returns the balance, and whether this call created the account.
func (b *Bank) Open(ctx context.Context, req *bankv1.OpenRequest) (*bankv1.OpenResponse, error) {
	res, err := b.do(ctx, request{op: opOpen, account: req.GetAccountId()})
	if err != nil {
		return nil, err
	}
	return &bankv1.OpenResponse{Balance: res.value, Created: res.flags&resultCreated != 0}, nil
}

// Deposit adds a positive amount to the account and returns the new balance.
func (b *Bank) Deposit(ctx context.Context, req *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	res, err := b.do(ctx, request{op: opDeposit, account: req.GetAccountId(), amount: req.GetAmount()})
	if err != nil {
		return nil, err
	}
	return &bankv1.DepositResponse{Balance: res.value}, nil
}

// Withdraw takes a positive amount from the account, refusing with
// FailedPrecondition when the balance is smaller, and returns the new
// balance.
func (b *Bank) Withdraw(ctx context.Context, req *bankv1.WithdrawRequest) (*bankv1.WithdrawResponse, error) {
	res, err := b.do(ctx, request{op: opWithdraw, account: req.GetAccountId(), amount: req.GetAmount()})
	if err != nil {
		return nil, err
	}
	return &bankv1.WithdrawResponse{Balance: res.value}, nil
}

// Transfer moves a positive amount to another existing account, atomically,
// and returns the sender's new balance.
func (b *Bank) Transfer(ctx context.Context, req *bankv1.TransferRequest) (*bankv1.TransferResponse, error) {
	res, err := b.do(ctx, request{op: opTransfer, account: req.GetAccountId(), to: req.GetToAccountId(), amount: req.GetAmount()})
	if err != nil {
		return nil, err
	}
	return &bankv1.TransferResponse{Balance: res.value}, nil
}

// Balance returns the account's balance.
func (b *Bank) Balance(ctx context.Context, req *bankv1.BalanceRequest) (*bankv1.BalanceResponse, error) {
	bal, err := b.balance(ctx, req.GetAccountId())
	if err != nil {
		return nil, err
	}
	return &bankv1.BalanceResponse{Balance: bal}, nil
}

// Close logs the account's client off and returns the balance. The account
// and its money stay.
func (b *Bank) Close(ctx context.Context, req *bankv1.CloseRequest) (*bankv1.CloseResponse, error) {
	res, err := b.do(ctx, request{op: opClose, account: req.GetAccountId()})
	if err != nil {
		return nil, err
	}
	return &bankv1.CloseResponse{Balance: res.value}, nil
}

// do runs req under the call id in ctx and turns a refusal into its error.
func (b *Bank) do(ctx context.Context, req request) (result, error) {
	res, err := b.call(ctx, bankrpc.CallIDFromContext(ctx), req)
	if err == nil {
		err = res.err(req, b.opts.maxAccounts)
	}
	return res, err
}
