package bank

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

// The memory budget (FORMAT.md) rests on these sizes.
func TestCompactLayout(t *testing.T) {
	assert.Equal(t, uintptr(24), unsafe.Sizeof(account{}))
	assert.Equal(t, uintptr(40), unsafe.Sizeof(reply{}))
	assert.Equal(t, uintptr(80), unsafe.Sizeof(session{}))
	assert.Equal(t, uintptr(32), unsafe.Sizeof(dedupEntry{}))
}

// restarts returns the ways a test checks that what the bank recorded
// survives: no restart, a crash (the log is replayed), a clean restart
// (from the snapshot). Each func returns the bank to use next.
func restarts(t *testing.T, dir string, opts ...Option) []func(*Bank) *Bank {
	return []func(*Bank) *Bank{
		func(b *Bank) *Bank { return b },
		func(b *Bank) *Bank { b.crash(); return openBank(t, dir, opts...) },
		func(b *Bank) *Bank { require.NoError(t, b.Shutdown()); return openBank(t, dir, opts...) },
	}
}

var restartNames = []string{"running", "after a crash (log)", "after a restart (snapshot)"}

// TestRepeatedCallIsAnsweredWithRecordedResult: calls whose replies the
// client lacks, successes and refusals alike, are answered from the record
// however many calls follow, and never applied again.
func TestRepeatedCallIsAnsweredWithRecordedResult(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	a := newTestSession("a")
	open, openRef := a.do(t, ctx, b, request{op: opOpen, account: 7}, false)
	require.Equal(t, result{flags: resultCreated}, open)
	dep, depRef := a.do(t, ctx, b, request{op: opDeposit, account: 7, amount: 120}, false)
	require.Equal(t, result{value: 120}, dep)
	wd, wdRef := a.do(t, ctx, b, request{op: opWithdraw, account: 7, amount: 500}, false)
	require.Equal(t, result{code: bankrpc.FailedPrecondition, value: 120}, wd)
	for i := range 200 {
		a.do(t, ctx, b, request{op: opDeposit, account: 7, amount: 1000}, true)
		mustCall(t, ctx, b, fmt.Sprint("other", i), request{op: opDeposit, account: 7, amount: 1})
	}
	want := []Account{{ID: 7, Balance: 120 + 200*1000 + 200, Online: true}}
	require.Equal(t, want, b.Accounts())

	for round, restart := range restarts(t, dir) {
		b = restart(b)
		for _, fu := range []uint64{1, 0} { // from the session's client; from a new process
			c := a.ref(openRef.seq)
			c.fu = min(c.fu, fu)
			assert.Equal(t, open, mustCallRef(t, ctx, b, c, request{op: opOpen, account: 7}), "%s: a repeated Open answers as the first time", restartNames[round])
			c = a.ref(depRef.seq)
			c.fu = min(c.fu, fu)
			assert.Equal(t, dep, mustCallRef(t, ctx, b, c, request{op: opDeposit, account: 7, amount: 120}), "%s: the recorded balance", restartNames[round])
			c = a.ref(wdRef.seq)
			c.fu = min(c.fu, fu)
			res := mustCallRef(t, ctx, b, c, request{op: opWithdraw, account: 7, amount: 500})
			code, msg := codeAndMessage(res.err(request{op: opWithdraw, account: 7, amount: 500}, maxAccounts))
			assert.Equal(t, bankrpc.FailedPrecondition, code, "a refused withdrawal stays refused after deposits")
			assert.Equal(t, "insufficient funds (balance 120, asked 500)", msg)
		}
		assert.Equal(t, want, b.Accounts(), "%s: repeats were not applied again", restartNames[round])
	}
}

// TestCallBelowTheMarkIsRefusedAsUnknown: once a session's requests say
// that its client has the replies below some sequence number, the bank
// forgets them; a call below that mark, recorded or not, is refused with
// ABORTED and not applied, before and after restarts.
func TestCallBelowTheMarkIsRefusedAsUnknown(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	a := newTestSession("a")
	_, applied := a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 10}, true)
	lost := a.next() // sent, lost on its way: the bank never saw it
	a.answered(lost.seq)
	a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 20}, true)
	_, last := a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 40}, true)
	require.Equal(t, uint64(4), last.seq)
	want := []Account{{ID: 1, Balance: 70, Online: true}}

	for round, restart := range restarts(t, dir) {
		b = restart(b)
		for _, c := range []callRef{a.ref(applied.seq), callRefOf(applied.id, 0), a.ref(lost.seq), callRefOf(lost.id, 0)} {
			_, err := b.call(ctx, c, request{op: opDeposit, account: 1, amount: 10})
			code, msg := codeAndMessage(err)
			assert.Equal(t, bankrpc.Aborted, code, "%s: %+v", restartNames[round], c)
			assert.Equal(t, fmt.Sprintf("outcome unknown: call %q is below sequence number 4, under which the bank no longer keeps the replies of its session, "+
				"and it has no record of it: it was not applied now, but it may have been applied before; check the account before making the call again, under a new call id", c.id), msg)
		}
		assert.Equal(t, result{value: 70}, mustCallRef(t, ctx, b, a.ref(last.seq), request{op: opDeposit, account: 1, amount: 40}), "the call at the mark is recorded")
		assert.Equal(t, want, b.Accounts(), "%s: nothing applied", restartNames[round])
	}
}

// TestNewSessionRules: a session the bank does not remember is taken as new
// only when its request says nothing before it is unanswered.
func TestNewSessionRules(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir(), WithSessionRetention(time.Hour))
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	dep := request{op: opDeposit, account: 1, amount: 1}
	for _, tc := range []struct {
		id  string
		fu  uint64
		msg string
	}{
		{"s1-1", 0, "the request does not show that the session is new (its first unanswered sequence number is 0: unknown)"},
		{"s2-5", 0, "the request does not show that the session is new (its first unanswered sequence number is 0: unknown)"},
		{"s3-5", 3, "the request says that calls of the session from sequence number 3 on are unanswered, so the session is not new"},
	} {
		_, err := b.call(ctx, callRefOf(tc.id, tc.fu), dep)
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.Aborted, code, tc.id)
		assert.Equal(t, fmt.Sprintf("outcome unknown: the bank has no record of the session of call %q (a session is forgotten 1h0m0s after its last call), and %s: %s", tc.id, tc.msg, unknownAdvice), msg)
	}
	assert.Equal(t, int64(0), balanceOf(t, b, 1), "none applied")

	assert.Equal(t, result{value: 1}, mustCallRef(t, ctx, b, callRefOf("s1-1", 1), dep), "the first call of a session")
	assert.Equal(t, result{value: 2}, mustCallRef(t, ctx, b, callRefOf("s2-5", 5), dep), "a session whose earlier calls were all answered (or made no change: Balance)")
	assert.Equal(t, result{value: 3}, mustCallRef(t, ctx, b, callRefOf("s3-3", 3), dep))
	assert.Equal(t, result{value: 4}, mustCallRef(t, ctx, b, callRefOf("s3-5", 3), dep), "now that the bank knows the session")
	assert.Equal(t, result{value: 2}, mustCallRef(t, ctx, b, callRefOf("s2-5", 0), dep), "a repeat from another process")
}

// TestCallIDNotOfSessionFormIsRefused: the bank records calls only under
// session call ids; others are refused, not applied.
func TestCallIDNotOfSessionFormIsRefused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	for _, id := range []string{"repeat-me", "x", "-5", "s-0", "s-", "s-+5"} {
		_, err := b.call(ctx, callRefOf(id, 0), request{op: opDeposit, account: 1, amount: 5})
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.InvalidArgument, code, id)
		assert.Contains(t, msg, fmt.Sprintf("call id %q is not of the form <session>-<sequence number>", id))
	}
	assert.Equal(t, int64(0), balanceOf(t, b, 1))
}

// TestCallsOfASessionOutOfOrder: concurrent calls of one session may reach
// the bank in any order; each is applied once.
func TestCallsOfASessionOutOfOrder(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	a := newTestSession("a")
	_, c1 := a.do(t, ctx, b, request{op: opOpen, account: 1}, true)
	c2, c3 := a.next(), a.next()
	require.Equal(t, uint64(2), c3.fu)
	assert.Equal(t, result{value: 3}, mustCallRef(t, ctx, b, c3, request{op: opDeposit, account: 1, amount: 3}))
	assert.Equal(t, result{value: 5}, mustCallRef(t, ctx, b, c2, request{op: opDeposit, account: 1, amount: 2}), "seq 2 arrives after seq 3")
	assert.Equal(t, result{value: 3}, mustCallRef(t, ctx, b, c3, request{op: opDeposit, account: 1, amount: 3}))
	assert.Equal(t, result{value: 5}, mustCallRef(t, ctx, b, c2, request{op: opDeposit, account: 1, amount: 2}))
	_, err := b.call(ctx, a.ref(c1.seq), request{op: opOpen, account: 1})
	assert.Equal(t, bankrpc.Aborted, bankrpc.CodeOf(err), "seq 3 said seq 1 was answered: forgotten")
	assert.Equal(t, int64(5), balanceOf(t, b, 1))
}

// TestSessionExpiry: a session is remembered for the retention horizon
// after its last recorded call, in bank time, which stands still while the
// bank is down; after that, a call of it is refused as of unknown outcome
// (unless its request shows a new session).
func TestSessionExpiry(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	clock := newFakeClock()
	opts := []Option{WithSessionRetention(24 * time.Hour), withClock(clock.now)}
	b := openBank(t, dir, opts...)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	a := newTestSession("a")
	a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 1}, true)
	_, x := a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 10}, false) // outcome unknown to the client
	_, y := a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 100}, false)
	dep := func(amount int64) request { return request{op: opDeposit, account: 1, amount: amount} }

	clock.advance(23 * time.Hour)
	assert.Equal(t, result{value: 11}, mustCallRef(t, ctx, b, callRefOf(x.id, 0), dep(10)), "within the horizon: from the record")
	require.NoError(t, b.Shutdown())
	clock.advance(30 * 24 * time.Hour) // the bank is down for a month: its time stands still
	b = openBank(t, dir, opts...)
	assert.Equal(t, result{value: 111}, mustCallRef(t, ctx, b, callRefOf(y.id, 0), dep(100)), "downtime does not count")

	clock.advance(time.Hour)
	for _, c := range []callRef{callRefOf(x.id, 0), callRefOf(y.id, 0), a.ref(y.seq)} {
		_, err := b.call(ctx, c, dep(1))
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.Aborted, code, "%+v: expired", c)
		assert.Contains(t, msg, "the bank has no record of the session")
	}
	// A crash loses the bank time since the last record (FORMAT.md, "Time"):
	// a call of another session makes it durable.
	mustCall(t, ctx, b, "later", dep(1))
	b.crash()
	b = openBank(t, dir, opts...)
	_, err := b.call(ctx, callRefOf(x.id, 0), dep(10))
	assert.Equal(t, bankrpc.Aborted, bankrpc.CodeOf(err), "forgotten after a replay too")
	assert.Equal(t, int64(112), balanceOf(t, b, 1), "nothing applied again")
	assert.Equal(t, 1, b.sessions(), "the expired session is gone from memory: only the later one is left")

	// The rule that lets a forgotten session in: nothing before this call
	// is unanswered, so it is taken as new (FORMAT.md explains why a client
	// never sends such a request for a call it sent before).
	a.answered(x.seq)
	assert.Equal(t, result{value: 1112}, mustCallRef(t, ctx, b, a.ref(y.seq), dep(1000)))
}

// sessions returns the number of sessions b remembers.
func (b *Bank) sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.sessions.expire(b.clock.read(), b.opts.retention)
	return b.st.sessions.len()
}

// TestSessionKeepsAtMostSoManyReplies: a client that keeps one call
// unanswered while it makes more makes the bank keep all their replies, up
// to maxSessionReplies; then the oldest go, and a retry of them is refused.
// Replay forgets exactly the same.
func TestSessionKeepsAtMostSoManyReplies(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	a := newTestSession("a")
	_, stuck := a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 1}, false)
	const more = maxSessionReplies + 4
	for range more {
		a.do(t, ctx, b, request{op: opDeposit, account: 1, amount: 1}, true)
	}
	for round, restart := range restarts(t, dir) {
		b = restart(b)
		for _, seq := range []uint64{stuck.seq, 5} {
			_, err := b.call(ctx, a.ref(seq), request{op: opDeposit, account: 1, amount: 1})
			assert.Equal(t, bankrpc.Aborted, bankrpc.CodeOf(err), "%s: seq %d", restartNames[round], seq)
		}
		assert.Equal(t, result{value: 6}, mustCallRef(t, ctx, b, a.ref(6), request{op: opDeposit, account: 1, amount: 1}), restartNames[round])
		assert.Equal(t, int64(more+1), balanceOf(t, b, 1))
	}
}

// TestSessionLimit: past WithMaxSessions the bank refuses calls that would
// start a session, rather than forget a session early, until sessions
// expire.
func TestSessionLimit(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	clock := newFakeClock()
	b := openBank(t, t.TempDir(), WithMaxSessions(2), WithSessionRetention(time.Hour), withClock(clock.now))
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	dep := request{op: opDeposit, account: 1, amount: 1}
	mustCall(t, ctx, b, "a", dep)
	clock.advance(time.Minute)
	mustCall(t, ctx, b, "b", dep)
	_, err := b.call(ctx, once("c"), dep)
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.ResourceExhausted, code)
	assert.Equal(t, `call "c-1" would start a client session, and the bank already remembers 2, its limit: nothing was applied; try again later`, msg)
	assert.Equal(t, result{value: 1}, mustCall(t, ctx, b, "a", dep), "known sessions go on")
	assert.Equal(t, result{value: 3}, mustCallRef(t, ctx, b, callRefOf("b-2", 2), dep))
	assert.Equal(t, int64(3), balanceOf(t, b, 1))

	clock.advance(time.Hour - 30*time.Second) // a expires; b, active a minute later, not yet
	assert.Equal(t, result{value: 4}, mustCall(t, ctx, b, "c", dep))
	_, err = b.call(ctx, once("d"), dep)
	assert.Equal(t, bankrpc.ResourceExhausted, bankrpc.CodeOf(err))
}

// TestReusedCallIDForAnotherRequestIsRefused: a call id stands for one
// request; its reuse for another is refused and applies nothing.
func TestReusedCallIDForAnotherRequestIsRefused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	mustCall(t, ctx, b, "o", request{op: opOpen, account: 7})
	mustCall(t, ctx, b, "x", request{op: opDeposit, account: 7, amount: 100})

	_, err := b.call(ctx, once("x"), request{op: opWithdraw, account: 7, amount: 100})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.InvalidArgument, code)
	assert.Equal(t, `call id "x-1" was already used on account 7 for another request (deposit)`, msg)
	_, err = b.call(ctx, once("x"), request{op: opDeposit, account: 7, amount: 200})
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err))
	_, err = b.call(ctx, once("x"), request{op: opDeposit, account: 8, amount: 100})
	code, msg = codeAndMessage(err)
	assert.Equal(t, bankrpc.InvalidArgument, code)
	assert.Equal(t, `call id "x-1" was already used on account 7 for another request (deposit)`, msg, "the message names the account the call id was used on")
	_, err = b.call(ctx, once("o"), request{op: opClose, account: 7})
	code, msg = codeAndMessage(err)
	assert.Equal(t, bankrpc.InvalidArgument, code)
	assert.Equal(t, `call id "o-1" was already used on account 7 for another request (open)`, msg)
	assert.Equal(t, []Account{{ID: 7, Balance: 100, Online: true}}, b.Accounts())
}

// TestReusedCallIDForAnotherReceiverIsRefused: a transfer's receiver is part
// of the request its call id stands for. Answering a reuse with another
// receiver with the recorded success would tell the client that account 3
// was paid when it was not.
func TestReusedCallIDForAnotherReceiverIsRefused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	for id := int32(1); id <= 3; id++ {
		mustCall(t, ctx, b, "", request{op: opOpen, account: id})
	}
	mustCall(t, ctx, b, "", request{op: opDeposit, account: 1, amount: 100})
	first := request{op: opTransfer, account: 1, to: 2, amount: 10}
	require.Equal(t, result{value: 90}, mustCall(t, ctx, b, "X", first))

	for round, restart := range restarts(t, dir) {
		b = restart(b)
		_, err := b.call(ctx, once("X"), request{op: opTransfer, account: 1, to: 3, amount: 10})
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.InvalidArgument, code, restartNames[round])
		assert.Equal(t, `call id "X-1" was already used on account 1 for another request (transfer)`, msg)
		assert.Equal(t, result{value: 90}, mustCall(t, ctx, b, "X", first), "the same request is still a retry")
		assert.Equal(t, []Account{{ID: 1, Balance: 90, Online: true}, {ID: 2, Balance: 10, Online: true}, {ID: 3, Online: true}}, b.Accounts())
	}
}

// TestRefusalsAreRecorded: a refusal that depends on the state is recorded
// like a success, so that a retry once the state changed (the account now
// exists, the receiver too) is refused again, not applied.
func TestRefusalsAreRecorded(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	res := mustCall(t, ctx, b, "early", request{op: opDeposit, account: 9, amount: 5})
	require.Equal(t, bankrpc.NotFound, res.code)
	mustCall(t, ctx, b, "o7", request{op: opOpen, account: 7})
	mustCall(t, ctx, b, "d7", request{op: opDeposit, account: 7, amount: 50})
	res = mustCall(t, ctx, b, "t7", request{op: opTransfer, account: 7, to: 42, amount: 5})
	require.Equal(t, bankrpc.NotFound, res.code)
	mustCall(t, ctx, b, "o9", request{op: opOpen, account: 9})
	mustCall(t, ctx, b, "o42", request{op: opOpen, account: 42})

	for round, restart := range restarts(t, dir) {
		b = restart(b)
		res := mustCall(t, ctx, b, "early", request{op: opDeposit, account: 9, amount: 5})
		code, msg := codeAndMessage(res.err(request{op: opDeposit, account: 9, amount: 5}, maxAccounts))
		assert.Equal(t, bankrpc.NotFound, code, restartNames[round])
		assert.Equal(t, "account 9 was never opened: call Open first", msg)
		req := request{op: opTransfer, account: 7, to: 42, amount: 5}
		code, msg = codeAndMessage(mustCall(t, ctx, b, "t7", req).err(req, maxAccounts))
		assert.Equal(t, bankrpc.NotFound, code)
		assert.Equal(t, "no such receiver 42", msg)
		assert.Equal(t, []Account{{ID: 7, Balance: 50, Online: true}, {ID: 9, Online: true}, {ID: 42, Online: true}}, b.Accounts())
	}
}

func TestOptionsOutOfRangeAreRefused(t *testing.T) {
	for _, tc := range []struct {
		opt Option
		msg string
	}{
		{WithSessionRetention(0), "bank: session retention must be positive, got 0s"},
		{WithSessionRetention(-time.Second), "bank: session retention must be positive, got -1s"},
		{WithMaxSessions(0), "bank: the session limit must be at least 1, got 0"},
		{WithCreditLimit(-1), "bank: the default credit limit must not be negative, got -1"},
	} {
		_, err := Open(t.TempDir(), tc.opt)
		assert.EqualError(t, err, tc.msg)
	}
}

// TestSessionTable checks the table's bookkeeping against plain maps: the
// replies kept, the marks, the order of activity, expiry, spilling and
// slot reuse.
func TestSessionTable(t *testing.T) {
	var tb sessionTable
	const horizon = time.Duration(100)
	key := func(i int) sessionKey { return sessionKeyOf(fmt.Sprint("s", i)) }
	type model struct {
		mark    uint64
		last    int64
		replies []uint64
	}
	want := map[int]*model{}
	var order []int // least recently active first
	now := int64(0)
	for step := range 3000 {
		now += int64(step % 3)
		s := step * 7 % 23
		m := want[s]
		if m != nil && now-m.last >= int64(horizon) {
			m = nil
		}
		if m == nil {
			m = &model{}
			want[s] = m
		}
		seq := uint64(step/23 + 1)
		fu := max(m.mark, seq-uint64(step%4))
		if fu > seq {
			fu = seq
		}
		tb.record(key(s), fu, now, horizon, reply{seq: seq, value: int64(step)})
		if m.mark < fu {
			m.mark = fu
		}
		var kept []uint64
		for _, r := range m.replies {
			if r >= m.mark {
				kept = append(kept, r)
			}
		}
		m.replies = append(kept, seq)
		m.last = now
		order = append(slicesDelete(order, s), s)
		for k, m := range want {
			if now-m.last >= int64(horizon) {
				delete(want, k)
				order = slicesDelete(order, k)
			}
		}
		// Compare.
		var got []int
		replies := 0
		tb.each(func(ss *session, rs []reply) {
			replies += len(rs)
			for k := range want {
				if key(k) == ss.key {
					got = append(got, k)
					var seqs []uint64
					for _, r := range rs {
						seqs = append(seqs, r.seq)
					}
					require.Equal(t, want[k].replies, seqs, "step %d session %d", step, k)
					require.Equal(t, want[k].mark, ss.mark, "step %d session %d", step, k)
					require.Equal(t, ss.spilled, len(rs) > 1)
				}
			}
		})
		require.Equal(t, order, got, "step %d: order of activity", step)
		require.Equal(t, replies, tb.replyCount, "step %d: replies counted", step)
		require.Equal(t, len(want), tb.len())
	}
	assert.LessOrEqual(t, int(tb.n), 23, "freed slots are reused")
}

func slicesDelete(s []int, v int) []int {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
