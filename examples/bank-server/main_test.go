package main

import (
	"bytes"
	"context"
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
	ln, addr, err := backend.Listen(backend.Target{Kind: backend.ZMQ, Addr: "tcp://127.0.0.1:0"}, nil)
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
}
