package status_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/bankrpc/bankrpc/internal/status"
)

func TestCodeOf(t *testing.T) {
	notFound := status.Errorf(status.NotFound, "no such receiver %d", 42)
	for name, tc := range map[string]struct {
		err  error
		want status.Code
	}{
		"nil":                {nil, status.OK},
		"*Error":             {notFound, status.NotFound},
		"wrapped *Error":     {fmt.Errorf("transfer: %w", notFound), status.NotFound},
		"canceled":           {context.Canceled, status.Canceled},
		"deadline":           {fmt.Errorf("x: %w", context.DeadlineExceeded), status.DeadlineExceeded},
		"foreign":            {errors.New("disk full"), status.Unknown},
		"OK becomes Unknown": {status.NewError(status.OK, "not an error"), status.Unknown},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, status.CodeOf(tc.err))
		})
	}
}

func TestErrorFormatsAndMatches(t *testing.T) {
	err := status.Errorf(status.FailedPrecondition, "insufficient funds (balance %d, asked %d)", 120, 500)
	assert.Equal(t, "FAILED_PRECONDITION: insufficient funds (balance 120, asked 500)", err.Error())
	assert.Equal(t, "insufficient funds (balance 120, asked 500)", status.MessageOf(fmt.Errorf("withdraw: %w", err)))
	assert.ErrorIs(t, err, status.NewError(status.FailedPrecondition, ""), "a code-only target matches any message")
	assert.NotErrorIs(t, err, status.NewError(status.NotFound, ""))
	assert.Equal(t, "", status.MessageOf(nil))
	assert.Equal(t, "disk full", status.MessageOf(errors.New("disk full")))
}

func TestCodeNames(t *testing.T) {
	for c := status.OK; c <= status.Unauthenticated; c++ {
		got, ok := status.ParseCode(c.String())
		assert.True(t, ok, "code %d", c)
		assert.Equal(t, c, got)
	}
	assert.Equal(t, "FAILED_PRECONDITION", status.FailedPrecondition.String())
	assert.Equal(t, "CODE(99)", status.Code(99).String())
	_, ok := status.ParseCode("NOPE")
	assert.False(t, ok)
}

func TestFromContextError(t *testing.T) {
	assert.Equal(t, status.DeadlineExceeded, status.CodeOf(status.FromContextError(context.DeadlineExceeded)))
	assert.Equal(t, status.Canceled, status.CodeOf(status.FromContextError(context.Canceled)))
	other := errors.New("other")
	assert.Same(t, other, status.FromContextError(other))
}

func TestErrorIsReadOnlyAndTellsWireFromLocal(t *testing.T) {
	cause := errors.New("connection reset")
	local := status.Errorf(status.Unavailable, "zmq: send: %w", cause)
	assert.Equal(t, status.Unavailable, local.Code())
	assert.Equal(t, "zmq: send: connection reset", local.Message())
	assert.ErrorIs(t, local, cause, "a local error unwraps to its cause")
	assert.False(t, local.IsWire())
	assert.False(t, status.IsWireError(local))

	wire := status.FromWire(status.NotFound, "no such receiver 42", []string{"log"}, [][]byte{{1}})
	assert.True(t, wire.IsWire())
	assert.True(t, status.IsWireError(fmt.Errorf("transfer: %w", wire)))
	assert.Nil(t, wire.Unwrap())
	assert.Equal(t, []string{"log"}, wire.Log())
	assert.Equal(t, [][]byte{{1}}, wire.Details())

	assert.Equal(t, status.Unknown, status.NewError(status.OK, "x").Code(), "a non-nil error never carries OK")
	with := wire.WithLog("more")
	assert.Equal(t, []string{"log"}, wire.Log(), "WithLog copies")
	assert.Equal(t, []string{"log", "more"}, with.Log())

	var zero status.Error
	assert.Equal(t, status.OK, zero.Code(), "only a zero value carries OK; the runtime sends it as UNKNOWN")
	assert.Equal(t, status.Unknown, status.Convert(errors.New("foreign")).Code())
	assert.Same(t, wire, status.Convert(fmt.Errorf("w: %w", wire)))
}
