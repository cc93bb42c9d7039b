package ratelog_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/internal/ratelog"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func TestAFloodGivesABurstAndOneSummary(t *testing.T) {
	var out syncBuffer
	r := ratelog.New(slog.New(slog.NewTextHandler(&out, nil)), 5, 100*time.Millisecond)
	for range 10000 {
		r.Log(context.Background(), slog.LevelWarn, "garbage", "refused a request frame", "bytes", 3)
	}
	r.Log(context.Background(), slog.LevelWarn, "oversized", "refused an oversized frame")
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "summary") }, 2*time.Second, 5*time.Millisecond)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	assert.Len(t, lines, 5+1+1, "5 lines of the burst, 1 of another kind, 1 summary: %s", out.String())
	assert.Contains(t, out.String(), "suppressed=9995")

	// A new interval logs again.
	r.Log(context.Background(), slog.LevelWarn, "garbage", "refused a request frame")
	assert.Len(t, strings.Split(strings.TrimSpace(out.String()), "\n"), 8)
}

func TestDisabledLevelsCostNothing(t *testing.T) {
	var out syncBuffer
	r := ratelog.New(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})), 1, time.Hour)
	r.Log(context.Background(), slog.LevelDebug, "k", "debug line")
	assert.Empty(t, out.String())
}
