package bank

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// The snapshot, version 3 (FORMAT.md has the table), little-endian:
//
//	"BANKSNAP" | u32 version | u64 last lsn | u64 next log generation |
//	i64 time | u32 account count | accounts | u32 session count | sessions |
//	i64 legacy since | u32 legacy count | legacy entries | u32 CRC-32C
//
// account: i32 id | u8 online | i64 balance | i64 credit limit
// session: [12]byte key | u64 mark | i64 last | u16 reply count | replies
// reply:   u64 seq | i32 account | u8 op | u8 code | u8 flags | i64 value |
//
//	i64 aux | u64 request fingerprint
//
// legacy:  i32 account | entry
// entry:   [12]byte call key | u8 op | u8 code | u8 flags | i64 value | u64 request fingerprint
//
// Versions 1 and 2 (still read) have no time, sessions or credit limits:
//
//	"BANKSNAP" | u32 version | u64 last lsn | u64 next log generation |
//	u32 account count | accounts | u32 orphan count | orphans | u32 CRC-32C
//
// account: i32 id | i64 balance | u8 online | u16 entry count | entries
// orphan:  i32 account id | entry
//
// and version 1's entry holds the request's amount where version 2's holds
// the fingerprint.
const (
	snapshotMagic    = "BANKSNAP"
	snapshotVersion  = 3
	snapshotVersion2 = 2
	snapshotVersion1 = 1

	snapshotHeaderSize    = 8 + 4 + 8 + 8 + 8 + 4
	snapshotAccountSize   = 4 + 1 + 8 + 8
	snapshotSessionSize   = 12 + 8 + 8 + 2
	snapshotReplySize     = 8 + 4 + 1 + 1 + 1 + 8 + 8 + 8
	snapshotEntrySize     = 12 + 1 + 1 + 1 + 8 + 8
	snapshotLegacySize    = 4 + snapshotEntrySize
	snapshotAccountSizeV2 = 4 + 8 + 1 + 2
)

// snapshotMeta says where the log continues after a snapshot.
type snapshotMeta struct {
	// lastLSN is the sequence number of the last record the snapshot
	// includes; the log continues at lastLSN+1.
	lastLSN uint64
	// nextGen is the first log generation not included in the snapshot.
	nextGen uint64
	// time is the bank time when the snapshot was taken; 0 in versions 1
	// and 2.
	time int64
	// version is the snapshot's format version (set by decodeSnapshot).
	version uint32
}

// snapshotSize returns the size of the snapshot of s.
func snapshotSize(s *state) int {
	return snapshotHeaderSize + len(s.accounts)*snapshotAccountSize +
		4 + s.sessions.len()*snapshotSessionSize + s.sessions.replyCount*snapshotReplySize +
		8 + 4 + s.legacy.len()*snapshotLegacySize + 4
}

// encodeSnapshot returns the snapshot of s, in buf when it is large enough
// (every byte is written). The bank holds its mutex while this runs, so it
// writes into one buffer the caller allocated beforehand.
func encodeSnapshot(buf []byte, s *state, m snapshotMeta) []byte {
	size := snapshotSize(s)
	b := buf[:0]
	if cap(b) >= size {
		b = b[:size]
	} else {
		b = make([]byte, size)
	}
	copy(b, snapshotMagic)
	binary.LittleEndian.PutUint32(b[8:], snapshotVersion)
	binary.LittleEndian.PutUint64(b[12:], m.lastLSN)
	binary.LittleEndian.PutUint64(b[20:], m.nextGen)
	binary.LittleEndian.PutUint64(b[28:], uint64(m.time))
	binary.LittleEndian.PutUint32(b[36:], uint32(len(s.accounts)))
	off := snapshotHeaderSize
	for i := range s.accounts {
		a := &s.accounts[i]
		binary.LittleEndian.PutUint32(b[off:], uint32(a.id))
		b[off+4] = 0
		if a.online {
			b[off+4] = 1
		}
		binary.LittleEndian.PutUint64(b[off+5:], uint64(a.balance))
		binary.LittleEndian.PutUint64(b[off+13:], uint64(a.limit))
		off += snapshotAccountSize
	}
	binary.LittleEndian.PutUint32(b[off:], uint32(s.sessions.len()))
	off += 4
	s.sessions.each(func(ss *session, rs []reply) {
		copy(b[off:], ss.key[:])
		binary.LittleEndian.PutUint64(b[off+12:], ss.mark)
		binary.LittleEndian.PutUint64(b[off+20:], uint64(ss.last))
		binary.LittleEndian.PutUint16(b[off+28:], uint16(len(rs)))
		off += snapshotSessionSize
		for j := range rs {
			r := &rs[j]
			binary.LittleEndian.PutUint64(b[off:], r.seq)
			binary.LittleEndian.PutUint32(b[off+8:], uint32(r.account))
			b[off+12], b[off+13], b[off+14] = byte(r.op), r.code, r.flags
			binary.LittleEndian.PutUint64(b[off+15:], uint64(r.value))
			binary.LittleEndian.PutUint64(b[off+23:], uint64(r.aux))
			binary.LittleEndian.PutUint64(b[off+31:], r.fp)
			off += snapshotReplySize
		}
	})
	binary.LittleEndian.PutUint64(b[off:], uint64(s.legacy.since))
	binary.LittleEndian.PutUint32(b[off+8:], uint32(s.legacy.len()))
	off += 12
	keys := make([]legacyKey, 0, s.legacy.len())
	for k := range s.legacy.entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareLegacyKeys)
	for _, k := range keys {
		binary.LittleEndian.PutUint32(b[off:], uint32(k.account))
		e := s.legacy.entries[k]
		off = putEntry(b, off+4, &e)
	}
	binary.LittleEndian.PutUint32(b[off:], crc32.Checksum(b[:off], castagnoli))
	return b
}

func compareLegacyKeys(x, y legacyKey) int {
	if c := cmp.Compare(x.account, y.account); c != 0 {
		return c
	}
	return slices.Compare(x.key[:], y.key[:])
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
	buf     [snapshotReplySize]byte
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

func (d *snapshotReader) u32() uint32 { return binary.LittleEndian.Uint32(d.next(4)) }
func (d *snapshotReader) u64() uint64 { return binary.LittleEndian.Uint64(d.next(8)) }

// entry reads a legacy dedup entry recorded for a call on account.
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
	case !e.op.valid() || e.op == opSetCreditLimit:
		d.fail(at, fmt.Errorf("dedup entry with unknown operation %d", e.op))
	case !recordableCode(codeOf(e.code)):
		d.fail(at, fmt.Errorf("dedup entry with result code %s, which the bank never records", codeOf(e.code)))
	case e.flags&^flags != 0:
		d.fail(at, fmt.Errorf("dedup entry with unknown flags %#x", e.flags))
	case d.version == snapshotVersion1:
		// Version 1 kept the request's amount where later versions keep
		// the fingerprint, and no receiver.
		e.fp = fingerprint(request{op: e.op, account: account, amount: int64(e.fp)})
		if e.op == opTransfer {
			e.flags |= entryAnyReceiver
		}
	}
	return e
}

// decodeSnapshot reads a snapshot of size bytes from r. Corruption is
// reported as a *CorruptError (whose File the caller fills in), an unknown
// version as a *VersionError. Versions 1 and 2 are read into the current
// state: their call records go to the legacy table.
func decodeSnapshot(r io.Reader, size int64) (state, snapshotMeta, error) {
	d := &snapshotReader{r: bufio.NewReaderSize(r, int(min(size+1, 1<<20)))}
	s := newState()
	var m snapshotMeta

	if magic := d.next(8); d.err == nil && string(magic) != snapshotMagic {
		return s, m, &CorruptError{Offset: 0, Err: fmt.Errorf("not a bank snapshot (starts with %q)", magic)}
	}
	d.version = d.u32()
	if d.err == nil && d.version != snapshotVersion && d.version != snapshotVersion2 && d.version != snapshotVersion1 {
		return s, m, &VersionError{What: "snapshot", Got: d.version, Want: snapshotVersion}
	}
	m.version = d.version
	m.lastLSN = d.u64()
	m.nextGen = d.u64()
	if d.err == nil && m.nextGen == 0 {
		d.fail(20, errors.New("next log generation is 0"))
	}
	if d.version == snapshotVersion {
		m.time = int64(d.u64())
	}
	countAt := d.off
	n := d.u32()
	if d.err == nil && n > maxAccounts {
		d.fail(countAt, fmt.Errorf("%d accounts, more than a bank can hold (%d)", n, maxAccounts))
	}
	if d.err != nil {
		return s, m, d.err
	}
	if d.version == snapshotVersion {
		decodeAccounts(d, &s, n, size)
		decodeSessions(d, &s, m.time)
		decodeLegacy(d, &s)
	} else {
		decodeAccountsV2(d, &s, n, size)
	}
	if d.err != nil {
		return s, m, d.err
	}
	want := d.crc
	at := d.off
	got := d.u32()
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

// capacity returns n, or less when the rest of a file of size bytes cannot
// hold n items of itemSize: a count is trusted only as far as the file is
// long enough to hold it.
func capacity(n uint32, size, off int64, itemSize int) int {
	return int(min(int64(n), max(0, size-off)/int64(itemSize)))
}

func decodeAccounts(d *snapshotReader, s *state, n uint32, size int64) {
	s.accounts = make([]account, 0, capacity(n, size, d.off, snapshotAccountSize))
	for range n {
		at := d.off
		b := d.next(snapshotAccountSize)
		a := account{
			id:      int32(binary.LittleEndian.Uint32(b)),
			online:  b[4] == 1,
			balance: int64(binary.LittleEndian.Uint64(b[5:])),
			limit:   int64(binary.LittleEndian.Uint64(b[13:])),
		}
		switch {
		case d.err != nil:
		case a.id <= 0:
			d.fail(at, fmt.Errorf("account id %d is not positive", a.id))
		case len(s.accounts) > 0 && a.id <= s.accounts[len(s.accounts)-1].id:
			d.fail(at, fmt.Errorf("account %d follows account %d: ids are not increasing", a.id, s.accounts[len(s.accounts)-1].id))
		case b[4] > 1:
			d.fail(at, fmt.Errorf("account %d has online flag %d", a.id, b[4]))
		case a.limit < 0:
			d.fail(at, fmt.Errorf("account %d has a negative credit limit %d", a.id, a.limit))
		case a.balance < -a.limit:
			d.fail(at, fmt.Errorf("account %d has balance %d, below its credit limit %d", a.id, a.balance, a.limit))
		}
		if d.err != nil {
			return
		}
		s.accounts = append(s.accounts, a)
		if a.online {
			s.online++
		}
	}
}

func decodeSessions(d *snapshotReader, s *state, now int64) {
	n := d.u32()
	last := int64(-1 << 63)
	var rs []reply
	for range n {
		at := d.off
		b := d.next(snapshotSessionSize)
		key := sessionKey(b[:12])
		mark := binary.LittleEndian.Uint64(b[12:])
		t := int64(binary.LittleEndian.Uint64(b[20:]))
		count := binary.LittleEndian.Uint16(b[28:])
		switch {
		case d.err != nil:
		case s.sessions.has(key):
			d.fail(at, errors.New("a session appears twice"))
		case t < last:
			d.fail(at, fmt.Errorf("session last active at %d follows one last active at %d: not in order of activity", t, last))
		case t > now:
			d.fail(at, fmt.Errorf("session last active at %d, after the snapshot's time %d", t, now))
		case count > maxSessionReplies:
			d.fail(at, fmt.Errorf("session with %d replies, more than a session keeps (%d)", count, maxSessionReplies))
		}
		if d.err != nil {
			return
		}
		last = t
		rs = rs[:0]
		for range count {
			at := d.off
			b := d.next(snapshotReplySize)
			r := reply{
				seq:     binary.LittleEndian.Uint64(b),
				account: int32(binary.LittleEndian.Uint32(b[8:])),
				op:      op(b[12]),
				code:    b[13],
				flags:   b[14],
				value:   int64(binary.LittleEndian.Uint64(b[15:])),
				aux:     int64(binary.LittleEndian.Uint64(b[23:])),
				fp:      binary.LittleEndian.Uint64(b[31:]),
			}
			switch {
			case d.err != nil:
			case r.seq == 0 || r.seq < mark:
				d.fail(at, fmt.Errorf("reply of sequence number %d in a session whose mark is %d", r.seq, mark))
			case len(rs) > 0 && r.seq <= rs[len(rs)-1].seq:
				d.fail(at, fmt.Errorf("reply of sequence number %d follows %d: not increasing", r.seq, rs[len(rs)-1].seq))
			case r.account <= 0:
				d.fail(at, fmt.Errorf("reply for account id %d, which is not positive", r.account))
			case !r.op.valid():
				d.fail(at, fmt.Errorf("reply with unknown operation %d", r.op))
			case !recordableCode(codeOf(r.code)):
				d.fail(at, fmt.Errorf("reply with result code %s, which the bank never records", codeOf(r.code)))
			case r.flags&^(resultCreated|resultReceiver) != 0:
				d.fail(at, fmt.Errorf("reply with unknown flags %#x", r.flags))
			}
			if d.err != nil {
				return
			}
			rs = append(rs, r)
		}
		s.sessions.restore(key, mark, t, rs)
	}
}

func decodeLegacy(d *snapshotReader, s *state) {
	s.legacy.since = int64(d.u64())
	n := d.u32()
	var prev legacyKey
	for i := range n {
		at := d.off
		id := int32(binary.LittleEndian.Uint32(d.next(4)))
		e := d.entry(id)
		k := legacyKey{id, e.key}
		switch {
		case d.err != nil:
		case id <= 0:
			d.fail(at, fmt.Errorf("legacy entry for account id %d, which is not positive", id))
		case i > 0 && compareLegacyKeys(prev, k) >= 0:
			d.fail(at, errors.New("legacy entries are not in increasing order"))
		}
		if d.err != nil {
			return
		}
		prev = k
		s.legacy.add(id, e)
	}
}

// decodeAccountsV2 reads the accounts and the call records of a version 1
// or 2 snapshot.
func decodeAccountsV2(d *snapshotReader, s *state, n uint32, size int64) {
	s.accounts = make([]account, 0, capacity(n, size, d.off, snapshotAccountSizeV2))
	for range n {
		at := d.off
		b := d.next(snapshotAccountSizeV2)
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
			return
		}
		s.accounts = append(s.accounts, account{id: id, online: online == 1, balance: bal})
		if online == 1 {
			s.online++
		}
		for range entries {
			e := d.entry(id)
			if d.err != nil {
				return
			}
			s.legacy.add(id, e)
		}
	}
	countAt := d.off
	n = d.u32()
	if d.err == nil && n > 4096 {
		d.fail(countAt, fmt.Errorf("%d orphan entries, more than the bank kept (4096)", n))
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
			if _, dup := s.legacy.find(id, e.key); dup {
				d.fail(at, fmt.Errorf("duplicate orphan entry for account %d", id))
			}
		}
		if d.err != nil {
			return
		}
		s.legacy.add(id, e)
	}
}
