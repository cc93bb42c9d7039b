package cli

import (
	"fmt"

	"github.com/bankrpc/bankrpc"
)

// Exit statuses of bank-client. bank-server uses ExitOK, ExitFailure and
// ExitUsage.
const (
	// ExitOK: the operation succeeded (the server: it stopped cleanly).
	ExitOK = 0
	// ExitRefused: the bank answered with an error, usually a refusal such
	// as insufficient funds or an unknown receiver (the server: it could not
	// start or failed while serving).
	ExitRefused = 1
	// ExitUsage: the command line, or an environment variable standing for
	// a flag, is wrong; nothing was sent.
	ExitUsage = 2
	// ExitUnreachable: no answer came from the bank: the server, or the
	// broker, could not be reached, or nothing answered within the timeout.
	ExitUnreachable = 3
	// ExitInterrupted: the user interrupted the program (SIGINT, SIGTERM)
	// while a call was in flight; 128 + SIGINT, as shells report it.
	ExitInterrupted = 130
)

// ExitFailure is bank-server's status when it cannot start (data directory
// in use, address in use, corrupt data) or fails while serving.
const ExitFailure = ExitRefused

// UsageError is a command-line mistake found before anything is sent.
type UsageError struct {
	Msg string
}

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError with a fmt-formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Unreachable reports whether a call that failed with code got no answer
// from the bank: the transport gave up (Unavailable) or the deadline passed
// (DeadlineExceeded). Its outcome is then unknown for a mutating call.
func Unreachable(code bankrpc.Code) bool {
	return code == bankrpc.Unavailable || code == bankrpc.DeadlineExceeded
}

// Refusal reports whether code is the bank saying no to a well-formed
// request for a reason the user can act on, rather than failing.
func Refusal(code bankrpc.Code) bool {
	switch code {
	case bankrpc.FailedPrecondition, bankrpc.NotFound, bankrpc.InvalidArgument, bankrpc.OutOfRange, bankrpc.ResourceExhausted, bankrpc.AlreadyExists, bankrpc.PermissionDenied, bankrpc.Unauthenticated:
		return true
	}
	return false
}

// ExitStatus returns bank-client's exit status for a call that ended with
// code.
func ExitStatus(code bankrpc.Code) int {
	switch {
	case code == bankrpc.OK:
		return ExitOK
	case Unreachable(code):
		return ExitUnreachable
	case code == bankrpc.Canceled:
		return ExitInterrupted
	}
	return ExitRefused
}
