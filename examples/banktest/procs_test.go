package banktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The binaries under test, built once by TestMain.
var (
	binDir       string
	serverBinary string
	clientBinary string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "banktest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "banktest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	serverBinary = filepath.Join(dir, "bank-server")
	clientBinary = filepath.Join(dir, "bank-client")
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../bank-server", "../bank-client")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "banktest: go build of bank-server and bank-client failed:", err)
		return 1
	}
	code := m.Run()
	if left := leftovers(dir); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "banktest: processes of the built binaries still run after the tests: %v\n", left)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "banktest: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// leftovers lists the processes running a binary from dir. It only reads
// /proc; it kills nothing.
func leftovers(dir string) []string {
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	var left []string
	for _, exe := range exes {
		target, err := os.Readlink(exe)
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			left = append(left, filepath.Base(filepath.Dir(exe))+" "+target)
		}
	}
	return left
}

// testContext bounds a test.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// childEnv is the environment of the programs: the test's, without any
// BANKRPC_ variable, so that only the flags a test gives count.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BANKRPC_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// syncBuffer collects a process's output while the test reads it.
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

// proc is a process started by a test: killed by its PID when the test
// ends, unless it has exited.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{} // closed once the process has exited and been reaped
	status         int           // exit status, or -1 when killed by a signal; set before done is closed
}

// startProc starts bin with args in dir; stdin may be nil.
func startProc(t *testing.T, name, dir string, stdin io.Reader, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = childEnv()
	p.cmd.Stdin = stdin
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() {
		err := p.cmd.Wait()
		p.status = exitStatus(err)
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Kill() // by PID: only the process this test started
		<-p.done
	})
	return p
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -2
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %v to %s", sig, p.name)
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.status
	case <-time.After(d):
		t.Fatalf("%s (pid %d) still runs after %v\nstdout:\n%s\nstderr:\n%s", p.name, p.cmd.Process.Pid, d, p.stdout.String(), p.stderr.String())
		return 0
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// bankRef names a bank as the programs' flags do.
type bankRef struct {
	transport, addr, name string
}

func (b bankRef) flags() []string {
	return []string{"--transport", b.transport, "--addr", b.addr, "--bank", b.name}
}

// server is a running bank-server.
type server struct {
	*proc
	ref  bankRef
	data string
}

var servingLine = regexp.MustCompile(`serving over (zmq|amqp) at (.+?); data in`)

// startServer starts bank-server for b with its data in data, and waits
// until it serves. For ZeroMQ, an address with port 0 is replaced by the one
// the server picked.
func startServer(t *testing.T, dir string, b bankRef, data string, extra ...string) *server {
	t.Helper()
	args := append(append(b.flags(), "--data", data), extra...)
	s := &server{proc: startProc(t, "bank-server "+b.name, dir, nil, serverBinary, args...), ref: b, data: data}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := servingLine.FindStringSubmatch(s.stdout.String()); m != nil {
			if b.transport == "zmq" {
				s.ref.addr = m[2]
			}
			return s
		}
		if s.exited() || time.Now().After(deadline) {
			t.Fatalf("bank-server %v did not start serving (exited: %v, status %d)\nstdout:\n%s\nstderr:\n%s",
				args, s.exited(), s.status, s.stdout.String(), s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and checks that the server exits 0 having saved.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, s.wait(t, 20*time.Second), "bank-server exit status after SIGTERM; stderr:\n%s", s.stderr.String())
	require.Contains(t, s.stdout.String(), "stopped:", "it says it saved the accounts")
}

// result is what a finished client printed and its exit status.
type result struct {
	status         int
	stdout, stderr string
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %q\nstderr: %q", r.status, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// runClient runs bank-client for b with args to completion.
func runClient(t *testing.T, dir string, b bankRef, args ...string) result {
	t.Helper()
	return runBinary(t, dir, clientBinary, append(b.flags(), args...)...)
}

// runBinary runs bin to completion.
func runBinary(t *testing.T, dir, bin string, args ...string) result {
	t.Helper()
	return runCmd(t, commandIn(dir, bin, args...))
}

// commandIn returns a command running bin with args in dir, with childEnv.
func commandIn(dir, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	return cmd
}

// runCmd runs cmd to completion, killing it by its PID if it runs for more
// than a minute.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	require.NoError(t, cmd.Start(), "start %v", cmd.Args)
	timer := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	hung := !timer.Stop()
	r := result{status: exitStatus(err), stdout: out.String(), stderr: errOut.String(), took: time.Since(start)}
	if hung {
		t.Fatalf("%v hung and was killed: %v", cmd.Args, r)
	}
	return r
}

// mustRun runs a client command that must succeed and returns its stdout.
func mustRun(t *testing.T, dir string, b bankRef, args ...string) string {
	t.Helper()
	r := runClient(t, dir, b, args...)
	require.Equal(t, 0, r.status, "bank-client %v: %v", args, r)
	return r.stdout
}

var jsonBalance = regexp.MustCompile(`^\{"balance":"(-?[0-9]+)"(,"creditLimit":"[0-9]+")?\}\n$`)

// balanceOf asks the bank for account id's balance, as a user would, with
// --json.
func balanceOf(t *testing.T, dir string, b bankRef, id int32) int64 {
	t.Helper()
	out := mustRun(t, dir, b, "--json", "--id", strconv.Itoa(int(id)), "balance")
	m := jsonBalance.FindStringSubmatch(out)
	require.NotNil(t, m, "balance reply %q", out)
	n, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return n
}

// checkBalances checks the balances of the accounts in want.
func checkBalances(t *testing.T, dir string, b bankRef, step string, want map[int32]int64) {
	t.Helper()
	got := make(map[int32]int64, len(want))
	for id := range want {
		got[id] = balanceOf(t, dir, b, id)
	}
	require.Equal(t, want, got, "balances of bank %q after %s", b.name, step)
}

// prompt is a bank-client running its interactive loop on a pipe.
type prompt struct {
	*proc
	in    io.WriteCloser
	lines int // stdout lines already read
}

// startPrompt starts bank-client without a command for account id of b.
func startPrompt(t *testing.T, dir string, b bankRef, id int32, extra ...string) *prompt {
	t.Helper()
	// An OS pipe, not an io.Pipe: exec then hands the read end to the
	// child, and waiting for the child does not wait for our writes.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	args := append(append(b.flags(), extra...), "--id", strconv.Itoa(int(id)))
	p := &prompt{proc: startProc(t, fmt.Sprintf("bank-client --id %d", id), dir, r, clientBinary, args...), in: w}
	require.NoError(t, r.Close()) // the child has its own copy
	return p
}

// do sends one command line and returns the next line the client prints.
func (p *prompt) do(t *testing.T, line string) string {
	t.Helper()
	_, err := io.WriteString(p.in, line+"\n")
	require.NoError(t, err, "write %q to %s", line, p.name)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := strings.SplitAfter(p.stdout.String(), "\n")
		if len(out) > p.lines+1 { // the last element is the unfinished line
			p.lines++
			return strings.TrimSuffix(out[p.lines-1], "\n")
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s printed no reply to %q (exited: %v)\nstdout:\n%s\nstderr:\n%s", p.name, line, p.exited(), p.stdout.String(), p.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quit ends the prompt with the end of its input and returns its exit status.
func (p *prompt) quit(t *testing.T) int {
	t.Helper()
	require.NoError(t, p.in.Close())
	return p.wait(t, 20*time.Second)
}
