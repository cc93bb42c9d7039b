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
	assert.ErrorIs(t, err, &status.Error{Code: status.FailedPrecondition}, "a code-only target matches any message")
	assert.NotErrorIs(t, err, &status.Error{Code: status.NotFound})
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
