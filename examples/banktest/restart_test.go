package banktest

import (
	"fmt"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/bank"
)

// accountsIn reads the balances saved in a data directory no server uses.
func accountsIn(t *testing.T, data string) map[int32]int64 {
	t.Helper()
	b, err := bank.Open(data)
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Shutdown()) }()
	m := make(map[int32]int64)
	for _, a := range b.Accounts() {
		m[a.ID] = a.Balance
	}
	return m
}

// TestKillDuringBurst SIGKILLs the server while one-shot clients deposit,
// starts it again on the same port and data, and checks that every deposit
// whose client printed success is there exactly once, and that no deposit is
// there twice. Each client deposits into an account of its own, so its
// balance is the number of times its deposit was applied times the amount.
func TestKillDuringBurst(t *testing.T) {
	testContext(t, 2*time.Minute)
	killDuringBurst(t, bankRef{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: "burst"})
}

// TestKillDuringBurstAMQP does the same over RabbitMQ, where the requests
// the killed server held come back to the new one.
func TestKillDuringBurstAMQP(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	killDuringBurst(t, bankRef{transport: "amqp", addr: url, name: uniqueBank(t, "burst")})
}

func killDuringBurst(t *testing.T, b bankRef) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	srv := startServer(t, dir, b, data)

	const clients, parallel, killAfter = 30, 6, 8
	results := make([]result, clients)
	var (
		wg       sync.WaitGroup
		finished atomic.Int32
		running  atomic.Int32
		killed   = make(chan struct{})
		sem      = make(chan struct{}, parallel)
	)
	for i := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			running.Add(1)
			results[i] = runClient(t, dir, b, "--timeout", "20s", "--id", fmt.Sprint(1000+i), "deposit", fmt.Sprint(100*(i+1)))
			running.Add(-1)
			if finished.Add(1) == killAfter {
				close(killed)
			}
		})
	}
	<-killed
	inFlight := running.Load()
	srv.signal(t, syscall.SIGKILL)
	assert.Equal(t, -1, srv.wait(t, 10*time.Second), "killed by the signal")
	srv = startServer(t, dir, b, data)
	wg.Wait()
	srv.stop(t)

	assert.Positive(t, inFlight, "clients were in flight when the server was killed")
	saved := accountsIn(t, data)
	succeeded := 0
	for i, r := range results {
		id, amount := int32(1000+i), int64(100*(i+1))
		switch r.status {
		case 0:
			succeeded++
			assert.Equal(t, fmt.Sprintf("balance %d\n", amount), r.stdout, "client %d", i)
			assert.Equal(t, amount, saved[id], "client %d printed success: its deposit is there exactly once", i)
		case 3:
			assert.Contains(t, []int64{0, amount}, saved[id], "client %d got no answer: its deposit is there at most once (%v)", i, r)
		default:
			t.Errorf("client %d: unexpected %v", i, r)
		}
	}
	assert.Greater(t, succeeded, killAfter, "clients that were cut off by the kill finished against the new server")
}

// TestExitWhenIdle checks that --exit-when-idle stops the server, with exit
// status 0 and its data saved, once the last logged-on client logs off, and
// not before.
func TestExitWhenIdle(t *testing.T) {
	testContext(t, time.Minute)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	srv := startServer(t, dir, bankRef{transport: "zmq", addr: "tcp://127.0.0.1:0", name: "idle"}, data, "--exit-when-idle")
	b := srv.ref

	p := startPrompt(t, dir, b, 1)
	require.Equal(t, "balance 25", p.do(t, "deposit 25"))
	assert.Equal(t, "balance 40\n", mustRun(t, dir, b, "--id", "2", "deposit", "40"))
	time.Sleep(300 * time.Millisecond)
	require.False(t, srv.exited(), "client 1 is still logged on; server stdout:\n%s", srv.stdout.String())

	require.Equal(t, 0, p.quit(t))
	assert.Equal(t, 0, srv.wait(t, 10*time.Second), "stderr:\n%s", srv.stderr.String())
	assert.Contains(t, srv.stdout.String(), "stopped: 2 accounts saved")
	assert.Equal(t, map[int32]int64{1: 25, 2: 40}, accountsIn(t, data))
}

// TestSwapTransports serves the same data over ZeroMQ, then RabbitMQ, then
// ZeroMQ again.
func TestSwapTransports(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	name := uniqueBank(t, "swap")
	overZMQ := bankRef{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: name}
	overAMQP := bankRef{transport: "amqp", addr: url, name: name}

	srv := startServer(t, dir, overZMQ, data)
	mustRun(t, dir, overZMQ, "--id", "1", "deposit", "300")
	mustRun(t, dir, overZMQ, "--id", "2", "deposit", "5")
	mustRun(t, dir, overZMQ, "--id", "1", "transfer", "2", "100")
	srv.stop(t)

	srv = startServer(t, dir, overAMQP, data)
	checkBalances(t, dir, overAMQP, "the switch to amqp", map[int32]int64{1: 200, 2: 105})
	mustRun(t, dir, overAMQP, "--id", "2", "withdraw", "5")
	srv.stop(t)

	srv = startServer(t, dir, overZMQ, data)
	checkBalances(t, dir, overZMQ, "the switch back to zmq", map[int32]int64{1: 200, 2: 100})
	srv.stop(t)
}
