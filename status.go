package bankrpc

import "github.com/bankrpc/bankrpc/internal/status"

// Code is a canonical status code. The names and numbers are gRPC's, so that
// operators and clients in other languages read them the same way.
type Code = status.Code

// The canonical codes, numbered as in gRPC.
const (
	OK                 = status.OK
	Canceled           = status.Canceled
	Unknown            = status.Unknown
	InvalidArgument    = status.InvalidArgument
	DeadlineExceeded   = status.DeadlineExceeded
	NotFound           = status.NotFound
	AlreadyExists      = status.AlreadyExists
	PermissionDenied   = status.PermissionDenied
	ResourceExhausted  = status.ResourceExhausted
	FailedPrecondition = status.FailedPrecondition
	Aborted            = status.Aborted
	OutOfRange         = status.OutOfRange
	Unimplemented      = status.Unimplemented
	Internal           = status.Internal
	Unavailable        = status.Unavailable
	DataLoss           = status.DataLoss
	Unauthenticated    = status.Unauthenticated
)

// ParseCode returns the code with the given canonical name, e.g.
// "FAILED_PRECONDITION".
func ParseCode(name string) (Code, bool) { return status.ParseCode(name) }

// Error is the one error type of bankrpc: a Code, a message, and what the
// server attached (log lines, details). It is read-only: Code, Message, Log,
// Details, Unwrap (the local cause, for an error made in this process) and
// IsWire (whether a server sent it), as connect-go's Error. A non-nil *Error
// never carries OK.
type Error = status.Error

// NewError returns an *Error with the given code and message; OK becomes
// Unknown.
func NewError(code Code, msg string) *Error { return status.NewError(code, msg) }

// Errorf returns an *Error with the given code and a fmt-formatted message;
// an error formatted with %w is its cause (Unwrap). OK becomes Unknown.
func Errorf(code Code, format string, args ...any) *Error {
	return status.Errorf(code, format, args...)
}

// CodeOf returns the code of err: OK for nil, the code of the first *Error in
// err's chain, Canceled or DeadlineExceeded for context errors, and Unknown
// for anything else.
func CodeOf(err error) Code { return status.CodeOf(err) }

// MessageOf returns the message of the first *Error in err's chain, or
// err.Error() for a foreign error, or "" for nil.
func MessageOf(err error) string { return status.MessageOf(err) }

// IsWireError reports whether err's chain holds an *Error that a server sent,
// as opposed to one made by this process (a timeout, a closed connection).
func IsWireError(err error) bool { return status.IsWireError(err) }

// FromContextError turns a context error into an *Error with code Canceled
// or DeadlineExceeded; any other error is returned as it is.
func FromContextError(err error) error { return status.FromContextError(err) }
