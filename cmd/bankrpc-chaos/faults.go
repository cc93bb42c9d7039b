package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	zmq4 "github.com/pebbe/zmq4"
	"github.com/prometheus/client_golang/prometheus"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/bankrpc/bankrpc"
)

// runLogged runs a command with its output kept in the scenario's
// directory, and returns its stdout.
func runLogged(ctx context.Context, e *Env, name, bin string, args ...string) (string, error) {
	d, err := e.dir(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.Root
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	logf, err := os.Create(filepath.Join(d, "stderr.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd.Stderr = logf
	err = cmd.Run()
	return out.String(), err
}

// clientKill runs one-shot bank-client processes that deposit with a call
// id of the driver's, kills most of them with SIGKILL at a random moment
// (before, during or after their call), and re-sends each killed call late,
// from a new bank-client process with the same --call-id. A light load of
// in-process clients runs meanwhile.
func clientKill(ctx context.Context, e *Env, r *Result) error {
	srv, addr, err := e.zmqServer("client-kill")
	if err != nil {
		return err
	}
	load := e.newLoad(zmqDial("zmq://" + addr))
	load.Workers = 2
	var (
		mu      sync.Mutex
		ops     []*Op
		killed  atomic.Int64
		resends sync.WaitGroup
	)
	// The processes' calls belong to a session of the driver's: the bank
	// takes a call id of an unknown session only from a request that shows
	// the session is new (first unanswered = its sequence), which a process
	// given --call-id cannot. The session starts with one deposit here.
	var session *bankrpc.Conn
	defer func() {
		if session != nil {
			session.Close()
		}
	}()
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		var err error
		if session, err = load.Dial(ctx, -2); err != nil {
			return 0, err
		}
		first := &Op{ID: session.NewCallID(), Kind: opDeposit, Account: 1, Amount: 1}
		mu.Lock()
		ops = append(ops, first)
		mu.Unlock()
		load.do(ctx, session, first, stop)
		if !first.Acked {
			return 0, fmt.Errorf("the session's first deposit got no answer")
		}
		sem := make(chan struct{}, 3)
		var wg sync.WaitGroup
		for {
			select {
			case <-stop:
				wg.Wait()
				resends.Wait()
				return int(killed.Load()), nil
			case sem <- struct{}{}:
			}
			op := &Op{ID: session.NewCallID(), Kind: opDeposit, Account: 1 + mrand.Int32N(int32(load.Accounts)), Amount: 1 + mrand.Int64N(50)}
			mu.Lock()
			ops = append(ops, op)
			mu.Unlock()
			wg.Go(func() {
				defer func() { <-sem }()
				wasKilled := e.clientAttempt(srv, op, time.Millisecond+time.Duration(mrand.Int64N(int64(400*time.Millisecond))))
				if wasKilled {
					killed.Add(1)
				}
				if !op.Acked && !op.Aborted {
					resends.Go(func() {
						time.Sleep(300*time.Millisecond + time.Duration(mrand.Int64N(int64(2*time.Second))))
						for range 5 {
							e.clientAttempt(srv, op, 0)
							if op.Acked || op.Aborted {
								return
							}
							time.Sleep(500 * time.Millisecond)
						}
					})
				}
			})
		}
	}
	sub := &Result{}
	b := &bankRun{srv: srv, data: srv.data, load: load, faults: faults, moreResult: sub, moreWhat: "bank-client processes",
		more: func() []*Op {
			mu.Lock()
			defer mu.Unlock()
			return ops
		}}
	if err := e.run(ctx, b, r); err != nil {
		return err
	}
	r.Extra = append(r.Extra, fmt.Sprintf("of which bank-client processes: %d calls, %d processes killed, acknowledged %d, applied %d, applied twice %d, acknowledged but lost %d, late re-sends %d (duplicates suppressed %d), aborted %d",
		sub.Attempted, killed.Load(), sub.Acked, sub.Applied, sub.AppliedTwice, sub.AckedLost, sub.Resends, sub.Suppressed, sub.Aborted))
	return nil
}

// newSessionCallID returns a call id of the session form, in a session of
// its own (the bank refuses it with ABORTED as a request: garbage only).
func newSessionCallID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-1"
}

// clientAttempt runs bank-client for op; with killAfter > 0 it is killed
// with SIGKILL after that long if it still runs. It reports whether it was
// killed.
func (e *Env) clientAttempt(srv *server, op *Op, killAfter time.Duration) bool {
	const timeout = 5 * time.Second
	cmd := exec.Command(filepath.Join(e.Bin, "bank-client"), "--transport", "zmq", "--addr", srv.addr, "--bank", srv.bank,
		"--json", "--timeout", timeout.String(), "--id", strconv.Itoa(int(op.Account)), "--call-id", op.ID, "deposit", strconv.FormatInt(op.Amount, 10))
	cmd.Env = childEnv()
	var out bytes.Buffer
	cmd.Stdout = &out
	a := Attempt{Start: time.Now()}
	if err := cmd.Start(); err != nil {
		a.End, a.Code = time.Now(), bankrpc.Unknown
		op.Attempts = append(op.Attempts, a)
		return false
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	killed := false
	if killAfter > 0 {
		select {
		case err = <-done:
		case <-time.After(killAfter):
			_ = cmd.Process.Signal(syscall.SIGKILL) // by PID: our child
			err = <-done
			killed = true
		}
	} else {
		a.Deadline = 3 * timeout // open, the call and the log-off, each bounded by --timeout
		err = <-done
	}
	a.End = time.Now()
	switch {
	case killed:
		a.Code = bankrpc.Canceled
	default:
		a.Code = clientCode(out.String(), err)
	}
	op.Attempts = append(op.Attempts, a)
	switch {
	case recorded(a.Code):
		op.Acked, op.AckCode = true, a.Code
	case a.Code == bankrpc.Aborted:
		op.Aborted = true
	}
	return killed
}

// clientCode reads bank-client's --json answer: {"balance":...} or
// {"error":{"code":"NAME",...}}.
func clientCode(stdout string, err error) bankrpc.Code {
	var v struct {
		Balance *string `json:"balance"`
		Error   *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	line, _, _ := strings.Cut(stdout, "\n")
	if jerr := json.Unmarshal([]byte(line), &v); jerr == nil {
		if v.Error != nil {
			if c, ok := parseCode(v.Error.Code); ok {
				return c
			}
			return bankrpc.Unknown
		}
		if v.Balance != nil && err == nil {
			return bankrpc.OK
		}
	}
	return bankrpc.Unavailable // no answer printed: the outcome is unknown
}

func parseCode(name string) (bankrpc.Code, bool) {
	for c := bankrpc.Code(0); c <= 16; c++ {
		if c.String() == name {
			return c, true
		}
	}
	return 0, false
}

// diskFull keeps the bank's data on a tmpfs and shrinks it, again and
// again, to a few KiB above what it holds: the bank's log write fails, the
// bank stops (every call UNAVAILABLE), the server is killed, the tmpfs
// grown back and the server started again, which cuts the log's torn tail
// (keeping a copy); the calls re-sent then apply once.
func diskFull(ctx context.Context, e *Env, r *Result) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("mounting a tmpfs needs root: %w", errSkip)
	}
	d, err := e.dir("disk-full")
	if err != nil {
		return err
	}
	mnt := filepath.Join(d, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount a tmpfs: %v: %s: %w", err, strings.TrimSpace(string(out)), errSkip)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			fmt.Fprintf(e.Out, "   warning: umount %s: %v: %s\n", mnt, err, out)
		}
	}()
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := &server{bin: e.Bin, transport: "zmq", addr: "tcp://" + addr, bank: "chaos-disk-full", data: filepath.Join(mnt, "data"), logDir: d}
	var refused atomic.Int64
	faults := func(ctx context.Context, stop <-chan struct{}) (n int, err error) {
		defer func() {
			if gerr := resize(ctx, mnt, 64<<20); err == nil {
				err = gerr
			}
		}()
		for {
			// Leave 32 KiB: a few hundred records.
			if err := resize(ctx, mnt, 32<<10); err != nil {
				return n, err
			}
			full := waitFull(srv, stop, 15*time.Second)
			select {
			case <-stop:
				return n, nil
			default:
			}
			if full {
				refused.Add(1)
			}
			srv.kill()
			n++
			if err := resize(ctx, mnt, 8<<20); err != nil {
				return n, err
			}
			if err := srv.start(ctx); err != nil {
				return n, err
			}
			sleep(stop, time.Second)
		}
	}
	if err := e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(zmqDial("zmq://" + addr)), faults: faults}, r); err != nil {
		return err
	}
	r.Extra = append(r.Extra, fmt.Sprintf("disk-full episodes in which the bank reported a failed write: %d; damaged-tail copies kept: %d", refused.Load(), countGlob(filepath.Join(srv.data, "*.damaged-*"))))
	return nil
}

// resize remounts the tmpfs at mnt with free bytes above what it holds.
// The bank writes meanwhile: a size below the use by then is refused, and
// tried again from the new use.
func resize(ctx context.Context, mnt string, free int64) error {
	var last error
	for range 20 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			return err
		}
		used := int64(st.Blocks-st.Bfree) * st.Bsize
		size := (used + free + 4095) / 4096 * 4096
		out, err := exec.CommandContext(ctx, "mount", "-o", fmt.Sprintf("remount,size=%d", size), mnt).CombinedOutput()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("resize the tmpfs to %d bytes: %v: %s", size, err, strings.TrimSpace(string(out)))
	}
	return last
}

func countGlob(pattern string) int {
	m, _ := filepath.Glob(pattern)
	return len(m)
}

// waitFull waits until the bank logs that it cannot write (its stderr
// says so), up to limit; it reports whether it did.
func waitFull(srv *server, stop <-chan struct{}, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			return false
		case <-time.After(100 * time.Millisecond):
		}
		b, _ := os.ReadFile(filepath.Join(srv.logDir, fmt.Sprintf("bank-server.%s.%d.log", srv.bank, srv.incarnationNow())))
		if bytes.Contains(b, []byte("cannot write")) || bytes.Contains(b, []byte("no space left")) {
			return true
		}
	}
	return false
}

func (s *server) incarnationNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.incarnation
}

// zmqNetwork puts a toxiproxy, used as a Go library, between the clients
// and a zmq bank-server, and cycles network faults on it.
func zmqNetwork(ctx context.Context, e *Env, r *Result) error {
	srv, upstream, err := e.zmqServer("zmq-network")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	// The toxics log through zerolog's global logger, at trace level.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxy := toxiproxy.NewProxy(api, "bank", listen, upstream)
	toxics := []string{
		`{"name":"f","type":"latency","stream":"downstream","attributes":{"latency":300,"jitter":200}}`,
		`{"name":"f","type":"latency","stream":"upstream","attributes":{"latency":1000,"jitter":500}}`,
		`{"name":"f","type":"reset_peer","stream":"downstream","attributes":{"timeout":200}}`,
		`{"name":"f","type":"bandwidth","stream":"downstream","attributes":{"rate":8}}`,
		`{"name":"f","type":"bandwidth","stream":"upstream","attributes":{"rate":4}}`,
		`{"name":"f","type":"slicer","stream":"downstream","attributes":{"average_size":3,"size_variation":2,"delay":100}}`,
		`{"name":"f","type":"timeout","stream":"upstream","attributes":{"timeout":1500}}`,
	}
	kinds := map[string]int{}
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		n := 0
		for {
			sleep(stop, jitter(time.Second))
			select {
			case <-stop:
				return n, nil
			default:
			}
			t := toxics[n%len(toxics)]
			if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(t)); err != nil {
				return n, fmt.Errorf("add toxic %s: %w", t, err)
			}
			var k struct{ Type, Stream string }
			_ = json.Unmarshal([]byte(t), &k)
			kinds[k.Type+" "+k.Stream]++
			n++
			sleep(stop, jitter(2*time.Second))
			if err := proxy.Toxics.RemoveToxic(ctx, "f"); err != nil {
				return n, err
			}
		}
	}
	b := &bankRun{
		srv: srv, data: srv.data, load: e.newLoad(zmqDial("zmq://" + listen)), faults: faults,
		before: func(context.Context) error { return proxy.Start() },
		after:  proxy.Stop,
	}
	if err := e.run(ctx, b, r); err != nil {
		return err
	}
	r.Extra = append(r.Extra, fmt.Sprintf("toxics applied: %v", kinds))
	return nil
}

// garbage sends malformed input to a zmq bank-server under load: plain TCP
// junk, ZMTP frames that are not envelopes, envelopes with junk payloads or
// unknown methods, frames just over the runtime's 4 MiB limit (answered
// RESOURCE_EXHAUSTED) and far over it (libzmq drops the connection). The
// server must keep serving the load correctly.
func garbage(ctx context.Context, e *Env, r *Result) error {
	srv, addr, err := e.zmqServer("garbage")
	if err != nil {
		return err
	}
	var sent [5]atomic.Int64
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		zctx, err := zmq4.NewContext()
		if err != nil {
			return 0, err
		}
		defer zctx.Term()
		return garbageUntilStop(stop, srv, sent[:], func(kind int) error { return sendGarbage(zctx, addr, kind) })
	}
	if err := e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(zmqDial("zmq://" + addr)), faults: faults}, r); err != nil {
		return err
	}
	r.Extra = append(r.Extra, fmt.Sprintf("garbage sent: tcp junk %d, non-envelope frames %d, junk payloads/unknown methods %d, frames just over 4 MiB %d, 6 MiB frames %d",
		sent[0].Load(), sent[1].Load(), sent[2].Load(), sent[3].Load(), sent[4].Load()))
	return nil
}

func sendGarbage(zctx *zmq4.Context, addr string, kind int) error {
	if kind == 0 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(junk(1 + mrand.IntN(2000)))
		return nil
	}
	s, err := zctx.NewSocket(zmq4.DEALER)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetLinger(200 * time.Millisecond)
	_ = s.SetRcvtimeo(300 * time.Millisecond)
	if err := s.Connect("tcp://" + addr); err != nil {
		return err
	}
	id := newSessionCallID()
	switch kind {
	case 1:
		_, err = s.SendMessage(id, junk(1+mrand.IntN(500)), junk(10))
	case 2:
		// A request envelope by hand (PROTOCOL.md): call_id = 1, method = 2,
		// payload = 3; the payload is junk, or the method unknown.
		method := "/bank.v1.Bank/Deposit"
		if mrand.IntN(2) == 0 {
			method = "/bank.v1.Bank/Steal"
		}
		var env []byte
		env = appendField(env, 1, []byte(id))
		env = appendField(env, 2, []byte(method))
		env = appendField(env, 3, junk(1+mrand.IntN(200)))
		_, err = s.SendMessage(id, env)
	case 3:
		var env []byte
		env = appendField(env, 1, []byte(id))
		env = appendField(env, 2, []byte("/bank.v1.Bank/Deposit"))
		env = appendField(env, 3, junk(4<<20+1024))
		_, err = s.SendMessage(id, env)
	case 4:
		_, err = s.SendMessage(id, junk(6<<20))
	}
	if err != nil {
		return err
	}
	_, _ = s.RecvMessageBytes(0) // an answer, or the timeout
	return nil
}

// appendField appends a protobuf length-delimited field.
func appendField(b []byte, num int, v []byte) []byte {
	b = appendVarint(b, uint64(num)<<3|2)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// amqpGarbage publishes malformed requests to an amqp bank-server's queue
// under load: junk bodies without properties, junk with a correlation id
// and a reply-to, envelopes with junk payloads or unknown methods, and
// bodies over the 4 MiB frame limit. The server must keep serving the load
// correctly (it answers what it can on the error queue, drops the rest).
func amqpGarbage(ctx context.Context, e *Env, r *Result) error {
	srv, n, err := e.amqpServer(ctx, "amqp-garbage")
	if err != nil {
		return err
	}
	var sent [4]atomic.Int64
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		conn, err := amqp091.Dial(n.url)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return 0, err
		}
		return garbageUntilStop(stop, srv, sent[:], func(kind int) error {
			id := newSessionCallID()
			p := amqp091.Publishing{DeliveryMode: amqp091.Persistent}
			switch kind {
			case 0:
				p.Body = junk(1 + mrand.IntN(500))
			case 1:
				p.Body, p.CorrelationId, p.ReplyTo = junk(1+mrand.IntN(500)), id, "bankrpc.client.chaos-nobody.results"
			case 2:
				method := "/bank.v1.Bank/Deposit"
				if mrand.IntN(2) == 0 {
					method = "/bank.v1.Bank/Steal"
				}
				var env []byte
				env = appendField(env, 1, []byte(id))
				env = appendField(env, 2, []byte(method))
				env = appendField(env, 3, junk(1+mrand.IntN(200)))
				p.Body, p.CorrelationId, p.ReplyTo = env, id, "bankrpc.client.chaos-nobody.results"
			case 3:
				// Over the server's 4 MiB frame limit, under the broker's
				// max message size (4 MiB + 64 KiB here; larger ones are
				// refused by the broker, closing the publisher's channel).
				p.Body, p.CorrelationId, p.ReplyTo = junk(4<<20+1024), id, "bankrpc.client.chaos-nobody.results"
			}
			return ch.PublishWithContext(ctx, "bankrpc.requests", srv.bank, false, false, p)
		})
	}
	if err := e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(amqpDial(n.url, srv.bank)), faults: faults}, r); err != nil {
		return err
	}
	r.Extra = append(r.Extra, fmt.Sprintf("garbage published: junk without properties %d, junk with a reply-to %d, junk payloads/unknown methods %d, bodies over 4 MiB %d",
		sent[0].Load(), sent[1].Load(), sent[2].Load(), sent[3].Load()))
	return nil
}

// garbageUntilStop sends garbage of each kind in turn (kind = index in
// sent, which counts them), one every 20–100 ms, until stop; it fails when
// a send fails or when the server died.
func garbageUntilStop(stop <-chan struct{}, srv *server, sent []atomic.Int64, send func(kind int) error) (int, error) {
	died := errors.New("bank-server died under garbage input")
	for n := 0; ; {
		sleep(stop, 20*time.Millisecond+time.Duration(mrand.Int64N(int64(80*time.Millisecond))))
		select {
		case <-stop:
			if !srv.alive() {
				return n, died
			}
			return n, nil
		default:
		}
		kind := n % len(sent)
		if err := send(kind); err != nil {
			return n, err
		}
		sent[kind].Add(1)
		n++
		if !srv.alive() {
			return n, died
		}
	}
}

func junk(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
