package bank

import (
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// The memory budget (FORMAT.md) rests on these sizes.
func TestCompactLayout(t *testing.T) {
	assert.Equal(t, uintptr(16), unsafe.Sizeof(account{}))
	assert.Equal(t, uintptr(32), unsafe.Sizeof(dedupEntry{}))
}

func TestRepeatedCallIsAnsweredWithRecordedResult(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	c := serve(t, b)

	o, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7}, bankrpc.WithCallID("open-7"))
	require.NoError(t, err)
	require.True(t, o.GetCreated())
	d, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 120}, bankrpc.WithCallID("dep-1"))
	require.NoError(t, err)
	require.Equal(t, int64(120), d.GetBalance())
	_, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 500}, bankrpc.WithCallID("wd-1"))
	require.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err))
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1000}, bankrpc.WithCallID("dep-2"))
	require.NoError(t, err)

	o, err = c.Open(ctx, &bankv1.OpenRequest{AccountId: 7}, bankrpc.WithCallID("open-7"))
	require.NoError(t, err)
	assert.True(t, o.GetCreated(), "a repeated Open answers as the first time")
	assert.Zero(t, o.GetBalance())
	d, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 120}, bankrpc.WithCallID("dep-1"))
	require.NoError(t, err)
	assert.Equal(t, int64(120), d.GetBalance(), "a repeated deposit answers the recorded balance")
	_, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 500}, bankrpc.WithCallID("wd-1"))
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.FailedPrecondition, code, "a refused withdrawal stays refused after a deposit")
	assert.Equal(t, "insufficient funds (balance 120, asked 500)", msg)
	assert.Equal(t, []Account{{ID: 7, Balance: 1120, Online: true}}, b.Accounts(), "repeats were not applied again")
}

func TestReusedCallIDForAnotherRequestIsRefused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b := openBank(t, t.TempDir())
	mustCall(t, ctx, b, "o", request{op: opOpen, account: 7})
	mustCall(t, ctx, b, "x", request{op: opDeposit, account: 7, amount: 100})

	_, err := b.call(ctx, "x", request{op: opWithdraw, account: 7, amount: 100})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.InvalidArgument, code)
	assert.Equal(t, `call id "x" was already used on account 7 for another request (deposit)`, msg)
	_, err = b.call(ctx, "x", request{op: opDeposit, account: 7, amount: 200})
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err))
	_, err = b.call(ctx, "o", request{op: opClose, account: 7})
	code, msg = codeAndMessage(err)
	assert.Equal(t, bankrpc.InvalidArgument, code)
	assert.Equal(t, `call id "o" was already used on account 7 for another request (open)`, msg)
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

	check := func(b *Bank) {
		t.Helper()
		_, err := b.call(ctx, "X", request{op: opTransfer, account: 1, to: 3, amount: 10})
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.InvalidArgument, code)
		assert.Equal(t, `call id "X" was already used on account 1 for another request (transfer)`, msg)
		assert.Equal(t, result{value: 90}, mustCall(t, ctx, b, "X", first), "the same request is still a retry")
		assert.Equal(t, []Account{{ID: 1, Balance: 90, Online: true}, {ID: 2, Balance: 10, Online: true}, {ID: 3, Online: true}}, b.Accounts())
	}
	check(b)
	b.crash()
	b = openBank(t, dir)
	check(b) // from the log
	require.NoError(t, b.Shutdown())
	b = openBank(t, dir)
	check(b) // from the snapshot
}

// TestRefusalsForMissingAccountsAreRecorded covers the refusals recorded
// outside any account's ring: a call on a never-opened account, and a
// transfer to an unknown receiver, retried once the account exists.
func TestRefusalsForMissingAccountsAreRecorded(t *testing.T) {
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

	check := func(b *Bank) {
		t.Helper()
		res := mustCall(t, ctx, b, "early", request{op: opDeposit, account: 9, amount: 5})
		code, msg := codeAndMessage(res.err(request{op: opDeposit, account: 9, amount: 5}, maxAccounts))
		assert.Equal(t, bankrpc.NotFound, code)
		assert.Equal(t, "account 9 was never opened: call Open first", msg)
		req := request{op: opTransfer, account: 7, to: 42, amount: 5}
		code, msg = codeAndMessage(mustCall(t, ctx, b, "t7", req).err(req, maxAccounts))
		assert.Equal(t, bankrpc.NotFound, code)
		assert.Equal(t, "no such receiver 42", msg)
		assert.Equal(t, []Account{{ID: 7, Balance: 50, Online: true}, {ID: 9, Online: true}, {ID: 42, Online: true}}, b.Accounts())
	}
	check(b)
	b.crash()
	b = openBank(t, dir)
	check(b) // from the log
	require.NoError(t, b.Shutdown())
	b = openBank(t, dir)
	check(b) // from the snapshot
}

func TestDedupRetentionEvictsOldestCallIDs(t *testing.T) {
	for _, retention := range []int{1, 3, 5, 8} {
		t.Run(fmt.Sprintf("retention=%d", retention), func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			dir := t.TempDir()
			b := openBank(t, dir, WithDedupRetention(retention))
			mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
			n := retention + 3
			for i := range n {
				mustCall(t, ctx, b, fmt.Sprint("d", i), request{op: opDeposit, account: 1, amount: 1 << i})
			}
			total := int64(1)<<n - 1
			require.Equal(t, total, b.Accounts()[0].Balance)

			// The newest `retention` call ids are remembered and not applied
			// again, whether the bank was restarted from the log, from a
			// snapshot, or not at all.
			for round, restart := range []func(){func() {}, b.crash, func() { require.NoError(t, b.Shutdown()) }} {
				restart()
				if round > 0 {
					b = openBank(t, dir, WithDedupRetention(retention))
				}
				for i := n - retention; i < n; i++ {
					res := mustCall(t, ctx, b, fmt.Sprint("d", i), request{op: opDeposit, account: 1, amount: 1 << i})
					assert.Equal(t, int64(1)<<(i+1)-1, res.value, "d%d answers its recorded balance", i)
				}
				assert.Equal(t, total, b.Accounts()[0].Balance, "round %d: remembered calls were not applied again", round)
			}
			// The oldest one was forgotten: repeating it applies it again.
			res := mustCall(t, ctx, b, fmt.Sprint("d", n-retention-1), request{op: opDeposit, account: 1, amount: 1 << (n - retention - 1)})
			assert.Equal(t, total+1<<(n-retention-1), res.value)
		})
	}
}

func TestRetentionShrinkKeepsNewest(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, WithDedupRetention(8))
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	for i := range 8 {
		mustCall(t, ctx, b, fmt.Sprint("d", i), request{op: opDeposit, account: 1, amount: 1})
	}
	require.NoError(t, b.Shutdown())
	b = openBank(t, dir, WithDedupRetention(2))
	res := mustCall(t, ctx, b, "d7", request{op: opDeposit, account: 1, amount: 1})
	assert.Equal(t, int64(8), res.value, "the newest call id survives a smaller retention")
	res = mustCall(t, ctx, b, "d5", request{op: opDeposit, account: 1, amount: 1})
	assert.Equal(t, int64(9), res.value, "older ones are forgotten")
}

func TestRetentionOutOfRangeIsRefused(t *testing.T) {
	for _, n := range []int{0, -1, MaxDedupRetention + 1} {
		_, err := Open(t.TempDir(), WithDedupRetention(n))
		assert.ErrorContains(t, err, fmt.Sprintf("dedup retention must be between 1 and 65535, got %d", n))
	}
}

// TestDedupStoreRings checks the ring storage against a plain list: growth
// through the classes, eviction order, slot reuse.
func TestDedupStoreRings(t *testing.T) {
	d := newDedupStore(5)
	require.Equal(t, []int{1, 2, 4, 5}, func() (caps []int) {
		for _, c := range d.classes {
			caps = append(caps, c.capacity)
		}
		return caps
	}())
	accts := make([]account, 3)
	want := make([][]int64, 3)
	for i := range 40 {
		a := i % 3
		if i > 20 {
			a = 1 // one account races ahead
		}
		e := dedupEntry{key: keyOf(fmt.Sprint(i)), op: opDeposit, value: int64(i)}
		d.add(&accts[a], e)
		want[a] = append(want[a], int64(i))
		if len(want[a]) > 5 {
			want[a] = want[a][1:]
		}
		for k := range accts {
			var got []int64
			older, newer := d.ring(&accts[k])
			for _, e := range slices.Concat(older, newer) {
				got = append(got, e.value)
			}
			require.Equal(t, want[k], got, "account %d after %d adds", k, i+1)
			require.Equal(t, len(want[k]), d.count(&accts[k]))
		}
		_, ok := d.find(&accts[a], keyOf(fmt.Sprint(i)))
		require.True(t, ok)
	}
	_, ok := d.find(&accts[1], keyOf("0"))
	assert.False(t, ok, "evicted")
	for _, c := range d.classes[:len(d.classes)-1] {
		assert.Equal(t, len(c.meta), len(c.free), "every ring moved on to a bigger class and freed its slot")
	}
}
