package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer the server writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var servingLine = regexp.MustCompile(`serving over zmq at (tcp://\S+);`)

// server is a run of the program in a goroutine.
type server struct {
	stdout, stderr syncBuffer
	status         chan int
	stop           context.CancelFunc
	addr           string
}

// startServer runs the program with args and waits until it serves.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	s := &server{status: make(chan int, 1), stop: stop}
	go func() {
		s.status <- run(ctx, args, func(string) (string, bool) { return "", false }, &s.stdout, &s.stderr)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-s.status:
		case <-time.After(20 * time.Second):
			t.Errorf("the server did not stop")
		}
	})
	require.Eventually(t, func() bool {
		m := servingLine.FindStringSubmatch(s.stdout.String())
		if m != nil {
			s.addr = m[1]
		}
		return m != nil
	}, 10*time.Second, 10*time.Millisecond, "the server prints the address it serves on; stderr: %s", &s.stderr)
	return s
}

// wait returns the exit status once the program returns.
func (s *server) wait(t *testing.T) int {
	t.Helper()
	select {
	case st := <-s.status:
		s.status <- st // for the cleanup
		return st
	case <-time.After(10 * time.Second):
		t.Fatalf("the server is still running; stderr:\n%s", s.stderr.String())
		return -1
	}
}

func dial(t *testing.T, addr string) bankv1.BankClient {
	t.Helper()
	ct, err := backend.Dial(backend.Target{Kind: backend.ZMQ, Addr: addr}, backend.ClientOptions{})
	require.NoError(t, err)
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(5*time.Second))
	t.Cleanup(func() { _ = conn.Close() })
	return bankv1.NewBankClient(conn)
}

func balances(t *testing.T, dir string) map[int32]int64 {
	t.Helper()
	b, err := bank.Open(dir)
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Shutdown()) }()
	m := make(map[int32]int64)
	for _, a := range b.Accounts() {
		m[a.ID] = a.Balance
	}
	return m
}

func TestRunStopsGracefullyAndSaves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := startServer(t, "--addr", "tcp://127.0.0.1:0", "--data", dir, "--bank", "east")
	c := dial(t, s.addr)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 150})
	require.NoError(t, err)

	s.stop() // as SIGTERM does
	assert.Equal(t, cli.ExitOK, s.wait(t))
	assert.Contains(t, s.stdout.String(), `bank "east" stopped: 1 account saved in `+dir)
	assert.Contains(t, s.stderr.String(), "finishing the calls in flight")
	assert.Equal(t, map[int32]int64{7: 150}, balances(t, dir))
}

func TestRunExitWhenIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := startServer(t, "--addr", "tcp://127.0.0.1:0", "--data", dir, "--exit-when-idle")
	c := dial(t, s.addr)
	for _, id := range []int32{7, 8} {
		_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: id})
		require.NoError(t, err)
	}
	_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 8, Amount: 5})
	require.NoError(t, err)
	_, err = c.Close(ctx, &bankv1.CloseRequest{AccountId: 7})
	require.NoError(t, err)
	select {
	case st := <-s.status:
		t.Fatalf("the server exited with %d while account 8 was logged on", st)
	case <-time.After(200 * time.Millisecond):
	}
	_, err = c.Close(ctx, &bankv1.CloseRequest{AccountId: 8})
	require.NoError(t, err, "the last log-off gets its reply before the server stops")
	assert.Equal(t, cli.ExitOK, s.wait(t))
	assert.Contains(t, s.stderr.String(), "the last client logged off")
	assert.Equal(t, map[int32]int64{7: 0, 8: 5}, balances(t, dir))
}

func TestRunRefusesDataDirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	held, err := bank.Open(dir)
	require.NoError(t, err)
	defer func() { assert.NoError(t, held.Shutdown()) }()

	var out, errOut bytes.Buffer
	status := run(context.Background(), []string{"--addr", "tcp://127.0.0.1:0", "--data", dir}, func(string) (string, bool) { return "", false }, &out, &errOut)
	assert.Equal(t, cli.ExitFailure, status)
	assert.Empty(t, out.String(), "it never served")
	assert.Contains(t, errOut.String(), "in use by process")
	assert.Contains(t, errOut.String(), "another bank-server already serves the data in "+dir)
}

func TestRunRefusesAddressInUse(t *testing.T) {
	ln, addr, err := backend.Listen(backend.Target{Kind: backend.ZMQ, Addr: "tcp://127.0.0.1:0"}, backend.ServerOptions{})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ln.Close()) }()

	dir := t.TempDir()
	var out, errOut bytes.Buffer
	status := run(context.Background(), []string{"--addr", addr, "--data", dir}, func(string) (string, bool) { return "", false }, &out, &errOut)
	assert.Equal(t, cli.ExitFailure, status)
	assert.Contains(t, errOut.String(), "cannot serve over zmq "+addr)
	assert.Contains(t, errOut.String(), "Pick another --addr")
	assert.Equal(t, map[int32]int64{}, balances(t, dir), "the data directory was released")
}

func TestRunUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		says string
	}{
		{args: []string{"--transport", "inproc"}, says: "inproc is refused"},
		{args: []string{"--log-format", "xml"}, says: "text or json"},
		{args: []string{"--bank", "a/b"}, says: "bank name"},
		{args: []string{"--addr", "tcp//nowhere"}, says: "not a ZeroMQ endpoint"},
		{args: []string{"--id", "7"}, says: "-id"},
		{env: map[string]string{"BANKRPC_EXIT_WHEN_IDLE": "sometimes"}, says: "BANKRPC_EXIT_WHEN_IDLE"},
		{args: []string{"--session-retention", "0s"}, says: "--session-retention 0s: give a positive duration"},
		{args: []string{"--max-sessions", "0"}, says: "--max-sessions 0: give at least 1"},
		{args: []string{"--credit-limit", "-5"}, says: "--credit-limit -5: give 0 or more"},
	} {
		var out, errOut bytes.Buffer
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		status := run(context.Background(), append([]string{"--data", t.TempDir()}, tc.args...), lookup, &out, &errOut)
		assert.Equal(t, cli.ExitUsage, status, "%v", tc.args)
		assert.Contains(t, errOut.String(), tc.says, "%v", tc.args)
	}
}

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	status := run(context.Background(), []string{"--help"}, func(string) (string, bool) { return "", false }, &out, &out)
	assert.Equal(t, cli.ExitOK, status)
	assert.Contains(t, out.String(), "--exit-when-idle")
	assert.Contains(t, out.String(), "env BANKRPC_DATA")
	for _, flag := range []string{"--session-retention", "--max-sessions", "--credit-limit", "--admin", "--repair-log-tail"} {
		assert.Contains(t, out.String(), flag)
	}
}

// savedBank returns a data directory holding account 7 with 100, saved by a
// clean shutdown, and the path of its (empty) newest log file.
func savedBank(t *testing.T) (dir, log string) {
	t.Helper()
	dir = t.TempDir()
	b, err := bank.Open(dir)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = b.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	_, err = b.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 100})
	require.NoError(t, err)
	require.NoError(t, b.Shutdown())
	logs, err := filepath.Glob(filepath.Join(dir, "log.*"))
	require.NoError(t, err)
	require.Len(t, logs, 1)
	return dir, logs[0]
}

// TestRunRefusesDamagedLogTailUnlessRepaired: bytes at the end of the log
// that a crash does not explain stop the start with advice; with
// --repair-log-tail the server cuts them off, keeps a copy, and serves.
func TestRunRefusesDamagedLogTailUnlessRepaired(t *testing.T) {
	dir, log := savedBank(t)
	junk := make([]byte, 50)
	for i := range junk {
		junk[i] = byte(i*37 + 200)
	}
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(junk)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	var out, errOut bytes.Buffer
	status := run(context.Background(), []string{"--addr", "tcp://127.0.0.1:0", "--data", dir}, func(string) (string, bool) { return "", false }, &out, &errOut)
	assert.Equal(t, cli.ExitFailure, status)
	assert.Empty(t, out.String(), "it never served")
	assert.Contains(t, errOut.String(), log+" is corrupt at offset 0")
	assert.Contains(t, errOut.String(), "if those 50 bytes hold no change that a client was told of, start again with --repair-log-tail")

	s := startServer(t, "--addr", "tcp://127.0.0.1:0", "--data", dir, "--repair-log-tail")
	assert.Contains(t, s.stderr.String(), "cut damaged bytes off the end of the log")
	s.stop()
	assert.Equal(t, cli.ExitOK, s.wait(t))
	assert.Equal(t, map[int32]int64{7: 100}, balances(t, dir))
	copies, err := filepath.Glob(log + ".damaged-*")
	require.NoError(t, err)
	require.Len(t, copies, 1)
	kept, err := os.ReadFile(copies[0])
	require.NoError(t, err)
	assert.Equal(t, junk, kept, "what was cut off is kept")
}

// TestRunRefusesMissingSnapshot: a log that continues a snapshot which is
// gone stops the start; the server used to start an empty bank.
func TestRunRefusesMissingSnapshot(t *testing.T) {
	dir, _ := savedBank(t)
	require.NoError(t, os.Remove(filepath.Join(dir, "snapshot")))
	var out, errOut bytes.Buffer
	status := run(context.Background(), []string{"--addr", "tcp://127.0.0.1:0", "--data", dir}, func(string) (string, bool) { return "", false }, &out, &errOut)
	assert.Equal(t, cli.ExitFailure, status)
	assert.Empty(t, out.String(), "it never served")
	assert.Contains(t, errOut.String(), filepath.Join(dir, "snapshot")+" is missing")
	assert.Contains(t, errOut.String(), "restore the snapshot from a backup")
}

// TestRunCreditLimit: --credit-limit gives new accounts credit; a
// withdrawal beyond the balance says how much came from it.
func TestRunCreditLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := startServer(t, "--addr", "tcp://127.0.0.1:0", "--data", dir, "--credit-limit", "100")
	c := dial(t, s.addr)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	w, err := c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 30})
	require.NoError(t, err)
	assert.Equal(t, int64(-30), w.GetBalance())
	assert.Equal(t, int64(30), w.GetFromCredit())
	_, err = c.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 71})
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err))
	_, err = c.SetCreditLimit(ctx, &bankv1.SetCreditLimitRequest{AccountId: 7, CreditLimit: 1000})
	assert.Equal(t, bankrpc.PermissionDenied, bankrpc.CodeOf(err), "over ZeroMQ without CURVE nobody is an administrator")
	s.stop()
	assert.Equal(t, cli.ExitOK, s.wait(t))
	assert.Equal(t, map[int32]int64{7: -30}, balances(t, dir))
}
