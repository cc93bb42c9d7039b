package bank

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

// sampleRecords returns a few valid encoded records, for seeds.
func sampleRecords() [][]byte {
	recs := []record{
		{lsn: 1, req: request{op: opOpen, account: 7}, res: result{flags: resultCreated}, callID: "0123456789abcdef-1"},
		{lsn: 2, req: request{op: opDeposit, account: 7, amount: 120}, res: result{value: 120}, callID: "0123456789abcdef-2"},
		{lsn: 3, req: request{op: opWithdraw, account: 7, amount: 500}, res: result{code: bankrpc.FailedPrecondition, value: 120}},
		{lsn: 4, req: request{op: opTransfer, account: 7, to: 42, amount: 5}, res: result{code: bankrpc.NotFound, flags: resultReceiver, value: 42}, callID: "x"},
		{lsn: 5, req: request{op: opClose, account: 7}, res: result{value: 120}, callID: "0123456789abcdef-5"},
	}
	var out [][]byte
	for i := range recs {
		out = append(out, appendRecord(nil, &recs[i]))
	}
	return out
}

// sampleSnapshot returns the snapshot of a small bank with dedup entries in
// rings of several classes and an orphan refusal.
func sampleSnapshot() []byte {
	s := newState(4)
	do := func(id string, req request) {
		res := s.apply(req)
		if id != "" {
			s.remember(keyOf(id), req, res)
		}
	}
	do("o1", request{op: opOpen, account: 1})
	do("o2", request{op: opOpen, account: 2})
	for i, id := range []string{"a", "b", "c", "d", "e"} {
		do(id, request{op: opDeposit, account: 1, amount: int64(i + 1)})
	}
	do("w", request{op: opWithdraw, account: 2, amount: 10})
	do("n", request{op: opDeposit, account: 9, amount: 10})
	do("", request{op: opClose, account: 2})
	return encodeSnapshot(&s, snapshotMeta{lastLSN: 11, nextGen: 3})
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(r)
		f.Add(r[:len(r)/2])
	}
	f.Add(bytes.Join(sampleRecords(), nil))
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	// Well formed, checksum and all, but impossible: the fuzzer rarely finds
	// these, as it would have to match the checksum.
	for _, bend := range []func(body []byte){
		func(body []byte) { body[1] = 9 },    // unknown operation
		func(body []byte) { body[3] = 0x80 }, // unknown result flags
		func(body []byte) { body[2] = 13 },   // a code the bank never records
		func(body []byte) { body[36]++ },     // call id length
	} {
		rec := sampleRecords()[1]
		bend(rec[recordHeaderSize:])
		binary.LittleEndian.PutUint32(rec[4:], recordChecksum(rec[:4], rec[recordHeaderSize:]))
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, n, err := decodeRecord(data)
		if err != nil {
			var lerr *recordLengthError
			var verr *VersionError
			var ferr *recordFieldError
			switch {
			case errors.Is(err, errRecordTruncated), errors.Is(err, errRecordChecksum), errors.As(err, &lerr), errors.As(err, &verr), errors.As(err, &ferr):
			default:
				t.Fatalf("decodeRecord returned an error of no documented kind, %T: %v", err, err)
			}
			return
		}
		if n > len(data) {
			t.Fatalf("decoded a record of %d bytes from %d bytes", n, len(data))
		}
		require.Equal(t, data[:n], appendRecord(nil, &rec), "a decoded record encodes to the same bytes")
		// Any damage to the record is detected.
		damaged := bytes.Clone(data[:n])
		damaged[len(data)%n] ^= 0x5a
		_, _, err = decodeRecord(damaged)
		require.Error(t, err, "a flipped byte went unnoticed")
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	snap := sampleSnapshot()
	f.Add(snap)
	f.Add(snap[:len(snap)/2])
	empty := newState(1)
	f.Add(encodeSnapshot(&empty, snapshotMeta{nextGen: 1}))
	f.Add([]byte("BANKSNAP"))
	v1, err := os.ReadFile(filepath.Join("testdata", "v1", snapshotFileName))
	require.NoError(f, err)
	f.Add(v1)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, m, err := decodeSnapshot(bytes.NewReader(data), int64(len(data)), MaxDedupRetention)
		if err != nil {
			var cerr *CorruptError
			var verr *VersionError
			require.True(t, errors.As(err, &cerr) || errors.As(err, &verr), "unexpected error type %T: %v", err, err)
			return
		}
		enc := encodeSnapshot(&s, m)
		if binary.LittleEndian.Uint32(data[8:]) == snapshotVersion {
			require.Equal(t, data, enc, "a decoded snapshot encodes to the same bytes")
		} else {
			// An older version is read into the current one, which keeps it.
			s2, m2, err := decodeSnapshot(bytes.NewReader(enc), int64(len(enc)), MaxDedupRetention)
			require.NoError(t, err)
			require.Equal(t, enc, encodeSnapshot(&s2, m2), "an upgraded snapshot encodes to the same bytes")
		}
		damaged := bytes.Clone(data)
		damaged[int(m.lastLSN%uint64(len(data)))] ^= 0x01
		_, _, err = decodeSnapshot(bytes.NewReader(damaged), int64(len(damaged)), MaxDedupRetention)
		require.Error(t, err, "a flipped byte went unnoticed")
	})
}

// replayBytes replays data as the newest log file of an empty bank and
// returns what replayLog found, the last sequence number and the file's path.
func replayBytes(t *testing.T, data []byte) (replayed, uint64, string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), logFileName(1))
	require.NoError(t, os.WriteFile(path, data, 0o644))
	s := newState(DefaultDedupRetention)
	var lsn uint64
	r, err := replayLog(path, &s, &lsn, true)
	return r, lsn, path, err
}

// FuzzReplayLog replays arbitrary bytes as the newest log file. Replay must
// not panic; it fails only with a *CorruptError naming the file or a
// *VersionError; and what it calls a torn tail must be one: all zeros, or
// shorter than one record and hiding no valid later record, so that no
// acknowledged record is ever truncated away.
func FuzzReplayLog(f *testing.F) {
	log := bytes.Join(sampleRecords(), nil)
	f.Add(log)
	f.Add(log[:len(log)-7])
	f.Add(append(bytes.Clone(log), make([]byte, 100)...))
	bent := bytes.Clone(log)
	bent[len(log)-len(sampleRecords()[4])-len(sampleRecords()[3])] ^= 0x80 // length of the second-to-last record
	f.Add(bent)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, lsn, path, err := replayBytes(t, data)
		if err != nil {
			var cerr *CorruptError
			var verr *VersionError
			switch {
			case errors.As(err, &cerr):
				require.Equal(t, path, cerr.File)
				require.Less(t, cerr.Offset, int64(len(data)))
			case errors.As(err, &verr):
			default:
				t.Fatalf("unexpected error %T: %v", err, err)
			}
			return
		}
		require.Equal(t, uint64(r.records), lsn, "every record replayed, in sequence")
		if !r.torn {
			return
		}
		require.Less(t, r.valid, int64(len(data)))
		tail := data[r.valid:]
		if len(tail) >= recordHeaderSize+maxRecordBody {
			require.Equal(t, make([]byte, len(tail)), tail, "a torn tail longer than a record is all zeros")
		}
		for i := 1; i < len(tail); i++ {
			if rec, _, err := decodeRecord(tail[i:]); err == nil {
				require.LessOrEqual(t, rec.lsn, lsn, "record %d at offset %d was truncated away as part of a torn tail", rec.lsn, r.valid+int64(i))
			}
		}
		again, lsn2, _, err := replayBytes(t, data[:r.valid])
		require.NoError(t, err)
		assert.Equal(t, replayed{records: r.records}, again, "what is left after the truncation replays cleanly")
		assert.Equal(t, lsn, lsn2)
	})
}

// FuzzReplayFlippedLog flips bits of one byte of a valid log. A flip before
// the last record must be reported as corruption at the damaged record; one
// in the last record is either corruption or a torn tail, truncated at the
// record's start (FORMAT.md: the two cannot be told apart).
func FuzzReplayFlippedLog(f *testing.F) {
	recs := sampleRecords()
	log := bytes.Join(recs, nil)
	var starts []int64
	for off := 0; len(starts) < len(recs); off += len(recs[len(starts)-1]) {
		starts = append(starts, int64(off))
	}
	lastStart := starts[len(starts)-1]
	f.Add(uint16(starts[3]), byte(0x80))
	f.Add(uint16(lastStart+20), byte(0x10))
	f.Add(uint16(3), byte(0xff))
	f.Fuzz(func(t *testing.T, pos uint16, mask byte) {
		if mask == 0 {
			return
		}
		p := int64(pos) % int64(len(log))
		data := bytes.Clone(log)
		data[p] ^= mask
		r, _, _, err := replayBytes(t, data)
		var cerr *CorruptError
		if p < lastStart {
			require.ErrorAs(t, err, &cerr, "byte %d flipped with %#02x", p, mask)
			require.Equal(t, recordStart(starts, p), cerr.Offset)
			return
		}
		if err != nil {
			require.ErrorAs(t, err, &cerr)
			require.Equal(t, lastStart, cerr.Offset)
			return
		}
		require.Equal(t, replayed{records: len(recs) - 1, torn: true, valid: lastStart}, r)
	})
}

func TestSampleSnapshotRoundTrip(t *testing.T) {
	data := sampleSnapshot()
	s, m, err := decodeSnapshot(bytes.NewReader(data), int64(len(data)), 4)
	require.NoError(t, err)
	assert.Equal(t, snapshotMeta{lastLSN: 11, nextGen: 3}, m)
	assert.Equal(t, 1, s.online)
	e, ok := s.recorded(1, keyOf("e"))
	require.True(t, ok)
	assert.Equal(t, result{value: 15}, e.result())
	_, ok = s.recorded(1, keyOf("a"))
	assert.False(t, ok, "retention 4 evicted the oldest")
	e, ok = s.recorded(9, keyOf("n"))
	require.True(t, ok, "the orphan refusal survives")
	assert.Equal(t, bankrpc.NotFound, e.result().code)
}
