package transport

import (
	"context"
	"errors"
	"fmt"
)

// Error is the one error type of bankrpc: a canonical Code, a human-readable
// message and optional diagnostic log lines from the server. A non-nil *Error
// never carries OK.
type Error struct {
	Code    Code
	Message string
	// Log holds diagnostic lines the server attached to the result (the
	// thesis's Result.log); usually empty.
	Log []string
}

// Error formats the error as "CODE: message".
func (e *Error) Error() string {
	return e.Code.String() + ": " + e.Message
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, transport.Errorf(transport.NotFound, "")) matches any NotFound.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// NewError returns an *Error with the given code and message. OK is turned
// into Unknown: a non-nil error never carries OK.
func NewError(code Code, msg string) *Error {
	if code == OK {
		code = Unknown
	}
	return &Error{Code: code, Message: msg}
}

// Errorf returns an *Error with the given code and a fmt-formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return NewError(code, fmt.Sprintf(format, args...))
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
		return e.Code
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
		return e.Message
	}
	return err.Error()
}

// FromContextError turns a context error into an *Error with code Canceled or
// DeadlineExceeded; any other error is returned as it is.
func FromContextError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: DeadlineExceeded, Message: "deadline exceeded"}
	case errors.Is(err, context.Canceled):
		return &Error{Code: Canceled, Message: "call canceled"}
	}
	return err
}

// toError converts any error returned by a handler or a backend into an
// *Error, keeping its code when it has one.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if c := CodeOf(err); c != Unknown {
		return &Error{Code: c, Message: err.Error()}
	}
	return &Error{Code: Unknown, Message: err.Error()}
}
