package bank

import (
	"fmt"
	"time"

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
	// TailBytes is set when the damage is the last TailBytes bytes of the
	// newest log file, after its last valid record, with no valid record
	// after them, but not the remains of an interrupted append: Open with
	// WithRepairLogTail cuts them off, keeping a copy.
	TailBytes int64
}

func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("bank: %s is corrupt at offset %d: %v", e.File, e.Offset, e.Err)
	if e.TailBytes > 0 {
		msg += fmt.Sprintf("; these %d bytes at the end of the log follow its last valid record, and no crash cuts an append short that way: "+
			"if they hold nothing acknowledged, start with WithRepairLogTail (bank-server --repair-log-tail) to cut them off, keeping a copy in %s.damaged-<time>",
			e.TailBytes, e.File)
	}
	return msg
}

func (e *CorruptError) Unwrap() error { return e.Err }

// IncompleteError is returned by Open when the bank's files cannot hold
// every change: a log that continues a snapshot which is missing, or a
// snapshot whose log file is missing.
type IncompleteError struct {
	// Missing is the path of the file that should be there.
	Missing string
	// Reason says how the bank knows.
	Reason string
	// Remedy says what the operator can do.
	Remedy string
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("bank: %s is missing: %s. The bank refuses to start without it: %s", e.Missing, e.Reason, e.Remedy)
}

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

// forgottenError is the refusal of call c, below mark, the sequence number
// under which the bank no longer keeps the replies of c's session.
func forgottenError(c callRef, mark uint64) error {
	return bankrpc.Errorf(bankrpc.Aborted, "outcome unknown: call %q is below sequence number %d, under which the bank no longer keeps the replies of its session, "+
		"and it has no record of it: %s", c.id, mark, unknownAdvice)
}

// unknownSessionError is the refusal of call c, whose session the bank does
// not remember and cannot prove new.
func unknownSessionError(c callRef, horizon time.Duration) error {
	why := "the request does not show that the session is new (its first unanswered sequence number is 0: unknown)"
	if c.fu != 0 {
		why = fmt.Sprintf("the request says that calls of the session from sequence number %d on are unanswered, so the session is not new", c.fu)
	}
	return bankrpc.Errorf(bankrpc.Aborted, "outcome unknown: the bank has no record of the session of call %q (a session is forgotten %v after its last call), and %s: %s",
		c.id, horizon, why, unknownAdvice)
}

// unknownAdvice ends the message of a call whose outcome the bank cannot
// tell.
const unknownAdvice = "it was not applied now, but it may have been applied before; check the account before making the call again, under a new call id"

// errShutDown is what calls get once Shutdown has begun.
var errShutDown = bankrpc.Errorf(bankrpc.Unavailable, "bank: shut down")

// stoppedError is what calls get once a log write or fsync has failed.
func stoppedError(err error) error {
	return bankrpc.Errorf(bankrpc.Unavailable, "bank: stopped acknowledging changes after a log failure: %v", err)
}
