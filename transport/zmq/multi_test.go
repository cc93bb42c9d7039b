package zmq_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// runLog records, per server, how many times each call id ran.
type runLog struct {
	mu   sync.Mutex
	runs map[string]map[string]int // server -> call id -> runs
}

func (l *runLog) interceptor(server string) bankrpc.ServerOption {
	return bankrpc.UnaryInterceptor(func(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, h bankrpc.UnaryHandler) (any, error) {
		l.mu.Lock()
		if l.runs == nil {
			l.runs = make(map[string]map[string]int)
		}
		if l.runs[server] == nil {
			l.runs[server] = make(map[string]int)
		}
		l.runs[server][bankrpc.CallIDFromContext(ctx)]++
		l.mu.Unlock()
		return h(ctx, req)
	})
}

func (l *runLog) ranOn(server string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs[server])
}

// twice lists the call ids some server ran more than once.
func (l *runLog) twice() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for s, ids := range l.runs {
		for id, n := range ids {
			if n > 1 {
				out = append(out, fmt.Sprintf("%s ran %s %d times", s, id, n))
			}
		}
	}
	return out
}

// multiAddr is the address listing the servers.
func multiAddr(servers ...*zmq.Server) string {
	hosts := make([]string, len(servers))
	for i, s := range servers {
		hosts[i] = strings.TrimPrefix(s.URL(), "zmq://")
	}
	return "zmq://" + strings.Join(hosts, ",")
}

// A client given three servers spreads its calls over them; when one stops,
// the calls go on over the two others, the calls caught on the stopped one
// are answered by another, and no server runs a call twice.
func TestMultiSpreadsAndFailsOver(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	var log runLog
	var servers []*zmq.Server
	var stoppable *zmq.Server
	for i := range 3 {
		name := fmt.Sprintf("s%d", i)
		s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
		require.NoError(t, err)
		srv := newRPCServer(&svc{tag: name}, log.interceptor(name))
		if i == 1 {
			done := make(chan error, 1)
			go func() { done <- srv.Serve(s) }()
			stoppable = s
			t.Cleanup(func() {
				assert.NoError(t, s.Close())
				<-done
			})
		} else {
			serveOn(t, s, srv)
		}
		servers = append(servers, s)
	}
	conn, err := bankrpc.Dial(ctx, multiAddr(servers...), bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: 500 * time.Millisecond}))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, conn.Close()) })
	client := testv1.NewTestServiceClient(conn)

	var (
		calls, failed atomic.Int64
		stopped       atomic.Bool
		after         sync.Map // tags that answered calls started after the stop
	)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 150 {
				late := stopped.Load()
				resp, err := client.Echo(ctx, &testv1.EchoRequest{})
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("call failed: %v", err)
					continue
				}
				if late {
					after.Store(resp.GetTag(), true)
				}
				if calls.Load() == 300 {
					assert.NoError(t, stoppable.Close()) // like a kill: replies in flight are lost
					stopped.Store(true)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "every call is answered")
	for i := range 3 {
		assert.Positive(t, log.ranOn(fmt.Sprintf("s%d", i)), "server s%d took calls", i)
	}
	_, s1Late := after.Load("s1")
	assert.False(t, s1Late, "no call started after the stop was answered by the stopped server")
	assert.Empty(t, log.twice(), "no server ran a call twice")
}

// A repeat of a call with the same call id goes to the same server, whose
// reply cache answers it without running it again.
func TestMultiRepeatGoesToTheSameServer(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	var log runLog
	var servers []*zmq.Server
	for i := range 3 {
		servers = append(servers, serve(t, zmq.ServerConfig{}, newRPCServer(&svc{tag: fmt.Sprintf("s%d", i)}, log.interceptor(fmt.Sprintf("s%d", i)))))
	}
	conn, err := bankrpc.Dial(ctx, multiAddr(servers...))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, conn.Close()) })
	client := testv1.NewTestServiceClient(conn)
	// Until every server is up, the ranking changes with each that comes.
	warm := map[string]bool{}
	for len(warm) < 3 {
		resp, err := client.Echo(ctx, &testv1.EchoRequest{})
		require.NoError(t, err)
		warm[resp.GetTag()] = true
	}
	tags := map[string]int{}
	for range 30 {
		id := conn.NewCallID()
		first, err := client.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID(id))
		require.NoError(t, err)
		again, err := client.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID(id))
		require.NoError(t, err)
		assert.Equal(t, first.GetTag(), again.GetTag(), "call %s", id)
		tags[first.GetTag()]++
	}
	assert.Len(t, tags, 3, "the call ids spread over the three servers: %v", tags)
	assert.Empty(t, log.twice(), "each repeat was answered from the reply cache")
}

// With every server down, a call fails with UNAVAILABLE naming each one, once
// they have been down for DeadAfter; it does not hang.
func TestMultiAllDown(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	addr := fmt.Sprintf("zmq://127.0.0.1:%d,127.0.0.1:%d", freeTCPPort(t), freeTCPPort(t))
	conn, err := bankrpc.Dial(ctx, addr, bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: 300 * time.Millisecond}))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, conn.Close()) })
	start := time.Now()
	_, err = testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{})
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "%v", err)
	assert.Less(t, time.Since(start), 5*time.Second)
	for _, hp := range strings.Split(strings.TrimPrefix(addr, "zmq://"), ",") {
		assert.Contains(t, err.Error(), "tcp://"+hp)
	}
}

func TestMultiAddressErrors(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	for _, tc := range []struct{ addr, msg string }{
		{"zmq://127.0.0.1:1,:2", "want host:port,host:port"},
		{"zmq://127.0.0.1:1,127.0.0.1:1", "listed twice"},
		{"zmq://127.0.0.1:1,127.0.0.1:0", "picks a free port"},
	} {
		_, err := bankrpc.Dial(ctx, tc.addr)
		require.Error(t, err, tc.addr)
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%s: %v", tc.addr, err)
		assert.Contains(t, err.Error(), tc.msg, tc.addr)
	}
	_, err := bankrpc.Listen(ctx, "zmq://127.0.0.1:0,127.0.0.1:0")
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "a server listens on one address")
}

// multiChildEnv makes the test binary a server process that prints the call
// id of every call it runs (TestMultiServerProcess).
const multiChildEnv = "BANKRPC_ZMQ_MULTI_SERVER"

// TestMultiServerProcess is the body of a server process started by
// TestMultiKillOneProcess: it prints "addr <url>", then "ran <call id>" for
// each call it runs, before running it.
func TestMultiServerProcess(t *testing.T) {
	name := os.Getenv(multiChildEnv)
	if name == "" {
		t.Skip("run by TestMultiKillOneProcess")
	}
	var mu sync.Mutex
	srv := newRPCServer(&svc{tag: name}, bankrpc.UnaryInterceptor(func(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, h bankrpc.UnaryHandler) (any, error) {
		mu.Lock()
		fmt.Printf("ran %s\n", bankrpc.CallIDFromContext(ctx))
		mu.Unlock()
		return h(ctx, req)
	}))
	s := serve(t, zmq.ServerConfig{}, srv)
	fmt.Printf("addr %s\n", s.URL())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// Three server processes; one is killed with SIGKILL while clients call: the
// calls go on, every one is answered, and no process ran a call twice.
func TestMultiKillOneProcess(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	exe, err := os.Executable()
	require.NoError(t, err)
	type child struct {
		cmd  *exec.Cmd
		ran  map[string]int
		done chan struct{}
	}
	var (
		children []*child
		hosts    []string
		mu       sync.Mutex
	)
	for i := range 3 {
		cmd := exec.Command(exe, "-test.run=^TestMultiServerProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=p%d", multiChildEnv, i))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		c := &child{cmd: cmd, ran: map[string]int{}, done: make(chan struct{})}
		children = append(children, c)
		lines := bufio.NewScanner(stdout)
		addr := readAddr(t, lines)
		hosts = append(hosts, strings.TrimPrefix(addr, "zmq://"))
		go func() {
			defer close(c.done)
			for lines.Scan() {
				if id, ok := strings.CutPrefix(lines.Text(), "ran "); ok {
					mu.Lock()
					c.ran[id]++
					mu.Unlock()
				}
			}
		}()
		t.Cleanup(func() {
			_ = stdin.Close()
			_ = cmd.Wait()
		})
	}
	conn, err := bankrpc.Dial(ctx, "zmq://"+strings.Join(hosts, ","), bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: time.Second}))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, conn.Close()) })
	client := testv1.NewTestServiceClient(conn)

	var (
		calls  atomic.Int64
		killed = make(chan struct{})
		once   sync.Once
		wg     sync.WaitGroup
	)
	for range 6 {
		wg.Go(func() {
			for range 100 {
				_, err := client.Echo(ctx, &testv1.EchoRequest{})
				assert.NoError(t, err)
				if calls.Add(1) >= 200 {
					once.Do(func() {
						assert.NoError(t, children[1].cmd.Process.Signal(syscall.SIGKILL)) // by PID: our child
						close(killed)
					})
				}
			}
		})
	}
	wg.Wait()
	<-killed
	<-children[1].done // its output is read to the end
	assert.Equal(t, int64(600), calls.Load())
	mu.Lock()
	defer mu.Unlock()
	ranSomewhere := map[string]bool{}
	for i, c := range children {
		assert.Positive(t, len(c.ran), "process p%d ran calls", i)
		for id, n := range c.ran {
			assert.Equal(t, 1, n, "process p%d ran %s %d times", i, id, n)
			ranSomewhere[id] = true
		}
	}
	assert.GreaterOrEqual(t, len(ranSomewhere), 600, "every answered call ran on some process")
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	s, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	require.NoError(t, err)
	u := s.URL()
	require.NoError(t, s.Close())
	var port int
	_, err = fmt.Sscanf(u[strings.LastIndexByte(u, ':')+1:], "%d", &port)
	require.NoError(t, err)
	return port
}
