// Package chart draws the benchmark report's charts as SVG, in pure Go:
// line charts (throughput against callers, latency CDFs) and histograms,
// on linear or logarithmic axes. It knows nothing of benchmarks; it places
// points and bars in a frame, with ticks, labels and a legend.
package chart

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
)

// Palette is the series colours, in order (colour-blind safe, Okabe–Ito).
var Palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"}

// Axis is one axis of a plot.
type Axis struct {
	Label string
	Log   bool // logarithmic (base 10); Min and Max must then be positive
	// Min and Max bound the axis; when both are 0 they are taken from the
	// data (rounded out to decades on a log axis, to nice numbers on a
	// linear one).
	Min, Max float64
	// Format prints a tick's value; nil prints it compactly (1.5k, 2M).
	Format func(float64) string
	// Ticks, when set, are the tick values (otherwise chosen for the range).
	Ticks []float64
}

// Point is one (x, y) of a series.
type Point struct{ X, Y float64 }

// Series is a line through points (in the order given), with a marker at
// each point when Markers is set.
type Series struct {
	Name    string
	Points  []Point
	Markers bool
	Dashed  bool
	Color   string // "" takes the next colour of the palette
}

// Bars is a histogram: one bar per bin [Edges[i], Edges[i+1]) of height
// Counts[i].
type Bars struct {
	Name   string
	Edges  []float64
	Counts []float64
	Color  string
}

// VLine marks one x value across the plot, labelled.
type VLine struct {
	X     float64
	Label string
	Color string
}

// Plot is one chart.
type Plot struct {
	Title         string
	Subtitle      string
	X, Y          Axis
	Series        []Series
	Bars          []Bars
	Lines         []VLine
	Width, Height int // pixels; 0 takes 760×440
}

const (
	marginLeft   = 72.0
	marginRight  = 200.0 // the legend
	marginTop    = 56.0
	marginBottom = 56.0
)

// SVG renders the plot. It fails when an axis cannot hold the data (a log
// axis with no positive value) or has an empty range.
func (p Plot) SVG() ([]byte, error) {
	w, h := float64(p.Width), float64(p.Height)
	if w == 0 || h == 0 {
		w, h = 760, 440
	}
	xs, ys := p.extent()
	x, err := p.X.scale(xs, marginLeft, w-marginRight)
	if err != nil {
		return nil, fmt.Errorf("chart %q: x axis: %w", p.Title, err)
	}
	y, err := p.Y.scale(ys, h-marginBottom, marginTop)
	if err != nil {
		return nil, fmt.Errorf("chart %q: y axis: %w", p.Title, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginLeft, esc(p.Title))
	if p.Subtitle != "" {
		fmt.Fprintf(&b, `<text x="%g" y="40" fill="#555">%s</text>`+"\n", marginLeft, esc(p.Subtitle))
	}
	left, right, top, bottom := marginLeft, w-marginRight, marginTop, h-marginBottom
	// Grid and ticks.
	for _, t := range x.ticks {
		px := x.at(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", px, top, px, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px, bottom+16, esc(p.X.format(t)))
	}
	for _, t := range y.ticks {
		py := y.at(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, py, right, py)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py+4, esc(p.Y.format(t)))
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, right-left, bottom-top)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (left+right)/2, h-14, esc(p.X.Label))
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (top+bottom)/2, esc(p.Y.Label))

	type entry struct{ name, color, kind string }
	var legend []entry
	colour := 0
	next := func(c string) string {
		if c != "" {
			return c
		}
		c = Palette[colour%len(Palette)]
		colour++
		return c
	}
	fmt.Fprintf(&b, `<g clip-path="url(#plot)">`+"\n")
	for _, bs := range p.Bars {
		c := next(bs.Color)
		for i, n := range bs.Counts {
			if n <= 0 || i+1 >= len(bs.Edges) {
				continue
			}
			x0, x1 := x.at(bs.Edges[i]), x.at(bs.Edges[i+1])
			y0 := y.at(y.lo)
			if p.Y.Log {
				y0 = bottom
			}
			y1 := y.at(n)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.55" stroke="%s" stroke-width="0.5"/>`+"\n",
				x0, y1, math.Max(x1-x0, 0.5), math.Max(y0-y1, 0), c, c)
		}
		legend = append(legend, entry{bs.Name, c, "bar"})
	}
	for _, s := range p.Series {
		c := next(s.Color)
		var pts bytes.Buffer
		for _, pt := range s.Points {
			if (p.X.Log && pt.X <= 0) || (p.Y.Log && pt.Y <= 0) {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x.at(pt.X), y.at(pt.Y))
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", c, dash, bytes.TrimSpace(pts.Bytes()))
		if s.Markers {
			for _, pt := range s.Points {
				if (p.X.Log && pt.X <= 0) || (p.Y.Log && pt.Y <= 0) {
					continue
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x.at(pt.X), y.at(pt.Y), c)
			}
		}
		legend = append(legend, entry{s.Name, c, "line"})
	}
	for _, l := range p.Lines {
		c := l.Color
		if c == "" {
			c = "#333"
		}
		px := x.at(l.X)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="3 3"/>`+"\n", px, top, px, bottom, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s" text-anchor="end" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n", px-4, top+4, c, px-4, top+4, esc(l.Label))
	}
	fmt.Fprintf(&b, "</g>\n")
	fmt.Fprintf(&b, `<defs><clipPath id="plot"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/></clipPath></defs>`+"\n", left, top-1, right-left+1, bottom-top+2)
	for i, e := range legend {
		ly := top + 8 + float64(i)*20
		lx := right + 14
		if e.kind == "bar" {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="18" height="10" fill="%s" fill-opacity="0.55"/>`+"\n", lx, ly-5, e.color)
		} else {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", lx, ly, lx+18, ly, e.color)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+24, ly+4, esc(e.name))
	}
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}

// extent returns the data's x and y values.
func (p Plot) extent() (xs, ys []float64) {
	for _, s := range p.Series {
		for _, pt := range s.Points {
			xs, ys = append(xs, pt.X), append(ys, pt.Y)
		}
	}
	for _, bs := range p.Bars {
		xs = append(xs, bs.Edges...)
		for _, c := range bs.Counts {
			if c > 0 {
				ys = append(ys, c)
			}
		}
	}
	for _, l := range p.Lines {
		xs = append(xs, l.X)
	}
	return xs, ys
}

// scale maps an axis's values to pixels.
type scale struct {
	log        bool
	lo, hi     float64
	pxLo, pxHi float64
	ticks      []float64
}

func (s scale) at(v float64) float64 {
	f := (v - s.lo) / (s.hi - s.lo)
	if s.log {
		f = (math.Log10(v) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	}
	return s.pxLo + f*(s.pxHi-s.pxLo)
}

func (a Axis) scale(values []float64, pxLo, pxHi float64) (scale, error) {
	lo, hi := a.Min, a.Max
	if lo == 0 && hi == 0 {
		lo, hi = math.Inf(1), math.Inf(-1)
		for _, v := range values {
			if a.Log && v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		if math.IsInf(lo, 1) {
			return scale{}, fmt.Errorf("no value to place")
		}
		if a.Log {
			lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
			if lo == hi {
				hi = lo * 10
			}
		} else {
			if lo > 0 {
				lo = 0
			}
			if hi == lo {
				hi = lo + 1
			}
			step := niceStep((hi - lo) / 5)
			lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
		}
	}
	if !(hi > lo) || a.Log && lo <= 0 {
		return scale{}, fmt.Errorf("empty or invalid range [%g, %g]", lo, hi)
	}
	s := scale{log: a.Log, lo: lo, hi: hi, pxLo: pxLo, pxHi: pxHi, ticks: a.Ticks}
	if s.ticks == nil {
		s.ticks = ticks(a.Log, lo, hi)
	}
	return s, nil
}

func ticks(log bool, lo, hi float64) []float64 {
	var out []float64
	if log {
		decades := math.Log10(hi) - math.Log10(lo)
		for d := math.Floor(math.Log10(lo)); d <= math.Ceil(math.Log10(hi)); d++ {
			for _, m := range []float64{1, 2, 5} {
				if m != 1 && decades > 3 {
					continue
				}
				v := m * math.Pow(10, d)
				if v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((hi - lo) / 6)
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

// niceStep rounds a step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func (a Axis) format(v float64) string {
	if a.Format != nil {
		return a.Format(v)
	}
	return Compact(v)
}

// Compact prints a number shortly: 950, 1.5k, 20k, 3M.
func Compact(v float64) string {
	av := math.Abs(v)
	switch {
	case av >= 1e6:
		return trim(v/1e6) + "M"
	case av >= 1e3:
		return trim(v/1e3) + "k"
	default:
		return trim(v)
	}
}

func trim(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// Seconds prints a duration given in seconds: 50µs, 1.2ms, 2s.
func Seconds(v float64) string {
	switch {
	case v >= 1:
		return trim(v) + "s"
	case v >= 1e-3:
		return trim(v*1e3) + "ms"
	case v >= 1e-6:
		return trim(v*1e6) + "µs"
	default:
		return trim(v*1e9) + "ns"
	}
}

func esc(s string) string { return html.EscapeString(s) }
