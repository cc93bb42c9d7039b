package transport_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/bankrpc/bankrpc/transport"
)

func TestCodeOf(t *testing.T) {
	notFound := transport.Errorf(transport.NotFound, "no such receiver %d", 42)
	for name, tc := range map[string]struct {
		err  error
		want transport.Code
	}{
		"nil":                {nil, transport.OK},
		"*Error":             {notFound, transport.NotFound},
		"wrapped *Error":     {fmt.Errorf("transfer: %w", notFound), transport.NotFound},
		"canceled":           {context.Canceled, transport.Canceled},
		"deadline":           {fmt.Errorf("x: %w", context.DeadlineExceeded), transport.DeadlineExceeded},
		"foreign":            {errors.New("disk full"), transport.Unknown},
		"OK becomes Unknown": {transport.NewError(transport.OK, "not an error"), transport.Unknown},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, transport.CodeOf(tc.err))
		})
	}
}

func TestErrorFormatsAndMatches(t *testing.T) {
	err := transport.Errorf(transport.FailedPrecondition, "insufficient funds (balance %d, asked %d)", 120, 500)
	assert.Equal(t, "FAILED_PRECONDITION: insufficient funds (balance 120, asked 500)", err.Error())
	assert.Equal(t, "insufficient funds (balance 120, asked 500)", transport.MessageOf(fmt.Errorf("withdraw: %w", err)))
	assert.ErrorIs(t, err, &transport.Error{Code: transport.FailedPrecondition}, "a code-only target matches any message")
	assert.NotErrorIs(t, err, &transport.Error{Code: transport.NotFound})
	assert.Equal(t, "", transport.MessageOf(nil))
	assert.Equal(t, "disk full", transport.MessageOf(errors.New("disk full")))
}

func TestCodeNames(t *testing.T) {
	for c := transport.OK; c <= transport.Unauthenticated; c++ {
		got, ok := transport.ParseCode(c.String())
		assert.True(t, ok, "code %d", c)
		assert.Equal(t, c, got)
	}
	assert.Equal(t, "FAILED_PRECONDITION", transport.FailedPrecondition.String())
	assert.Equal(t, "CODE(99)", transport.Code(99).String())
	_, ok := transport.ParseCode("NOPE")
	assert.False(t, ok)
}

func TestFromContextError(t *testing.T) {
	assert.Equal(t, transport.DeadlineExceeded, transport.CodeOf(transport.FromContextError(context.DeadlineExceeded)))
	assert.Equal(t, transport.Canceled, transport.CodeOf(transport.FromContextError(context.Canceled)))
	other := errors.New("other")
	assert.Same(t, other, transport.FromContextError(other))
}
