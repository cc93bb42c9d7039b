package loadgen_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/internal/loadgen"
)

func TestCountMakesExactlyNCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int64
	r, err := loadgen.Count(ctx, 1000, 16, func(context.Context, int) error {
		calls.Add(1)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(1000), calls.Load())
	assert.Equal(t, 1000, r.Requests)
	assert.LessOrEqual(t, r.P50, r.P99)
}

func TestClosedLoopStopsAtTheFirstError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int64
	boom := errors.New("boom")
	_, err := loadgen.ClosedLoop(ctx, 4, time.Second, func(context.Context, int) error {
		if calls.Add(1) > 100 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
}

func TestMedian(t *testing.T) {
	assert.Equal(t, 2.0, loadgen.Median([]float64{3, 1, 2}))
	assert.Equal(t, 1.0, loadgen.Median([]float64{2, 1}))
	assert.Equal(t, 0.0, loadgen.Median(nil))
}
