package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Record is one record of a bank's log, read as bank/FORMAT.md (log record
// version 2) specifies it: one applied mutating call, with its result.
type Record struct {
	LSN      uint64
	Op       byte // 1 Open, 2 Deposit, 3 Withdraw, 4 Transfer, 5 Close, 6 SetCreditLimit
	Code     byte // the result's canonical code; 0 applied
	Account  int32
	To       int32
	Amount   int64
	CallID   string
	Observed time.Time // when the ledger first read it
}

// Bank log operations (bank/FORMAT.md).
const (
	opOpen     = 1
	opDeposit  = 2
	opWithdraw = 3
	opTransfer = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Ledger follows the log files of a bank's data directory as the bank
// appends to them, independently of the bank's code: it is the ground truth
// of what was applied, and when the driver first saw it durable. Records are
// appended with write(2) and fsynced before any caller hears of them, so a
// record the ledger reads complete with a good checksum is (or is about to
// be) acknowledged. A torn record at the end of the newest file is left for
// the next read: the bank cuts it off at its next start, or completes it.
type Ledger struct {
	dir string

	mu      sync.Mutex
	offsets map[string]int64 // file name -> bytes consumed
	lastLSN uint64
	records []Record
	byID    map[string][]int // call id -> indexes in records
	err     error            // the first inconsistency
}

// NewLedger follows the bank in dir.
func NewLedger(dir string) *Ledger {
	return &Ledger{dir: dir, offsets: map[string]int64{}, byID: map[string][]int{}}
}

// Poll reads what was appended since the last Poll.
func (l *Ledger) Poll() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	names, err := filepath.Glob(filepath.Join(l.dir, "log.*"))
	if err != nil {
		return err
	}
	var logs []string
	for _, n := range names {
		if b := filepath.Base(n); len(b) == len("log.00000001") {
			logs = append(logs, b)
		}
	}
	slices.Sort(logs)
	for name := range l.offsets {
		if !slices.Contains(logs, name) {
			l.err = fmt.Errorf("ledger: %s disappeared (a snapshot compacted the log): the chaos driver cannot follow a bank that snapshots", name)
			return l.err
		}
	}
	now := time.Now()
	for _, name := range logs {
		if err := l.readFile(name, now); err != nil {
			l.err = err
			return err
		}
	}
	return nil
}

func (l *Ledger) readFile(name string, now time.Time) error {
	f, err := os.Open(filepath.Join(l.dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	off := l.offsets[name]
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	pos := 0
	for len(data)-pos >= 8 {
		n := int(binary.LittleEndian.Uint32(data[pos:]))
		if n < 61 || n > 316 {
			if allZero(data[pos:]) {
				break // preallocated or torn: read again later
			}
			return fmt.Errorf("ledger: %s at offset %d: record length %d is impossible", name, off+int64(pos), n)
		}
		if len(data)-pos < 8+n {
			break // not all written yet
		}
		sum := crc32.Update(crc32.Checksum(data[pos:pos+4], castagnoli), castagnoli, data[pos+8:pos+8+n])
		if sum != binary.LittleEndian.Uint32(data[pos+4:]) {
			// The last bytes of a write in progress, or a torn tail the bank
			// cuts at its next start: look again later.
			break
		}
		body := data[pos+8 : pos+8+n]
		if body[0] != 2 {
			return fmt.Errorf("ledger: %s at offset %d: record version %d (the ledger reads version 2)", name, off+int64(pos), body[0])
		}
		k := int(body[60])
		if 61+k != n {
			return fmt.Errorf("ledger: %s at offset %d: call id length %d does not fit the record length %d", name, off+int64(pos), k, n)
		}
		r := Record{
			Op:       body[1],
			Code:     body[2],
			LSN:      binary.LittleEndian.Uint64(body[4:]),
			Account:  int32(binary.LittleEndian.Uint32(body[12:])),
			To:       int32(binary.LittleEndian.Uint32(body[16:])),
			Amount:   int64(binary.LittleEndian.Uint64(body[20:])),
			CallID:   string(body[61 : 61+k]),
			Observed: now,
		}
		if r.LSN != l.lastLSN+1 {
			return fmt.Errorf("ledger: %s at offset %d: sequence number %d follows %d", name, off+int64(pos), r.LSN, l.lastLSN)
		}
		l.lastLSN = r.LSN
		l.byID[r.CallID] = append(l.byID[r.CallID], len(l.records))
		l.records = append(l.records, r)
		pos += 8 + n
	}
	l.offsets[name] = off + int64(pos)
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Of returns the records of a call id.
func (l *Ledger) Of(id string) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := l.byID[id]
	out := make([]Record, len(idx))
	for i, j := range idx {
		out[i] = l.records[j]
	}
	return out
}

// Balances replays the records: the balance of every account, as the log
// says.
func (l *Ledger) Balances() map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := map[int32]int64{}
	for _, r := range l.records {
		if r.Code != 0 {
			continue
		}
		switch r.Op {
		case opOpen:
			if _, ok := b[r.Account]; !ok {
				b[r.Account] = 0
			}
		case opDeposit:
			b[r.Account] += r.Amount
		case opWithdraw:
			b[r.Account] -= r.Amount
		case opTransfer:
			b[r.Account] -= r.Amount
			b[r.To] += r.Amount
		}
	}
	return b
}

// Len is the number of records read.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// Follow polls every d until stop is closed, then once more.
func (l *Ledger) Follow(d time.Duration, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := l.Poll(); err != nil && !strings.Contains(err.Error(), "no such file") {
					done <- err
					return
				}
			case <-stop:
				done <- l.Poll()
				return
			}
		}
	}()
	return done
}
