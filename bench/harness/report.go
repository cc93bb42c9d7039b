package harness

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bankrpc/bankrpc/bench/chart"
	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// Thesis figures (seed 002): 10,000 trivial calls over RabbitMQ.
const (
	ThesisMean   = 1.975 // seconds
	ThesisStddev = 0.229 // seconds
)

// Summary is one scenario at one callers level over the rounds: medians.
type Summary struct {
	Scenario  string
	Callers   int
	PerSec    float64
	P50, P99  time.Duration
	Cost      Cost
	Rounds    int
	Latencies []time.Duration // every round's, merged and sorted
}

// Summary returns the medians of a scenario's cells at a callers level.
func (r *Report) Summary(key string, callers int) (Summary, bool) {
	s := Summary{Scenario: key, Callers: callers}
	var rate, p50, p99, bytes, allocs, cpu []float64
	for _, c := range r.Cells {
		if c.Scenario != key || c.Callers != callers {
			continue
		}
		s.Rounds++
		rate = append(rate, c.Result.PerSec)
		p50, p99 = append(p50, float64(c.Result.P50)), append(p99, float64(c.Result.P99))
		bytes, allocs, cpu = append(bytes, c.Cost.BytesPerCall), append(allocs, c.Cost.AllocsPerCall), append(cpu, float64(c.Cost.CPUPerCall))
		s.Latencies = append(s.Latencies, c.Result.Latencies...)
	}
	if s.Rounds == 0 {
		return s, false
	}
	slices.Sort(s.Latencies)
	s.PerSec = median(rate)
	s.P50, s.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	s.Cost = Cost{BytesPerCall: median(bytes), AllocsPerCall: median(allocs), CPUPerCall: time.Duration(median(cpu))}
	return s, true
}

// Metric is what a ratio compares.
type Metric int

const (
	Throughput Metric = iota
	P50Latency
)

// RatioDef is a ratio the report shows: Num's metric over Den's, per round.
type RatioDef struct {
	Name     string
	Num, Den string
	Metric   Metric
}

// Ratios are the report's comparisons against the baselines.
var Ratios = []RatioDef{
	{"bankrpc zmq ÷ raw zmq, throughput", ZMQ, ZMQRaw, Throughput},
	{"bankrpc zmq ÷ raw zmq, p50 latency", ZMQ, ZMQRaw, P50Latency},
	{"durable bank ÷ in-memory handler (zmq), throughput", ZMQBank, ZMQ, Throughput},
	{"bankrpc amqp ÷ raw amqp durable, throughput", AMQP, AMQPRaw, Throughput},
	{"bankrpc zmq ÷ grpc-go, throughput", ZMQ, GRPC, Throughput},
	{"durable bank (zmq) ÷ grpc-go, throughput", ZMQBank, GRPC, Throughput},
	{"bankrpc zmq ÷ raw TCP, throughput", ZMQ, TCP, Throughput},
}

// Ratio is a RatioDef at one callers level: the median of the rounds'
// ratios, and each round's.
type Ratio struct {
	Median float64
	Rounds []float64
}

// Ratio computes def at a callers level from the rounds in which both
// sides were measured.
func (r *Report) Ratio(def RatioDef, callers int) (Ratio, bool) {
	type pair struct{ num, den float64 }
	byRound := map[int]*pair{}
	for _, c := range r.Cells {
		if c.Callers != callers || (c.Scenario != def.Num && c.Scenario != def.Den) {
			continue
		}
		v := c.Result.PerSec
		if def.Metric == P50Latency {
			v = float64(c.Result.P50)
		}
		p := byRound[c.Round]
		if p == nil {
			p = &pair{math.NaN(), math.NaN()}
			byRound[c.Round] = p
		}
		if c.Scenario == def.Num {
			p.num = v
		} else {
			p.den = v
		}
	}
	var out Ratio
	for round := range r.Config.Rounds {
		if p := byRound[round]; p != nil && !math.IsNaN(p.num) && !math.IsNaN(p.den) && p.den > 0 {
			out.Rounds = append(out.Rounds, p.num/p.den)
		}
	}
	if len(out.Rounds) == 0 {
		return out, false
	}
	out.Median = median(out.Rounds)
	return out, true
}

// Target is one of issue 16's targets and how this run measured against it.
type Target struct {
	Number   int
	Goal     string
	Measured string
	Met      string // "yes", "no", "not measured" or "reported" (no threshold)
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// Targets evaluates issue 16's targets 1–5 on the run.
func (r *Report) Targets() []Target {
	def := func(num, den string, m Metric) RatioDef {
		for _, d := range Ratios {
			if d.Num == num && d.Den == den && d.Metric == m {
				return d
			}
		}
		panic("no ratio " + num + "/" + den)
	}
	var ts []Target

	t := Target{Number: 1, Goal: "one caller over zmq ≥ 1.0× raw zmq REQ/REP, p50 within 1.1× of it", Met: "not measured"}
	if tp, ok := r.Ratio(def(ZMQ, ZMQRaw, Throughput), 1); ok {
		if lat, ok := r.Ratio(def(ZMQ, ZMQRaw, P50Latency), 1); ok {
			t.Measured = fmt.Sprintf("%.2f× throughput, p50 %.2f×", tp.Median, lat.Median)
			t.Met = verdict(tp.Median >= 1.0 && lat.Median <= 1.1)
		}
	}
	ts = append(ts, t)

	t = Target{Number: 2, Goal: "durable bank over zmq ≥ 0.6× the in-memory handler at 64 callers; at one caller p50 ≤ 1.5× one fsync", Met: "not measured"}
	var parts []string
	met := true
	measured := 0
	if q, ok := r.Ratio(def(ZMQBank, ZMQ, Throughput), 64); ok {
		parts = append(parts, fmt.Sprintf("%.2f× in-memory at 64 callers", q.Median))
		met = met && q.Median >= 0.6
		measured++
	}
	if s, ok := r.Summary(ZMQBank, 1); ok && len(r.Fsync.Samples) > 0 {
		f := r.Fsync.P50()
		parts = append(parts, fmt.Sprintf("p50 %s at one caller = %.2f× one fdatasync (p50 %s)", fmtDur(s.P50), float64(s.P50)/float64(f), fmtDur(f)))
		met = met && float64(s.P50) <= 1.5*float64(f)
		measured++
	}
	if measured > 0 {
		t.Measured = strings.Join(parts, "; ")
		t.Met = verdict(met)
		if measured < 2 {
			t.Met += " (partly measured)"
		}
	}
	ts = append(ts, t)

	t = Target{Number: 3, Goal: "amqp durable ≥ 1.25× raw durable at 16 and 64 callers", Met: "not measured"}
	parts, met, measured = nil, true, 0
	for _, n := range []int{16, 64} {
		if q, ok := r.Ratio(def(AMQP, AMQPRaw, Throughput), n); ok {
			parts = append(parts, fmt.Sprintf("%.2f× at %d", q.Median, n))
			met = met && q.Median >= 1.25
			measured++
		}
	}
	if measured > 0 {
		t.Measured = strings.Join(parts, ", ")
		t.Met = verdict(met)
		if measured < 2 {
			t.Met += " (partly measured)"
		}
	}
	ts = append(ts, t)

	t = Target{Number: 4, Goal: "inproc < 1.5 µs and ≤ 8 allocations per call at -cpu 1 and 2", Met: "not measured"}
	parts, met = nil, true
	for _, in := range r.Inproc {
		parts = append(parts, fmt.Sprintf("-cpu %d: %s, %d allocs", in.CPU, fmtDur(time.Duration(in.NsPerOp)), in.AllocsPerOp))
		met = met && in.NsPerOp < 1500 && in.AllocsPerOp <= 8
	}
	if len(r.Inproc) > 0 {
		t.Measured = strings.Join(parts, "; ")
		t.Met = verdict(met)
	}
	ts = append(ts, t)

	t = Target{Number: 5, Goal: "memory: server RSS with 10,000 idle zmq clients and with 10,000 requests waiting in an amqp queue; bytes allocated per call per backend", Met: "not measured"}
	parts = nil
	for _, m := range r.ZMQMemory {
		parts = append(parts, fmt.Sprintf("%s: %s idle → %s with %d clients (%s per client; CPU %.0f%% of a core while they are silent)", m.Server, fmtBytes(float64(m.Idle.RSS)), fmtBytes(float64(m.Loaded.RSS)), m.Clients, fmtBytes(m.PerClient()), 100*m.LoadedCPU))
	}
	if m := r.AMQPMem; m != nil {
		parts = append(parts, fmt.Sprintf("amqp server: %s idle → %s with %d requests queued", fmtBytes(float64(m.Idle.RSS)), fmtBytes(float64(m.Waiting.RSS)), m.Queued))
	}
	if len(parts) > 0 {
		t.Measured = strings.Join(parts, "; ") + "; bytes per call: see the cost table"
		t.Met = "reported"
	}
	ts = append(ts, t)
	return ts
}

// Markdown renders the report's tables; with charts, it links the SVGs
// WriteDir writes beside it.
func (r *Report) Markdown(charts bool) string {
	var b strings.Builder
	c := r.Config
	m := r.Machine
	fmt.Fprintf(&b, "Run of %s, %v in all. Machine: %d CPUs (%s), Linux %s, %s, load average %s at the start, open files %s.\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Elapsed.Round(time.Second), m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.LoadAvg, m.OpenFiles)
	fmt.Fprintf(&b, "Closed-loop callers; each cell %v after a %v warm-up; %d paired rounds per callers level; medians.\n\n", c.Duration, c.WarmUp, c.Rounds)
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "**SKIPPED: %s.**\n\n", s)
	}
	for _, s := range r.Failed {
		fmt.Fprintf(&b, "**FAILED: %s.**\n\n", s)
	}

	b.WriteString("### Throughput and latency (median of the rounds)\n\n")
	header(&b, "scenario", c.Callers, func(n int) string { return plural(n, "caller") })
	for _, sc := range r.Scenarios {
		row := []string{sc.Name}
		for _, n := range c.Callers {
			s, ok := r.Summary(sc.Key, n)
			if !ok {
				row = append(row, "—")
				continue
			}
			row = append(row, fmt.Sprintf("%s/s · p50 %s · p99 %s", fmtRate(s.PerSec), fmtDur(s.P50), fmtDur(s.P99)))
		}
		line(&b, row)
	}
	b.WriteString("\n### Ratios (median of the per-round ratios; min–max of the rounds)\n\n")
	header(&b, "ratio", c.Callers, func(n int) string { return plural(n, "caller") })
	for _, def := range Ratios {
		row := []string{def.Name}
		any := false
		for _, n := range c.Callers {
			q, ok := r.Ratio(def, n)
			if !ok {
				row = append(row, "—")
				continue
			}
			any = true
			row = append(row, fmt.Sprintf("**%.2f×** (%.2f–%.2f)", q.Median, slices.Min(q.Rounds), slices.Max(q.Rounds)))
		}
		if any {
			line(&b, row)
		}
	}
	b.WriteString("\n### Issue 16's targets\n\n")
	b.WriteString("| # | target | measured | met |\n|---|---|---|---|\n")
	for _, t := range r.Targets() {
		line(&b, []string{fmt.Sprint(t.Number), t.Goal, orDash(t.Measured), t.Met})
	}
	if len(r.Fsync.Samples) > 0 {
		fmt.Fprintf(&b, "\nOne fdatasync of a 64-byte append in the bank's directory (%d samples through the run): p50 %s, p99 %s; %s of CPU each (the flushing thread's user and system time).\n",
			len(r.Fsync.Samples), fmtDur(r.Fsync.P50()), fmtDur(r.Fsync.P99()), fmtDur(r.Fsync.CPUPerSync()))
	}

	if len(r.Segments) > 0 {
		fmt.Fprintf(&b, "\n### Where a lone call's time goes (zmq, 1 caller; medians over the calls of a round, then over %s)\n\n", plural(len(r.Segments), "round"))
		b.WriteString("| segment | from → to | raw pebbe/zmq4 | bankrpc | bankrpc − raw |\n|---|---|---|---|---|\n")
		for _, f := range zmqbench.SegmentFields {
			raw, rpc := r.segmentMedian(false, f.Get), r.segmentMedian(true, f.Get)
			rawCol, diff := fmtDur(raw), "+"+fmtDur(rpc-raw)
			if rpc < raw {
				diff = "−" + fmtDur(raw-rpc)
			}
			if raw == 0 {
				rawCol, diff = "—", "—"
			}
			line(&b, []string{f.Name, f.What, rawCol, fmtDur(rpc), diff})
		}
	}

	b.WriteString("\n### Cost per call (whole process: callers and server; Go heap only, libzmq's C allocations and the broker are not counted; median of the rounds)\n\n")
	header(&b, "scenario", c.Callers, func(n int) string { return plural(n, "caller") })
	for _, sc := range r.Scenarios {
		row := []string{sc.Name}
		for _, n := range c.Callers {
			s, ok := r.Summary(sc.Key, n)
			if !ok {
				row = append(row, "—")
				continue
			}
			row = append(row, fmt.Sprintf("%s, %.0f allocs, CPU %s", fmtBytes(s.Cost.BytesPerCall), s.Cost.AllocsPerCall, fmtDur(s.Cost.CPUPerCall)))
		}
		line(&b, row)
	}
	if len(r.Inproc) > 0 {
		b.WriteString("\n### inproc: one Deposit through the stub, the runtime and the inproc backend (testing.Benchmark, median of the rounds)\n\n")
		b.WriteString("| -cpu | ns/op | allocs/op | B/op | rounds (ns/op) |\n|---|---|---|---|---|\n")
		for _, in := range r.Inproc {
			rs := make([]string, len(in.Rounds))
			for i, x := range in.Rounds {
				rs[i] = fmt.Sprintf("%.0f", x)
			}
			line(&b, []string{fmt.Sprint(in.CPU), fmt.Sprintf("%.0f", in.NsPerOp), fmt.Sprint(in.AllocsPerOp), fmt.Sprint(in.BytesPerOp), strings.Join(rs, " ")})
		}
	}
	if len(r.Thesis) > 0 {
		fmt.Fprintf(&b, "\n### The thesis's experiment: %d trivial calls over durable AMQP (thesis: mean %.3f s, σ %.3f s)\n\n", r.Config.ThesisN, ThesisMean, ThesisStddev)
		b.WriteString("| in flight | mean | σ | p50 | p99 | calls/s | thesis's mean ÷ ours |\n|---|---|---|---|---|---|---|\n")
		for _, t := range r.Thesis {
			x := t.Result
			line(&b, []string{fmt.Sprint(t.InFlight), fmtDur(x.Mean), fmtDur(x.Stddev), fmtDur(x.P50), fmtDur(x.P99), fmtRate(x.PerSec), fmt.Sprintf("%.0f×", ThesisMean/x.Mean.Seconds())})
		}
	}
	if len(r.ZMQMemory) > 0 || r.AMQPMem != nil {
		b.WriteString("\n### Memory (server in a process of its own; RSS from /proc, Go heap in use after a GC)\n\n")
		b.WriteString("| server | state | RSS | Go heap | goroutines | threads |\n|---|---|---|---|---|---|\n")
		st := func(server, state string, p ProcStats) {
			line(&b, []string{server, state, fmtBytes(float64(p.RSS)), fmtBytes(float64(p.HeapInuse)), fmt.Sprint(p.Goroutines), fmt.Sprint(p.Threads)})
		}
		for _, m := range r.ZMQMemory {
			st(m.Server, "idle", m.Idle)
			st(m.Server, fmt.Sprintf("%d idle clients, one call each", m.Clients), m.Loaded)
		}
		if m := r.AMQPMem; m != nil {
			st("bankrpc amqp.Server", "idle", m.Idle)
			st("bankrpc amqp.Server", fmt.Sprintf("%d requests sent, %d waiting in its queue, handler blocked", m.Queued, m.InQueue), m.Waiting)
			st("bankrpc amqp.Server", "after answering them all", m.Drained)
		}
		b.WriteString("\n")
		for _, m := range r.ZMQMemory {
			fmt.Fprintf(&b, "- %s: %s more resident per idle client; CPU %.0f%% of a core idle, %.0f%% with the %d clients connected and silent",
				m.Server, fmtBytes(m.PerClient()), 100*m.IdleCPU, 100*m.LoadedCPU, m.Clients)
			if m.Answered < m.Clients {
				fmt.Fprintf(&b, "; only %d of the %d clients got their call answered (connections dropped and did not come back in time)", m.Answered, m.Clients)
			}
			if m.Resent > 0 {
				fmt.Fprintf(&b, "; %d calls were sent again after %v without a reply", m.Resent, 5*time.Second)
			}
			b.WriteString(".\n")
		}
		if m := r.AMQPMem; m != nil {
			fmt.Fprintf(&b, "- bankrpc amqp.Client with %d calls in flight: Go heap +%s (%s per call); the server drained them in %v.\n",
				m.Queued, fmtBytes(float64(m.ClientHeap)), fmtBytes(float64(m.ClientHeap)/float64(m.Queued)), m.DrainElapsed.Round(time.Millisecond))
		}
	}
	if charts {
		b.WriteString("\n### Charts\n\n")
		for _, f := range r.chartFiles() {
			fmt.Fprintf(&b, "![%s](%s)\n\n", f.title, f.name)
		}
	}
	return b.String()
}

type chartFile struct {
	name, title string
	plot        chart.Plot
}

// chartFiles are the report's charts.
func (r *Report) chartFiles() []chartFile {
	var out []chartFile
	callerTicks := make([]float64, len(r.Config.Callers))
	for i, n := range r.Config.Callers {
		callerTicks[i] = float64(n)
	}
	tp := chart.Plot{
		Title:    "Throughput against callers (closed loop)",
		Subtitle: fmt.Sprintf("median of %d rounds of %v; log–log", r.Config.Rounds, r.Config.Duration),
		X:        chart.Axis{Label: "concurrent callers", Log: true, Ticks: callerTicks},
		Y:        chart.Axis{Label: "calls per second", Log: true},
	}
	for _, sc := range r.Scenarios {
		s := chart.Series{Name: sc.Key, Markers: true, Dashed: strings.HasSuffix(sc.Key, "-raw") || sc.Key == TCP || sc.Key == GRPC}
		for _, n := range r.Config.Callers {
			if sm, ok := r.Summary(sc.Key, n); ok {
				s.Points = append(s.Points, chart.Point{X: float64(n), Y: sm.PerSec})
			}
		}
		tp.Series = append(tp.Series, s)
	}
	if len(r.Config.Callers) == 1 {
		tp.X.Log = false
	}
	out = append(out, chartFile{"throughput.svg", "Throughput against callers", tp})

	for _, n := range r.Config.Callers {
		p := chart.Plot{
			Title:    fmt.Sprintf("Latency distribution, %s (CDF)", plural(n, "caller")),
			Subtitle: "every call of every round; log time axis",
			X:        chart.Axis{Label: "latency", Log: true, Format: chart.Seconds},
			Y:        chart.Axis{Label: "fraction of calls at most this slow", Min: 0, Max: 1, Format: func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }},
		}
		for _, sc := range r.Scenarios {
			sm, ok := r.Summary(sc.Key, n)
			if !ok {
				continue
			}
			p.Series = append(p.Series, chart.Series{Name: sc.Key, Points: cdf(sm.Latencies, 200), Dashed: strings.HasSuffix(sc.Key, "-raw") || sc.Key == TCP || sc.Key == GRPC})
		}
		out = append(out, chartFile{fmt.Sprintf("latency-cdf-%d.svg", n), fmt.Sprintf("Latency CDF, %s", plural(n, "caller")), p})
	}

	if len(r.Thesis) > 0 {
		lo := math.Inf(1)
		for _, t := range r.Thesis {
			if len(t.Result.Latencies) > 0 {
				lo = math.Min(lo, t.Result.Latencies[0].Seconds())
			}
		}
		lo = math.Pow(10, math.Floor(math.Log10(lo)))
		hi := 10.0
		const perDecade = 10
		var edges []float64
		for e := math.Log10(lo); e <= math.Log10(hi)+1e-9; e += 1.0 / perDecade {
			edges = append(edges, math.Pow(10, e))
		}
		p := chart.Plot{
			Title:    fmt.Sprintf("The thesis's experiment: %d trivial calls over durable AMQP", r.Config.ThesisN),
			Subtitle: fmt.Sprintf("latency histogram, %d bins per decade; the thesis: mean %.3f s, σ %.3f s (normal)", perDecade, ThesisMean, ThesisStddev),
			X:        chart.Axis{Label: "latency", Log: true, Format: chart.Seconds, Min: lo, Max: hi},
			Y:        chart.Axis{Label: "calls per bin", Log: true, Min: 1, Max: math.Pow(10, math.Ceil(math.Log10(float64(r.Config.ThesisN))))},
		}
		for _, t := range r.Thesis {
			secs := make([]float64, len(t.Result.Latencies))
			for i, l := range t.Result.Latencies {
				secs[i] = l.Seconds()
			}
			p.Bars = append(p.Bars, chart.Bars{Name: fmt.Sprintf("bankrpc, %d in flight", t.InFlight), Edges: edges, Counts: histogram(secs, edges)})
			p.Lines = append(p.Lines, chart.VLine{X: t.Result.Mean.Seconds(), Label: fmt.Sprintf("mean %s", fmtDur(t.Result.Mean))})
		}
		normal := make([]float64, len(edges)-1)
		for i := range normal {
			normal[i] = float64(r.Config.ThesisN) * (phi((edges[i+1]-ThesisMean)/ThesisStddev) - phi((edges[i]-ThesisMean)/ThesisStddev))
		}
		p.Bars = append(p.Bars, chart.Bars{Name: "thesis (normal fit)", Edges: edges, Counts: normal, Color: "#888888"})
		p.Lines = append(p.Lines, chart.VLine{X: ThesisMean, Label: "thesis mean 1.975 s"})
		out = append(out, chartFile{"thesis.svg", "The thesis's experiment", p})
	}
	return out
}

// WriteDir writes report.md and the charts into dir.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range r.chartFiles() {
		svg, err := f.plot.SVG()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), svg, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte("# bankrpc benchmark report\n\n"+r.Markdown(true)), 0o644)
}

// cdf returns up to points points (latency in seconds, fraction at most
// that slow) of sorted latencies.
func cdf(sorted []time.Duration, points int) []chart.Point {
	if len(sorted) == 0 {
		return nil
	}
	var out []chart.Point
	for i := 0; i <= points; i++ {
		q := float64(i) / float64(points)
		idx := min(len(sorted)-1, int(q*float64(len(sorted)-1)))
		out = append(out, chart.Point{X: sorted[idx].Seconds(), Y: float64(idx+1) / float64(len(sorted))})
	}
	return out
}

func histogram(xs, edges []float64) []float64 {
	counts := make([]float64, len(edges)-1)
	for _, x := range xs {
		i, _ := slices.BinarySearch(edges, x)
		// edges[i-1] <= x < edges[i], or x == edges[i]
		if i < len(edges) && edges[i] == x {
			i++
		}
		if i >= 1 && i <= len(counts) {
			counts[i-1]++
		}
	}
	return counts
}

// phi is the standard normal distribution function.
func phi(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

func header(b *strings.Builder, first string, callers []int, col func(int) string) {
	cols := []string{first}
	for _, n := range callers {
		cols = append(cols, col(n))
	}
	line(b, cols)
	b.WriteString("|" + strings.Repeat("---|", len(cols)) + "\n")
}

func line(b *strings.Builder, cols []string) {
	b.WriteString("| " + strings.Join(cols, " | ") + " |\n")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// fmtDur prints a duration with three significant digits: 124 µs, 1.21 ms.
func fmtDur(d time.Duration) string {
	s := d.Seconds()
	unit, v := "s", s
	switch {
	case s < 1e-6:
		unit, v = "ns", s*1e9
	case s < 1e-3:
		unit, v = "µs", s*1e6
	case s < 1:
		unit, v = "ms", s*1e3
	}
	return sig3(v) + " " + unit
}

// fmtRate prints calls per second as the issue does: 26.2k, 984.
func fmtRate(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtBytes(v float64) string {
	switch av := math.Abs(v); {
	case av >= 1<<30:
		return sig3(v/(1<<30)) + " GiB"
	case av >= 1<<20:
		return sig3(v/(1<<20)) + " MiB"
	case av >= 1<<10:
		return sig3(v/(1<<10)) + " KiB"
	default:
		return sig3(v) + " B"
	}
}

func sig3(v float64) string {
	switch av := math.Abs(v); {
	case av >= 100:
		return fmt.Sprintf("%.0f", v)
	case av >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
