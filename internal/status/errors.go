// Package status holds the one error type of bankrpc and its canonical codes.
// The root package bankrpc re-exports them (bankrpc.Code, bankrpc.Error);
// the backends, which must not import the root package, use them from here.
package status

import (
	"context"
	"errors"
	"fmt"
)

// Error is the one error type of bankrpc: a canonical Code, a human-readable
// message, optional diagnostic log lines and details from the server, and,
// for an error made locally, the cause it wraps. Its fields are read through
// methods only, so an error cannot be changed after it is made. A non-nil
// *Error never carries OK.
type Error struct {
	code    Code
	msg     string
	log     []string
	details [][]byte
	cause   error
	wire    bool
}

// NewError returns an *Error with the given code and message. OK is turned
// into Unknown: a non-nil error never carries OK.
func NewError(code Code, msg string) *Error {
	if code == OK {
		code = Unknown
	}
	return &Error{code: code, msg: msg}
}

// Errorf returns an *Error with the given code and a fmt-formatted message.
// An error formatted with %w becomes the cause Unwrap returns.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := NewError(code, err.Error())
	e.cause = errors.Unwrap(err)
	return e
}

// Wrap returns an *Error with the given code whose message is cause's text and
// whose Unwrap returns cause.
func Wrap(code Code, cause error) *Error {
	e := NewError(code, cause.Error())
	e.cause = cause
	return e
}

// FromWire returns the *Error a server sent in a result: IsWire reports true
// for it. details are the encoded google.protobuf.Any messages of the result.
func FromWire(code Code, msg string, log []string, details [][]byte) *Error {
	e := NewError(code, msg)
	e.log, e.details, e.wire = log, details, true
	return e
}

// WithLog returns a copy of e carrying log lines, for a server to send with
// the result.
func (e *Error) WithLog(lines ...string) *Error {
	c := *e
	c.log = append(append([]string(nil), e.log...), lines...)
	return &c
}

// WithDetails returns a copy of e carrying encoded google.protobuf.Any
// details, for a server to send with the result.
func (e *Error) WithDetails(details ...[]byte) *Error {
	c := *e
	c.details = append(append([][]byte(nil), e.details...), details...)
	return &c
}

// Code returns the canonical code; never OK.
func (e *Error) Code() Code { return e.code }

// Message returns the human-readable message, without the code.
func (e *Error) Message() string { return e.msg }

// Log returns the diagnostic lines the server attached to the result (the
// thesis's Result.log); usually none. The slice must not be modified.
func (e *Error) Log() []string { return e.log }

// Details returns the encoded google.protobuf.Any details of the error. The
// slices must not be modified.
func (e *Error) Details() [][]byte { return e.details }

// Unwrap returns the local cause of the error, nil for an error a server sent.
func (e *Error) Unwrap() error { return e.cause }

// IsWire reports whether the error was sent by a server, rather than made
// by this process (a timeout, a closed connection, a refused request).
func (e *Error) IsWire() bool { return e.wire }

// Error formats the error as "CODE: message".
func (e *Error) Error() string {
	return e.code.String() + ": " + e.msg
}

// Is reports whether target is an *Error with the same code (and, when
// target has a message, the same message), so that
// errors.Is(err, bankrpc.NewError(bankrpc.NotFound, "")) matches any NotFound.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.code == e.code && (t.msg == "" || t.msg == e.msg)
}

// IsWireError reports whether err's chain holds an *Error that a server sent.
func IsWireError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.wire
}

// CodeOf returns the code of err: OK for nil, the code of the first *Error in
// err's chain, Canceled or DeadlineExceeded for context errors, and Unknown
// for anything else.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// MessageOf returns the message of the first *Error in err's chain, or
// err.Error() for a foreign error, or "" for nil.
func MessageOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.msg
	}
	return err.Error()
}

// FromContextError turns a context error into an *Error with code Canceled or
// DeadlineExceeded that wraps it; any other error is returned as it is.
func FromContextError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{code: DeadlineExceeded, msg: "deadline exceeded", cause: err}
	case errors.Is(err, context.Canceled):
		return &Error{code: Canceled, msg: "call canceled", cause: err}
	}
	return err
}

// Convert turns any error into an *Error, keeping the code of an *Error in
// its chain (and that error's message, log and details), mapping context
// errors, and giving anything else Unknown with the error's text.
func Convert(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{code: CodeOf(err), msg: err.Error(), cause: err}
}
