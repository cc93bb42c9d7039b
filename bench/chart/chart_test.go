package chart_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/bench/chart"
)

func TestSVGIsWellFormed(t *testing.T) {
	p := chart.Plot{
		Title: `Throughput <&> "callers"`,
		X:     chart.Axis{Label: "callers", Log: true, Ticks: []float64{1, 16, 64}},
		Y:     chart.Axis{Label: "calls/s", Log: true},
		Series: []chart.Series{
			{Name: "a", Points: []chart.Point{{1, 5000}, {16, 30000}, {64, 58000}}, Markers: true},
			{Name: "b", Points: []chart.Point{{1, 1200}, {16, 11000}, {64, 0}}, Dashed: true}, // 0 cannot sit on a log axis: dropped
		},
		Bars:  []chart.Bars{{Name: "h", Edges: []float64{1, 10, 100}, Counts: []float64{3, 0}}},
		Lines: []chart.VLine{{X: 20, Label: "mean"}},
	}
	b, err := p.SVG()
	require.NoError(t, err)
	dec := xml.NewDecoder(bytes.NewReader(b))
	elements := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok {
			elements[se.Name.Local]++
		}
	}
	assert.Equal(t, 1, elements["svg"])
	assert.Equal(t, 2, elements["polyline"])
	assert.Equal(t, 3, elements["circle"], "a marker per point of the marked series")
	assert.Contains(t, string(b), "Throughput &lt;&amp;&gt; &#34;callers&#34;")
	assert.NotContains(t, string(b), "NaN")
	assert.NotContains(t, string(b), "Inf")
}

func TestEmptyOrImpossibleAxesFail(t *testing.T) {
	_, err := chart.Plot{Title: "empty"}.SVG()
	require.Error(t, err)
	_, err = chart.Plot{Title: "log of negatives", X: chart.Axis{Log: true}, Series: []chart.Series{{Points: []chart.Point{{-1, 1}}}}}.SVG()
	require.Error(t, err)
}

func TestFormats(t *testing.T) {
	assert.Equal(t, "1.5k", chart.Compact(1500))
	assert.Equal(t, "20M", chart.Compact(2e7))
	assert.Equal(t, "950", chart.Compact(950))
	assert.Equal(t, "50µs", chart.Seconds(50e-6))
	assert.Equal(t, "1.2ms", chart.Seconds(1.2e-3))
	assert.Equal(t, "2s", chart.Seconds(2))
}
