// Package loadgen drives closed-loop load and summarises latencies, for the
// benchmark harnesses and the bankrpc-bench command (bench/): each caller sends its
// next request when the previous reply arrives, as in BASELINE.md.
package loadgen

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Result summarises one run.
type Result struct {
	Callers  int
	Requests int
	Elapsed  time.Duration
	PerSec   float64
	P50, P99 time.Duration
	Mean     time.Duration
	Stddev   time.Duration
	// Latencies holds the latency of every call measured, sorted, for
	// distributions (a CDF, a histogram).
	Latencies []time.Duration
}

// Observer is told when the measured part of a run begins and ends (after
// the warm-up, before the callers stop), so that it can take process-wide
// figures over exactly that span: bytes allocated, CPU time. End is given
// the run's result. Begin and End are called from the goroutine that called
// ClosedLoop or Count.
type Observer interface {
	Begin()
	End(Result)
}

type warmUpKey struct{}
type observerKey struct{}

// WithWarmUp returns a context under which ClosedLoop warms up for d
// (0: no warm-up) instead of its default, min(d/5, 200ms). It reaches the
// harnesses that call ClosedLoop without a parameter of their own.
func WithWarmUp(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, warmUpKey{}, d)
}

// WithObserver returns a context under which ClosedLoop and Count tell o
// when their measured part begins and ends.
func WithObserver(ctx context.Context, o Observer) context.Context {
	return context.WithValue(ctx, observerKey{}, o)
}

func (r Result) String() string {
	return fmt.Sprintf("%d callers: %d req in %v = %.0f req/s, p50 %v, p99 %v",
		r.Callers, r.Requests, r.Elapsed.Round(time.Millisecond), r.PerSec, r.P50, r.P99)
}

// Call is one request of caller number caller; it returns when the reply
// arrived.
type Call func(ctx context.Context, caller int) error

// ClosedLoop runs callers goroutines that call in a loop for duration d,
// after a short warm-up, and stops at the first error. Calls get ctx: the
// end of the measurement stops the loop, it does not cut calls in flight.
// The warm-up lasts min(d/5, 200ms) unless ctx says otherwise (WithWarmUp).
func ClosedLoop(ctx context.Context, callers int, d time.Duration, call Call) (Result, error) {
	warm := min(d/5, 200*time.Millisecond)
	if w, ok := ctx.Value(warmUpKey{}).(time.Duration); ok {
		warm = w
	}
	if warm > 0 {
		if _, err := run(ctx, time.Now().Add(warm), callers, 0, call); err != nil {
			return Result{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	return observed(ctx, func() (Result, error) { return run(ctx, time.Now().Add(d), callers, 0, call) })
}

// observed runs measure, telling ctx's Observer, if any.
func observed(ctx context.Context, measure func() (Result, error)) (Result, error) {
	o, _ := ctx.Value(observerKey{}).(Observer)
	if o == nil {
		return measure()
	}
	o.Begin()
	r, err := measure()
	o.End(r)
	return r, err
}

// Count makes n calls, at most inFlight at a time, and reports the latency of
// each: the thesis's experiment (n trivial calls, mean and deviation).
func Count(ctx context.Context, n, inFlight int, call Call) (Result, error) {
	return observed(ctx, func() (Result, error) { return run(ctx, time.Time{}, inFlight, n, call) })
}

// run calls until end (when not zero) or until limit calls were made (when
// limit > 0), or ctx ends.
func run(ctx context.Context, end time.Time, callers, limit int, call Call) (Result, error) {
	var (
		mu    sync.Mutex
		lats  []time.Duration
		first error
		next  int
		wg    sync.WaitGroup
	)
	start := time.Now()
	for c := range callers {
		wg.Go(func() {
			own := make([]time.Duration, 0, 1024)
			defer func() {
				mu.Lock()
				lats = append(lats, own...)
				mu.Unlock()
			}()
			for ctx.Err() == nil && (end.IsZero() || time.Now().Before(end)) {
				if limit > 0 {
					mu.Lock()
					if next == limit || first != nil {
						mu.Unlock()
						return
					}
					next++
					mu.Unlock()
				}
				t0 := time.Now()
				if err := call(ctx, c); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
					}
					return
				}
				own = append(own, time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := summarise(callers, time.Since(start), lats)
	if first != nil {
		return r, first
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("made %d calls: %w", r.Requests, context.Cause(ctx))
	}
	return r, nil
}

func summarise(callers int, elapsed time.Duration, lats []time.Duration) Result {
	r := Result{Callers: callers, Requests: len(lats), Elapsed: elapsed}
	if len(lats) == 0 {
		return r
	}
	slices.Sort(lats)
	r.Latencies = lats
	r.PerSec = float64(len(lats)) / elapsed.Seconds()
	r.P50 = lats[len(lats)/2]
	r.P99 = lats[min(len(lats)-1, len(lats)*99/100)]
	var sum float64
	for _, l := range lats {
		sum += float64(l)
	}
	mean := sum / float64(len(lats))
	var sq float64
	for _, l := range lats {
		sq += (float64(l) - mean) * (float64(l) - mean)
	}
	r.Mean = time.Duration(mean)
	r.Stddev = time.Duration(math.Sqrt(sq / float64(len(lats))))
	return r
}

// Median returns the median of xs (the lower middle for an even count).
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[(len(s)-1)/2]
}
