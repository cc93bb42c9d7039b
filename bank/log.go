package bank

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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

// logWriter appends batches to the current log file. Only the Bank's writer
// goroutine uses it.
type logWriter struct {
	dir     string
	open    func(path string) (logFile, error)
	syncDir func(dir string) error
	f       logFile
	gen     uint64
}

// write appends the batch's segments, switching to a new file when a
// segment belongs to a new generation, and makes them durable.
func (w *logWriter) write(bt *batch) error {
	for i := range bt.segs {
		s := &bt.segs[i]
		if w.f == nil || s.gen != w.gen {
			if err := w.rotate(s.gen); err != nil {
				return err
			}
		}
		if _, err := w.f.Write(s.buf); err != nil {
			return fmt.Errorf("write %s: %w", w.path(), err)
		}
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", w.path(), err)
	}
	return nil
}

// rotate makes the current file durable and closes it, then opens the file
// of generation gen and makes its directory entry durable.
func (w *logWriter) rotate(gen uint64) error {
	if w.f != nil {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", w.path(), err)
		}
		if err := w.f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", w.path(), err)
		}
		w.f = nil
	}
	w.gen = gen
	f, err := w.open(w.path())
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	w.f = f
	if err := w.syncDir(w.dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", w.dir, err)
	}
	return nil
}

func (w *logWriter) path() string { return filepath.Join(w.dir, logFileName(w.gen)) }

func (w *logWriter) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// replayed is what replaying one log file found.
type replayed struct {
	records int
	// torn is true when the file ends with a record cut short by a crash;
	// valid is then the size of the file without it.
	torn  bool
	valid int64
}

// replayLog applies the records of the log file at path to s. Their
// sequence numbers must continue from *lsn, which it advances. A torn last
// record is reported in the result (the caller truncates it) when last is
// true, that is, for the newest log file; any other damage is a
// *CorruptError naming the file and offset.
func replayLog(path string, s *state, lsn *uint64, last bool) (replayed, error) {
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
			if errors.As(derr, &verr) {
				return r, fmt.Errorf("bank: %s at offset %d: %w", path, off, derr)
			}
			torn, err := isTorn(f, off, need, size, *lsn, derr)
			var later *laterRecordError
			switch {
			case errors.As(err, &later):
				return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("%w, but %w", derr, later)}
			case err != nil:
				return r, fmt.Errorf("bank: read %s: %w", path, err)
			case torn && last:
				r.torn, r.valid = true, off
				return r, nil
			case torn:
				return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("%w, in a log file that a newer one follows", derr)}
			}
			return r, &CorruptError{File: path, Offset: off, Err: derr}
		}
		if rec.lsn != *lsn+1 {
			return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("record with sequence number %d where %d was expected: records are missing or out of place", rec.lsn, *lsn+1)}
		}
		if res := s.apply(rec.req); res != rec.res {
			return r, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("replaying %s %+v gives result %+v, but the log recorded %+v", rec.req.op, rec.req, res, rec.res)}
		}
		if rec.callID != "" {
			s.remember(keyOf(rec.callID), rec.req, rec.res)
		}
		*lsn = rec.lsn
		r.records++
		off += int64(n)
		if _, err := br.Discard(n); err != nil {
			return r, fmt.Errorf("bank: read %s: %w", path, err)
		}
	}
}

// isTorn reports whether the bad record at off is the remains of a write cut
// short by a crash rather than damage to data that was once durable: the
// file ends inside it, or it is the last record and fails its checksum, or
// everything from it to the end of the file is zero (a filesystem that
// extended the file before writing the data). need is the record's size as
// its length field says; lsn is the sequence number of the last good record.
//
// A damaged length field can make a record in the middle look cut short or
// last. So in the first two cases the rest of the file is searched for a
// valid record with a later sequence number: if there is one, the bad record
// was followed by acknowledged data and isTorn returns a *laterRecordError.
func isTorn(f *os.File, off int64, need int, size int64, lsn uint64, derr error) (bool, error) {
	if errors.Is(derr, errRecordTruncated) || errors.Is(derr, errRecordChecksum) && off+int64(need) == size {
		// The length field, at most maxRecordBody, reaches the end of the
		// file or past it: the rest is shorter than one record.
		rest := make([]byte, size-off)
		if _, err := f.ReadAt(rest, off); err != nil {
			return false, err
		}
		if err := findLaterRecord(rest, off, lsn); err != nil {
			return false, err
		}
		return true, nil
	}
	// No record can start in zeros: a record's length is at least
	// recordFixedBody.
	buf := make([]byte, 32<<10)
	rest := io.NewSectionReader(f, off, size-off)
	for {
		n, err := rest.Read(buf)
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
// number above lsn decodes at some offset in rest after its first byte; rest
// is the part of the file starting at off.
func findLaterRecord(rest []byte, off int64, lsn uint64) error {
	for i := 1; i+recordHeaderSize+recordFixedBody <= len(rest); i++ {
		if rec, _, err := decodeRecord(rest[i:]); err == nil && rec.lsn > lsn {
			return &laterRecordError{offset: off + int64(i), lsn: rec.lsn}
		}
	}
	return nil
}
