package bank

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The log is a sequence of files, one per generation: log.00000001, ...
// A snapshot starts a new generation; older ones are then deleted.
const (
	snapshotFileName = "snapshot"
	snapshotTempName = "snapshot.tmp"
	logFilePrefix    = "log."
)

func logFileName(gen uint64) string { return fmt.Sprintf("%s%08d", logFilePrefix, gen) }

// logGenerations returns the generations of the log files in dir, ascending.
func logGenerations(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bank: list %s: %w", dir, err)
	}
	var gens []uint64
	for _, de := range des {
		digits, ok := strings.CutPrefix(de.Name(), logFilePrefix)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		if g, err := strconv.ParseUint(digits, 10, 64); err == nil && g > 0 {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

// logFile is the part of a file the log writer uses. Open takes the files it
// writes from options.openLog, which tests replace with files that fail.
type logFile interface {
	Write(p []byte) (int, error)
	// Sync makes everything written so far durable.
	Sync() error
	Close() error
}

// osLogFile is a log file on disk. Sync is fdatasync(2): the log only ever
// grows, and fdatasync flushes the size with the data, without the inode
// times fsync would also write.
type osLogFile struct {
	*os.File
	fd int
}

func (f osLogFile) Sync() error {
	for {
		err := syscall.Fdatasync(f.fd)
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func openOSLogFile(path string) (logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return osLogFile{File: f, fd: int(f.Fd())}, nil
}

// syncDir makes the creation, renaming or removal of files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncOpener is a logFile that can open further handles on its file for
// Sync alone. Each handle's Sync makes durable everything written to the
// file through any handle before it was called; with a handle each,
// several batches can be fsynced at once, and a write-back error is
// reported to every handle that syncs after it, not only to the first one
// to ask (Linux reports such an error once per open file).
type syncOpener interface {
	openSyncer() (logFile, error)
}

func (f osLogFile) openSyncer() (logFile, error) { return openOSLogFile(f.Name()) }

// logSyncers is how many batches the log fsyncs at once, by default. Overlapping
// fsyncs let the disk make two batches durable in little more than the time
// of one: on this project's shared virtual disk, two appends+fdatasyncs in
// flight on one file complete two to three times as many per second as one
// at a time. More in flight split the records into batches too small.
const logSyncers = 2

// logWriter appends batches to the current log file, in the order of their
// records, and lends out handles for their fsyncs. It is safe for
// concurrent use: writes (and switches of file) are serialised by mu, and
// up to syncers fsyncs run at once, each with a handle of its own.
type logWriter struct {
	dir     string
	open    func(path string) (logFile, error)
	syncDir func(dir string) error

	syncers int // fsyncs at once: logSyncers, unless a test says otherwise

	mu   sync.Mutex // serialises writes and close; guards the fields below
	f    logFile
	gen  uint64
	sync chan logFile // the current file's handles for Sync, syncers of them
}

// writeLocked appends the batch's segments, switching to a new file when a
// segment belongs to a new generation, and returns the handle whose sync
// makes them durable. A switch makes the previous file durable first, so
// that sync covers the whole batch. Batches are written in the order of
// the calls to writeLocked, which hold mu.
func (w *logWriter) writeLocked(bt *batch) (syncHandle, error) {
	for i := range bt.segs {
		s := &bt.segs[i]
		if w.f == nil || s.gen != w.gen {
			if err := w.rotate(s.gen); err != nil {
				return syncHandle{}, err
			}
		}
		if _, err := w.f.Write(s.buf); err != nil {
			return syncHandle{}, withPath("write", w.path(), err)
		}
	}
	// One of the syncers handles: each goroutine that writes holds at most
	// one, and gives it back after its sync, without taking mu.
	return syncHandle{f: <-w.sync, pool: w.sync, path: w.path()}, nil
}

// syncHandle is a handle on a log file lent out for one fsync.
type syncHandle struct {
	f    logFile
	pool chan logFile // where it goes back
	path string
}

// sync makes everything written to the file before the call durable and
// gives the handle back.
func (h syncHandle) sync() error {
	defer func() { h.pool <- h.f }()
	if err := h.f.Sync(); err != nil {
		return withPath("sync", h.path, err)
	}
	return nil
}

// withPath names path in err, unless err already does (an *fs.PathError,
// as os.File's methods return: "write /data/log.00000001: no space left on
// device", with the path once).
func withPath(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// rotate makes the current file durable and closes it, once no fsync on it
// is in flight, then opens the file of generation gen with its handles for
// Sync and makes its directory entry durable. It holds mu.
func (w *logWriter) rotate(gen uint64) error {
	if err := w.closeLocked(true); err != nil {
		return err
	}
	w.gen = gen
	f, err := w.open(w.path())
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	handles := make(chan logFile, w.syncers)
	for range w.syncers {
		h := f
		if so, ok := f.(syncOpener); ok {
			if h, err = so.openSyncer(); err != nil {
				close(handles)
				for h := range handles {
					_ = h.Close()
				}
				_ = f.Close()
				return fmt.Errorf("open log: %w", err)
			}
		}
		handles <- h
	}
	w.f, w.sync = f, handles
	if err := w.syncDir(w.dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", w.dir, err)
	}
	return nil
}

// closeLocked waits for the fsyncs in flight on the current file, makes it
// durable when sync is true, and closes it with its handles. It holds mu.
func (w *logWriter) closeLocked(sync bool) error {
	if w.f == nil {
		return nil
	}
	var errs []error
	for range w.syncers {
		if h := <-w.sync; h != w.f {
			if err := h.Close(); err != nil {
				errs = append(errs, withPath("close", w.path(), err))
			}
		}
	}
	if sync {
		if err := w.f.Sync(); err != nil {
			errs = append(errs, withPath("sync", w.path(), err))
		}
	}
	if err := w.f.Close(); err != nil {
		errs = append(errs, withPath("close", w.path(), err))
	}
	w.f, w.sync = nil, nil
	return errors.Join(errs...)
}

func (w *logWriter) path() string { return filepath.Join(w.dir, logFileName(w.gen)) }

// close closes the current file, if any, once no fsync on it is in flight.
func (w *logWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closeLocked(false)
}

// tailKind is what the bytes after the last valid record of a log file are.
type tailKind uint8

const (
	// tailNone: the file ends with a valid record (or is empty).
	tailNone tailKind = iota
	// tailTorn: the remains of an append cut short by a crash.
	tailTorn
	// tailDamaged: bytes that are not a record and that no valid record
	// follows, but that no interrupted append explains either.
	tailDamaged
)

// replayed is what replaying one log file found.
type replayed struct {
	records int
	// tail says what follows the last valid record; valid is then the
	// size of the file without it, and tailErr what is wrong with it.
	tail    tailKind
	valid   int64
	tailErr error
}

// replayer applies log records to a state, checking them.
type replayer struct {
	s   *state
	lsn uint64 // sequence number of the last record applied
	// horizon is the session retention horizon.
	horizon time.Duration
	// v1Time is the bank time given to version 1 records, which carry
	// none.
	v1Time int64
	// maxTime is the latest time a record carried.
	maxTime int64
}

// apply applies rec, or says why it does not fit the log so far.
func (p *replayer) apply(rec *record) error {
	if rec.lsn != p.lsn+1 {
		return fmt.Errorf("record with sequence number %d where %d was expected: records are missing or out of place", rec.lsn, p.lsn+1)
	}
	if res := p.s.apply(rec.req); res != rec.res {
		return fmt.Errorf("replaying %s %+v gives result %+v, but the log recorded %+v", rec.req.op, rec.req, res, rec.res)
	}
	t := rec.time
	if rec.v1 {
		t = p.v1Time
	}
	p.s.remember(callRefOf(rec.callID, rec.fu), rec.req, rec.res, t, p.horizon)
	p.maxTime = max(p.maxTime, t)
	p.lsn = rec.lsn
	return nil
}

// replayLog applies the records of the log file at path through p. Bad
// bytes after the last valid record are reported in the result when last
// is true, that is, for the newest log file (the caller truncates them or
// refuses to start); any other damage is a *CorruptError naming the file and
// offset.
func replayLog(path string, p *replayer, last bool) (replayed, error) {
	var r replayed
	f, err := os.Open(path)
	if err != nil {
		return r, fmt.Errorf("bank: open log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, fmt.Errorf("bank: open log: %w", err)
	}
	size := fi.Size()
	br := bufio.NewReaderSize(f, 64<<10)
	var off int64
	for {
		b, err := br.Peek(recordHeaderSize)
		if len(b) == 0 && err == io.EOF {
			return r, nil
		}
		if err != nil && err != io.EOF {
			return r, fmt.Errorf("bank: read %s: %w", path, err)
		}
		need := recordHeaderSize
		if len(b) == recordHeaderSize {
			if n := int(binary.LittleEndian.Uint32(b)); n <= maxRecordBody {
				need += n
			}
		}
		if b, err = br.Peek(need); err != nil && err != io.EOF {
			return r, fmt.Errorf("bank: read %s: %w", path, err)
		}
		rec, n, derr := decodeRecord(b)
		if derr != nil {
			var verr *VersionError
			var ferr *recordFieldError
			switch {
			case errors.As(derr, &verr):
				return r, fmt.Errorf("bank: %s at offset %d: %w", path, off, derr)
			case errors.As(derr, &ferr):
				return r, &CorruptError{File: path, Offset: off, Err: derr}
			}
			kind, err := classifyTail(f, off, need, size, p.lsn, derr)
			var later *laterRecordError
			switch {
			case errors.As(err, &later):
				return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("%w, but %w", derr, later)}
			case err != nil:
				return r, fmt.Errorf("bank: read %s: %w", path, err)
			case !last:
				return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("%w, in a log file that a newer one follows", derr)}
			}
			r.tail, r.valid, r.tailErr = kind, off, derr
			return r, nil
		}
		if err := p.apply(&rec); err != nil {
			return r, &CorruptError{File: path, Offset: off, Err: err}
		}
		r.records++
		off += int64(n)
		if _, err := br.Discard(n); err != nil {
			return r, fmt.Errorf("bank: read %s: %w", path, err)
		}
	}
}

// classifyTail says what the bytes from the bad record at off to the end of
// the file are. need is the record's size as its length field says; lsn is
// the sequence number of the last good record.
//
// If a valid record with a later sequence number starts anywhere after off,
// acknowledged data follows the damage: classifyTail returns a
// *laterRecordError. Otherwise the bytes are a torn tail, the remains of an
// interrupted append, when the file ends inside the record (its length
// field reaches the end of the file or past it), when it is the last record
// and fails its checksum, or when everything from off on is zero (a
// filesystem that extended the file before writing the data); anything else
// is a damaged tail.
func classifyTail(f *os.File, off int64, need int, size int64, lsn uint64, derr error) (tailKind, error) {
	if err := findLaterRecord(f, off, size, lsn); err != nil {
		return tailNone, err
	}
	if errors.Is(derr, errRecordTruncated) || errors.Is(derr, errRecordChecksum) && off+int64(need) == size {
		return tailTorn, nil
	}
	zeros, err := allZero(io.NewSectionReader(f, off, size-off))
	if err != nil {
		return tailNone, err
	}
	if zeros {
		return tailTorn, nil
	}
	return tailDamaged, nil
}

func allZero(r io.Reader) (bool, error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// laterRecordError reports a valid record found after a bad one.
type laterRecordError struct {
	offset int64
	lsn    uint64
}

func (e *laterRecordError) Error() string {
	return fmt.Sprintf("a valid record (sequence number %d) follows at offset %d: the damage is not a torn write", e.lsn, e.offset)
}

// findLaterRecord returns a *laterRecordError when a record with a sequence
// number above lsn decodes at some offset of f after off, up to size. It
// reads the file a window at a time.
func findLaterRecord(f io.ReaderAt, off, size int64, lsn uint64) error {
	const window = 256 << 10
	buf := make([]byte, window+maxRecordSize)
	for start := off + 1; start < size; start += window {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-start)], start)
		if err != nil && err != io.EOF {
			return err
		}
		for i := 0; i < min(n, window) && i+recordHeaderSize+recordFixedBodyV1 <= n; i++ {
			if rec, _, err := decodeRecord(buf[i:n]); err == nil && rec.lsn > lsn {
				return &laterRecordError{offset: start + int64(i), lsn: rec.lsn}
			}
		}
	}
	return nil
}

// cutFile cuts the log file at path down to size bytes, first saving the
// bytes it cuts to path.damaged-<time> (UTC), durably. It returns the name
// of that copy and the number of bytes cut.
func cutFile(path string, size int64, now time.Time, syncDir func(string) error) (string, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	if int64(len(data)) <= size {
		return "", 0, fmt.Errorf("%s is %d bytes, not more than %d", path, len(data), size)
	}
	base := path + ".damaged-" + now.UTC().Format("20060102T150405.000000000Z")
	copyPath := base
	var f *os.File
	for i := 1; ; i++ {
		f, err = os.OpenFile(copyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		copyPath = fmt.Sprintf("%s.%d", base, i)
	}
	if err != nil {
		return "", 0, err
	}
	_, err = f.Write(data[size:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return "", 0, fmt.Errorf("keep a copy of the bytes to cut: %w", err)
	}
	if err := truncateFile(path, size); err != nil {
		return "", 0, err
	}
	return copyPath, int64(len(data)) - size, nil
}
