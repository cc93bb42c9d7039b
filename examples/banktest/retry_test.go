package banktest

import (
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOneShotRetryAfterManyCalls is the finding of issue 12 as a user meets
// it, over ZeroMQ with the programs: a deposit gets no answer, the client
// prints its call id; the user repeats it with --call-id (it is applied
// then, once); 100 more bank-client runs deposit on the same account; the
// user repeats it again after a kill -9 of the server and after a clean
// restart. Every repeat must get the recorded reply and leave the balance
// alone. The bank used to remember the last 64 call ids per account and
// applied such a repeat again.
//
// The server is restarted before each repeat so that the repeat reaches the
// bank: the runtime of a running server answers a call id it saw recently
// from its own memory (docs/semantics.md, the reply cache).
func TestOneShotRetryAfterManyCalls(t *testing.T) {
	testContext(t, 3*time.Minute)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	b := bankRef{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: "retry"}
	srv := startServer(t, dir, b, data)

	p := startPrompt(t, dir, b, 7, "--json", "--timeout", "1s")
	require.Equal(t, `{"balance":"10"}`, p.do(t, "deposit 10"))
	srv.signal(t, syscall.SIGSTOP)
	stopped := srv
	t.Cleanup(func() { _ = stopped.cmd.Process.Signal(syscall.SIGCONT) })
	assert.Contains(t, p.do(t, "deposit 100"), `"code":"DEADLINE_EXCEEDED"`)
	srv.signal(t, syscall.SIGCONT)
	assert.Equal(t, 3, p.quit(t), "no answer")
	m := callIDLine.FindStringSubmatch(p.stderr.String())
	require.NotNil(t, m, "the client prints the call id of the deposit whose outcome is unknown:\n%s", p.stderr.String())
	retry := []string{"--id", "7", "--call-id", m[1], "deposit", "100"}

	srv.stop(t)
	srv = startServer(t, dir, b, data)
	assert.Equal(t, "balance 110\n", mustRun(t, dir, b, retry...), "the first repeat: applied now, or answered from the record")
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for range 100 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mustRun(t, dir, b, "--id", "7", "deposit", "1")
		})
	}
	wg.Wait()
	require.Equal(t, int64(210), balanceOf(t, dir, b, 7))

	srv.signal(t, syscall.SIGKILL)
	srv.wait(t, 10*time.Second)
	srv = startServer(t, dir, b, data)
	assert.Equal(t, "balance 110\n", mustRun(t, dir, b, retry...), "after 100 more calls and a kill -9: the recorded reply, from the log")
	assert.Equal(t, int64(210), balanceOf(t, dir, b, 7), "not applied again")

	srv.stop(t)
	srv = startServer(t, dir, b, data)
	assert.Equal(t, "balance 110\n", mustRun(t, dir, b, retry...), "after a clean restart: from the snapshot")
	assert.Equal(t, int64(210), balanceOf(t, dir, b, 7), "not applied again")
	srv.stop(t)
}
