package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/logging"
	_ "github.com/bankrpc/bankrpc/transport/inproc" // registers inproc://
)

type service struct {
	testv1.UnimplementedTestServiceServer
}

func (service) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Tag: in.GetTag()}, nil
}

func (service) Fail(_ context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// lines returns the lines written, decoded.
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// where keeps the lines whose field k is v.
func where(lines []map[string]any, k string, v any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l[k] == v {
			out = append(out, l)
		}
	}
	return out
}

var endpoints atomic.Int64

// pair serves service with logging to a server log and dials it with
// logging to a client log, both at level.
func pair(t *testing.T, level slog.Level, cfg logging.Config) (srv *bankrpc.Server, c testv1.TestServiceClient, srvLog, cliLog *logBuffer) {
	t.Helper()
	srvLog, cliLog = &logBuffer{}, &logBuffer{}
	newLogger := func(w *logBuffer) *slog.Logger {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := fmt.Sprintf("inproc://logging-%d", endpoints.Add(1))
	srv = bankrpc.NewServer(logging.NewHandler(newLogger(srvLog), cfg).Option())
	testv1.RegisterTestServiceServer(srv, service{})
	l, err := bankrpc.Listen(ctx, addr)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, addr, logging.NewHandler(newLogger(cliLog), cfg).Option())
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return srv, testv1.NewTestServiceClient(conn), srvLog, cliLog
}

func TestOneLinePerCallAtDebug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, c, srvLog, cliLog := pair(t, slog.LevelDebug, logging.Config{})
	_, err := c.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("call-ok"))
	require.NoError(t, err)
	_, err = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound), Message: "no account 7"}, bankrpc.WithCallID("call-nf"))
	require.Error(t, err)
	_, err = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.Internal), Message: "disk on fire"}, bankrpc.WithCallID("call-int"))
	require.Error(t, err)

	for side, log := range map[string]*logBuffer{"server": srvLog, "client": cliLog} {
		lines := log.lines(t)
		require.Len(t, lines, 3, "%s: one line per call", side)
		ok := where(lines, "call_id", "call-ok")[0]
		assert.Equal(t, "DEBUG", ok["level"])
		assert.Equal(t, "finished call", ok["msg"])
		assert.Equal(t, side, ok["side"])
		assert.Equal(t, testv1.TestService_Echo_FullMethodName, ok["method"])
		assert.Equal(t, "OK", ok["code"])
		assert.Contains(t, ok, "duration")
		assert.NotContains(t, ok, "error")

		nf := where(lines, "call_id", "call-nf")[0]
		assert.Equal(t, "DEBUG", nf["level"], "%s: an application's answer is no warning", side)
		assert.Equal(t, "NOT_FOUND", nf["code"])
		assert.Equal(t, "no account 7", nf["error"])

		in := where(lines, "call_id", "call-int")[0]
		assert.Equal(t, "WARN", in["level"], "%s: the server's failure is a warning", side)
		assert.Equal(t, "INTERNAL", in["code"])
	}
	peer, ok := where(srvLog.lines(t), "call_id", "call-ok")[0]["peer"].(map[string]any)
	require.True(t, ok, "the server's line names the peer")
	assert.Equal(t, "inproc", peer["transport"])
}

func TestInfoLevelShowsOnlyWarnings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, c, srvLog, _ := pair(t, slog.LevelInfo, logging.Config{})
	for range 5 {
		_, err := c.Echo(ctx, &testv1.EchoRequest{})
		require.NoError(t, err)
	}
	_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.DataLoss), Message: "lost"})
	require.Error(t, err)
	lines := srvLog.lines(t)
	require.Len(t, lines, 1)
	assert.Equal(t, "DATA_LOSS", lines[0]["code"])
}

func frame(t *testing.T, callID, method string, deadline time.Time) []byte {
	t.Helper()
	payload, err := proto.Marshal(&testv1.EchoRequest{})
	require.NoError(t, err)
	var dl int64
	if !deadline.IsZero() {
		dl = deadline.UnixNano()
	}
	return envelope.AppendRequest(nil, callID, method, payload, dl, nil, 0)
}

// TestRefusedCallsAreLoggedRateLimited: calls refused before a handler ran
// get a line saying why, at most a burst per reason per interval, then a
// summary.
func TestRefusedCallsAreLoggedRateLimited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, _, srvLog, _ := pair(t, slog.LevelDebug, logging.Config{Burst: 3, Interval: 200 * time.Millisecond})

	_, err := srv.HandleFrame(ctx, frame(t, "expired-1", testv1.TestService_Echo_FullMethodName, time.Now().Add(-time.Second)))
	require.NoError(t, err)
	for i := range 100 {
		_, err := srv.HandleFrame(ctx, frame(t, fmt.Sprintf("u-%d", i), "/no.Such/Method", time.Time{}))
		require.NoError(t, err)
	}
	_, err = srv.HandleFrame(ctx, []byte("garbage"))
	require.Error(t, err)

	lines := srvLog.lines(t)
	expired := where(lines, "refused", "expired")
	require.Len(t, expired, 1)
	assert.Equal(t, "expired-1", expired[0]["call_id"])
	assert.Equal(t, "DEADLINE_EXCEEDED", expired[0]["code"])
	assert.Len(t, where(lines, "refused", "unknown method"), 3, "a burst of 3")
	assert.Len(t, where(lines, "refused", "malformed frame"), 1)

	require.Eventually(t, func() bool {
		return len(where(srvLog.lines(t), "suppressed", float64(97))) == 1
	}, 5*time.Second, 10*time.Millisecond, "one summary of the 97 left out")
}

// TestDuplicatesSaySo: a call answered from the reply cache is logged as a
// duplicate.
func TestDuplicatesSaySo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, c, srvLog, _ := pair(t, slog.LevelDebug, logging.Config{})
	for range 2 {
		_, err := c.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("same"))
		require.NoError(t, err)
	}
	lines := where(srvLog.lines(t), "call_id", "same")
	require.Len(t, lines, 2)
	assert.NotContains(t, lines[0], "duplicate")
	assert.Equal(t, true, lines[1]["duplicate"])
}

func TestCustomLevel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	everythingAtError := func(*bankrpc.CallInfo, *bankrpc.CallEnd) slog.Level { return slog.LevelError }
	_, c, srvLog, cliLog := pair(t, slog.LevelError, logging.Config{Level: everythingAtError})
	_, err := c.Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Len(t, srvLog.lines(t), 1)
	assert.Len(t, cliLog.lines(t), 1)
}
