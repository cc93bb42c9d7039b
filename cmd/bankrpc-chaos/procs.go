package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build builds bank-server and bank-client into dir (go build, run from
// the module root root).
func Build(ctx context.Context, root, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./examples/bank-server", "./examples/bank-client")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build of bank-server and bank-client: %v\n%s", err, out)
	}
	return nil
}

// childEnv is the environment of the programs: without BANKRPC_ variables,
// so that only the flags given count.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BANKRPC_") {
			env = append(env, kv)
		}
	}
	return env
}

// server is a bank-server process the driver started, restarted after
// each kill on the same address and data.
type server struct {
	bin, transport, addr, bank, data, logDir string
	extra                                    []string

	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	incarnation int
	killedAt    time.Time // of the last kill, until the next start serves
	restarts    []restart
}

// restart is a kill of the server and the moment the next process served.
type restart struct {
	killed, serving time.Time
}

// restarts returns the kills followed by a start that served.
func (s *server) restartList() []restart {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]restart(nil), s.restarts...)
}

var servingLine = regexp.MustCompile(`serving over (zmq|amqp) at `)

// start starts the process and waits until it serves.
func (s *server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.incarnation++
	args := append([]string{"--transport", s.transport, "--addr", s.addr, "--bank", s.bank, "--data", s.data, "--timeout", "10s"}, s.extra...)
	cmd := exec.Command(filepath.Join(s.bin, "bank-server"), args...)
	cmd.Env = childEnv()
	logf, err := os.Create(filepath.Join(s.logDir, fmt.Sprintf("bank-server.%s.%d.log", s.bank, s.incarnation)))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out := &syncBuf{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for !servingLine.MatchString(out.String()) {
		select {
		case <-done:
			stderr, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("bank-server %v exited before serving: %s%s", args, out.String(), lastLines(stderr, 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bank-server %v did not serve within 30s", args)
		}
	}
	if !s.killedAt.IsZero() {
		s.restarts = append(s.restarts, restart{killed: s.killedAt, serving: time.Now()})
		s.killedAt = time.Time{}
	}
	return nil
}

// kill sends SIGKILL to the process (by its PID) and waits for it.
func (s *server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	s.mu.Lock()
	if s.killedAt.IsZero() {
		s.killedAt = time.Now()
	}
	s.mu.Unlock()
}

// alive reports whether the process runs.
func (s *server) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a TCP port of 127.0.0.1 nothing listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// node is a private RabbitMQ node started with scripts/rabbitmq-node.sh:
// never the shared broker.
type node struct {
	script, dir, url string
}

func (n *node) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{n.script}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	// A loaded machine may take more than the script's default minute to
	// boot a node.
	if os.Getenv("BANKRPC_NODE_WAIT") == "" {
		cmd.Env = append(os.Environ(), "BANKRPC_NODE_WAIT=150")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", filepath.Base(n.script), strings.Join(args, " "), err, lastLines(stderr.Bytes(), 3))
	}
	return string(out), nil
}

func startNode(ctx context.Context, script, dir string) (*node, error) {
	n := &node{script: script, dir: dir}
	out, err := n.run(ctx, "start", dir)
	if err != nil {
		// The node may have come up after the script gave up: stop it.
		if _, serr := n.run(context.WithoutCancel(ctx), "stop", dir); serr != nil {
			err = fmt.Errorf("%w; and stopping it: %v", err, serr)
		}
		return nil, err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "URL="); ok {
			n.url = v
		}
	}
	if n.url == "" {
		return nil, fmt.Errorf("%s start printed no URL: %s", script, out)
	}
	return n, nil
}

func (n *node) ctl(ctx context.Context, args ...string) error {
	_, err := n.run(ctx, append([]string{"ctl", n.dir}, args...)...)
	return err
}

func (n *node) restart(ctx context.Context) error {
	_, err := n.run(ctx, "restart", n.dir)
	return err
}

func (n *node) stop(ctx context.Context) error {
	_, err := n.run(ctx, "stop", n.dir)
	return err
}
