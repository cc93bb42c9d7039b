package bank

import (
	"cmp"
	"slices"
)

// account is one element of the bank's sorted slice. It is 16 bytes and holds
// no pointers, so a million accounts cost 16 MB and give the garbage collector
// nothing to scan.
type account struct {
	id int32
	// ring locates the account's dedup ring: the class (its capacity) in the
	// top ringClassBits bits, the slot within the class below. Zero: no ring.
	ring uint32
	// word is the balance, which is never negative, with the online flag in
	// the sign bit.
	word uint64
}

const (
	onlineBit     = 1 << 63
	ringClassBits = 5
	ringSlotBits  = 32 - ringClassBits
	ringSlotMask  = 1<<ringSlotBits - 1

	// maxAccounts bounds the number of accounts so that every account's ring
	// slot fits in ringSlotBits. At 16 bytes plus a ring each, that many
	// accounts would need several GiB: the bound is never the first limit hit.
	maxAccounts = 1 << ringSlotBits
)

func (a *account) balance() int64 { return int64(a.word &^ onlineBit) }
func (a *account) online() bool   { return a.word&onlineBit != 0 }

func (a *account) setBalance(v int64) { a.word = a.word&onlineBit | uint64(v) }

func (a *account) setOnline(on bool) {
	if on {
		a.word |= onlineBit
	} else {
		a.word &^= onlineBit
	}
}

func (a *account) ringClass() int   { return int(a.ring >> ringSlotBits) }
func (a *account) ringSlot() uint32 { return a.ring & ringSlotMask }

func (a *account) setRing(class int, slot uint32) {
	a.ring = uint32(class)<<ringSlotBits | slot
}

// findAccount returns the index of id in accts (sorted by id), or the index
// where it would be inserted and false.
func findAccount(accts []account, id int32) (int, bool) {
	return slices.BinarySearchFunc(accts, id, func(a account, id int32) int { return cmp.Compare(a.id, id) })
}

// Account is a copy of one account, as returned by Bank.Accounts.
type Account struct {
	// ID is the account id, a positive 32-bit integer.
	ID int32
	// Balance is in minor units.
	Balance int64
	// Online is true while the account's client is logged on: opened and not
	// closed since.
	Online bool
}
