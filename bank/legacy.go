package bank

import (
	"crypto/sha256"
	"time"
)

// Before sessions (snapshot versions 1 and 2, log record version 1) the bank
// recorded the last call ids of each account, by the hash of the call id.
// Those records cannot be turned into sessions, so a bank that reads them
// keeps them apart, in a legacy table, and answers a repeat of one of those
// calls from it, until the retention horizon has passed since it read them.

// callKey identifies a call id in the legacy table: the first 96 bits of its
// SHA-256.
type callKey [12]byte

func keyOf(callID string) callKey {
	sum := sha256.Sum256([]byte(callID))
	return callKey(sum[:12])
}

// dedupEntry is the recorded outcome of one call in the legacy table: 32
// bytes, no pointers.
type dedupEntry struct {
	key   callKey
	op    op
	code  uint8 // bankrpc.Code of the result
	flags uint8 // resultCreated, resultReceiver, entryAnyReceiver
	value int64 // see result.value
	// fp is the fingerprint of the whole request, to recognise a call id
	// reused for another request.
	fp uint64
}

// entryAnyReceiver marks a transfer's entry read from a version 1 snapshot,
// which kept the request's amount but not its receiver: its fingerprint is
// of the request with receiver 0, and matches the transfer to any receiver.
const entryAnyReceiver = 1 << 7

func entryOf(key callKey, req request, res result) dedupEntry {
	return dedupEntry{key: key, op: req.op, code: uint8(res.code), flags: res.flags, value: res.value, fp: fingerprint(req.client())}
}

func (e *dedupEntry) result() result {
	return result{code: codeOf(e.code), flags: e.flags &^ entryAnyReceiver, value: e.value}
}

// matches reports whether req is the request e was recorded for.
func (e *dedupEntry) matches(req request) bool {
	req = req.client()
	if e.flags&entryAnyReceiver != 0 {
		req.to = 0
	}
	return e.fp == fingerprint(req)
}

// legacyKey names a legacy entry: call ids were compared per account.
type legacyKey struct {
	account int32
	key     callKey
}

// legacyTable holds the call records read from the older formats.
type legacyTable struct {
	entries map[legacyKey]dedupEntry
	// since is the bank time at which the entries were read; they are
	// forgotten at since + the retention horizon. 0 until set by Open.
	since int64
}

func (t *legacyTable) len() int { return len(t.entries) }

func (t *legacyTable) add(account int32, e dedupEntry) {
	if t.entries == nil {
		t.entries = make(map[legacyKey]dedupEntry)
	}
	t.entries[legacyKey{account, e.key}] = e
}

func (t *legacyTable) find(account int32, key callKey) (dedupEntry, bool) {
	e, ok := t.entries[legacyKey{account, key}]
	return e, ok
}

// lookup returns the entry recorded for callID on account, forgetting the
// whole table first if the horizon has passed since it was read.
func (t *legacyTable) lookup(account int32, callID string, now int64, horizon time.Duration) (dedupEntry, bool) {
	if t.expire(now, horizon); len(t.entries) == 0 {
		return dedupEntry{}, false
	}
	return t.find(account, keyOf(callID))
}

// expire forgets the whole table once the horizon has passed since it was
// read.
func (t *legacyTable) expire(now int64, horizon time.Duration) {
	if len(t.entries) > 0 && now-t.since >= int64(horizon) {
		*t = legacyTable{}
	}
}
