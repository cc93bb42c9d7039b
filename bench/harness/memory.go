package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/procstat"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqpbench"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// The memory figures (issue 16, target 5) are taken from a server running
// in a child process of its own (this program, re-executed with
// childEnv set), so that its resident set is the server's alone: RSS is
// read from /proc/<pid>/status, the Go heap and goroutines from the child.

// childEnv names the role a re-executed bench process plays.
const childEnv = "BANKRPC_BENCH_CHILD"

// clientsPerProcess bounds the idle ZeroMQ clients one child process
// holds: each is a socket, with a TCP connection and a mailbox (eventfd),
// two file descriptors, and the hard limit of open files on the machine
// this was written on is 20,000 and cannot be raised without privileges.
const clientsPerProcess = 2500

// ProcStats is a process's memory at one moment.
type ProcStats struct {
	RSS        int64  // bytes resident (VmRSS)
	HeapInuse  uint64 // Go heap in use, after a GC
	Goroutines int
	Threads    int
}

// ZMQMemory is a ZeroMQ server's memory idle and with Clients idle
// clients connected, each having made one call.
type ZMQMemory struct {
	Server  string // "raw ROUTER echo" or "bankrpc zmq.Server"
	Clients int
	Idle    ProcStats
	Loaded  ProcStats
	Resent  int // calls the idle clients had to send again (no reply in time)
	// Answered is how many clients had their call answered (all, unless
	// connections kept dropping).
	Answered int
	// IdleCPU and LoadedCPU are the server's CPU use, in cores, over
	// cpuWindow with no client and with the idle clients connected.
	IdleCPU, LoadedCPU float64
}

// PerClient is the resident bytes the server grew by per client.
func (m ZMQMemory) PerClient() float64 {
	return float64(m.Loaded.RSS-m.Idle.RSS) / float64(m.Clients)
}

// AMQPMemory is a bankrpc AMQP server's memory idle and with Queued
// requests waiting in its queue (its handler blocked, so that the
// prefetch window is all it holds), and the calling client's heap.
type AMQPMemory struct {
	Queued       int
	InQueue      int // messages ready in the service queue when measured
	Idle         ProcStats
	Waiting      ProcStats
	Drained      ProcStats
	ClientHeap   int64 // the client's Go heap growth with Queued calls in flight
	DrainElapsed time.Duration
}

// RunChildIfAsked runs this process as a child of a memory measurement when
// the environment says so, and then exits; it returns otherwise. Call it
// first in main (and in TestMain).
func RunChildIfAsked() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	if err := runChild(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %q: %v\n", spec, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runChild plays a role: "zmq-server raw|bankrpc", "zmq-clients ADDR N",
// "amqp-server URL SERVICE". It prints "ready ..." once set up, answers
// "stats" with one line of JSON ProcStats, and stops at the end of stdin.
func runChild(spec string, in io.Reader, out io.Writer) error {
	f := strings.Fields(spec)
	cmds := bufio.NewScanner(in)
	serve := func(extra map[string]func() error) error {
		for cmds.Scan() {
			switch c := cmds.Text(); {
			case c == "stats":
				b, err := json.Marshal(selfStats())
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "stats %s\n", b)
			case extra[c] != nil:
				if err := extra[c](); err != nil {
					return err
				}
				fmt.Fprintf(out, "done %s\n", c)
			default:
				return fmt.Errorf("unknown command %q", c)
			}
		}
		return cmds.Err()
	}
	switch {
	case len(f) == 2 && f[0] == "zmq-server" && f[1] == "raw":
		return rawZMQServer(out, serve)
	case len(f) == 2 && f[0] == "zmq-server" && f[1] == "bankrpc":
		ln, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
		if err != nil {
			return err
		}
		srv := bankrpc.NewServer()
		bankv1.RegisterBankServer(srv, newMemBank())
		served := make(chan error, 1)
		go func() { served <- ln.Serve(srv) }()
		fmt.Fprintf(out, "ready %s\n", ln.Addr())
		err = serve(nil)
		return errors.Join(err, ln.Close(), <-served)
	case len(f) == 3 && f[0] == "zmq-clients":
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return err
		}
		return idleZMQClients(f[1], n, out, serve)
	case len(f) == 3 && f[0] == "amqp-server":
		return blockedAMQPServer(f[1], f[2], out, serve)
	}
	return fmt.Errorf("unknown role")
}

func selfStats() ProcStats {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ps, _ := procstat.Read(os.Getpid())
	return ProcStats{RSS: ps.RSS, Threads: ps.Threads, HeapInuse: ms.HeapInuse, Goroutines: runtime.NumGoroutine()}
}

// rawZMQServer is a ROUTER echo server on its own context, as
// transport/zmq/zmqbench's raw baseline: libzmq's cost per connection.
func rawZMQServer(out io.Writer, serve func(map[string]func() error) error) error {
	zctx, err := zmq4.NewContext()
	if err != nil {
		return err
	}
	router, err := zctx.NewSocket(zmq4.ROUTER)
	if err != nil {
		return errors.Join(err, zctx.Term())
	}
	if err := errors.Join(router.SetLinger(0), router.SetRcvtimeo(50*time.Millisecond), router.Bind("tcp://127.0.0.1:*")); err != nil {
		return errors.Join(err, router.Close(), zctx.Term())
	}
	addr, err := router.GetLastEndpoint()
	if err != nil {
		return errors.Join(err, router.Close(), zctx.Term())
	}
	stop := make(chan struct{})
	echoed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				echoed <- nil
				return
			default:
			}
			msg, err := router.RecvMessageBytes(0)
			if err != nil {
				if zmq4.AsErrno(err) == zmq4.Errno(11) { // EAGAIN: the receive timed out
					continue
				}
				echoed <- err
				return
			}
			if _, err := router.SendMessage(msg); err != nil {
				echoed <- err
				return
			}
		}
	}()
	fmt.Fprintf(out, "ready %s\n", addr)
	err = serve(nil)
	close(stop)
	return errors.Join(err, <-echoed, router.Close(), zctx.Term())
}

// idleZMQClients connects n DEALER sockets to addr in one context, makes
// one Deposit call on each (a bankrpc request envelope in a session of its
// own, framed as the Go client frames it), waits for every reply, prints
// "ready" and idles until the end of stdin.
func idleZMQClients(addr string, n int, out io.Writer, serve func(map[string]func() error) error) error {
	zctx, err := zmq4.NewContext()
	if err != nil {
		return err
	}
	if err := zctx.SetMaxSockets(n + 16); err != nil {
		return errors.Join(err, zctx.Term())
	}
	socks := make([]*zmq4.Socket, 0, n)
	requests := make([][2][]byte, 0, n)
	var missing []int
	resent := 0
	closeAll := func() error {
		var errs []error
		for _, s := range socks {
			errs = append(errs, s.Close())
		}
		return errors.Join(append(errs, zctx.Term())...)
	}
	payload, err := proto.Marshal(&bankv1.DepositRequest{AccountId: 1, Amount: 1})
	if err != nil {
		return err
	}
	// In batches, each waiting for its replies: a burst of thousands of
	// connects overflows the server's listen backlog (libzmq's default is
	// 100), and the connections the kernel then leaves half-open stall for
	// a minute.
	for first := 0; first < n; first += connectBatch {
		for i := first; i < min(n, first+connectBatch); i++ {
			s, err := zctx.NewSocket(zmq4.DEALER)
			if err != nil {
				return errors.Join(fmt.Errorf("socket %d: %w", i, err), closeAll())
			}
			socks = append(socks, s)
			callID := randomHex(8) + "-1"
			env, err := proto.Marshal(&wirev1.Request{CallId: callID, Method: bankv1.Bank_Deposit_FullMethodName, Payload: payload, FirstUnanswered: 1})
			if err != nil {
				return errors.Join(err, closeAll())
			}
			// A dropped client reconnects after 1 s, backing off to 10 s, so
			// that drops on a loaded machine do not become a storm of
			// connects.
			if err := errors.Join(s.SetLinger(0), s.SetRcvtimeo(resendAfter), s.SetReconnectIvl(time.Second), s.SetReconnectIvlMax(10*time.Second), s.Connect(addr)); err != nil {
				return errors.Join(fmt.Errorf("socket %d: %w", i, err), closeAll())
			}
			if _, err := s.SendMessage(callID, env); err != nil {
				return errors.Join(fmt.Errorf("socket %d: send: %w", i, err), closeAll())
			}
			requests = append(requests, [2][]byte{[]byte(callID), env})
		}
		batch := make([]int, 0, connectBatch)
		for i := first; i < len(socks); i++ {
			batch = append(batch, i)
		}
		left, err := awaitReplies(socks, requests, batch, 2*time.Second, &resent)
		if err != nil {
			return errors.Join(err, closeAll())
		}
		missing = append(missing, left...)
	}
	// The clients the server did not answer in time get a last chance.
	missing, err = awaitReplies(socks, requests, missing, time.Minute, &resent)
	if err != nil {
		return errors.Join(err, closeAll())
	}
	fmt.Fprintf(out, "ready %d %d\n", n-len(missing), resent)
	return errors.Join(serve(nil), closeAll())
}

// connectBatch is how many idle clients connect at once.
const connectBatch = 50

// An idle client's call is sent again, with the same call id, after
// resendAfter without a reply: a connection can drop before its reply
// (the server's heartbeat timeout on a loaded machine, a connection the
// kernel dropped from a full accept queue).
const resendAfter = 5 * time.Second

// awaitReplies waits up to d for the reply of each socket of idx, sending
// its request again every resendAfter, and returns those still unanswered.
func awaitReplies(socks []*zmq4.Socket, requests [][2][]byte, idx []int, d time.Duration, resent *int) ([]int, error) {
	pending := make(map[int]bool, len(idx))
	for _, i := range idx {
		pending[i] = true
	}
	deadline, sent := time.Now().Add(d), time.Now()
	for len(pending) > 0 && time.Now().Before(deadline) {
		if time.Since(sent) >= resendAfter {
			for i := range pending {
				if _, err := socks[i].SendMessage(requests[i][0], requests[i][1]); err != nil {
					return nil, fmt.Errorf("socket %d: send again: %w", i, err)
				}
				*resent++
			}
			sent = time.Now()
		}
		poller := zmq4.NewPoller()
		order := make([]int, 0, len(pending))
		for i := range pending {
			poller.Add(socks[i], zmq4.POLLIN)
			order = append(order, i)
		}
		polled, err := poller.PollAll(200 * time.Millisecond)
		if err != nil {
			return nil, err
		}
		for k, item := range polled {
			if item.Events&zmq4.POLLIN == 0 {
				continue
			}
			if err := checkReply(socks[order[k]]); err != nil {
				return nil, fmt.Errorf("socket %d: %w", order[k], err)
			}
			delete(pending, order[k])
		}
	}
	var left []int
	for i := range pending {
		left = append(left, i)
	}
	return left, nil
}

// checkReply receives one reply on s: a successful result from bankrpc, or
// the request echoed by the raw server.
func checkReply(s *zmq4.Socket) error {
	reply, err := s.RecvMessageBytes(0)
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	if len(reply) != 2 {
		return fmt.Errorf("reply of %d frames, want 2", len(reply))
	}
	var res wirev1.Result
	if proto.Unmarshal(reply[1], &res) == nil && res.GetCallId() != "" {
		if res.GetCode() != 0 {
			return fmt.Errorf("call failed: code %d: %s", res.GetCode(), res.GetReason())
		}
		return nil
	}
	var req wirev1.Request
	if err := proto.Unmarshal(reply[1], &req); err != nil {
		return fmt.Errorf("reply is neither a result nor an echo: %w", err)
	}
	return nil
}

// gate is the TestService of the AMQP measurement: Echo waits until the
// gate opens, so that requests stay in the queue.
type gate struct {
	testv1.UnimplementedTestServiceServer
	open chan struct{}
}

func (g *gate) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &testv1.EchoResponse{Payload: in.GetPayload()}, nil
}

func blockedAMQPServer(url, service string, out io.Writer, serve func(map[string]func() error) error) error {
	srv, err := amqp.Listen(url, amqp.ServerConfig{Service: service})
	if err != nil {
		return err
	}
	g := &gate{open: make(chan struct{})}
	h := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(h, g)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(h) }()
	fmt.Fprintln(out, "ready")
	var once sync.Once
	err = serve(map[string]func() error{"release": func() error { once.Do(func() { close(g.open) }); return nil }})
	once.Do(func() { close(g.open) })
	return errors.Join(err, srv.Close(), <-served)
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	errc  chan error
}

func startChild(ctx context.Context, spec string) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), childEnv+"="+spec)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16), errc: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	ready, err := c.expect(ctx, "ready")
	if err != nil {
		return nil, "", errors.Join(fmt.Errorf("child %q: %w", spec, err), c.stop())
	}
	return c, strings.TrimSpace(ready), nil
}

// expect waits for the child's next line, which must start with prefix,
// and returns the rest.
func (c *child) expect(ctx context.Context, prefix string) (string, error) {
	select {
	case line, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("exited before saying %q", prefix)
		}
		rest, found := strings.CutPrefix(line, prefix)
		if !found {
			return "", fmt.Errorf("said %q, want %q", line, prefix)
		}
		return rest, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for %q: %w", prefix, ctx.Err())
	}
}

func (c *child) command(ctx context.Context, cmd string) (string, error) {
	if _, err := fmt.Fprintln(c.stdin, cmd); err != nil {
		return "", err
	}
	reply := "done " + cmd
	if cmd == "stats" {
		reply = "stats "
	}
	return c.expect(ctx, reply)
}

func (c *child) stats(ctx context.Context) (ProcStats, error) {
	s, err := c.command(ctx, "stats")
	if err != nil {
		return ProcStats{}, err
	}
	var st ProcStats
	return st, json.Unmarshal([]byte(s), &st)
}

// stop closes the child's stdin, which ends it, and waits for it.
func (c *child) stop() error {
	_ = c.stdin.Close()
	for range c.lines {
	}
	return c.cmd.Wait()
}

// measureZMQMemory starts a ZeroMQ server child (raw: a ROUTER echo;
// otherwise bankrpc's zmq.Server with an in-memory handler), reads its
// memory idle, connects n idle clients from child processes, each having
// made one call, and reads it again.
func measureZMQMemory(ctx context.Context, raw bool, n int) (ZMQMemory, error) {
	mode, m := "bankrpc", ZMQMemory{Server: "bankrpc zmq.Server", Clients: n}
	if raw {
		mode, m.Server = "raw", "raw ROUTER echo"
	}
	srv, addr, err := startChild(ctx, "zmq-server "+mode)
	if err != nil {
		return m, err
	}
	fail := func(err error, clients []*child) (ZMQMemory, error) {
		for _, c := range clients {
			err = errors.Join(err, c.stop())
		}
		return m, errors.Join(err, srv.stop())
	}
	time.Sleep(300 * time.Millisecond)
	if m.Idle, err = srv.stats(ctx); err != nil {
		return fail(err, nil)
	}
	m.IdleCPU = cpuOver(srv.cmd.Process.Pid, cpuWindow)
	// One child after the other, for the listen backlog (connectBatch).
	var clients []*child
	for left := n; left > 0; left -= clientsPerProcess {
		c, said, err := startChild(ctx, fmt.Sprintf("zmq-clients %s %d", addr, min(left, clientsPerProcess)))
		if err != nil {
			return fail(err, clients)
		}
		clients = append(clients, c)
		var answered, resent int
		if _, err := fmt.Sscan(said, &answered, &resent); err != nil {
			return fail(fmt.Errorf("clients said %q: %w", said, err), clients)
		}
		m.Answered += answered
		m.Resent += resent
	}
	m.LoadedCPU = cpuOver(srv.cmd.Process.Pid, cpuWindow)
	if m.Loaded, err = srv.stats(ctx); err != nil {
		return fail(err, clients)
	}
	return fail(nil, clients)
}

// measureAMQPMemory starts a bankrpc AMQP server child whose handler blocks,
// reads its memory idle, makes n calls from this process so that n requests
// wait in the service queue (all but the server's prefetch), reads it
// again, then opens the handler and waits for every reply.
func measureAMQPMemory(ctx context.Context, url string, n int) (AMQPMemory, error) {
	m := AMQPMemory{Queued: n}
	service, client := "bench-mem-"+randomHex(6), "bench-mem-"+randomHex(6)
	defer func() {
		_ = amqpbench.DeleteQueues(url, amqp.ServiceQueue(service), amqp.DeadLetterQueue(service), amqp.ResultQueue(client), amqp.ErrorQueue(client))
	}()
	srv, _, err := startChild(ctx, fmt.Sprintf("amqp-server %s %s", url, service))
	if err != nil {
		return m, err
	}
	fail := func(err error) (AMQPMemory, error) { return m, errors.Join(err, srv.stop()) }
	time.Sleep(300 * time.Millisecond)
	if m.Idle, err = srv.stats(ctx); err != nil {
		return fail(err)
	}
	cl, err := amqp.Dial(url, amqp.ClientConfig{Service: service, ClientName: client})
	if err != nil {
		return fail(err)
	}
	conn := bankrpc.NewConn(cl, bankrpc.WithDefaultTimeout(10*time.Minute))
	fail = func(err error) (AMQPMemory, error) { return m, errors.Join(err, conn.Close(), srv.stop()) }
	stub := testv1.NewTestServiceClient(conn)
	heapBefore := heapInuse()
	callCtx, cancelCalls := context.WithCancel(ctx)
	defer cancelCalls()
	done := make(chan error, n)
	req := &testv1.EchoRequest{Payload: make([]byte, 16)}
	for range n {
		go func() {
			_, err := stub.Echo(callCtx, req)
			done <- err
		}()
	}
	if m.InQueue, err = waitQueued(ctx, url, amqp.ServiceQueue(service), n-amqp.DefaultPrefetch); err != nil {
		return fail(err)
	}
	time.Sleep(500 * time.Millisecond)
	if m.Waiting, err = srv.stats(ctx); err != nil {
		return fail(err)
	}
	m.ClientHeap = int64(heapInuse()) - int64(heapBefore)
	t0 := time.Now()
	if _, err := srv.command(ctx, "release"); err != nil {
		return fail(err)
	}
	for range n {
		if err := <-done; err != nil {
			return fail(fmt.Errorf("a queued call failed: %w", err))
		}
	}
	m.DrainElapsed = time.Since(t0)
	if m.Drained, err = srv.stats(ctx); err != nil {
		return fail(err)
	}
	return m, errors.Join(conn.Close(), srv.stop())
}

// cpuWindow is how long the server's CPU use is watched.
const cpuWindow = 3 * time.Second

// cpuOver returns the CPU a process used over d, in cores.
func cpuOver(pid int, d time.Duration) float64 {
	t0, c0 := time.Now(), processTicks(pid)
	time.Sleep(d)
	return float64(processTicks(pid)-c0) / clockTicks / time.Since(t0).Seconds()
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go runs on.
const clockTicks = 100

// processTicks is a process's user and system CPU time in clock ticks.
func processTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest) // f[0] is field 3, state
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// waitQueued waits until at least want messages are ready in queue, and
// returns how many are.
func waitQueued(ctx context.Context, url, queue string, want int) (int, error) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(3 * time.Minute)
	last := 0
	for time.Now().Before(deadline) {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		last = q.Messages
		if last >= want {
			return last, nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
	return last, fmt.Errorf("queue %s holds %d messages after 3 minutes, want %d", queue, last, want)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}
