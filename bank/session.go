package bank

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"

	"github.com/bankrpc/bankrpc"
)

// The bank applies a mutating call at most once by recording it under its
// client session (FORMAT.md, "At most once"): a call id is
// "<session>-<seq>", and each request says the lowest sequence number of its
// session whose reply the client still lacks (first unanswered). Per session
// the bank keeps the replies of every recorded call from a mark on, the mark
// (the highest first unanswered seen: the client will not ask for replies
// below it) and the time of the last recorded call. So for any call of a
// session it knows, the bank can tell "recorded: here is the reply", "never
// applied" (at or above the mark, not recorded) or "forgotten" (below the
// mark). Sessions without a recorded call for the retention horizon are
// forgotten whole.

// DefaultSessionRetention is how long the bank remembers a client session
// after its last recorded call, unless WithSessionRetention says otherwise.
const DefaultSessionRetention = 7 * 24 * time.Hour

// DefaultMaxSessions is how many client sessions the bank remembers at once
// unless WithMaxSessions says otherwise; past it, calls that would start a
// new session are refused with RESOURCE_EXHAUSTED.
const DefaultMaxSessions = 1 << 22

// maxSessionReplies bounds the replies one session keeps: a session whose
// client leaves more calls unanswered (or keeps its first unanswered call
// pending while it makes more) loses the oldest, and its mark moves past
// them. It is a constant, not an option, so that replaying the log forgets
// exactly what the running bank forgot.
const maxSessionReplies = 1024

// callRef is what the bank knows of a call's identity.
type callRef struct {
	// id is the call id as received; "" for a call without one (only
	// possible for a direct Go call of the bank's methods).
	id string
	// session is the session part of id; "" when id is not of the session
	// form "<session>-<seq>".
	session string
	// seq is the call's sequence number in its session, from 1.
	seq uint64
	// fu is the request's first unanswered sequence number, at most seq; 0
	// when the client did not say.
	fu uint64
}

// callRefOf parses a call id received with first unanswered fu, as
// bankrpc.CallSessionFromContext does.
func callRefOf(id string, fu uint64) callRef {
	c := callRef{id: id}
	if s, seq, ok := bankrpc.ParseCallID(id); ok {
		c.session, c.seq = s, seq
		if fu <= seq {
			c.fu = fu
		}
	}
	return c
}

// sessionKey identifies a client session: the first 96 bits of the SHA-256
// of its id. Sessions are compared by key: two sessions are mistaken for
// one with probability below 2^-40 even with 2^27 of them live.
type sessionKey [12]byte

func sessionKeyOf(session string) sessionKey {
	sum := sha256.Sum256([]byte(session))
	return sessionKey(sum[:12])
}

// reply is the recorded outcome of one call of a session: 40 bytes, no
// pointers.
type reply struct {
	seq   uint64
	value int64 // result.value
	aux   int64 // result.aux
	// fp is the fingerprint of the client's request, to recognise a call id
	// reused for another request.
	fp      uint64
	account int32
	op      op
	code    uint8 // bankrpc.Code of the result
	flags   uint8
}

func replyOf(seq uint64, req request, res result) reply {
	return reply{seq: seq, value: res.value, aux: res.aux, fp: fingerprint(req.client()), account: req.account, op: req.op, code: uint8(res.code), flags: res.flags}
}

func (r *reply) result() result {
	return result{code: codeOf(r.code), flags: r.flags, value: r.value, aux: r.aux}
}

// matches reports whether req is the request r was recorded for: whether a
// call with r's call id is a repeat rather than a reuse for another request.
func (r *reply) matches(req request) bool { return r.fp == fingerprint(req.client()) }

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

// session is one client session the bank remembers: 80 bytes, no pointers.
type session struct {
	key sessionKey
	// prev and next link the sessions from the least to the most recently
	// active, as slot+1 (0: none).
	prev, next uint32
	// spilled: the replies are in sessionTable.spill, and r is unused.
	spilled bool
	// mark is the highest first unanswered sequence number recorded: the
	// replies below it are forgotten.
	mark uint64
	// last is the bank time (FORMAT.md, "Time") of the last recorded call.
	last int64
	// r is the session's reply when it has one (r.seq != 0) and !spilled:
	// the common case of a client that waits for each reply.
	r reply
}

// sessionsPerChunk is the size of a chunk of the session table (80 KiB):
// the table grows a chunk at a time, without copying what it holds.
const sessionsPerChunk = 1024

// sessionTable holds the sessions the bank remembers, in chunks of
// pointer-free records, with a map from key to slot. The replies of the few
// sessions with more than one are in spill.
type sessionTable struct {
	byKey  map[sessionKey]uint32
	chunks [][]session
	n      uint32   // slots in use or freed
	free   []uint32 // freed slots
	// head and tail are the least and the most recently active sessions,
	// as slot+1 (0: none).
	head, tail uint32
	spill      map[uint32][]reply
	// replyCount is the number of replies the sessions hold.
	replyCount int
}

func (t *sessionTable) len() int { return len(t.byKey) }

func (t *sessionTable) slot(i uint32) *session {
	return &t.chunks[i/sessionsPerChunk][i%sessionsPerChunk]
}

// expired reports whether s was forgotten by now: its last call is at least
// horizon old.
func expired(s *session, now int64, horizon time.Duration) bool {
	return now-s.last >= int64(horizon)
}

// get returns the slot of the session with key, if the table has it and it
// has not expired by now (an expired one is removed).
func (t *sessionTable) get(key sessionKey, now int64, horizon time.Duration) (uint32, bool) {
	i, ok := t.byKey[key]
	if !ok {
		return 0, false
	}
	if expired(t.slot(i), now, horizon) {
		t.remove(i)
		return 0, false
	}
	return i, true
}

// replies returns the replies of the session in slot i, by increasing
// sequence number. buf holds an inline reply; the result is valid until the
// next change to the session.
func (t *sessionTable) replies(i uint32, buf *[1]reply) []reply {
	s := t.slot(i)
	if s.spilled {
		return t.spill[i]
	}
	if s.r.seq == 0 {
		return nil
	}
	buf[0] = s.r
	return buf[:]
}

func (t *sessionTable) setReplies(i uint32, rs []reply) {
	s := t.slot(i)
	t.replyCount += len(rs) - t.count(i)
	if len(rs) <= 1 {
		if s.spilled {
			delete(t.spill, i)
			s.spilled = false
		}
		s.r = reply{}
		if len(rs) == 1 {
			s.r = rs[0]
		}
		return
	}
	if t.spill == nil {
		t.spill = make(map[uint32][]reply)
	}
	t.spill[i] = rs
	s.spilled, s.r = true, reply{}
}

// count returns the number of replies of the session in slot i.
func (t *sessionTable) count(i uint32) int {
	s := t.slot(i)
	switch {
	case s.spilled:
		return len(t.spill[i])
	case s.r.seq != 0:
		return 1
	}
	return 0
}

// findReply returns the reply of seq in rs.
func findReply(rs []reply, seq uint64) (reply, bool) {
	j, ok := slices.BinarySearchFunc(rs, seq, func(r reply, seq uint64) int {
		switch {
		case r.seq < seq:
			return -1
		case r.seq > seq:
			return 1
		}
		return 0
	})
	if !ok {
		return reply{}, false
	}
	return rs[j], true
}

// verdict is what the session table says of a call.
type verdict uint8

const (
	// verdictNew: the call was never applied; apply it.
	verdictNew verdict = iota
	// verdictRepeat: the call is recorded; answer with its reply.
	verdictRepeat
	// verdictForgotten: the call is below its session's mark, and not
	// recorded: it may have been applied.
	verdictForgotten
	// verdictUnknownSession: the bank does not remember the session, and
	// the request does not show that it is a new one.
	verdictUnknownSession
	// verdictFull: the call would start a session, and the table is full.
	verdictFull
)

// check says what to do with call c (of the session form) at bank time now.
// For verdictRepeat it returns the reply; for verdictForgotten, the mark.
func (t *sessionTable) check(c callRef, now int64, horizon time.Duration, maxSessions int) (verdict, reply, uint64) {
	i, ok := t.get(sessionKeyOf(c.session), now, horizon)
	if !ok {
		// A session the bank does not remember is new only when nothing
		// before this call is unanswered: first unanswered == seq. Were it
		// one the bank forgot, the client would be sending this call more
		// than the horizon after the session's last recorded call, which
		// clients must not do (FORMAT.md, "At most once").
		if c.fu == 0 || c.fu < c.seq {
			return verdictUnknownSession, reply{}, 0
		}
		if t.len() >= maxSessions {
			t.expire(now, horizon)
			if t.len() >= maxSessions {
				return verdictFull, reply{}, 0
			}
		}
		return verdictNew, reply{}, 0
	}
	s := t.slot(i)
	var buf [1]reply
	if r, ok := findReply(t.replies(i, &buf), c.seq); ok {
		return verdictRepeat, r, 0
	}
	if c.seq < s.mark {
		return verdictForgotten, reply{}, s.mark
	}
	return verdictNew, reply{}, 0
}

// record records a call of the session with key at bank time now, with the
// request's first unanswered fu (0: unknown): it raises the session's mark
// to fu, forgetting the replies below it, and keeps rep when its sequence
// number is at or above the mark. The log is replayed through it, with the
// times the records carry, so it must decide only from its arguments.
func (t *sessionTable) record(key sessionKey, fu uint64, now int64, horizon time.Duration, rep reply) {
	t.expire(now, horizon)
	i, ok := t.get(key, now, horizon)
	if !ok {
		i = t.create(key)
		t.slot(i).mark = fu
	}
	s := t.slot(i)
	var buf [1]reply
	rs := t.replies(i, &buf)
	if fu > s.mark {
		s.mark = fu
		k, _ := slices.BinarySearchFunc(rs, fu, func(r reply, seq uint64) int {
			if r.seq < seq {
				return -1
			}
			return 1
		})
		rs = rs[k:]
	}
	if rep.seq >= s.mark {
		k, found := slices.BinarySearchFunc(rs, rep.seq, func(r reply, seq uint64) int {
			switch {
			case r.seq < seq:
				return -1
			case r.seq > seq:
				return 1
			}
			return 0
		})
		if found {
			rs[k] = rep
		} else {
			rs = slices.Insert(rs, k, rep)
		}
		if n := len(rs) - maxSessionReplies; n > 0 {
			s.mark = rs[n-1].seq + 1
			rs = rs[n:]
		}
	}
	t.setReplies(i, rs)
	s.last = now
	t.unlink(i)
	t.linkLast(i)
}

// restore adds a session read from a snapshot, as the most recently active.
func (t *sessionTable) restore(key sessionKey, mark uint64, last int64, rs []reply) {
	i := t.create(key)
	s := t.slot(i)
	s.mark, s.last = mark, last
	if len(rs) > 1 {
		rs = slices.Clone(rs)
	}
	t.setReplies(i, rs)
}

// has reports whether the table holds a session with key.
func (t *sessionTable) has(key sessionKey) bool {
	_, ok := t.byKey[key]
	return ok
}

// expire forgets the sessions whose last call is at least horizon old.
func (t *sessionTable) expire(now int64, horizon time.Duration) {
	for t.head != 0 && expired(t.slot(t.head-1), now, horizon) {
		t.remove(t.head - 1)
	}
}

// each calls fn for every session, from the least to the most recently
// active.
func (t *sessionTable) each(fn func(s *session, rs []reply)) {
	var buf [1]reply
	for p := t.head; p != 0; p = t.slot(p - 1).next {
		fn(t.slot(p-1), t.replies(p-1, &buf))
	}
}

// create adds a session with key as the most recently active and returns
// its slot.
func (t *sessionTable) create(key sessionKey) uint32 {
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if t.n%sessionsPerChunk == 0 {
			t.chunks = append(t.chunks, make([]session, sessionsPerChunk))
		}
		i = t.n
		t.n++
	}
	if t.byKey == nil {
		t.byKey = make(map[sessionKey]uint32)
	}
	t.byKey[key] = i
	*t.slot(i) = session{key: key}
	t.linkLast(i)
	return i
}

func (t *sessionTable) remove(i uint32) {
	s := t.slot(i)
	t.replyCount -= t.count(i)
	t.unlink(i)
	delete(t.byKey, s.key)
	if s.spilled {
		delete(t.spill, i)
	}
	*s = session{}
	t.free = append(t.free, i)
}

func (t *sessionTable) unlink(i uint32) {
	s := t.slot(i)
	if s.prev != 0 {
		t.slot(s.prev - 1).next = s.next
	} else if t.head == i+1 {
		t.head = s.next
	}
	if s.next != 0 {
		t.slot(s.next - 1).prev = s.prev
	} else if t.tail == i+1 {
		t.tail = s.prev
	}
	s.prev, s.next = 0, 0
}

func (t *sessionTable) linkLast(i uint32) {
	s := t.slot(i)
	s.prev, s.next = t.tail, 0
	if t.tail != 0 {
		t.slot(t.tail - 1).next = i + 1
	} else {
		t.head = i + 1
	}
	t.tail = i + 1
}

// remember records the result of a call with call id c at bank time now:
// under its session, or, for a call id of another form (only in version 1
// log records), in the legacy table.
func (s *state) remember(c callRef, req request, res result, now int64, horizon time.Duration) {
	switch {
	case c.id == "":
	case c.session != "":
		s.sessions.record(sessionKeyOf(c.session), c.fu, now, horizon, replyOf(c.seq, req, res))
	default:
		s.legacy.add(req.account, entryOf(keyOf(c.id), req, res))
	}
}
