package bank

import (
	"context"
	"slices"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// The bank.v1.Bank methods. Each mutating method is applied at most once per
// call id (bankrpc.CallIDFromContext, of the session form; see FORMAT.md, "At
// most once"); a direct call without a call id is applied without that
// protection.

// Open registers the account on first contact and logs its client on. It
// returns the balance, and whether this call created the account. A new
// account gets the bank's default credit limit (WithCreditLimit).
func (b *Bank) Open(ctx context.Context, req *bankv1.OpenRequest) (*bankv1.OpenResponse, error) {
	res, err := b.do(ctx, request{op: opOpen, account: req.GetAccountId(), amount: b.opts.creditLimit})
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

// Withdraw takes a positive amount from the account, drawing on its credit
// for what the balance lacks and refusing with FailedPrecondition beyond
// the credit limit, and returns the new balance and how much came from
// credit.
func (b *Bank) Withdraw(ctx context.Context, req *bankv1.WithdrawRequest) (*bankv1.WithdrawResponse, error) {
	res, err := b.do(ctx, request{op: opWithdraw, account: req.GetAccountId(), amount: req.GetAmount()})
	if err != nil {
		return nil, err
	}
	return &bankv1.WithdrawResponse{Balance: res.value, FromCredit: fromCredit(req.GetAmount(), res.value)}, nil
}

// Transfer moves a positive amount to another existing account, atomically,
// drawing on the sender's credit as Withdraw does, and returns the sender's
// new balance and how much came from credit.
func (b *Bank) Transfer(ctx context.Context, req *bankv1.TransferRequest) (*bankv1.TransferResponse, error) {
	res, err := b.do(ctx, request{op: opTransfer, account: req.GetAccountId(), to: req.GetToAccountId(), amount: req.GetAmount()})
	if err != nil {
		return nil, err
	}
	return &bankv1.TransferResponse{Balance: res.value, FromCredit: fromCredit(req.GetAmount(), res.value)}, nil
}

// Balance returns the account's balance and credit limit.
func (b *Bank) Balance(ctx context.Context, req *bankv1.BalanceRequest) (*bankv1.BalanceResponse, error) {
	bal, limit, err := b.balance(ctx, req.GetAccountId())
	if err != nil {
		return nil, err
	}
	return &bankv1.BalanceResponse{Balance: bal, CreditLimit: limit}, nil
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

// SetCreditLimit sets how far the account's balance may go below zero. Only
// the bank's administrators may call it (see WithAdmins); a limit below
// what the account owes is refused with FailedPrecondition.
func (b *Bank) SetCreditLimit(ctx context.Context, req *bankv1.SetCreditLimitRequest) (*bankv1.SetCreditLimitResponse, error) {
	if err := b.authorizeAdmin(ctx, "SetCreditLimit"); err != nil {
		return nil, err
	}
	res, err := b.do(ctx, request{op: opSetCreditLimit, account: req.GetAccountId(), amount: req.GetCreditLimit()})
	if err != nil {
		return nil, err
	}
	return &bankv1.SetCreditLimitResponse{Balance: res.value, CreditLimit: req.GetCreditLimit()}, nil
}

// authorizeAdmin lets a call of an administrators' method through when it
// comes from this process (a direct Go call, which carries no call of the
// runtime, or the inproc transport) or from a caller whose authenticated
// identity is one of WithAdmins.
func (b *Bank) authorizeAdmin(ctx context.Context, method string) error {
	if bankrpc.MethodFromContext(ctx) == "" {
		return nil
	}
	p, _ := bankrpc.PeerFromContext(ctx)
	if p.Transport == "inproc" || p.Identity != "" && slices.Contains(b.opts.admins, p.Identity) {
		return nil
	}
	who := "an unauthenticated caller"
	if p.Identity != "" {
		who = "caller " + p.Identity
	}
	if p.Transport != "" {
		who += " over " + p.Transport
	}
	return bankrpc.Errorf(bankrpc.PermissionDenied, "%s is for the bank's administrators, and %s is not one of them (bank-server --admin names them)", method, who)
}

// do runs req under the call id in ctx and turns a refusal into its error.
func (b *Bank) do(ctx context.Context, req request) (result, error) {
	cs, _ := bankrpc.CallSessionFromContext(ctx)
	res, err := b.call(ctx, callRefOf(bankrpc.CallIDFromContext(ctx), cs.FirstUnanswered), req)
	if err == nil {
		err = res.err(req, b.opts.maxAccounts)
	}
	return res, err
}
