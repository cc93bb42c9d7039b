package harness

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestHistogramCountsEveryValueInRange(t *testing.T) {
	edges := []float64{1, 2, 4, 8}
	assert.Equal(t, []float64{2, 1, 1}, histogram([]float64{0.5, 1, 1.5, 2, 7.9, 8, 9}, edges))
}

func TestCDFEndsAtOne(t *testing.T) {
	lats := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	pts := cdf(lats, 4)
	assert.Len(t, pts, 5)
	assert.Equal(t, 1.0, pts[len(pts)-1].Y)
	for i := 1; i < len(pts); i++ {
		assert.GreaterOrEqual(t, pts[i].X, pts[i-1].X)
		assert.GreaterOrEqual(t, pts[i].Y, pts[i-1].Y)
	}
	assert.Empty(t, cdf(nil, 4))
}

func TestPhi(t *testing.T) {
	assert.InDelta(t, 0.5, phi(0), 1e-12)
	assert.InDelta(t, 0.8413, phi(1), 1e-4)
	assert.InDelta(t, 1, phi(10), 1e-12)
	assert.False(t, math.IsNaN(phi(-40)))
}

func TestFormatting(t *testing.T) {
	assert.Equal(t, "124 µs", fmtDur(124*time.Microsecond))
	assert.Equal(t, "1.21 ms", fmtDur(1210*time.Microsecond))
	assert.Equal(t, "26.2k", fmtRate(26200))
	assert.Equal(t, "984", fmtRate(984.4))
	assert.Equal(t, "31.0 KiB", fmtBytes(31*1024))
	assert.Equal(t, 2.0, median([]float64{3, 1, 2}))
}
