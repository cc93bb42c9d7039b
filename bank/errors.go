package bank

import (
	"fmt"

	"github.com/bankrpc/bankrpc"
)

// CorruptError is returned by Open when a bank file holds data that cannot
// be what the bank wrote: a checksum mismatch, an impossible field, a gap in
// the log's sequence numbers. Open never drops such data silently; the
// operator decides what to do with the file.
type CorruptError struct {
	// File is the path of the damaged file.
	File string
	// Offset is the byte offset in File where the damage was found.
	Offset int64
	// Err says what is wrong.
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("bank: %s is corrupt at offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// VersionError reports a file or record written in a format version this
// build does not read.
type VersionError struct {
	// What names the format: "snapshot" or "log record".
	What string
	// Got is the version found, Want the one this build reads.
	Got, Want uint32
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("%s format version %d is not supported (this build reads version %d)", e.What, e.Got, e.Want)
}

// LockedError is returned by Open when the directory is in use by another
// Bank, in this process or another one.
type LockedError struct {
	// Dir is the bank directory.
	Dir string
	// PID is the process holding the lock, or 0 when unknown.
	PID int
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("bank: directory %s is in use by process %d", e.Dir, e.PID)
	}
	return fmt.Sprintf("bank: directory %s is in use by another process", e.Dir)
}

// errShutDown is what calls get once Shutdown has begun.
var errShutDown = bankrpc.Errorf(bankrpc.Unavailable, "bank: shut down")

// stoppedError is what calls get once a log write or fsync has failed.
func stoppedError(err error) error {
	return bankrpc.Errorf(bankrpc.Unavailable, "bank: stopped acknowledging changes after a log failure: %v", err)
}
