package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPrintsTheTablesAndWritesTheReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "results")
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"-only", "tcp,zmq-raw,zmq", "-callers", "1,2", "-duration", "30ms", "-warmup", "0", "-rounds", "2",
		"-thesis", "0", "-mem-clients", "0", "-mem-queued", "0", "-inproc", "0", "-amqp-url", "", "-out", dir}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "| raw TCP echo (length prefix + protobuf) |")
	assert.Contains(t, out.String(), "bankrpc zmq ÷ raw zmq, throughput")
	assert.Contains(t, out.String(), "Report and charts written to")
	assert.Contains(t, errOut.String(), "SKIPPING the amqp rows", "no broker: said loudly")
	assert.Contains(t, errOut.String(), "done in", "the progress bar goes to stderr")
	for _, f := range []string{"report.md", "throughput.svg", "latency-cdf-1.svg", "latency-cdf-2.svg"} {
		_, err := os.Stat(filepath.Join(dir, f))
		assert.NoError(t, err, f)
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"-callers", "1,x"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "-callers")
	assert.Equal(t, 2, run(context.Background(), []string{"-no-such-flag"}, &out, &errOut))
}
