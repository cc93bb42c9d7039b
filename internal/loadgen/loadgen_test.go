package loadgen_test

import (
	"context"
	"errors"
	"slices"
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

// recorder is an Observer that counts the calls made while it was told the
// measurement ran.
type recorder struct {
	calls        *atomic.Int64
	begun, atEnd int64
	ends         int
	result       loadgen.Result
}

func (r *recorder) Begin() { r.begun = r.calls.Load() }
func (r *recorder) End(res loadgen.Result) {
	r.atEnd, r.result = r.calls.Load(), res
	r.ends++
}

func TestObserverSpansTheMeasurementOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int64
	rec := &recorder{calls: &calls}
	ctx = loadgen.WithObserver(loadgen.WithWarmUp(ctx, 20*time.Millisecond), rec)
	r, err := loadgen.ClosedLoop(ctx, 2, 20*time.Millisecond, func(context.Context, int) error {
		calls.Add(1)
		time.Sleep(time.Millisecond)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 1, rec.ends)
	assert.Positive(t, rec.begun, "the warm-up's calls come before Begin")
	assert.Equal(t, int64(r.Requests), rec.atEnd-rec.begun, "the measured calls are those between Begin and End")
	assert.Equal(t, r.Requests, rec.result.Requests)
}

func TestWithoutWarmUpEveryCallIsMeasured(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int64
	r, err := loadgen.ClosedLoop(loadgen.WithWarmUp(ctx, 0), 1, 10*time.Millisecond, func(context.Context, int) error {
		calls.Add(1)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(r.Requests), calls.Load())
}

func TestLatenciesAreKeptSorted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int64
	r, err := loadgen.Count(ctx, 50, 4, func(context.Context, int) error {
		if calls.Add(1)%10 == 0 {
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, r.Latencies, 50)
	assert.True(t, slices.IsSorted(r.Latencies))
	assert.Equal(t, r.P50, r.Latencies[25])
}
