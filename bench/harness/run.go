// Package harness runs issue 16's benchmark: every row of its table in one
// process and one run (raw TCP, grpc-go, raw ZeroMQ, bankrpc over ZeroMQ
// with an in-memory and with the durable bank, raw durable AMQP, bankrpc
// over AMQP), closed-loop callers at several levels, paired rounds and
// medians of the per-round ratios; the inproc per-call cost; the
// thesis's experiment; the memory figures; and writes the tables
// (markdown) and the charts (SVG).
package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp/amqpbench"
)

// Config says what to measure and for how long.
type Config struct {
	Callers  []int
	Duration time.Duration // measured per cell
	WarmUp   time.Duration // before each cell
	Rounds   int           // paired rounds per callers level
	// Only, when set, limits the rows to these scenario keys.
	Only []string
	// AMQPURL is the broker of the amqp rows, the thesis experiment and the
	// amqp memory figure; "" skips them (and says so).
	AMQPURL string
	// ThesisN calls per thesis experiment (0 skips it).
	ThesisN int
	// FsyncSamples fdatasyncs measured per round (0 skips the measure).
	FsyncSamples int
	// InprocTime per inproc round (0 skips it); InprocRounds rounds, at
	// GOMAXPROCS 1 and 2.
	InprocTime   time.Duration
	InprocRounds int
	// MemClients idle ZeroMQ clients and MemQueued queued AMQP requests
	// for the memory figures (0 skips each).
	MemClients int
	MemQueued  int
	// Progress receives the progress bar (stderr); nil for none.
	Progress io.Writer
	// TempDir for the durable bank's files; "" takes os.TempDir.
	TempDir string
}

// Cell is one measurement of one scenario at one callers level.
type Cell struct {
	Scenario string
	Callers  int
	Round    int
	Result   loadgen.Result
	Cost     Cost
}

// Cost is what the whole process (callers and server) spent per call
// during a measurement: Go heap bytes and objects allocated, CPU time.
// libzmq's C allocations and the broker's work are not in it.
type Cost struct {
	BytesPerCall  float64
	AllocsPerCall float64
	CPUPerCall    time.Duration
}

// ThesisResult is the thesis's experiment at one number of calls in flight.
type ThesisResult struct {
	InFlight int
	Result   loadgen.Result
}

// Report is everything one run measured.
type Report struct {
	Config    Config
	Machine   Machine
	Scenarios []Scenario // those measured, in order
	Skipped   []string   // why rows or parts were skipped
	// Failed holds the memory figures that could not be taken, and why:
	// the run goes on without them, and the report says so loudly.
	Failed []string
	Cells  []Cell
	Fsync  FsyncResult
	Inproc []InprocResult
	Thesis []ThesisResult
	// Segments: a lone call split at its sockets, raw and bankrpc, one
	// pair per round (when both zmq rows run at 1 caller).
	Segments  []SegmentPair
	ZMQMemory []ZMQMemory
	AMQPMem   *AMQPMemory
	Started   time.Time
	Elapsed   time.Duration
}

// costObserver measures Cost over loadgen's measured span.
type costObserver struct {
	before   runtime.MemStats
	cpu0     time.Duration
	cost     Cost
	observed bool
}

func (o *costObserver) Begin() {
	runtime.ReadMemStats(&o.before)
	o.cpu0 = processCPU()
}

func (o *costObserver) End(r loadgen.Result) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	cpu := processCPU() - o.cpu0
	o.observed = true
	if r.Requests == 0 {
		return
	}
	n := float64(r.Requests)
	o.cost = Cost{
		BytesPerCall:  float64(after.TotalAlloc-o.before.TotalAlloc) / n,
		AllocsPerCall: float64(after.Mallocs-o.before.Mallocs) / n,
		CPUPerCall:    time.Duration(float64(cpu) / n),
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run measures everything cfg asks for. It fails at the first measurement
// that fails, with what was measured so far; it fails too when an AMQP URL
// is given and no broker answers there.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Callers) == 0 || cfg.Rounds < 1 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("harness: need callers, rounds >= 1 and a positive duration (got %v, %d, %v)", cfg.Callers, cfg.Rounds, cfg.Duration)
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	rep := &Report{Config: cfg, Machine: ReadMachine(), Started: time.Now()}
	defer func() { rep.Elapsed = time.Since(rep.Started) }()
	env := &Env{AMQPURL: cfg.AMQPURL, TempDir: cfg.TempDir}
	if cfg.AMQPURL == "" {
		rep.Skipped = append(rep.Skipped, "the amqp rows, the thesis experiment and the amqp memory figure: BANKRPC_AMQP_URL is not set (no broker)")
	} else if err := reachable(cfg.AMQPURL); err != nil {
		return rep, err
	}
	for _, sc := range Scenarios() {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, sc.Key) {
			continue
		}
		if sc.Broker && cfg.AMQPURL == "" {
			continue
		}
		rep.Scenarios = append(rep.Scenarios, sc)
	}
	for _, k := range cfg.Only {
		if !slices.ContainsFunc(Scenarios(), func(s Scenario) bool { return s.Key == k }) {
			return rep, fmt.Errorf("harness: unknown scenario %q", k)
		}
	}

	prog := newProgress(cfg.Progress, rep.steps())
	defer prog.finish()
	hasBank := slices.ContainsFunc(rep.Scenarios, func(s Scenario) bool { return s.Key == ZMQBank })
	for _, callers := range cfg.Callers {
		for round := range cfg.Rounds {
			if hasBank && cfg.FsyncSamples > 0 {
				if err := rep.Fsync.measure(cfg.TempDir, cfg.FsyncSamples); err != nil {
					return rep, fmt.Errorf("fsync: %w", err)
				}
			}
			for _, sc := range rep.Scenarios {
				prog.step(fmt.Sprintf("%s, %d callers, round %d/%d", sc.Key, callers, round+1, cfg.Rounds))
				obs := &costObserver{}
				cctx := loadgen.WithObserver(loadgen.WithWarmUp(ctx, cfg.WarmUp), obs)
				res, err := sc.Run(cctx, env, callers, cfg.Duration)
				if err != nil {
					return rep, fmt.Errorf("%s, %d callers: %w", sc.Name, callers, err)
				}
				if res.Requests == 0 {
					return rep, fmt.Errorf("%s, %d callers: no call completed in %v", sc.Name, callers, cfg.Duration)
				}
				rep.Cells = append(rep.Cells, Cell{Scenario: sc.Key, Callers: callers, Round: round, Result: res, Cost: obs.cost})
			}
		}
	}
	if rep.measuresSegments() {
		for round := range cfg.Rounds {
			prog.step(fmt.Sprintf("zmq segments of a lone call, round %d/%d", round+1, cfg.Rounds))
			p, err := measureSegments(ctx, round, cfg.Duration)
			if err != nil {
				return rep, fmt.Errorf("zmq segments: %w", err)
			}
			rep.Segments = append(rep.Segments, p)
		}
	}
	if cfg.InprocTime > 0 {
		for _, cpu := range []int{1, 2} {
			prog.step(fmt.Sprintf("inproc, -cpu %d", cpu))
			r, err := measureInproc(cpu, max(cfg.InprocRounds, 1), cfg.InprocTime)
			if err != nil {
				return rep, fmt.Errorf("inproc: %w", err)
			}
			rep.Inproc = append(rep.Inproc, r)
		}
	}
	if cfg.AMQPURL != "" && cfg.ThesisN > 0 {
		for _, inFlight := range []int{1, 16} {
			prog.step(fmt.Sprintf("thesis experiment, %d in flight", inFlight))
			r, err := amqpbench.RunThesis(ctx, cfg.AMQPURL, cfg.ThesisN, inFlight)
			if err != nil {
				return rep, fmt.Errorf("thesis experiment, %d in flight: %w", inFlight, err)
			}
			rep.Thesis = append(rep.Thesis, ThesisResult{InFlight: inFlight, Result: r})
		}
	}
	if cfg.MemClients > 0 {
		for _, raw := range []bool{true, false} {
			prog.step(fmt.Sprintf("memory: %d idle zmq clients (raw %v)", cfg.MemClients, raw))
			m, err := measureZMQMemory(ctx, raw, cfg.MemClients)
			if err != nil {
				rep.Failed = append(rep.Failed, fmt.Sprintf("memory of the %s with %d idle zmq clients: %v", m.Server, cfg.MemClients, err))
				continue
			}
			rep.ZMQMemory = append(rep.ZMQMemory, m)
		}
	}
	if cfg.MemQueued > 0 && cfg.AMQPURL != "" {
		prog.step(fmt.Sprintf("memory: %d requests waiting in an amqp queue", cfg.MemQueued))
		m, err := measureAMQPMemory(ctx, cfg.AMQPURL, cfg.MemQueued)
		if err != nil {
			rep.Failed = append(rep.Failed, fmt.Sprintf("memory with %d requests queued in amqp: %v", cfg.MemQueued, err))
		} else {
			rep.AMQPMem = &m
		}
	}
	return rep, nil
}

// steps counts the progress bar's steps.
func (r *Report) steps() int {
	c := r.Config
	n := len(c.Callers) * c.Rounds * len(r.Scenarios)
	if r.measuresSegments() {
		n += c.Rounds
	}
	if c.InprocTime > 0 {
		n += 2
	}
	if c.AMQPURL != "" && c.ThesisN > 0 {
		n += 2
	}
	if c.MemClients > 0 {
		n += 2
	}
	if c.MemQueued > 0 && c.AMQPURL != "" {
		n++
	}
	return n
}

// reachable fails when nothing answers at the broker URL's address.
func reachable(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("bad broker URL %q: %w", rawURL, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return fmt.Errorf("BANKRPC_AMQP_URL is set but no broker answers at %s (start one with scripts/broker.sh, or unset it to skip the amqp rows): %w", host, err)
	}
	return c.Close()
}

// progress draws a bar on a terminal-like writer.
type progress struct {
	w     io.Writer
	total int
	done  int
	start time.Time
	last  string
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, total: total, start: time.Now()}
}

// step announces the step about to run.
func (p *progress) step(what string) {
	if p.w == nil {
		return
	}
	const width = 30
	filled := width * p.done / max(p.total, 1)
	elapsed := time.Since(p.start).Round(time.Second)
	eta := ""
	if p.done > 0 {
		left := time.Duration(float64(time.Since(p.start)) / float64(p.done) * float64(p.total-p.done)).Round(time.Second)
		eta = fmt.Sprintf(", ~%v left", left)
	}
	line := fmt.Sprintf("[%s%s] %d/%d %v%s  %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.done, p.total, elapsed, eta, what)
	pad := ""
	if len(line) < len(p.last) {
		pad = strings.Repeat(" ", len(p.last)-len(line))
	}
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.last = line
	p.done++
}

func (p *progress) finish() {
	if p.w == nil || p.last == "" {
		return
	}
	fmt.Fprintf(p.w, "\r%s\r[%s] %d/%d done in %v\n", strings.Repeat(" ", len(p.last)), strings.Repeat("#", 30), p.done, p.total, time.Since(p.start).Round(time.Second))
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int
	CPUModel  string
	Kernel    string
	GoVersion string
	LoadAvg   string // at the start: a busy machine shows here
	OpenFiles string // the soft and hard limit of open files
}

// ReadMachine reads the machine's description (Linux /proc).
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		m.OpenFiles = fmt.Sprintf("%d soft, %d hard", rl.Cur, rl.Max)
	}
	return m
}
