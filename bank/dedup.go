package bank

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// DefaultDedupRetention is how many call ids the bank remembers per account
// unless WithDedupRetention says otherwise: a client can retry any of its
// last 64 mutating calls and get the recorded result.
const DefaultDedupRetention = 64

// MaxDedupRetention is the largest retention WithDedupRetention accepts.
const MaxDedupRetention = 1<<16 - 1

// maxOrphans bounds the table of refusals recorded for accounts that were
// never opened (see orphanTable).
const maxOrphans = 4096

// callKey identifies a call id: the first 96 bits of its SHA-256. Keys are
// only compared within one account's ring of at most MaxDedupRetention
// entries, so a new call is mistaken for a recorded one with probability
// below 2^-80.
type callKey [12]byte

func keyOf(callID string) callKey {
	sum := sha256.Sum256([]byte(callID))
	return callKey(sum[:12])
}

// dedupEntry is the recorded outcome of one call: 32 bytes, no pointers.
type dedupEntry struct {
	key   callKey
	op    op
	code  uint8 // transport.Code of the result
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
	return dedupEntry{key: key, op: req.op, code: uint8(res.code), flags: res.flags, value: res.value, fp: fingerprint(req)}
}

func (e *dedupEntry) result() result {
	return result{code: codeOf(e.code), flags: e.flags &^ entryAnyReceiver, value: e.value}
}

// matches reports whether req is the request e was recorded for: whether a
// call with e's call id is a repeat rather than a reuse for another request.
func (e *dedupEntry) matches(req request) bool {
	if e.flags&entryAnyReceiver != 0 {
		req.to = 0
	}
	return e.fp == fingerprint(req)
}

// fingerprint is the 64-bit FNV-1a hash of op (1 byte), account, receiver
// (4 bytes each) and amount (8 bytes), little-endian: what FORMAT.md calls
// the request fingerprint. A reuse of a call id for another request is
// mistaken for a repeat only if the two collide: with probability 2^-64 for
// requests not crafted to collide, and then nothing is applied, the
// recorded result is returned.
func fingerprint(req request) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	var b [17]byte
	b[0] = byte(req.op)
	binary.LittleEndian.PutUint32(b[1:], uint32(req.account))
	binary.LittleEndian.PutUint32(b[5:], uint32(req.to))
	binary.LittleEndian.PutUint64(b[9:], uint64(req.amount))
	h := uint64(offset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}

// ringMeta is the fill state of one ring: n entries, and once a ring of the
// largest class is full, the index of its oldest entry, overwritten next.
type ringMeta struct {
	n, next uint16
}

// ringClass stores all rings of one capacity in fixed-size chunks, so an
// account pays only for the entries it has and the heap holds few objects.
// Freed slots (rings that grew into the next class) are reused.
type ringClass struct {
	capacity int
	perChunk int // rings per chunk
	chunks   [][]dedupEntry
	meta     []ringMeta // by slot
	free     []uint32
}

// chunkEntries is the size of a chunk in entries (64 KiB).
const chunkEntries = 2048

func (c *ringClass) alloc() uint32 {
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s
	}
	s := uint32(len(c.meta))
	c.meta = append(c.meta, ringMeta{})
	if int(s)/c.perChunk == len(c.chunks) {
		c.chunks = append(c.chunks, make([]dedupEntry, c.perChunk*c.capacity))
	}
	return s
}

func (c *ringClass) release(s uint32) {
	c.meta[s] = ringMeta{}
	clear(c.entries(s))
	c.free = append(c.free, s)
}

// entries returns the ring's storage: capacity entries, of which meta[s].n
// are used.
func (c *ringClass) entries(s uint32) []dedupEntry {
	ch := c.chunks[int(s)/c.perChunk]
	off := int(s) % c.perChunk * c.capacity
	return ch[off : off+c.capacity : off+c.capacity]
}

// dedupStore keeps, per account, the results of its last retention calls
// that carried a call id, in rings whose capacity doubles from 1 up to the
// retention as the account makes calls.
type dedupStore struct {
	retention int
	classes   []ringClass // classes[k-1] holds the rings of class k
}

func newDedupStore(retention int) dedupStore {
	d := dedupStore{retention: retention}
	for c := 1; ; c *= 2 {
		capacity := min(c, retention)
		d.classes = append(d.classes, ringClass{capacity: capacity, perChunk: max(1, chunkEntries/capacity)})
		if capacity == retention {
			return d
		}
	}
}

// find returns the recorded entry for key in a's ring.
func (d *dedupStore) find(a *account, key callKey) (dedupEntry, bool) {
	k := a.ringClass()
	if k == 0 {
		return dedupEntry{}, false
	}
	c := &d.classes[k-1]
	s := a.ringSlot()
	for _, e := range c.entries(s)[:c.meta[s].n] {
		if e.key == key {
			return e, true
		}
	}
	return dedupEntry{}, false
}

// add records e in a's ring, growing the ring into the next class when it is
// full, or overwriting its oldest entry when it already holds retention
// entries.
func (d *dedupStore) add(a *account, e dedupEntry) {
	k, s := a.ringClass(), a.ringSlot()
	if k == 0 {
		k, s = 1, d.classes[0].alloc()
	}
	c := &d.classes[k-1]
	if m := &c.meta[s]; int(m.n) == c.capacity {
		if k == len(d.classes) {
			c.entries(s)[m.next] = e
			m.next = uint16((int(m.next) + 1) % c.capacity)
			a.setRing(k, s)
			return
		}
		bigger := &d.classes[k]
		ns := bigger.alloc()
		copy(bigger.entries(ns), c.entries(s))
		bigger.meta[ns] = ringMeta{n: m.n}
		c.release(s)
		k, s, c = k+1, ns, bigger
	}
	m := &c.meta[s]
	c.entries(s)[m.n] = e
	m.n++
	a.setRing(k, s)
}

// ring returns the entries of a's ring, oldest first: those of older, then
// those of newer. They alias the store: they are valid until the next add.
func (d *dedupStore) ring(a *account) (older, newer []dedupEntry) {
	k := a.ringClass()
	if k == 0 {
		return nil, nil
	}
	c := &d.classes[k-1]
	s := a.ringSlot()
	m := c.meta[s]
	r := c.entries(s)[:m.n]
	return r[m.next:], r[:m.next]
}

// count returns the number of entries in a's ring.
func (d *dedupStore) count(a *account) int {
	older, newer := d.ring(a)
	return len(older) + len(newer)
}

// orphanKey names a refusal recorded for an account that did not exist.
type orphanKey struct {
	account int32
	key     callKey
}

// orphanTable records refusals of calls on accounts that were never opened,
// which have no ring to go in. It keeps the last maxOrphans of them, oldest
// first in order.
type orphanTable struct {
	byKey map[orphanKey]dedupEntry
	order []orphanKey
}

func (t *orphanTable) find(id int32, key callKey) (dedupEntry, bool) {
	e, ok := t.byKey[orphanKey{id, key}]
	return e, ok
}

func (t *orphanTable) add(id int32, e dedupEntry) {
	if t.byKey == nil {
		t.byKey = make(map[orphanKey]dedupEntry)
	}
	k := orphanKey{id, e.key}
	if _, dup := t.byKey[k]; dup {
		return
	}
	if len(t.order) == maxOrphans {
		delete(t.byKey, t.order[0])
		t.order = slices.Delete(t.order, 0, 1)
	}
	t.byKey[k] = e
	t.order = append(t.order, k)
}
