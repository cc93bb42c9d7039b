package harness_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/bench/harness"
	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// The memory figures re-execute this binary as their server and clients.
func TestMain(m *testing.M) {
	harness.RunChildIfAsked()
	os.Exit(m.Run())
}

// brokerURL is BANKRPC_AMQP_URL; when it is unset the amqp rows are skipped,
// loudly. When it is set and no broker answers, Run fails, and so does the
// test.
func brokerURL(t *testing.T) string {
	url := os.Getenv("BANKRPC_AMQP_URL")
	if url == "" {
		t.Log("SKIPPING the amqp rows, the thesis experiment and the amqp memory figure: BANKRPC_AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/)")
	}
	return url
}

// TestRunIsWellFormed runs every part of the benchmark with tiny durations
// and counts, and checks that what it reports is well formed: every row at
// every level, positive finite rates, ordered percentiles, sorted latencies,
// finite ratios, the five targets, tables naming every row, charts that
// are SVG. It asserts no time.
func TestRunIsWellFormed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url := brokerURL(t)
	cfg := harness.Config{
		Callers: []int{1, 3}, Duration: 40 * time.Millisecond, WarmUp: 10 * time.Millisecond, Rounds: 2,
		AMQPURL: url, ThesisN: 30, FsyncSamples: 3, InprocTime: 10 * time.Millisecond, InprocRounds: 2,
		MemClients: 12, MemQueued: 80, TempDir: t.TempDir(),
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := harness.Run(ctx, cfg)
	require.NoError(t, err)
	require.Empty(t, rep.Failed)

	want := []string{harness.TCP, harness.GRPC, harness.ZMQRaw, harness.ZMQ, harness.ZMQBank}
	if url != "" {
		want = append(want, harness.AMQPRaw, harness.AMQP)
	} else {
		require.NotEmpty(t, rep.Skipped)
	}
	var got []string
	for _, sc := range rep.Scenarios {
		got = append(got, sc.Key)
	}
	require.Equal(t, want, got)
	require.Len(t, rep.Cells, len(want)*len(cfg.Callers)*cfg.Rounds)

	for _, c := range rep.Cells {
		r := c.Result
		assert.Positive(t, r.Requests, "%s/%d", c.Scenario, c.Callers)
		assert.Len(t, r.Latencies, r.Requests)
		assert.True(t, slices.IsSorted(r.Latencies))
		assert.Equal(t, c.Callers, r.Callers)
		finitePositive(t, r.PerSec, "%s/%d rate", c.Scenario, c.Callers)
		assert.Positive(t, r.P50)
		assert.LessOrEqual(t, r.P50, r.P99)
		assert.GreaterOrEqual(t, c.Cost.BytesPerCall, 0.0)
		assert.False(t, math.IsNaN(c.Cost.BytesPerCall) || math.IsInf(c.Cost.BytesPerCall, 0))
		assert.GreaterOrEqual(t, c.Cost.AllocsPerCall, 0.0)
		assert.GreaterOrEqual(t, c.Cost.CPUPerCall, time.Duration(0))
	}
	for _, key := range want {
		for _, n := range cfg.Callers {
			s, ok := rep.Summary(key, n)
			require.True(t, ok, "%s at %d callers", key, n)
			assert.Equal(t, cfg.Rounds, s.Rounds)
			finitePositive(t, s.PerSec, "%s/%d median rate", key, n)
			assert.LessOrEqual(t, s.P50, s.P99)
		}
	}
	for _, def := range harness.Ratios {
		for _, n := range cfg.Callers {
			q, ok := rep.Ratio(def, n)
			if !slices.Contains(want, def.Num) || !slices.Contains(want, def.Den) {
				assert.False(t, ok, "%s: a ratio of a row not measured", def.Name)
				continue
			}
			require.True(t, ok, def.Name)
			assert.Len(t, q.Rounds, cfg.Rounds)
			finitePositive(t, q.Median, def.Name)
			assert.Contains(t, q.Rounds, q.Median, "the median is one of the rounds' ratios")
		}
	}

	// A lone zmq call split at its sockets, one pair per round: every
	// segment lies within the call, the handler within the server's.
	require.Len(t, rep.Segments, cfg.Rounds)
	for _, p := range rep.Segments {
		for _, s := range []zmqbench.Segments{p.Raw, p.Bankrpc} {
			assert.Positive(t, s.Calls)
			assert.Positive(t, s.Out)
			assert.Positive(t, s.Back)
			assert.Positive(t, s.Total)
			assert.GreaterOrEqual(t, s.Total, max(s.Caller, s.Out, s.Server, s.Back, s.Return), "a segment longer than the call")
		}
		assert.Positive(t, p.Bankrpc.Handler, "bankrpc's handler is timed")
		assert.LessOrEqual(t, p.Bankrpc.Handler, p.Bankrpc.Server, "the handler runs within the server's segment")
		assert.Zero(t, p.Raw.Handler, "raw has no handler")
	}

	require.NotEmpty(t, rep.Fsync.Samples)
	assert.Positive(t, rep.Fsync.P50())
	assert.LessOrEqual(t, rep.Fsync.CPU, time.Duration(len(rep.Fsync.Samples))*rep.Fsync.P99()*2, "the thread's CPU fits in the time its fsyncs took")
	require.Len(t, rep.Inproc, 2)
	for _, in := range rep.Inproc {
		finitePositive(t, in.NsPerOp, "inproc ns/op")
		assert.Positive(t, in.AllocsPerOp)
	}
	require.Len(t, rep.ZMQMemory, 2)
	for _, m := range rep.ZMQMemory {
		assert.Equal(t, cfg.MemClients, m.Clients)
		assert.Positive(t, m.Idle.RSS)
		assert.Positive(t, m.Loaded.RSS)
		assert.Positive(t, m.Loaded.Goroutines)
	}
	if url != "" {
		require.Len(t, rep.Thesis, 2)
		for _, th := range rep.Thesis {
			assert.Equal(t, cfg.ThesisN, th.Result.Requests)
			assert.Len(t, th.Result.Latencies, cfg.ThesisN)
			assert.LessOrEqual(t, th.Result.P50, th.Result.P99)
		}
		require.NotNil(t, rep.AMQPMem)
		assert.Positive(t, rep.AMQPMem.Waiting.RSS)
		assert.GreaterOrEqual(t, rep.AMQPMem.InQueue, cfg.MemQueued-64)
	}

	targets := rep.Targets()
	require.Len(t, targets, 5)
	for i, tg := range targets {
		assert.Equal(t, i+1, tg.Number)
		assert.Contains(t, []string{"yes", "no", "no (partly measured)", "yes (partly measured)", "not measured", "reported"}, tg.Met, "target %d", tg.Number)
	}
	// 64 callers were not measured: target 2's first half and target 3 say so.
	assert.Contains(t, targets[1].Met, "partly measured")

	md := rep.Markdown(true)
	for _, sc := range rep.Scenarios {
		assert.Contains(t, md, sc.Name)
	}
	assert.Contains(t, md, "Issue 16's targets")
	assert.Contains(t, md, "Where a lone call's time goes")
	for _, bad := range []string{"NaN", "Inf", "%!"} {
		assert.NotContains(t, md, bad)
	}
	if url == "" {
		assert.Contains(t, md, "SKIPPED")
	}
	assert.Contains(t, progress.String(), "done in")

	dir := t.TempDir()
	require.NoError(t, rep.WriteDir(dir))
	svgs, err := filepath.Glob(filepath.Join(dir, "*.svg"))
	require.NoError(t, err)
	wantCharts := 1 + len(cfg.Callers)
	if url != "" {
		wantCharts++ // the thesis histogram
	}
	assert.Len(t, svgs, wantCharts)
	for _, f := range svgs {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		wellFormedSVG(t, b)
		assert.Contains(t, md, filepath.Base(f), "report.md links %s", filepath.Base(f))
	}
	report, err := os.ReadFile(filepath.Join(dir, "report.md"))
	require.NoError(t, err)
	assert.Contains(t, string(report), "Issue 16's targets")
}

func TestUnreachableBrokerFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := harness.Run(ctx, harness.Config{Callers: []int{1}, Duration: 10 * time.Millisecond, Rounds: 1, AMQPURL: "amqp://guest:guest@127.0.0.1:1/", Only: []string{harness.TCP}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no broker answers")
}

func TestUnknownScenarioFails(t *testing.T) {
	_, err := harness.Run(context.Background(), harness.Config{Callers: []int{1}, Duration: 10 * time.Millisecond, Rounds: 1, Only: []string{"carrier-pigeon"}})
	require.ErrorContains(t, err, "carrier-pigeon")
}

func finitePositive(t *testing.T, v float64, msgAndArgs ...any) {
	t.Helper()
	assert.False(t, math.IsNaN(v) || math.IsInf(v, 0), msgAndArgs...)
	assert.Positive(t, v, msgAndArgs...)
}

// wellFormedSVG checks that b is well-formed XML whose root is <svg>.
func wellFormedSVG(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	assert.Equal(t, "svg", root)
	assert.False(t, strings.Contains(string(b), "NaN"), "no NaN coordinates")
}
