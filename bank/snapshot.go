package bank

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The snapshot, version 2 (FORMAT.md has the table), little-endian:
//
//	"BANKSNAP" | u32 version | u64 last lsn | u64 next log generation |
//	u32 account count | accounts | u32 orphan count | orphans | u32 CRC-32C
//
// account: i32 id | i64 balance | u8 online | u16 entry count | entries
// orphan:  i32 account id | entry
// entry:   [12]byte call key | u8 op | u8 code | u8 flags | i64 value | u64 request fingerprint
//
// Version 1 differs only in the entry's last field: the request's amount.
const (
	snapshotMagic       = "BANKSNAP"
	snapshotVersion     = 2
	snapshotVersion1    = 1
	snapshotHeaderSize  = 8 + 4 + 8 + 8 + 4
	snapshotAccountSize = 4 + 8 + 1 + 2
	snapshotEntrySize   = 12 + 1 + 1 + 1 + 8 + 8
	snapshotOrphanSize  = 4 + snapshotEntrySize
)

// snapshotMeta says where the log continues after a snapshot.
type snapshotMeta struct {
	// lastLSN is the sequence number of the last record the snapshot
	// includes; the log continues at lastLSN+1.
	lastLSN uint64
	// nextGen is the first log generation not included in the snapshot.
	nextGen uint64
}

// encodeSnapshot returns the snapshot of s. The bank holds its mutex while
// this runs, so it writes into one preallocated buffer, without closures.
func encodeSnapshot(s *state, m snapshotMeta) []byte {
	size := snapshotHeaderSize + len(s.accounts)*snapshotAccountSize + 4 + len(s.orphans.order)*snapshotOrphanSize + 4
	for i := range s.accounts {
		size += s.dedup.count(&s.accounts[i]) * snapshotEntrySize
	}
	b := make([]byte, size)
	copy(b, snapshotMagic)
	binary.LittleEndian.PutUint32(b[8:], snapshotVersion)
	binary.LittleEndian.PutUint64(b[12:], m.lastLSN)
	binary.LittleEndian.PutUint64(b[20:], m.nextGen)
	binary.LittleEndian.PutUint32(b[28:], uint32(len(s.accounts)))
	off := snapshotHeaderSize
	for i := range s.accounts {
		a := &s.accounts[i]
		binary.LittleEndian.PutUint32(b[off:], uint32(a.id))
		binary.LittleEndian.PutUint64(b[off+4:], uint64(a.balance()))
		if a.online() {
			b[off+12] = 1
		}
		older, newer := s.dedup.ring(a)
		binary.LittleEndian.PutUint16(b[off+13:], uint16(len(older)+len(newer)))
		off += snapshotAccountSize
		for j := range older {
			off = putEntry(b, off, &older[j])
		}
		for j := range newer {
			off = putEntry(b, off, &newer[j])
		}
	}
	binary.LittleEndian.PutUint32(b[off:], uint32(len(s.orphans.order)))
	off += 4
	for _, k := range s.orphans.order {
		binary.LittleEndian.PutUint32(b[off:], uint32(k.account))
		e := s.orphans.byKey[k]
		off = putEntry(b, off+4, &e)
	}
	binary.LittleEndian.PutUint32(b[off:], crc32.Checksum(b[:off], castagnoli))
	return b
}

// putEntry writes e at b[off:] and returns the offset after it.
func putEntry(b []byte, off int, e *dedupEntry) int {
	copy(b[off:], e.key[:])
	b[off+12], b[off+13], b[off+14] = byte(e.op), e.code, e.flags
	binary.LittleEndian.PutUint64(b[off+15:], uint64(e.value))
	binary.LittleEndian.PutUint64(b[off+23:], e.fp)
	return off + snapshotEntrySize
}

// snapshotReader reads a snapshot field by field, keeping the offset and the
// running checksum. After the first error it reads nothing more.
type snapshotReader struct {
	r       *bufio.Reader
	version uint32
	off     int64
	crc     uint32
	buf     [snapshotEntrySize]byte
	err     error
}

func (d *snapshotReader) next(n int) []byte {
	b := d.buf[:n]
	if d.err != nil {
		clear(b)
		return b
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		clear(b)
		d.fail(d.off, errors.New("the snapshot is cut short (truncated file?)"))
		return b
	}
	d.crc = crc32.Update(d.crc, castagnoli, b)
	d.off += int64(n)
	return b
}

func (d *snapshotReader) fail(off int64, err error) {
	if d.err == nil {
		d.err = &CorruptError{Offset: off, Err: err}
	}
}

// entry reads a dedup entry recorded for a call on account.
func (d *snapshotReader) entry(account int32) dedupEntry {
	at := d.off
	b := d.next(snapshotEntrySize)
	e := dedupEntry{
		key:   callKey(b[:12]),
		op:    op(b[12]),
		code:  b[13],
		flags: b[14],
		value: int64(binary.LittleEndian.Uint64(b[15:])),
		fp:    binary.LittleEndian.Uint64(b[23:]),
	}
	flags := uint8(resultCreated | resultReceiver)
	if d.version != snapshotVersion1 && e.op == opTransfer {
		flags |= entryAnyReceiver
	}
	switch {
	case d.err != nil:
	case !e.op.valid():
		d.fail(at, fmt.Errorf("dedup entry with unknown operation %d", e.op))
	case !recordableCode(codeOf(e.code)):
		d.fail(at, fmt.Errorf("dedup entry with result code %s, which the bank never records", codeOf(e.code)))
	case e.flags&^flags != 0:
		d.fail(at, fmt.Errorf("dedup entry with unknown flags %#x", e.flags))
	case d.version == snapshotVersion1:
		// Version 1 kept the request's amount where version 2 keeps the
		// fingerprint, and no receiver.
		e.fp = fingerprint(request{op: e.op, account: account, amount: int64(e.fp)})
		if e.op == opTransfer {
			e.flags |= entryAnyReceiver
		}
	}
	return e
}

// decodeSnapshot reads a snapshot of size bytes from r. Corruption is
// reported as a *CorruptError (whose File the caller fills in), an unknown
// version as a *VersionError. Rings longer than retention keep their newest
// entries.
func decodeSnapshot(r io.Reader, size int64, retention int) (state, snapshotMeta, error) {
	d := &snapshotReader{r: bufio.NewReaderSize(r, int(min(size+1, 1<<20)))}
	s := newState(retention)
	var m snapshotMeta

	if magic := d.next(8); d.err == nil && string(magic) != snapshotMagic {
		return s, m, &CorruptError{Offset: 0, Err: fmt.Errorf("not a bank snapshot (starts with %q)", magic)}
	}
	d.version = binary.LittleEndian.Uint32(d.next(4))
	if d.err == nil && d.version != snapshotVersion && d.version != snapshotVersion1 {
		return s, m, &VersionError{What: "snapshot", Got: d.version, Want: snapshotVersion}
	}
	m.lastLSN = binary.LittleEndian.Uint64(d.next(8))
	m.nextGen = binary.LittleEndian.Uint64(d.next(8))
	if d.err == nil && m.nextGen == 0 {
		d.fail(20, errors.New("next log generation is 0"))
	}
	countAt := d.off
	n := binary.LittleEndian.Uint32(d.next(4))
	if d.err == nil && n > maxAccounts {
		d.fail(countAt, fmt.Errorf("%d accounts, more than a bank can hold (%d)", n, maxAccounts))
	}
	if d.err != nil {
		return s, m, d.err
	}
	// Trust the count only as far as the file is long enough to hold it.
	s.accounts = make([]account, 0, min(int64(n), max(0, size-snapshotHeaderSize)/snapshotAccountSize))
	for range n {
		at := d.off
		b := d.next(snapshotAccountSize)
		id := int32(binary.LittleEndian.Uint32(b))
		bal := int64(binary.LittleEndian.Uint64(b[4:]))
		online := b[12]
		entries := binary.LittleEndian.Uint16(b[13:])
		switch {
		case d.err != nil:
		case id <= 0:
			d.fail(at, fmt.Errorf("account id %d is not positive", id))
		case len(s.accounts) > 0 && id <= s.accounts[len(s.accounts)-1].id:
			d.fail(at, fmt.Errorf("account %d follows account %d: ids are not increasing", id, s.accounts[len(s.accounts)-1].id))
		case bal < 0:
			d.fail(at, fmt.Errorf("account %d has a negative balance %d", id, bal))
		case online > 1:
			d.fail(at, fmt.Errorf("account %d has online flag %d", id, online))
		}
		if d.err != nil {
			return s, m, d.err
		}
		s.accounts = append(s.accounts, account{id: id})
		a := &s.accounts[len(s.accounts)-1]
		a.setBalance(bal)
		if online == 1 {
			a.setOnline(true)
			s.online++
		}
		for range entries {
			e := d.entry(id)
			if d.err != nil {
				return s, m, d.err
			}
			s.dedup.add(a, e)
		}
	}
	countAt = d.off
	n = binary.LittleEndian.Uint32(d.next(4))
	if d.err == nil && n > maxOrphans {
		d.fail(countAt, fmt.Errorf("%d orphan entries, more than the bank keeps (%d)", n, maxOrphans))
	}
	for range n {
		at := d.off
		id := int32(binary.LittleEndian.Uint32(d.next(4)))
		e := d.entry(id)
		switch {
		case d.err != nil:
		case id <= 0:
			d.fail(at, fmt.Errorf("orphan entry for account id %d, which is not positive", id))
		default:
			if _, dup := s.orphans.find(id, e.key); dup {
				d.fail(at, fmt.Errorf("duplicate orphan entry for account %d", id))
			}
		}
		if d.err != nil {
			return s, m, d.err
		}
		s.orphans.add(id, e)
	}
	want := d.crc
	at := d.off
	got := binary.LittleEndian.Uint32(d.next(4))
	if d.err != nil {
		return s, m, d.err
	}
	if got != want {
		return s, m, &CorruptError{Offset: at, Err: fmt.Errorf("checksum mismatch (stored %#08x, computed %#08x)", got, want)}
	}
	switch _, err := d.r.ReadByte(); {
	case err == nil:
		return s, m, &CorruptError{Offset: d.off, Err: errors.New("unexpected data after the checksum")}
	case err != io.EOF:
		return s, m, err
	}
	return s, m, nil
}
