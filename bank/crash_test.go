package bank

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

// The crash test runs the bank in a child process (this test binary,
// re-executed with crashChildEnv naming the bank directory) and talks to it
// over stdin/stdout, one command per line:
//
//	op ID FU OP ACCOUNT TO AMOUNT -> ack ID CODE VALUE   (printed once the call returned)
//	check ID                      -> rec ID FOUND CODE VALUE (what the bank recorded for ID)
//	accounts                      -> acct ID BALANCE ... then end
//	shutdown                      -> bye, after a clean Shutdown
//
// "op" lines run concurrently; the others in order. ID is a call id
// "<session>-<seq>" and FU the request's first unanswered sequence number;
// FOUND is 1 when the bank has the call's reply, 2 when the call is below
// its session's mark (forgotten), 0 otherwise.
const crashChildEnv = "BANK_CRASH_CHILD_DIR"

const crashAccounts = 8

func runCrashChild(dir string) int {
	b, err := Open(dir, WithSnapshotEvery(500))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	var mu sync.Mutex // serialises lines on stdout
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	say("ready")
	ctx := context.Background()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 7 && f[0] == "op":
			req := request{op: op(atoi(f[3])), account: int32(atoi(f[4])), to: int32(atoi(f[5])), amount: int64(atoi(f[6]))}
			c := callRefOf(f[1], uint64(atoi(f[2])))
			go func(id string) {
				res, err := b.call(ctx, c, req)
				if err != nil {
					say("ack %s %d %d", id, bankrpc.CodeOf(err), 0)
					return
				}
				say("ack %s %d %d", id, res.code, res.value)
			}(f[1])
		case len(f) == 2 && f[0] == "check":
			found, r := b.recordedCall(f[1])
			say("rec %s %d %d %d", f[1], found, r.code, r.value)
		case len(f) == 1 && f[0] == "accounts":
			for _, a := range b.Accounts() {
				say("acct %d %d", a.ID, a.Balance)
			}
			say("end")
		case len(f) == 1 && f[0] == "shutdown":
			if err := b.Shutdown(); err != nil {
				fmt.Fprintln(os.Stderr, "child: shutdown:", err)
				return 1
			}
			say("bye")
			return 0
		default:
			fmt.Fprintf(os.Stderr, "child: bad command %q\n", in.Text())
			return 1
		}
	}
	return 0 // stdin closed: leave without a snapshot, as a crash would
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// crashOp is one operation the parent sent, and what it knows of it.
type crashOp struct {
	fu    uint64 // the request's first unanswered sequence number
	req   request
	acked bool
	res   result // when acked, or once known to be applied
	// decided: acked, or its presence in the bank was checked after a
	// restart; applied says whether it is in the bank.
	decided, applied bool
}

// child is a running child process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	wmu    sync.Mutex // serialises writes to stdin
	lines  chan []string
	acks   sync.Map // op id -> chan []string
	exited chan struct{}
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	c := &child{cmd: cmd, stdin: stdin, stderr: &bytes.Buffer{}, lines: make(chan []string, 1024), exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	require.NoError(t, cmd.Start())
	go func() {
		defer close(c.exited)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 4 && f[0] == "ack" {
				if ch, ok := c.acks.LoadAndDelete(f[1]); ok {
					ch.(chan []string) <- f
				}
				continue
			}
			c.lines <- f
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		_ = cmd.Wait()
	})
	return c
}

func (c *child) send(line string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// next returns the next line that is not an ack, or nil when the child is gone.
func (c *child) next(t *testing.T, ctx context.Context) []string {
	t.Helper()
	select {
	case f := <-c.lines:
		return f
	case <-ctx.Done():
		t.Fatalf("child did not answer: %v; stderr:\n%s", ctx.Err(), c.stderr)
		return nil
	}
}

// do sends one op and returns its ack, or nil when the child died first.
func (c *child) do(id string, fu uint64, req request) []string {
	ch := make(chan []string, 1)
	c.acks.Store(id, ch)
	if err := c.send(fmt.Sprintf("op %s %d %d %d %d %d", id, fu, req.op, req.account, req.to, req.amount)); err != nil {
		return nil
	}
	select {
	case f := <-ch:
		return f
	case <-c.exited:
		select {
		case f := <-ch:
			return f
		default:
			return nil
		}
	}
}

func (c *child) kill(t *testing.T) {
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.exited
	_ = c.cmd.Wait()
}

// TestCrashRecovery kills a bank process at random moments while callers
// make concurrent operations, restarts it, and checks after every restart
// that every acknowledged operation is in the bank exactly once, with the
// result it was acknowledged with, and that the balances are exactly the
// sum of the operations the bank holds.
//
// Each worker is a client session that waits for each reply, so the bank
// forgets the replies of its earlier calls (FORMAT.md, "At most once").
// What can be asserted: an acknowledged operation must be present (its
// reply recorded with the acknowledged result, or forgotten below its
// session's mark: never "not applied"); an unacknowledged one may be
// present or not, and the bank says which (it is the last call of its
// session, so never forgotten). Each operation is then decided,
// and since deposits, withdrawals and transfers commute once their outcome
// is known, each account's balance must equal the sum of the effects of the
// decided, applied, successful operations on it. Total money must equal
// deposits minus withdrawals.
func TestCrashRecovery(t *testing.T) {
	ctx := testCtx(t, 100*time.Second)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	const kills, workers = 22, 8
	budget := time.Now().Add(30 * time.Second)

	ops := map[string]*crashOp{}
	var opsMu sync.Mutex
	var order []string // ids in the order sent, for stable checks

	// verify restarts the child's view: decides every undecided op, checks
	// every acknowledged one, and compares the balances.
	verify := func(c *child) {
		t.Helper()
		require.Equal(t, []string{"ready"}, c.next(t, ctx), "child stderr:\n%s", c.stderr)
		// Send from another goroutine: the child answers while we send, and
		// would block on a full stdout if nobody read it.
		checks := make([]string, len(order))
		for i, id := range order {
			checks[i] = "check " + id
		}
		sent := make(chan error, 1)
		go func() {
			for _, line := range checks {
				if err := c.send(line); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
		for _, id := range order {
			f := c.next(t, ctx)
			require.Len(t, f, 5)
			require.Equal(t, []string{"rec", id}, f[:2])
			o := ops[id]
			found, forgotten := f[2] == "1", f[2] == "2"
			got := result{code: bankrpc.Code(atoi(f[3])), value: int64(atoi(f[4]))}
			switch {
			case o.acked:
				require.True(t, found || forgotten, "acknowledged op %s %+v is missing after a crash (seed %d)", id, o.req, seed)
				if found {
					require.Equal(t, o.res.code, got.code, "op %s", id)
					require.Equal(t, o.res.value, got.value, "op %s", id)
				}
			case o.decided:
				require.Equal(t, o.applied, found || forgotten, "op %s changed its mind (seed %d)", id, seed)
				if found {
					require.Equal(t, o.res, got, "op %s", id)
				}
			default:
				require.False(t, forgotten, "op %s: the last call of its session cannot be below the session's mark (seed %d)", id, seed)
				o.decided, o.applied, o.res = true, found, got
			}
		}
		require.NoError(t, <-sent)
		want := map[int32]int64{}
		var deposits, withdrawals int64
		for _, o := range ops {
			if !o.applied || o.res.code != bankrpc.OK {
				continue
			}
			switch o.req.op {
			case opDeposit:
				want[o.req.account] += o.req.amount
				deposits += o.req.amount
			case opWithdraw:
				want[o.req.account] -= o.req.amount
				withdrawals += o.req.amount
			case opTransfer:
				want[o.req.account] -= o.req.amount
				want[o.req.to] += o.req.amount
			}
		}
		require.NoError(t, c.send("accounts"))
		got := map[int32]int64{}
		var total int64
		for f := c.next(t, ctx); f[0] != "end"; f = c.next(t, ctx) {
			require.Len(t, f, 3)
			got[int32(atoi(f[1]))] = int64(atoi(f[2]))
			total += int64(atoi(f[2]))
		}
		for id := int32(1); id <= crashAccounts; id++ {
			assert.Equal(t, want[id], got[id], "balance of account %d (seed %d)", id, seed)
		}
		require.Equal(t, deposits-withdrawals, total, "total money (seed %d)", seed)
	}

	record := func(id string, req request, ack []string) {
		opsMu.Lock()
		defer opsMu.Unlock()
		o := ops[id]
		if ack == nil {
			return // unacknowledged: decided at the next restart
		}
		o.acked, o.decided, o.applied = true, true, true
		o.res = result{code: bankrpc.Code(atoi(ack[2])), value: int64(atoi(ack[3]))}
		if o.res.code != bankrpc.OK && o.res.code != bankrpc.FailedPrecondition {
			t.Errorf("op %s %+v acknowledged with %s", id, req, o.res.code)
		}
	}
	newOp := func(session string, seq uint64, req request) string {
		opsMu.Lock()
		defer opsMu.Unlock()
		id := fmt.Sprintf("%s-%d", session, seq)
		ops[id] = &crashOp{fu: seq, req: req}
		order = append(order, id)
		return id
	}

	for round := 0; ; round++ {
		c := startChild(t, dir)
		verify(c)
		if round == 0 {
			for id := int32(1); id <= crashAccounts; id++ {
				// Opens are not part of the money model; keep them out of ops.
				f := c.do(fmt.Sprint("open-", id), uint64(id), request{op: opOpen, account: id})
				require.NotNil(t, f)
				require.Equal(t, "0", f[2])
			}
		}
		if round == kills || time.Now().After(budget) && round >= 20 {
			require.NoError(t, c.send("shutdown"))
			require.Equal(t, []string{"bye"}, c.next(t, ctx))
			<-c.exited
			require.NoError(t, c.cmd.Wait())
			c = startChild(t, dir) // from the snapshot
			verify(c)
			require.NoError(t, c.send("shutdown"))
			require.Equal(t, []string{"bye"}, c.next(t, ctx))
			acked, applied := 0, 0
			for _, o := range ops {
				if o.acked {
					acked++
				}
				if o.applied {
					applied++
				}
			}
			t.Logf("%d kills, %d ops sent, %d acknowledged, %d applied (seed %d)", round, len(ops), acked, applied, seed)
			return
		}

		var wg sync.WaitGroup
		for w := range workers {
			wrng := rand.New(rand.NewPCG(seed, uint64(round*workers+w+1)))
			session := fmt.Sprintf("r%dw%d", round, w)
			wg.Go(func() {
				for seq := uint64(1); ; seq++ {
					select {
					case <-c.exited:
						return
					default:
					}
					from := wrng.Int32N(crashAccounts) + 1
					req := request{op: opDeposit, account: from, amount: wrng.Int64N(100) + 1}
					switch wrng.IntN(3) {
					case 1:
						req.op, req.amount = opWithdraw, wrng.Int64N(150)+1
					case 2:
						to := wrng.Int32N(crashAccounts-1) + 1
						if to >= from {
							to++
						}
						req.op, req.to = opTransfer, to
					}
					// Every earlier call of the session was answered: the
					// worker stops at the first that is not.
					id := newOp(session, seq, req)
					record(id, req, c.do(id, seq, req))
				}
			})
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		c.kill(t)
		wg.Wait()
	}
}

// TestLockHeldByAnotherProcess checks the error a second process gets, and
// that the lock dies with its holder however it dies.
func TestLockHeldByAnotherProcess(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	c := startChild(t, dir)
	require.Equal(t, []string{"ready"}, c.next(t, ctx), "child stderr:\n%s", c.stderr)

	_, err := Open(dir)
	var lerr *LockedError
	require.ErrorAs(t, err, &lerr)
	assert.Equal(t, c.cmd.Process.Pid, lerr.PID)
	assert.EqualError(t, err, fmt.Sprintf("bank: directory %s is in use by process %d", dir, c.cmd.Process.Pid))

	c.kill(t)
	b := openBank(t, dir)
	require.NoError(t, b.Shutdown())
}
