package banktest

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// The promise of issue 12, checked with processes: an acknowledged operation
// is never lost and a call id is applied at most once, however long after
// its first sending it is repeated.
//
// Client processes (testdata/promisedriver) run deposits and transfers on a
// few accounts; some are killed with SIGKILL in the middle of a call. Every
// call whose outcome is unknown (sent, no answer before the kill or the
// timeout) is sent again with its call id, but only after at least
// promiseGap further calls on each account it touches have been answered,
// and after a restart of bank-server (which is restarted every few seconds,
// by SIGTERM or by SIGKILL), so that the repeat reaches the bank's durable
// record rather than the runtime's reply cache. At the end the balances must
// equal what the acknowledged operations and the resolved repeats say: an
// operation applied twice, or an acknowledged one lost, shows as a wrong
// balance; the money in the bank must equal the deposits applied.
//
// The run lasts promiseDefault per transport; BANKRPC_PROMISE_SECONDS sets
// another duration (e.g. 600 for a soak).

const (
	promiseGap      = 100 // further answered calls on an account before a repeat
	promiseAccounts = 4
	promiseWorkers  = 3 // client processes at once
	promiseDefault  = 30 * time.Second
	promiseRestart  = 5 * time.Second // between server restarts
	promiseDrain    = 2 * time.Minute // bound on resolving the last unknown calls
)

// The promisedriver binary, built once per test binary.
var (
	driverOnce sync.Once
	driverPath string
	driverErr  error
)

func promiseDriver(t *testing.T) string {
	t.Helper()
	driverOnce.Do(func() {
		driverPath = filepath.Join(binDir, "promisedriver")
		out, err := exec.Command("go", "build", "-o", driverPath, "./testdata/promisedriver").CombinedOutput()
		if err != nil {
			driverErr = fmt.Errorf("go build ./testdata/promisedriver: %v\n%s", err, out)
		}
	})
	require.NoError(t, driverErr)
	return driverPath
}

func promiseDuration(t *testing.T) time.Duration {
	s := os.Getenv("BANKRPC_PROMISE_SECONDS")
	if s == "" {
		return promiseDefault
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "BANKRPC_PROMISE_SECONDS")
	return time.Duration(n) * time.Second
}

func TestPromiseZMQ(t *testing.T) {
	testContext(t, 5*time.Minute+2*promiseDuration(t))
	b := bankRef{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: "promise"}
	runPromise(t, b)
}

func TestPromiseAMQP(t *testing.T) {
	testContext(t, 5*time.Minute+2*promiseDuration(t))
	b := bankRef{transport: "amqp", addr: amqptest.URL(t), name: uniqueBank(t, "promise")}
	runPromise(t, b)
}

// promiseOp is one operation, and, once sent, its call id.
type promiseOp struct {
	tag      int
	callID   string // "" until sent
	kind     string // open, deposit, transfer
	from, to int32
	amount   int64
	repeat   bool // a repeat of a call whose outcome was unknown
}

func (op *promiseOp) line() string {
	id := op.callID
	if id == "" {
		id = "-"
	}
	switch op.kind {
	case "transfer":
		return fmt.Sprintf("%d %s transfer %d %d %d", op.tag, id, op.from, op.to, op.amount)
	case "deposit":
		return fmt.Sprintf("%d %s deposit %d %d", op.tag, id, op.from, op.amount)
	}
	return fmt.Sprintf("%d %s %s %d", op.tag, id, op.kind, op.from)
}

func (op *promiseOp) accounts() []int32 {
	if op.kind == "transfer" {
		return []int32{op.from, op.to}
	}
	return []int32{op.from}
}

// unknownCall is a call whose outcome is unknown, with the state it waits
// past before it may be repeated.
type unknownCall struct {
	op       *promiseOp
	callsAt  map[int32]int
	restarts int
}

// promiseLedger is the test's model of the bank: what the answered calls
// say the balances are. It is safe for concurrent use.
type promiseLedger struct {
	mu        sync.Mutex
	rng       *rand.Rand
	nextTag   int
	want      map[int32]int64
	deposited int64
	calls     map[int32]int // answered calls per account
	restarts  int
	unknown   []*unknownCall
	repeating int // repeats handed out, not recorded yet
	draining  bool
	stopped   bool // the test gave up: no more operations
	problems  []string

	sent, answered, refused, unknowns, kills             int
	repeats, repeatsApplied, repeatsRefused, repeatsLost int
}

func newPromiseLedger() *promiseLedger {
	return &promiseLedger{rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12)), want: map[int32]int64{}, calls: map[int32]int{}}
}

// next returns the next operation: a repeat that is due, else a fresh
// operation (while draining, a deposit of 1 on an account a repeat waits
// for), or nil when draining is over.
func (l *promiseLedger) next() *promiseOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, u := range l.unknown {
		if l.due(u) {
			l.unknown = append(l.unknown[:i], l.unknown[i+1:]...)
			l.repeating++
			l.repeats++
			op := *u.op
			op.repeat = true
			return &op
		}
	}
	if l.stopped {
		return nil
	}
	l.nextTag++
	op := &promiseOp{tag: l.nextTag}
	if l.draining {
		if len(l.unknown) == 0 && l.repeating == 0 {
			return nil
		}
		op.kind, op.amount = "deposit", 1
		op.from = 1 + int32(l.rng.IntN(promiseAccounts))
		if len(l.unknown) > 0 {
			u := l.unknown[l.rng.IntN(len(l.unknown))]
			accts := u.op.accounts()
			op.from = accts[l.rng.IntN(len(accts))]
		}
		return op
	}
	op.from = 1 + int32(l.rng.IntN(promiseAccounts))
	if l.rng.IntN(2) == 0 {
		op.kind, op.amount = "deposit", 1+l.rng.Int64N(100)
	} else {
		op.kind, op.amount = "transfer", 1+l.rng.Int64N(60)
		op.to = 1 + int32(l.rng.IntN(promiseAccounts-1))
		if op.to >= op.from {
			op.to++
		}
	}
	return op
}

// due reports whether u may be repeated now.
func (l *promiseLedger) due(u *unknownCall) bool {
	if l.restarts <= u.restarts {
		return false
	}
	for _, a := range u.op.accounts() {
		if l.calls[a]-u.callsAt[a] < promiseGap {
			return false
		}
	}
	return true
}

// record takes what became of op: the driver's "done" line (code, balance),
// or ok=false when its outcome is unknown.
func (l *promiseLedger) record(op *promiseOp, ok bool, code string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	if op.repeat {
		l.repeating--
	}
	switch code {
	case "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELED":
		// The server's runtime, stopping, did not serve it; or the bank
		// could not say. Repeated later like a call without an answer.
		ok = false
	}
	if !ok {
		l.unknowns++
		if op.repeat {
			l.repeatsLost++
		}
		u := &unknownCall{op: op, callsAt: map[int32]int{}, restarts: l.restarts}
		for _, a := range op.accounts() {
			u.callsAt[a] = l.calls[a]
		}
		l.unknown = append(l.unknown, u)
		return
	}
	l.answered++
	for _, a := range op.accounts() {
		l.calls[a]++
	}
	switch code {
	case "OK":
		switch op.kind {
		case "deposit":
			l.want[op.from] += op.amount
			l.deposited += op.amount
		case "transfer":
			l.want[op.from] -= op.amount
			l.want[op.to] += op.amount
		}
		if op.repeat {
			l.repeatsApplied++
		}
	case "FAILED_PRECONDITION": // insufficient funds: not applied
		l.refused++
		if op.repeat {
			l.repeatsRefused++
		}
	default:
		l.problems = append(l.problems, fmt.Sprintf("%s (call id %s, repeat %v) answered %s", op.line(), op.callID, op.repeat, code))
	}
}

func (l *promiseLedger) restarted() {
	l.mu.Lock()
	l.restarts++
	l.mu.Unlock()
}

func (l *promiseLedger) problem(format string, args ...any) {
	l.mu.Lock()
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// driver is a running promisedriver process.
type driver struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string // its stdout, line by line; closed at its end
	done  chan struct{}
}

func startDriver(t *testing.T, bin string, b bankRef) (*driver, error) {
	cmd := exec.Command(bin, b.transport, b.addr, b.name)
	cmd.Env = childEnv()
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &driver{cmd: cmd, in: in, lines: make(chan string, 64), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(d.kill)
	select {
	case line := <-d.lines:
		if line == "ready" {
			return d, nil
		}
		d.kill()
		return nil, fmt.Errorf("promisedriver printed %q instead of ready", line)
	case <-time.After(30 * time.Second):
		d.kill()
		return nil, fmt.Errorf("promisedriver did not connect within 30s")
	}
}

// kill sends SIGKILL to the driver, by its PID, and waits for its end.
func (d *driver) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	for range d.lines {
	}
	<-d.done
}

// call sends op and returns its outcome: ok and the code when the bank
// answered. With killAfter >= 0 the driver is killed that long after it
// says the call is sent; what it printed before dying decides the outcome.
func (d *driver) call(op *promiseOp, killAfter time.Duration) (sent, ok bool, code string, err error) {
	if _, err := io.WriteString(d.in, op.line()+"\n"); err != nil {
		return false, false, "", fmt.Errorf("write to promisedriver: %w", err)
	}
	timeout := time.After(time.Minute)
	var killed <-chan time.Time
	for {
		select {
		case line, open := <-d.lines:
			if !open {
				return sent, false, "", nil // killed: the outcome is unknown if it was sent
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "send" && f[1] == strconv.Itoa(op.tag):
				sent = true
				if op.callID == "" {
					op.callID = f[2]
				} else if op.callID != f[2] {
					return sent, false, "", fmt.Errorf("promisedriver sent %s under call id %s, not %s", op.line(), f[2], op.callID)
				}
				if killAfter >= 0 {
					killed = time.After(killAfter)
				}
			case len(f) == 4 && f[0] == "done" && f[1] == strconv.Itoa(op.tag):
				return sent, true, f[2], nil
			case len(f) == 3 && f[0] == "unknown" && f[1] == strconv.Itoa(op.tag):
				return sent, false, f[2], nil
			default:
				return sent, false, "", fmt.Errorf("promisedriver printed %q", line)
			}
		case <-killed:
			killed = nil
			_ = d.cmd.Process.Signal(syscall.SIGKILL) // by PID; the lines it printed still come
		case <-timeout:
			return sent, false, "", fmt.Errorf("promisedriver: no outcome of %s within a minute", op.line())
		}
	}
}

// worker runs client processes one after the other until the ledger has no
// more operations; while not draining, some are killed in the middle of a
// call.
func promiseWorker(t *testing.T, bin string, b bankRef, l *promiseLedger, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for {
		d, err := startDriver(t, bin, b)
		if err != nil {
			l.problem("start a client: %v", err)
			return
		}
		// A client logs on first, as bank-client does: its session is then
		// known to the bank before any call of it can be cut short. (A
		// repeat of a session's first call that never reached the bank is
		// answered ABORTED: the bank accepts an unknown session only from
		// a request with first_unanswered = its sequence, which a repeat
		// under another process's call id does not carry; PROTOCOL.md 2.1.)
		l.mu.Lock()
		draining := l.draining
		l.nextTag++
		open := &promiseOp{tag: l.nextTag, kind: "open", from: 1 + int32(rng.IntN(promiseAccounts))}
		l.mu.Unlock()
		if _, ok, code, err := d.call(open, -1); err != nil || !ok || code != "OK" {
			if err != nil {
				l.problem("%v", err)
				d.kill()
				return
			}
			d.kill() // no answer (the server restarts): start afresh
			continue
		}
		l.record(open, true, "OK")
		killAt := -1
		if !draining && rng.IntN(10) < 6 {
			killAt = rng.IntN(30)
		}
		for i := 0; ; i++ {
			op := l.next()
			if op == nil {
				d.kill()
				return
			}
			killAfter := time.Duration(-1)
			if i == killAt {
				killAfter = time.Duration(rng.IntN(3000)) * time.Microsecond
			}
			sent, ok, code, err := d.call(op, killAfter)
			if err != nil {
				l.problem("%v", err)
				d.kill()
				return
			}
			if !sent {
				// Kills come only after "send": the driver died on its own.
				l.problem("promisedriver ended before sending %s", op.line())
				return
			}
			l.record(op, ok, code)
			if i == killAt {
				l.mu.Lock()
				l.kills++
				l.mu.Unlock()
				break
			}
			if i >= 30 {
				break
			}
		}
		_ = d.in.Close()
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			d.kill()
		}
	}
}

func runPromise(t *testing.T, b bankRef) {
	bin := promiseDriver(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	srv := startServer(t, dir, b, data)
	b = srv.ref

	// The one-shot CLI case first: a deposit of 100 whose call id the user
	// has, 25 more bank-client runs on the account (75 calls with their
	// log-ons and log-offs), a restart, then bank-client --call-id.
	callID := oneShotDeposit(t, bin, b, oneShotAccount, 100)
	for range 25 {
		mustRun(t, dir, b, "--id", strconv.Itoa(oneShotAccount), "deposit", "1")
	}
	srv.stop(t)
	srv = startServer(t, dir, b, data)
	retry := []string{"--id", strconv.Itoa(oneShotAccount), "--call-id", callID, "deposit", "100"}
	assert.Equal(t, "balance 100\n", mustRun(t, dir, b, retry...), "bank-client --call-id after 25 runs and a restart: the recorded reply of the deposit")
	assert.Equal(t, int64(125), balanceOf(t, dir, b, oneShotAccount), "the repeated deposit is not applied again")

	l := newPromiseLedger()
	opener, err := startDriver(t, bin, b)
	require.NoError(t, err)
	for a := int32(1); a <= promiseAccounts; a++ {
		l.nextTag++
		op := &promiseOp{tag: l.nextTag, kind: "open", from: a}
		_, ok, code, err := opener.call(op, -1)
		require.NoError(t, err)
		require.True(t, ok && code == "OK", "open account %d: %s", a, code)
		l.want[a] = 0
	}
	opener.kill()

	run := promiseDuration(t)
	start := time.Now()
	var workers sync.WaitGroup
	for w := range promiseWorkers {
		workers.Go(func() { promiseWorker(t, bin, b, l, uint64(w)+uint64(start.UnixNano())) })
	}
	finished := make(chan struct{})
	go func() {
		workers.Wait()
		close(finished)
	}()

	// The server is restarted every promiseRestart, alternately by SIGTERM
	// and by SIGKILL, until the workers are done.
	serverKills := 0
	drainBy := time.Now().Add(run + promiseDrain)
	for restarts := 0; ; restarts++ {
		select {
		case <-finished:
		case <-time.After(promiseRestart):
			if restarts%2 == 0 {
				srv.stop(t)
			} else {
				srv.signal(t, syscall.SIGKILL)
				srv.wait(t, 10*time.Second)
				serverKills++
			}
			srv = startServer(t, dir, b, data)
			l.restarted()
			if time.Since(start) > run {
				l.mu.Lock()
				l.draining = true
				l.mu.Unlock()
			}
			if time.Now().After(drainBy) {
				l.mu.Lock()
				left := len(l.unknown)
				l.stopped = true
				l.mu.Unlock()
				<-finished
				t.Fatalf("%d calls still of unknown outcome %v after the run", left, promiseDrain)
			}
			continue
		}
		break
	}

	got := map[int32]int64{}
	var total int64
	for a := int32(1); a <= promiseAccounts; a++ {
		got[a] = balanceOf(t, dir, b, a)
		total += got[a]
	}
	srv.stop(t)

	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%s: %v, %d server restarts (%d by SIGKILL), %d client processes killed mid-call; %d calls sent, %d answered (%d refused for lack of funds), %d of unknown outcome; %d repeats after >= %d further calls and a restart: %d applied or answered from the record, %d refused, %d unknown again; balances %v, total %d = deposits %d",
		b.transport, time.Since(start).Round(time.Second), l.restarts, serverKills, l.kills, l.sent, l.answered, l.refused, l.unknowns,
		l.repeats, promiseGap, l.repeatsApplied, l.repeatsRefused, l.repeatsLost, got, total, l.deposited)
	require.Empty(t, l.problems, "calls that went wrong")
	require.Empty(t, l.unknown, "every unknown outcome resolved by a repeat")
	assert.Equal(t, l.want, got, "balances = acknowledged operations + resolved repeats (a difference is an operation applied twice or an acknowledged one lost)")
	assert.Equal(t, l.deposited, total, "money conserved: the bank holds the deposits applied, transfers move it")
	assert.Positive(t, l.kills, "clients were killed mid-call")
	assert.Positive(t, l.repeats, "unknown calls were repeated")
}

// oneShotAccount is the account of the one-shot CLI case, apart from the
// promise accounts 1..promiseAccounts.
const oneShotAccount = 7

// oneShotDeposit opens acct and deposits amount into it through a client
// process, and returns the deposit's call id: what bank-client prints when
// the outcome of a call is unknown, for the user to repeat it with
// --call-id. (The case of issue 12: the bank remembered the last 64 call ids
// per account, log-ons and log-offs included, and applied such a repeat
// again after 21 more bank-client runs.)
func oneShotDeposit(t *testing.T, bin string, b bankRef, acct int32, amount int64) string {
	t.Helper()
	d, err := startDriver(t, bin, b)
	require.NoError(t, err)
	defer d.kill()
	var callID string
	for i, kind := range []string{"open", "deposit"} {
		op := &promiseOp{tag: 1 + i, kind: kind, from: acct, amount: amount}
		_, ok, code, err := d.call(op, -1)
		require.NoError(t, err)
		require.True(t, ok && code == "OK", "%s: %s", kind, code)
		callID = op.callID
	}
	return callID
}
