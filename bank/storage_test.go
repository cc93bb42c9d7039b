package bank

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

// populate makes a few accounts with history, through calls with call ids,
// and returns the resulting accounts.
func populate(t *testing.T, ctx context.Context, b *Bank) []Account {
	t.Helper()
	for id := int32(1); id <= 3; id++ {
		mustCall(t, ctx, b, fmt.Sprint("open-", id), request{op: opOpen, account: id})
		mustCall(t, ctx, b, fmt.Sprint("dep-", id), request{op: opDeposit, account: id, amount: int64(id) * 100})
	}
	mustCall(t, ctx, b, "wd-1", request{op: opWithdraw, account: 1, amount: 30})
	mustCall(t, ctx, b, "wd-2", request{op: opWithdraw, account: 2, amount: 1000}) // refused
	mustCall(t, ctx, b, "tr-3", request{op: opTransfer, account: 3, to: 1, amount: 50})
	mustCall(t, ctx, b, "close-2", request{op: opClose, account: 2})
	want := []Account{{ID: 1, Balance: 120, Online: true}, {ID: 2, Balance: 200}, {ID: 3, Balance: 250, Online: true}}
	require.Equal(t, want, b.Accounts())
	return want
}

func logPath(dir string, gen uint64) string { return filepath.Join(dir, logFileName(gen)) }

func TestRestartFromSnapshot(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	want := populate(t, ctx, b)
	require.NoError(t, b.Shutdown())

	assert.FileExists(t, filepath.Join(dir, snapshotFileName))
	gens, err := logGenerations(dir)
	require.NoError(t, err)
	assert.Equal(t, []uint64{2}, gens, "the log is compacted after the shutdown snapshot, down to the empty file the next records go to")
	assert.Zero(t, fileSize(t, logPath(dir, 2)))

	b = openBank(t, dir)
	assert.Equal(t, want, b.Accounts())
	assert.Equal(t, 2, b.Online(), "logged-on clients stay logged on across a restart")
	res := mustCall(t, ctx, b, "wd-2", request{op: opWithdraw, account: 2, amount: 1000})
	assert.Equal(t, result{code: bankrpc.FailedPrecondition, value: 200}, res, "the recorded refusal survives")
}

func TestRestartAfterCrashReplaysLog(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	want := populate(t, ctx, b)
	b.crash()
	assert.NoFileExists(t, filepath.Join(dir, snapshotFileName))

	b = openBank(t, dir)
	assert.Equal(t, want, b.Accounts())
	assert.Equal(t, 2, b.Online())
	mustCall(t, ctx, b, "dep-more", request{op: opDeposit, account: 3, amount: 1})
	b.crash()
	b = openBank(t, dir)
	assert.Equal(t, int64(251), b.Accounts()[2].Balance, "records appended after a replay are replayed too")
}

func TestSnapshotCompactsLogAndLaterRecordsFollow(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	populate(t, ctx, b)
	require.NoError(t, b.Snapshot())
	assert.NoFileExists(t, logPath(dir, 1), "the snapshot includes generation 1")
	require.NoError(t, b.Snapshot(), "a snapshot with nothing new is a no-op")

	mustCall(t, ctx, b, "after", request{op: opDeposit, account: 1, amount: 5})
	assert.FileExists(t, logPath(dir, 2))
	want := b.Accounts()
	b.crash()
	b = openBank(t, dir)
	assert.Equal(t, want, b.Accounts())
	res := mustCall(t, ctx, b, "wd-1", request{op: opWithdraw, account: 1, amount: 30})
	assert.Equal(t, int64(70), res.value, "call ids from before the snapshot are remembered")
}

func TestStaleLogFileIsRemovedNotReplayed(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	want := populate(t, ctx, b)
	b.crash()
	old, err := os.ReadFile(logPath(dir, 1))
	require.NoError(t, err)
	b = openBank(t, dir)
	require.NoError(t, b.Shutdown())
	// A crash between the snapshot's rename and the log's deletion leaves
	// the old generation behind.
	require.NoError(t, os.WriteFile(logPath(dir, 1), old, 0o644))

	b = openBank(t, dir)
	assert.Equal(t, want, b.Accounts(), "nothing applied twice")
	assert.NoFileExists(t, logPath(dir, 1))
}

func TestAutomaticSnapshot(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, WithSnapshotEvery(10))
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	for i := range 40 {
		mustCall(t, ctx, b, fmt.Sprint("d", i), request{op: opDeposit, account: 1, amount: 1})
	}
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, snapshotFileName))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "a snapshot is written after 10 records")
	b.crash()
	gens, err := logGenerations(dir)
	require.NoError(t, err)
	assert.NotContains(t, gens, uint64(1), "generation 1 was compacted")

	b = openBank(t, dir, WithSnapshotEvery(10))
	assert.Equal(t, []Account{{ID: 1, Balance: 40, Online: true}}, b.Accounts())
	res := mustCall(t, ctx, b, "d39", request{op: opDeposit, account: 1, amount: 1})
	assert.Equal(t, int64(40), res.value)
}

// TestFailedSnapshotBacksOff makes every snapshot attempt fail (snapshot.tmp
// is a directory that cannot be removed or replaced): the bank must retry
// only after another snapshotEvery records, each failed attempt reported
// once, without starting a log file per attempt; and once the obstacle is
// gone, the next attempt succeeds and compacts the log.
func TestFailedSnapshotBacksOff(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	rec := &logRecorder{}
	const every, records = 10, 201
	b := openBank(t, dir, WithSnapshotEvery(every), WithLogger(slog.New(rec)))
	obstacle := filepath.Join(dir, snapshotTempName)
	require.NoError(t, os.MkdirAll(filepath.Join(obstacle, "x"), 0o755))

	failures := func() (n int) {
		for _, m := range rec.messages() {
			if strings.Contains(m, "automatic snapshot failed") {
				n++
			}
		}
		return n
	}
	mustCall(t, ctx, b, "", request{op: opOpen, account: 1})
	for i := 1; i < records; i++ {
		mustCall(t, ctx, b, fmt.Sprint("d", i), request{op: opDeposit, account: 1, amount: 1})
	}
	require.Eventually(t, func() bool { return failures() > 0 }, 10*time.Second, 5*time.Millisecond, "the failure is reported")
	gens, err := logGenerations(dir)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(gens), 2, "log files after %d records with failing snapshots: %v", records, gens)
	assert.LessOrEqual(t, failures(), records/every, "at most one attempt, and one report, per %d records", every)
	assert.NoFileExists(t, filepath.Join(dir, snapshotFileName))

	require.NoError(t, os.RemoveAll(obstacle))
	for i := range every {
		mustCall(t, ctx, b, fmt.Sprint("e", i), request{op: opDeposit, account: 1, amount: 1})
	}
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, snapshotFileName))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the next attempt after the backoff succeeds")
	b.crash()
	b = openBank(t, dir)
	assert.Equal(t, []Account{{ID: 1, Balance: records - 1 + every, Online: true}}, b.Accounts())
}

// crashedBank returns a directory holding a crashed bank's log (no
// snapshot) with the populate history, and the log's path.
func crashedBank(t *testing.T) (dir, log string, want []Account) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	dir = t.TempDir()
	b := openBank(t, dir)
	want = populate(t, ctx, b)
	b.crash()
	return dir, logPath(dir, 1), want
}

// recordOffsets returns the offsets of the records in a log file.
func recordOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var offs []int64
	for off := 0; off < len(data); {
		_, n, err := decodeRecord(data[off:])
		require.NoError(t, err)
		offs = append(offs, int64(off))
		off += n
	}
	return offs
}

// recordStart returns the offset of the record holding byte pos, given the
// records' offsets.
func recordStart(offs []int64, pos int64) int64 {
	i, found := slices.BinarySearch(offs, pos)
	if !found {
		i--
	}
	return offs[i]
}

func TestTornTailIsTruncatedAndReported(t *testing.T) {
	tails := map[string]func(t *testing.T, path string){
		"half a record": func(t *testing.T, path string) {
			rec := appendRecord(nil, &record{lsn: 12, req: request{op: opDeposit, account: 1, amount: 1}, res: result{value: 121}, callID: "torn"})
			appendBytes(t, path, rec[:len(rec)/2])
		},
		"a few header bytes": func(t *testing.T, path string) {
			appendBytes(t, path, []byte{40, 0, 0})
		},
		"zeros": func(t *testing.T, path string) {
			appendBytes(t, path, make([]byte, 4096))
		},
		"last record garbled": func(t *testing.T, path string) {
			offs := recordOffsets(t, path)
			flipBits(t, path, offs[len(offs)-1]+20, 0x10)
		},
	}
	for name, tear := range tails {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			dir, log, want := crashedBank(t)
			valid := fileSize(t, log)
			offs := recordOffsets(t, log)
			if name == "last record garbled" {
				valid = offs[len(offs)-1]
				want = []Account{{ID: 1, Balance: 120, Online: true}, {ID: 2, Balance: 200, Online: true}, {ID: 3, Balance: 250, Online: true}}
			}
			tear(t, log)
			torn, err := os.ReadFile(log)
			require.NoError(t, err)

			rec := &logRecorder{}
			b := openBank(t, dir, WithLogger(slog.New(rec)))
			assert.Equal(t, want, b.Accounts())
			assert.Contains(t, strings.Join(rec.messages(), "\n"), "truncated a torn record at the end of the log (a write cut short by a crash: not acknowledged, unless the disk damaged it)",
				"the report does not claim more than the bank knows: a flip in an acknowledged last record looks the same")
			assert.Equal(t, valid, fileSize(t, log), "the torn record is cut off")
			assert.Equal(t, torn[valid:], damagedCopy(t, log), "what was cut off is kept")

			mustCall(t, ctx, b, "next", request{op: opDeposit, account: 3, amount: 1})
			b.crash()
			b = openBank(t, dir)
			assert.Equal(t, want[2].Balance+1, b.Accounts()[2].Balance, "the log goes on after the truncation")
		})
	}
}

// damagedCopy returns the contents of the one copy Open kept of bytes it
// cut off the end of the log file at path.
func damagedCopy(t *testing.T, path string) []byte {
	t.Helper()
	copies, err := filepath.Glob(path + ".damaged-*")
	require.NoError(t, err)
	require.Len(t, copies, 1, "one copy of what was cut")
	data, err := os.ReadFile(copies[0])
	require.NoError(t, err)
	return data
}

// TestDamagedTailIsRefusedUnlessRepaired: bytes after the last record that
// are not the remains of an interrupted append (50 random bytes here) stop
// the start with an error that says what to do; with WithRepairLogTail the
// bank cuts them off, keeps a copy and says so. Either way nothing before
// them is lost. The bank used to refuse such a log with no way forward.
func TestDamagedTailIsRefusedUnlessRepaired(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir, log, want := crashedBank(t)
	valid := fileSize(t, log)
	junk := make([]byte, 50)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	junk[3] = 0xff // an impossible record length, whatever the rest
	appendBytes(t, log, junk)
	damaged, err := os.ReadFile(log)
	require.NoError(t, err)

	_, err = Open(dir)
	var cerr *CorruptError
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, log, cerr.File)
	assert.Equal(t, valid, cerr.Offset)
	assert.Equal(t, int64(50), cerr.TailBytes)
	assert.Contains(t, err.Error(), "these 50 bytes at the end of the log follow its last valid record")
	assert.Contains(t, err.Error(), "WithRepairLogTail (bank-server --repair-log-tail)")
	got, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Equal(t, damaged, got, "refused: the file is left as it was")
	copies, err := filepath.Glob(log + ".damaged-*")
	require.NoError(t, err)
	assert.Empty(t, copies)

	rec := &logRecorder{}
	b := openBank(t, dir, WithRepairLogTail(), WithLogger(slog.New(rec)))
	assert.Equal(t, want, b.Accounts(), "every record before the damage")
	assert.Contains(t, strings.Join(rec.messages(), "\n"), "cut damaged bytes off the end of the log, as asked (WithRepairLogTail)")
	assert.Equal(t, valid, fileSize(t, log))
	assert.Equal(t, junk, damagedCopy(t, log), "what was cut off is kept")
	mustCall(t, ctx, b, "next", request{op: opDeposit, account: 3, amount: 1})
	b.crash()
	b = openBank(t, dir)
	assert.Equal(t, want[2].Balance+1, b.Accounts()[2].Balance, "the log goes on after the repair")
}

// TestMissingFilesAreRefused: files that cannot hold every change stop the
// start, naming the missing file and the way out. The bank used to start
// empty, or report a gap in sequence numbers, when the snapshot was gone.
func TestMissingFilesAreRefused(t *testing.T) {
	snapshotted := func(t *testing.T, more bool) string {
		ctx := testCtx(t, 10*time.Second)
		dir := t.TempDir()
		b := openBank(t, dir)
		populate(t, ctx, b)
		require.NoError(t, b.Shutdown())
		if more {
			b = openBank(t, dir)
			mustCall(t, ctx, b, "after", request{op: opDeposit, account: 1, amount: 5})
			b.crash()
		}
		return dir
	}
	for _, tc := range []struct {
		name    string
		more    bool // records after the snapshot
		remove  string
		missing string
		says    string
	}{
		{"snapshot, after a clean shutdown", false, snapshotFileName, snapshotFileName, "the log starts at %s, which continues a snapshot"},
		{"snapshot, with records after it", true, snapshotFileName, snapshotFileName, "restore the snapshot from a backup; to start an empty bank instead, move every log.* file out of %s"},
		{"the log after the snapshot", true, logFileName(2), logFileName(2), "restore the log files from a backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := snapshotted(t, tc.more)
			require.NoError(t, os.Remove(filepath.Join(dir, tc.remove)))
			_, err := Open(dir)
			var ierr *IncompleteError
			require.ErrorAs(t, err, &ierr)
			assert.Equal(t, filepath.Join(dir, tc.missing), ierr.Missing)
			assert.Contains(t, err.Error(), "bank: "+filepath.Join(dir, tc.missing)+" is missing")
			if tc.remove == snapshotFileName {
				assert.Contains(t, err.Error(), fmt.Sprintf(tc.says, map[bool]string{true: dir, false: logPath(dir, 2)}[strings.Contains(tc.says, "move")]))
			} else {
				assert.Contains(t, err.Error(), tc.says)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(p)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// flipBits flips the bits of mask in the byte at off.
func flipBits(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	require.NoError(t, err)
	b[0] ^= mask
	_, err = f.WriteAt(b[:], off)
	require.NoError(t, err)
}

func TestCorruptLogIsReportedWithFileAndOffset(t *testing.T) {
	cases := []struct {
		name   string
		record int   // which record to damage; negative: from the end
		at     int64 // byte within it
		mask   byte  // bits to flip
		reason string
	}{
		{"flipped byte in the first record", 0, 12, 0x10, "checksum mismatch"},
		{"flipped byte mid-log", 5, 30, 0x10, "checksum mismatch"},
		{"flipped length mid-log", 5, 2, 0x10, "impossible record length"},
		{"flipped checksum mid-log", 3, 5, 0x10, "checksum mismatch"},
		// The length now points past the end of the file, as a torn
		// write's would; the valid last record after it shows it is not one.
		{"length of the second-to-last record points past the end", -2, 0, 0x80, "the record is cut short, but a valid record"},
		{"flipped byte in the second-to-last record", -2, 30, 0x10, "checksum mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, log, _ := crashedBank(t)
			offs := recordOffsets(t, log)
			if tc.record < 0 {
				tc.record += len(offs)
			}
			require.Greater(t, len(offs), tc.record+1)
			flipBits(t, log, offs[tc.record]+tc.at, tc.mask)

			_, err := Open(dir)
			var cerr *CorruptError
			require.ErrorAs(t, err, &cerr)
			assert.Equal(t, log, cerr.File)
			assert.Equal(t, offs[tc.record], cerr.Offset)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Contains(t, err.Error(), fmt.Sprintf("%s is corrupt at offset %d", log, offs[tc.record]))
			b := openBankAfterFailure(t, dir)
			assert.Nil(t, b, "the directory stays refused until an operator repairs it")
		})
	}
}

// openBankAfterFailure checks a failed Open released the directory lock and
// that opening still fails; it returns the bank if it unexpectedly opened.
func openBankAfterFailure(t *testing.T, dir string) *Bank {
	t.Helper()
	b, err := Open(dir)
	var lerr *LockedError
	assert.False(t, errors.As(err, &lerr), "a failed Open must release the lock")
	if err == nil {
		_ = b.Shutdown()
		return b
	}
	return nil
}

// TestAnyFlippedByteBeforeTheLastRecordIsCorruption damages a valid log
// one byte at a time, everywhere before its last record: Open must refuse
// it with a *CorruptError every time, never truncate acknowledged records
// away as if they were a torn write.
func TestAnyFlippedByteBeforeTheLastRecordIsCorruption(t *testing.T) {
	dir, log, _ := crashedBank(t)
	offs := recordOffsets(t, log)
	valid, err := os.ReadFile(log)
	require.NoError(t, err)
	damaged := make([]byte, len(valid))
	for pos := range offs[len(offs)-1] {
		for _, mask := range []byte{0x01, 0x10, 0x80, 0xff} {
			copy(damaged, valid)
			damaged[pos] ^= mask
			require.NoError(t, os.WriteFile(log, damaged, 0o644))
			b, err := Open(dir)
			if err == nil {
				_ = b.Shutdown()
			}
			var cerr *CorruptError
			require.ErrorAs(t, err, &cerr, "byte %d flipped with %#02x", pos, mask)
			require.Equal(t, log, cerr.File)
			require.Equal(t, recordStart(offs, pos), cerr.Offset, "byte %d flipped with %#02x: the error names the damaged record", pos, mask)
			got, err := os.ReadFile(log)
			require.NoError(t, err)
			require.Equal(t, damaged, got, "byte %d flipped with %#02x: the file is left as it was", pos, mask)
		}
	}
}

func TestLogSequenceGapIsReported(t *testing.T) {
	dir := t.TempDir()
	var data []byte
	data = appendRecord(data, &record{lsn: 1, req: request{op: opOpen, account: 1}, res: result{flags: resultCreated}})
	gapAt := len(data)
	data = appendRecord(data, &record{lsn: 3, req: request{op: opDeposit, account: 1, amount: 5}, res: result{value: 5}})
	require.NoError(t, os.WriteFile(logPath(dir, 1), data, 0o644))

	_, err := Open(dir)
	var cerr *CorruptError
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, int64(gapAt), cerr.Offset)
	assert.ErrorContains(t, err, "sequence number 3 where 2 was expected")
}

func TestLogRecordWithImpossibleResultIsReported(t *testing.T) {
	dir := t.TempDir()
	var data []byte
	data = appendRecord(data, &record{lsn: 1, req: request{op: opOpen, account: 1}, res: result{flags: resultCreated}})
	at := len(data)
	data = appendRecord(data, &record{lsn: 2, req: request{op: opDeposit, account: 1, amount: 5}, res: result{value: 6}})
	require.NoError(t, os.WriteFile(logPath(dir, 1), data, 0o644))

	_, err := Open(dir)
	var cerr *CorruptError
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, int64(at), cerr.Offset)
	assert.ErrorContains(t, err, "but the log recorded")
}

func TestTornRecordInOlderLogFileIsCorruption(t *testing.T) {
	dir, log, _ := crashedBank(t)
	appendBytes(t, log, []byte{1, 2, 3})
	// A second generation follows: as after a snapshot that failed to write.
	var data []byte
	data = appendRecord(data, &record{lsn: 11, req: request{op: opDeposit, account: 1, amount: 5}, res: result{value: 125}})
	require.NoError(t, os.WriteFile(logPath(dir, 2), data, 0o644))

	_, err := Open(dir)
	var cerr *CorruptError
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, log, cerr.File)
	assert.ErrorContains(t, err, "in a log file that a newer one follows")
}

func TestLogGenerationsChainAcrossAFailedSnapshot(t *testing.T) {
	dir, _, want := crashedBank(t)
	var data []byte
	data = appendRecord(data, &record{lsn: 11, req: request{op: opDeposit, account: 1, amount: 5}, res: result{value: 125}})
	require.NoError(t, os.WriteFile(logPath(dir, 3), data, 0o644))
	want[0].Balance += 5

	b := openBank(t, dir)
	assert.Equal(t, want, b.Accounts(), "generation 3 continues generation 1's sequence numbers")
}

func TestCorruptSnapshotIsReported(t *testing.T) {
	snapshotDir := func(t *testing.T) (string, string) {
		ctx := testCtx(t, 10*time.Second)
		dir := t.TempDir()
		b := openBank(t, dir)
		populate(t, ctx, b)
		require.NoError(t, b.Shutdown())
		return dir, filepath.Join(dir, snapshotFileName)
	}
	t.Run("truncated", func(t *testing.T) {
		dir, snap := snapshotDir(t)
		size := fileSize(t, snap)
		require.NoError(t, os.Truncate(snap, size/2))
		_, err := Open(dir)
		var cerr *CorruptError
		require.ErrorAs(t, err, &cerr)
		assert.Equal(t, snap, cerr.File)
		assert.ErrorContains(t, err, "cut short")
	})
	t.Run("flipped byte", func(t *testing.T) {
		dir, snap := snapshotDir(t)
		flipBits(t, snap, fileSize(t, snap)-20, 0x10)
		_, err := Open(dir)
		var cerr *CorruptError
		require.ErrorAs(t, err, &cerr)
		assert.Equal(t, snap, cerr.File)
		assert.ErrorContains(t, err, "checksum mismatch")
	})
	t.Run("trailing data", func(t *testing.T) {
		dir, snap := snapshotDir(t)
		appendBytes(t, snap, []byte{0})
		_, err := Open(dir)
		var cerr *CorruptError
		require.ErrorAs(t, err, &cerr)
		assert.ErrorContains(t, err, "unexpected data after the checksum")
	})
	t.Run("not a snapshot", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, snapshotFileName), []byte("hello, world\n"), 0o644))
		_, err := Open(dir)
		assert.ErrorContains(t, err, `not a bank snapshot (starts with "hello, w")`)
	})
}

func TestWrongVersionIsReported(t *testing.T) {
	t.Run("snapshot", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		dir := t.TempDir()
		b := openBank(t, dir)
		populate(t, ctx, b)
		require.NoError(t, b.Shutdown())
		snap := filepath.Join(dir, snapshotFileName)
		data, err := os.ReadFile(snap)
		require.NoError(t, err)
		binary.LittleEndian.PutUint32(data[8:], 4)
		require.NoError(t, os.WriteFile(snap, data, 0o644))

		_, err = Open(dir)
		var verr *VersionError
		require.ErrorAs(t, err, &verr)
		assert.Equal(t, uint32(4), verr.Got)
		assert.EqualError(t, err, "bank: snapshot "+snap+": snapshot format version 4 is not supported (this build reads version 3)")
	})
	t.Run("log record", func(t *testing.T) {
		dir, log, _ := crashedBank(t)
		offs := recordOffsets(t, log)
		data, err := os.ReadFile(log)
		require.NoError(t, err)
		// A well-formed record of version 3, checksum and all.
		rec := data[offs[4]:offs[5]]
		rec[recordHeaderSize] = 3
		binary.LittleEndian.PutUint32(rec[4:], recordChecksum(rec[:4], rec[recordHeaderSize:]))
		require.NoError(t, os.WriteFile(log, data, 0o644))

		_, err = Open(dir)
		var verr *VersionError
		require.ErrorAs(t, err, &verr)
		assert.EqualError(t, err, fmt.Sprintf("bank: %s at offset %d: log record format version 3 is not supported (this build reads version 2)", log, offs[4]))
	})
}

// TestReadsVersion1Snapshot opens a snapshot written by a build of format
// version 1 (testdata/v1/snapshot: the populate history, then a deposit of 5
// on the never-opened account 9 with call id "orphan-9"). Its call ids keep
// working; a version 1 entry has no receiver, so a transfer's call id reused
// with another receiver is answered as a repeat, as version 1 did.
func TestReadsVersion1Snapshot(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	v1, err := os.ReadFile(filepath.Join("testdata", "v1", snapshotFileName))
	require.NoError(t, err)
	require.Equal(t, uint32(1), binary.LittleEndian.Uint32(v1[8:]))
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, snapshotFileName), v1, 0o644))
	want := []Account{{ID: 1, Balance: 120, Online: true}, {ID: 2, Balance: 200}, {ID: 3, Balance: 250, Online: true}}

	check := func(b *Bank) {
		t.Helper()
		assert.Equal(t, want, b.Accounts())
		old := func(id string) callRef { return callRefOf(id, 0) } // a retry from a process that knows the call id only
		assert.Equal(t, result{value: 100}, mustCallRef(t, ctx, b, old("dep-1"), request{op: opDeposit, account: 1, amount: 100}))
		assert.Equal(t, result{code: bankrpc.FailedPrecondition, value: 200}, mustCallRef(t, ctx, b, old("wd-2"), request{op: opWithdraw, account: 2, amount: 1000}))
		assert.Equal(t, result{code: bankrpc.NotFound}, mustCallRef(t, ctx, b, old("orphan-9"), request{op: opDeposit, account: 9, amount: 5}))
		_, err := b.call(ctx, old("dep-1"), request{op: opDeposit, account: 1, amount: 101})
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "another amount is another request")
		_, err = b.call(ctx, old("wd-1"), request{op: opDeposit, account: 1, amount: 30})
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "another op is another request")
		_, err = b.call(ctx, old("tr-3"), request{op: opTransfer, account: 3, to: 1, amount: 51})
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "another amount is another request")
		for _, to := range []int32{1, 2} {
			assert.Equal(t, result{value: 250}, mustCallRef(t, ctx, b, old("tr-3"), request{op: opTransfer, account: 3, to: to, amount: 50}),
				"the receiver of a version 1 transfer entry is unknown: any receiver is a repeat")
		}
		assert.Equal(t, want, b.Accounts(), "nothing applied again")
	}
	b := openBank(t, dir)
	check(b)
	mustCall(t, ctx, b, "new", request{op: opDeposit, account: 2, amount: 1}) // so that Shutdown writes a snapshot
	want[1].Balance++
	require.NoError(t, b.Shutdown())
	data, err := os.ReadFile(filepath.Join(dir, snapshotFileName))
	require.NoError(t, err)
	require.Equal(t, uint32(snapshotVersion), binary.LittleEndian.Uint32(data[8:]), "the shutdown snapshot is of the current version")
	b = openBank(t, dir)
	check(b)
}

// TestReadsOlderFormats opens what a build before sessions wrote:
// testdata/v2/snapshot (a version 2 snapshot) and testdata/v1log (version 1
// log records, no snapshot), both holding the populate history, a deposit of
// 5 on the never-opened account 9 with call id "orphan-9" and a deposit of 1
// on account 3 with call id "plain". The calls they recorded are answered
// from the record (the snapshot's by their hashes, for the retention
// horizon after the upgrade) and never applied again; calls of the form
// "<session>-<seq>" in the log become sessions.
func TestReadsOlderFormats(t *testing.T) {
	for _, fixture := range []string{"v2", "v1log"} {
		t.Run(fixture, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			dir := t.TempDir()
			files, err := os.ReadDir(filepath.Join("testdata", fixture))
			require.NoError(t, err)
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join("testdata", fixture, f.Name()))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, f.Name()), data, 0o644))
			}
			clock := newFakeClock()
			opts := []Option{WithSessionRetention(time.Hour), withClock(clock.now)}
			want := []Account{{ID: 1, Balance: 120, Online: true}, {ID: 2, Balance: 200}, {ID: 3, Balance: 251, Online: true}}
			old := func(id string) callRef { return callRefOf(id, 0) }
			check := func(b *Bank) {
				t.Helper()
				assert.Equal(t, want, b.Accounts())
				assert.Equal(t, result{value: 100}, mustCallRef(t, ctx, b, old("dep-1"), request{op: opDeposit, account: 1, amount: 100}))
				assert.Equal(t, result{code: bankrpc.FailedPrecondition, value: 200}, mustCallRef(t, ctx, b, old("wd-2"), request{op: opWithdraw, account: 2, amount: 1000}))
				assert.Equal(t, result{code: bankrpc.NotFound}, mustCallRef(t, ctx, b, old("orphan-9"), request{op: opDeposit, account: 9, amount: 5}))
				assert.Equal(t, result{value: 251}, mustCallRef(t, ctx, b, old("plain"), request{op: opDeposit, account: 3, amount: 1}))
				_, err := b.call(ctx, old("tr-3"), request{op: opTransfer, account: 3, to: 2, amount: 50})
				assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "another receiver is another request")
				assert.Equal(t, want, b.Accounts(), "nothing applied again")
			}
			b := openBank(t, dir, opts...)
			check(b)
			mustCall(t, ctx, b, "new", request{op: opDeposit, account: 2, amount: 1}) // so that Shutdown writes a snapshot
			want[1].Balance++
			require.NoError(t, b.Shutdown())
			data, err := os.ReadFile(filepath.Join(dir, snapshotFileName))
			require.NoError(t, err)
			require.Equal(t, uint32(snapshotVersion), binary.LittleEndian.Uint32(data[8:]), "the shutdown snapshot is of the current version")
			b = openBank(t, dir, opts...)
			check(b)

			clock.advance(time.Hour)
			_, err = b.call(ctx, old("plain"), request{op: opDeposit, account: 3, amount: 1})
			if fixture == "v2" {
				assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "the horizon has passed since the upgrade: the legacy record is forgotten, and the call id is not of the session form")
			} else {
				assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err))
			}
			_, err = b.call(ctx, old("dep-1"), request{op: opDeposit, account: 1, amount: 100})
			assert.Equal(t, bankrpc.Aborted, bankrpc.CodeOf(err), "forgotten: refused, not applied")
			assert.Equal(t, want, b.Accounts())
		})
	}
}

// TestOpenMakesANewDirectoryDurable: when Open creates the bank directory
// (and missing parents), it fsyncs the parent of each directory it created,
// so that a crash cannot lose the directory with the log in it. An existing
// directory's parent is left alone.
func TestOpenMakesANewDirectoryDurable(t *testing.T) {
	var mu sync.Mutex
	var synced []string
	syncer := withDirSyncer(func(dir string) error {
		mu.Lock()
		synced = append(synced, dir)
		mu.Unlock()
		return syncDir(dir)
	})
	root := t.TempDir()
	dir := filepath.Join(root, "a", "bank")
	b := openBank(t, dir, syncer)
	mu.Lock()
	assert.Equal(t, []string{root, filepath.Join(root, "a")}, synced, "the parents of the created directories, outermost first")
	synced = nil
	mu.Unlock()
	require.NoError(t, b.Shutdown())

	b = openBank(t, dir, syncer)
	require.NoError(t, b.Shutdown())
	mu.Lock()
	defer mu.Unlock()
	assert.NotContains(t, synced, filepath.Join(root, "a"), "nothing was created")
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	b := openBank(t, dir)
	_, err := Open(dir)
	var lerr *LockedError
	require.ErrorAs(t, err, &lerr)
	assert.Equal(t, os.Getpid(), lerr.PID)
	assert.EqualError(t, err, fmt.Sprintf("bank: directory %s is in use by process %d", dir, os.Getpid()))

	require.NoError(t, b.Shutdown())
	b = openBank(t, dir)
	require.NoError(t, b.Shutdown())
}

// faultyFile is a log file whose writes or syncs start failing on demand.
type faultyFile struct {
	logFile
	mu        sync.Mutex
	failWrite bool
	failSync  bool
}

var errInjected = syscall.EIO

func (f *faultyFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	fail := f.failWrite
	f.mu.Unlock()
	if fail {
		return 0, &os.PathError{Op: "write", Path: "log", Err: errInjected}
	}
	return f.logFile.Write(p)
}

func (f *faultyFile) Sync() error {
	f.mu.Lock()
	fail := f.failSync
	f.mu.Unlock()
	if fail {
		return &os.PathError{Op: "fdatasync", Path: "log", Err: errInjected}
	}
	return f.logFile.Sync()
}

func TestLogFailureStopsAcknowledgements(t *testing.T) {
	for _, which := range []string{"fsync", "write"} {
		t.Run(which, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			dir := t.TempDir()
			ff := &faultyFile{}
			rec := &logRecorder{}
			b := openBank(t, dir, WithLogger(slog.New(rec)), withLogOpener(func(path string) (logFile, error) {
				f, err := openOSLogFile(path)
				ff.logFile = f
				return ff, err
			}))
			want := populate(t, ctx, b)

			ff.mu.Lock()
			ff.failSync = which == "fsync"
			ff.failWrite = which == "write"
			ff.mu.Unlock()
			_, err := b.call(ctx, once("doomed"), request{op: opDeposit, account: 1, amount: 1})
			code, msg := codeAndMessage(err)
			assert.Equal(t, bankrpc.Unavailable, code)
			assert.Contains(t, msg, "bank: stopped acknowledging changes after a log failure")
			assert.Contains(t, msg, "input/output error")

			ff.mu.Lock()
			ff.failSync, ff.failWrite = false, false // the disk "recovers": the bank must not trust it
			ff.mu.Unlock()
			_, err = b.call(ctx, once("later"), request{op: opDeposit, account: 2, amount: 1})
			assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "no acknowledgement after a failure")
			_, _, err = b.balance(ctx, 1)
			assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "no read of state that may not be durable")
			assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(b.Snapshot()))
			assert.ErrorContains(t, b.Shutdown(), "shut down without a snapshot, because the log failed")
			assert.NoFileExists(t, filepath.Join(dir, snapshotFileName))
			assert.Contains(t, strings.Join(rec.messages(), "\n"), "log write failed")

			b = openBank(t, dir)
			got := b.Accounts()
			if which == "fsync" {
				// The doomed deposit reached the file; its outcome was
				// reported as unknown, so either state is correct.
				if got[0].Balance == want[0].Balance+1 {
					want[0].Balance++
				}
			}
			assert.Equal(t, want, got, "every acknowledged change, nothing after the failure")
		})
	}
}

// fullDisk is a log file on a full disk: writes fail as os.File's do, with
// an *os.PathError naming the file.
type fullDisk struct {
	logFile
	path string
}

func (f fullDisk) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: f.path, Err: syscall.ENOSPC}
}

// TestLogFailureNamesTheFileOnce: the error a full disk gives callers names
// the log file once, with the system's reason. It used to name it twice
// ("write …/log.00000001: write …/log.00000001: no space left on device").
func TestLogFailureNamesTheFileOnce(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir, withLogOpener(func(path string) (logFile, error) {
		f, err := openOSLogFile(path)
		return fullDisk{logFile: f, path: path}, err
	}))
	_, err := b.call(ctx, once("o"), request{op: opOpen, account: 1})
	code, msg := codeAndMessage(err)
	assert.Equal(t, bankrpc.Unavailable, code)
	assert.Equal(t, "bank: stopped acknowledging changes after a log failure: write "+logPath(dir, 1)+": no space left on device", msg)
}

// blockingFile is a log file whose Sync waits until released, to observe
// what callers see while a record is not yet durable.
type blockingFile struct {
	logFile
	syncing chan struct{} // receives when a Sync starts waiting
	release chan struct{}
}

func (f *blockingFile) Sync() error {
	select {
	case f.syncing <- struct{}{}:
	default:
	}
	<-f.release
	return f.logFile.Sync()
}

// TestNothingIsAcknowledgedBeforeDurable checks that neither the call, nor
// a repeat of it, nor a read of the balance it changed, returns before its
// record is durable.
func TestNothingIsAcknowledgedBeforeDurable(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	bf := &blockingFile{syncing: make(chan struct{}, 1), release: make(chan struct{})}
	b := openBank(t, t.TempDir(), withLogOpener(func(path string) (logFile, error) {
		f, err := openOSLogFile(path)
		bf.logFile = f
		return bf, err
	}))
	opened := make(chan error, 1)
	go func() {
		_, err := b.call(ctx, once("open"), request{op: opOpen, account: 1})
		opened <- err
	}()
	<-bf.syncing
	bf.release <- struct{}{}
	require.NoError(t, <-opened)

	type reply struct {
		res result
		err error
	}
	first, repeat, read := make(chan reply, 1), make(chan reply, 1), make(chan reply, 1)
	go func() {
		res, err := b.call(ctx, once("d1"), request{op: opDeposit, account: 1, amount: 5})
		first <- reply{res, err}
	}()
	<-bf.syncing // d1 is applied and its batch is being synced
	go func() {
		res, err := b.call(ctx, once("d1"), request{op: opDeposit, account: 1, amount: 5})
		repeat <- reply{res, err}
	}()
	go func() {
		bal, _, err := b.balance(ctx, 1)
		read <- reply{result{value: bal}, err}
	}()
	select {
	case r := <-first:
		t.Fatalf("the deposit returned %+v before its record was durable", r)
	case r := <-repeat:
		t.Fatalf("the repeat returned %+v before the record was durable", r)
	case r := <-read:
		t.Fatalf("Balance returned %+v before the deposit it sees was durable", r)
	case <-time.After(100 * time.Millisecond):
	}
	close(bf.release)
	for _, ch := range []chan reply{first, repeat, read} {
		r := <-ch
		require.NoError(t, r.err)
		assert.Equal(t, int64(5), r.res.value)
	}
	assert.Equal(t, int64(5), b.Accounts()[0].Balance)
}

// TestLockedErrorAlwaysNamesTheOwner has one goroutine take and release a
// bank directory's lock over and over while another tries to take it: every
// refusal must name this process, never PID 0 (a LOCK file caught emptied
// mid-rewrite).
func TestLockedErrorAlwaysNamesTheOwner(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	f, err := lockDir(dir)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	const rounds = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for range rounds {
			if ctx.Err() != nil {
				return
			}
			if f, err := lockDir(dir); err == nil {
				_ = f.Close()
			}
		}
	})
	refused, unnamed := 0, 0
	for range rounds {
		f, err := lockDir(dir)
		var lerr *LockedError
		switch {
		case errors.As(err, &lerr):
			refused++
			if lerr.PID != os.Getpid() {
				unnamed++
			}
		case err == nil:
			_ = f.Close()
		default:
			require.NoError(t, err)
		}
	}
	wg.Wait()
	require.Positive(t, refused, "the two goroutines never met: the test proves nothing")
	assert.Zero(t, unnamed, "of %d refusals, %d did not name this process", refused, unnamed)
}

// TestReadPIDOfARewrittenLockFile covers the moment a shorter PID has been
// written over a longer one and the file not yet cut to its length.
func TestReadPIDOfARewrittenLockFile(t *testing.T) {
	for content, want := range map[string]int{
		"678\n":      678,
		"678\n345\n": 678,
		"":           0,
		"garbage\n":  0,
		"-5\n":       0,
	} {
		path := filepath.Join(t.TempDir(), lockFileName)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		f, err := os.Open(path)
		require.NoError(t, err)
		assert.Equal(t, want, readPID(f), "LOCK holding %q", content)
		require.NoError(t, f.Close())
	}
}

// TestCallCanceledWhileAwaitingFsync cancels a call while its record waits
// for the fsync. The call returns CANCELED at once, but its change was
// already made: it is in memory, becomes durable with its batch, and is
// applied exactly once; a retry with the same call id returns the recorded
// result, before and after a restart. (FORMAT.md: "A call whose context
// ends while waiting".)
func TestCallCanceledWhileAwaitingFsync(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	dir := t.TempDir()
	bf := &blockingFile{syncing: make(chan struct{}, 1), release: make(chan struct{})}
	b := openBank(t, dir, withLogOpener(func(path string) (logFile, error) {
		f, err := openOSLogFile(path)
		bf.logFile = f
		return bf, err
	}))
	opened := make(chan error, 1)
	go func() {
		_, err := b.call(ctx, once("open"), request{op: opOpen, account: 1})
		opened <- err
	}()
	<-bf.syncing
	bf.release <- struct{}{}
	require.NoError(t, <-opened)

	deposit := request{op: opDeposit, account: 1, amount: 5}
	callCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := b.call(callCtx, once("d1"), deposit)
		done <- err
	}()
	<-bf.syncing // d1 is applied and its batch is being synced
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a canceled call kept waiting for the fsync")
	}
	code, msg := codeAndMessage(err) // the sync is still blocked
	assert.Equal(t, bankrpc.Canceled, code, msg)
	assert.Equal(t, []Account{{ID: 1, Balance: 5, Online: true}}, b.Accounts(), "the change was made; only the wait for it was abandoned")

	close(bf.release)
	assert.Equal(t, result{value: 5}, mustCall(t, ctx, b, "d1", deposit), "a retry returns the recorded result")
	assert.Equal(t, []Account{{ID: 1, Balance: 5, Online: true}}, b.Accounts(), "applied once")
	b.crash()
	b = openBank(t, dir)
	assert.Equal(t, []Account{{ID: 1, Balance: 5, Online: true}}, b.Accounts(), "the canceled call's change is durable")
	assert.Equal(t, result{value: 5}, mustCall(t, ctx, b, "d1", deposit), "a retry after a restart returns the recorded result")
	assert.Equal(t, int64(5), b.Accounts()[0].Balance)
}
