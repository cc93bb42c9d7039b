package bank

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// diskLog is a log file on a model disk: writes land in the page cache
// (buf); a Sync makes durable what was written before it was called, once it
// returns. Syncs take a random time, so that when several run at once they
// return out of order; durable is the longest prefix a returned Sync covers:
// what a crash cannot lose. Whatever of buf lies beyond may or may not
// survive a crash, cut at any byte.
type diskLog struct {
	mu      sync.Mutex
	buf     []byte
	durable int
	writes  int
	// afterWrite, if set, is called with the number of writes so far and
	// copies of the page cache and of the durable length, at once after a
	// write.
	afterWrite func(writes int, buf []byte, durable int)
}

func (d *diskLog) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = append(d.buf, p...)
	d.writes++
	if d.afterWrite != nil {
		d.afterWrite(d.writes, append([]byte(nil), d.buf...), d.durable)
	}
	return len(p), nil
}

func (d *diskLog) Sync() error {
	d.mu.Lock()
	n := len(d.buf)
	d.mu.Unlock()
	time.Sleep(rand.N(400 * time.Microsecond))
	d.mu.Lock()
	d.durable = max(d.durable, n)
	d.mu.Unlock()
	return nil
}

func (d *diskLog) Close() error { return nil }

// state returns a copy of what was written and how much of it is durable.
func (d *diskLog) state() ([]byte, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.buf...), d.durable
}

// recordEnds returns, for each call id logged in buf, the offset at which
// its record ends, and those offsets in log order.
func recordEnds(t *testing.T, buf []byte) (map[string]int, []int) {
	t.Helper()
	ends := map[string]int{}
	var order []int
	for off := 0; off < len(buf); {
		rec, n, err := decodeRecord(buf[off:])
		require.NoError(t, err, "offset %d", off)
		off += n
		ends[rec.callID] = off
		order = append(order, off)
	}
	return ends, order
}

// TestGroupCommitAcknowledgesOnlyDurableRecords runs concurrent callers on
// a bank whose log syncs overlap and return out of order, and checks group
// commit's two promises: no call returns before its record is durable (it
// lies within what returned Syncs cover when the caller gets its reply),
// and a crash that cuts the log at any byte after the durable part recovers
// a prefix of the log (the torn record, if any, is cut off as torn, never
// taken for damage) holding every acknowledged call, with its result.
func TestGroupCommitAcknowledgesOnlyDurableRecords(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	type ack struct {
		id     string
		res    result
		marked int // durable bytes when the reply came
	}
	var (
		mu     sync.Mutex
		acks   []ack
		frozen []byte // the disk when the crash happens: just after a write
		fDur   int
		fAcks  int // acks before the crash
	)
	crashAt := 20 + rand.IntN(40) // writes
	disk := &diskLog{afterWrite: func(writes int, buf []byte, durable int) {
		if writes == crashAt {
			mu.Lock()
			frozen, fDur, fAcks = buf, durable, len(acks)
			mu.Unlock()
		}
	}}
	b := openBank(t, t.TempDir(), WithSnapshotEvery(0), withLogOpener(func(string) (logFile, error) { return disk, nil }))
	const workers, accounts = 16, 8
	for id := int32(1); id <= accounts; id++ {
		mustCall(t, ctx, b, fmt.Sprint("open", id), request{op: opOpen, account: id})
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for seq := uint64(1); seq <= 60; seq++ {
				id := fmt.Sprintf("w%d-%d", w, seq)
				req := request{op: opDeposit, account: int32(w%accounts + 1), amount: int64(seq)}
				if seq%3 == 0 {
					req = request{op: opWithdraw, account: req.account, amount: 1_000}
				}
				res, err := b.call(ctx, callRefOf(id, seq), req)
				if err != nil {
					t.Errorf("call %s: %v", id, err)
					return
				}
				_, dur := disk.state()
				mu.Lock()
				acks = append(acks, ack{id, res, dur})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.crash()
	require.NotNil(t, frozen, "the crash point was never reached")

	all, _ := disk.state()
	ends, _ := recordEnds(t, all)
	for _, a := range acks {
		end, ok := ends[a.id]
		require.True(t, ok, "acknowledged call %s is not in the log", a.id)
		assert.LessOrEqual(t, end, a.marked, "call %s was acknowledged before its record was durable", a.id)
	}

	_, boundaries := recordEnds(t, frozen)
	dir := t.TempDir()
	path := logPath(dir, 1)
	require.Less(t, fDur, len(frozen), "the crash comes just after a write, before its sync")
	complete := 0 // records wholly within the cut
	for n := fDur; n <= len(frozen); n++ {
		for complete < len(boundaries) && boundaries[complete] <= n {
			complete++
		}
		require.NoError(t, os.WriteFile(path, frozen[:n], 0o644))
		st := newState()
		st.limit = maxAccounts
		r, err := replayLog(path, &replayer{s: &st, horizon: DefaultSessionRetention}, true)
		require.NoError(t, err, "log cut at byte %d of %d (durable: %d)", n, len(frozen), fDur)
		require.Equal(t, complete, r.records, "log cut at byte %d: not the prefix of whole records", n)
		if n == boundaries[max(complete-1, 0)] || n == 0 {
			assert.Equal(t, tailNone, r.tail, "cut at byte %d, a record boundary", n)
		} else {
			assert.Equal(t, tailTorn, r.tail, "cut at byte %d, inside a record: a torn append, not damage", n)
		}
	}

	// A restart from a cut in the middle of the part not yet durable has
	// every call acknowledged before the crash, with its result.
	cut := fDur + (len(frozen)-fDur)/2
	require.NoError(t, os.WriteFile(path, frozen[:cut], 0o644))
	b = openBank(t, dir)
	for _, a := range acks[:fAcks] {
		found, rep := b.recordedCall(a.id)
		require.NotZero(t, found, "acknowledged call %s lost in the crash", a.id)
		if found == 1 {
			assert.Equal(t, a.res, rep.result(), "call %s", a.id)
		}
	}
	t.Logf("%d calls acknowledged before the crash; the log held %d bytes, %d durable: cut at every byte after", fAcks, len(frozen), fDur)
}
