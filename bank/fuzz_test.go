package bank

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport"
)

// sampleRecords returns a few valid encoded records, for seeds.
func sampleRecords() [][]byte {
	recs := []record{
		{lsn: 1, req: request{op: opOpen, account: 7}, res: result{flags: resultCreated}, callID: "0123456789abcdef-1"},
		{lsn: 2, req: request{op: opDeposit, account: 7, amount: 120}, res: result{value: 120}, callID: "0123456789abcdef-2"},
		{lsn: 3, req: request{op: opWithdraw, account: 7, amount: 500}, res: result{code: transport.FailedPrecondition, value: 120}},
		{lsn: 4, req: request{op: opTransfer, account: 7, to: 42, amount: 5}, res: result{code: transport.NotFound, flags: resultReceiver, value: 42}, callID: "x"},
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
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, n, err := decodeRecord(data)
		if err != nil {
			var lerr *recordLengthError
			var verr *VersionError
			switch {
			case errors.Is(err, errRecordTruncated), errors.Is(err, errRecordChecksum), errors.As(err, &lerr), errors.As(err, &verr):
			default:
				require.NotEmpty(t, err.Error())
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
	f.Fuzz(func(t *testing.T, data []byte) {
		s, m, err := decodeSnapshot(bytes.NewReader(data), int64(len(data)), MaxDedupRetention)
		if err != nil {
			var cerr *CorruptError
			var verr *VersionError
			require.True(t, errors.As(err, &cerr) || errors.As(err, &verr), "unexpected error type %T: %v", err, err)
			return
		}
		require.Equal(t, data, encodeSnapshot(&s, m), "a decoded snapshot encodes to the same bytes")
		damaged := bytes.Clone(data)
		damaged[int(m.lastLSN%uint64(len(data)))] ^= 0x01
		_, _, err = decodeSnapshot(bytes.NewReader(damaged), int64(len(damaged)), MaxDedupRetention)
		require.Error(t, err, "a flipped byte went unnoticed")
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
	assert.Equal(t, transport.NotFound, e.result().code)
}
