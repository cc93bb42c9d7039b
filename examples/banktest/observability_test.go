package banktest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// dialBank opens a bankrpc connection to the ZeroMQ server s.
func dialBank(t *testing.T, s *server) (bankv1.BankClient, *bankrpc.Conn) {
	t.Helper()
	ct, err := zmq.Dial(s.ref.addr, zmq.ClientConfig{})
	require.NoError(t, err)
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(5*time.Second))
	t.Cleanup(func() { _ = conn.Close() })
	return bankv1.NewBankClient(conn), conn
}

// rawExchange sends frames to the ZeroMQ server s from a DEALER socket of
// its own and returns the frames of the reply (nil when none comes within
// 5 s).
func rawExchange(t *testing.T, s *server, frames ...any) [][]byte {
	t.Helper()
	zctx, err := zmq4.NewContext()
	require.NoError(t, err)
	sock, err := zctx.NewSocket(zmq4.DEALER)
	require.NoError(t, err)
	defer func() {
		assert.NoError(t, sock.Close())
		assert.NoError(t, zctx.Term())
	}()
	require.NoError(t, sock.SetLinger(0))
	require.NoError(t, sock.SetRcvtimeo(5*time.Second))
	require.NoError(t, sock.Connect(s.ref.addr))
	_, err = sock.SendMessage(frames...)
	require.NoError(t, err)
	reply, err := sock.RecvMessageBytes(0)
	if err != nil {
		return nil
	}
	return reply
}

// scrape reads the Prometheus text exposition at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// value returns the value of the series of family name whose labels are
// exactly labels (a counter's or a gauge's), and whether there is one.
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsCountEveryCall is issue 13's process test: bank-server with
// --metrics-addr, a known mix of calls — successes, FAILED_PRECONDITION,
// NOT_FOUND, a request that arrives expired, a garbage frame and a message
// the transport refuses — and the exact counts per label set on /metrics.
func TestMetricsCountEveryCall(t *testing.T) {
	ctx := testContext(t, time.Minute)
	dir := t.TempDir()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "metrics"},
		filepath.Join(dir, "data"), "--metrics-addr", metricsAddr)
	bank, _ := dialBank(t, srv)

	_, err := bank.Open(ctx, &bankv1.OpenRequest{AccountId: 1})
	require.NoError(t, err)
	_, err = bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: 1, Amount: 100})
	require.NoError(t, err)
	_, err = bank.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 1, Amount: 1000})
	require.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "%v", err)
	_, err = bank.Transfer(ctx, &bankv1.TransferRequest{AccountId: 1, ToAccountId: 999, Amount: 10})
	require.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(err), "%v", err)

	// A deposit whose deadline passed before the server read it.
	payload, err := proto.Marshal(&bankv1.DepositRequest{AccountId: 1, Amount: 5})
	require.NoError(t, err)
	expired := envelope.AppendRequest(nil, "expired-1", bankv1.Bank_Deposit_FullMethodName, payload, time.Now().Add(-time.Minute).UnixNano(), nil, 0)
	reply := rawExchange(t, srv, "expired-1", expired)
	require.Len(t, reply, 2, "the expired call is answered")
	var res envelope.ResultView
	require.NoError(t, envelope.DecodeResultView(reply[1], 1<<20, &res))
	require.Equal(t, uint32(bankrpc.DeadlineExceeded), res.Code)

	// Garbage where an envelope should be: answered INVALID_ARGUMENT.
	reply = rawExchange(t, srv, "junk-1", "\xff\xff\xff garbage")
	require.Len(t, reply, 2, "the garbage frame is answered")
	require.NoError(t, envelope.DecodeResultView(reply[1], 1<<20, &res))
	require.Equal(t, uint32(bankrpc.InvalidArgument), res.Code)

	// A message with more routing frames than a reply can carry: refused
	// by the transport, unanswered.
	frames := make([]any, 20)
	for i := range frames {
		frames[i] = "frame"
	}
	require.Nil(t, rawExchange(t, srv, frames...))

	bankSvc := func(method string, more ...string) map[string]string {
		l := map[string]string{"service": "bank.v1.Bank", "method": method}
		for i := 0; i+1 < len(more); i += 2 {
			l[more[i]] = more[i+1]
		}
		return l
	}
	unknown := func(more ...string) map[string]string {
		l := bankSvc("unknown", more...)
		l["service"] = "unknown"
		return l
	}
	for _, want := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"bankrpc_server_started_total", bankSvc("Open"), 1},
		{"bankrpc_server_started_total", bankSvc("Deposit"), 2},
		{"bankrpc_server_started_total", bankSvc("Withdraw"), 1},
		{"bankrpc_server_started_total", bankSvc("Transfer"), 1},
		{"bankrpc_server_started_total", bankSvc("Balance"), 0},
		{"bankrpc_server_started_total", unknown(), 1},
		{"bankrpc_server_handled_total", bankSvc("Open", "code", "OK"), 1},
		{"bankrpc_server_handled_total", bankSvc("Deposit", "code", "OK"), 1},
		{"bankrpc_server_handled_total", bankSvc("Deposit", "code", "DEADLINE_EXCEEDED"), 1},
		{"bankrpc_server_handled_total", bankSvc("Withdraw", "code", "FAILED_PRECONDITION"), 1},
		{"bankrpc_server_handled_total", bankSvc("Transfer", "code", "NOT_FOUND"), 1},
		{"bankrpc_server_handled_total", unknown("code", "INVALID_ARGUMENT"), 1},
		{"bankrpc_server_refused_total", bankSvc("Deposit", "reason", "expired"), 1},
		{"bankrpc_server_refused_total", unknown("reason", "malformed frame"), 1},
		{"bankrpc_server_in_flight", bankSvc("Deposit"), 0},
		{"bankrpc_transport_events_total", map[string]string{"transport": "zmq", "kind": "refused_frame", "reason": "routing frames"}, 1},
	} {
		// The last refusal is counted when the server reads it, which the
		// test cannot see: wait for it.
		var got float64
		var ok bool
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, ok = value(scrape(t, "http://"+metricsAddr+"/metrics"), want.name, want.labels)
			if (ok && got == want.value) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		assert.True(t, ok, "%s%v: no such series", want.name, want.labels)
		assert.Equal(t, want.value, got, "%s%v", want.name, want.labels)
	}
	families := scrape(t, "http://"+metricsAddr+"/metrics")
	var handled float64
	for _, m := range families["bankrpc_server_handled_total"].GetMetric() {
		handled += m.GetCounter().GetValue()
	}
	assert.Equal(t, float64(6), handled, "no call counted twice or left out")
	srv.stop(t)
}

// health runs bank-client health against s and returns its result.
func health(t *testing.T, dir string, s *server) result {
	t.Helper()
	return runClient(t, dir, s.ref, "--timeout", "2s", "health")
}

// TestHealthNotServingDuringDrain: after SIGTERM, bank-server keeps serving
// for --drain-delay with health NOT_SERVING, so that probes turn traffic
// away, then drains and exits 0; bank-client health exits 1 meanwhile.
func TestHealthNotServingDuringDrain(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "drain"},
		filepath.Join(dir, "data"), "--drain-delay", "3s")
	r := health(t, dir, srv)
	require.Equal(t, 0, r.status, "%v", r)
	assert.Equal(t, "SERVING\n", r.stdout)

	srv.signal(t, syscall.SIGTERM)
	require.Eventually(t, func() bool { return strings.Contains(srv.stderr.String()+srv.stdout.String(), "NOT_SERVING") },
		5*time.Second, 10*time.Millisecond, "the server says it turned NOT_SERVING")
	r = health(t, dir, srv)
	assert.Equal(t, 1, r.status, "%v", r)
	assert.Equal(t, "NOT_SERVING\n", r.stdout, "%v", r)
	assert.Contains(t, mustRun(t, dir, srv.ref, "--id", "3", "deposit", "5"), "balance 5", "calls are still served while draining")
	require.Equal(t, 0, srv.wait(t, 20*time.Second), "stderr:\n%s", srv.stderr.String())

	r = health(t, dir, srv)
	assert.Equal(t, 1, r.status, "nobody answers: not healthy: %v", r)
}

// TestHealthNotServingWhenDiskFull: a bank whose disk fills up turns health
// NOT_SERVING (bank-client health exits 1) and refuses writes with the
// reason; restarted on the same data with space again, it serves and is
// SERVING, with every acknowledged deposit kept. It needs a small tmpfs,
// which only root may mount.
func TestHealthNotServingWhenDiskFull(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	require.NoError(t, os.Mkdir(disk, 0o755))
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=1m"); err != nil {
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("mount a tmpfs for the full disk (CI runs as root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { assert.NoError(t, syscall.Unmount(disk, 0)) })
	data := filepath.Join(disk, "data")
	b := bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "full"}
	srv := startServer(t, dir, b, data)
	bank, _ := dialBank(t, srv)
	_, err := bank.Open(ctx, &bankv1.OpenRequest{AccountId: 1})
	require.NoError(t, err)

	// Fill the disk but for a few KiB; then deposit until the bank fails.
	filler := filepath.Join(disk, "filler")
	f, err := os.Create(filler)
	require.NoError(t, err)
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	require.NoError(t, f.Close())
	require.NoError(t, os.Truncate(filler, max(0, fileSize(t, filler)-16<<10)))
	var acked int64
	var failure error
	for i := 0; i < 10000; i++ {
		if _, err := bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: 1, Amount: 1}); err != nil {
			failure = err
			break
		}
		acked++
	}
	require.Error(t, failure, "16 KiB of disk never filled up")
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(failure), "%v", failure)
	assert.Contains(t, bankrpc.MessageOf(failure), "no space left on device")
	r := health(t, dir, srv)
	assert.Equal(t, 1, r.status, "%v", r)
	assert.Equal(t, "NOT_SERVING\n", r.stdout, "%v", r)

	srv.signal(t, syscall.SIGKILL)
	srv.wait(t, 10*time.Second)
	require.NoError(t, os.Remove(filler))
	srv = startServer(t, dir, b, data)
	r = health(t, dir, srv)
	assert.Equal(t, 0, r.status, "%v", r)
	assert.Equal(t, "SERVING\n", r.stdout)
	bank, _ = dialBank(t, srv)
	bal, err := bank.Balance(ctx, &bankv1.BalanceRequest{AccountId: 1})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, bal.GetBalance(), acked, "every acknowledged deposit survived (the failed one may have been applied)")
	assert.LessOrEqual(t, bal.GetBalance(), acked+1)
	srv.stop(t)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}
