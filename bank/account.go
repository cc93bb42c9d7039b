package bank

import (
	"cmp"
	"slices"
)

// account is one element of the bank's sorted slice: 24 bytes and no
// pointers, so a million accounts cost 24 MB and give the garbage collector
// nothing to scan.
type account struct {
	id     int32
	online bool
	// balance may be negative, down to -limit: the account owes that much
	// credit to the bank.
	balance int64
	// limit is the account's credit limit, zero or more.
	limit int64
}

// maxAccounts bounds the number of accounts a bank holds. At 24 bytes each,
// that many would take 3 GiB: the bound is a sanity check on snapshots more
// than a limit anyone reaches.
const maxAccounts = 1 << 27

// findAccount returns the index of id in accts (sorted by id), or the index
// where it would be inserted and false.
func findAccount(accts []account, id int32) (int, bool) {
	return slices.BinarySearchFunc(accts, id, func(a account, id int32) int { return cmp.Compare(a.id, id) })
}

// Account is a copy of one account, as returned by Bank.Accounts.
type Account struct {
	// ID is the account id, a positive 32-bit integer.
	ID int32
	// Balance is in minor units. It is negative when the account owes
	// credit, never below -CreditLimit.
	Balance int64
	// Online is true while the account's client is logged on: opened and not
	// closed since.
	Online bool
	// CreditLimit is how far Balance may go below zero.
	CreditLimit int64
}
