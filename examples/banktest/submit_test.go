package banktest

import (
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

var submittedLine = regexp.MustCompile(`^submitted (\w+) (\S+)\n$`)

// TestAMQPSubmitWhileNoBankThenCollect is the README's walk-through: with
// the bank stopped, bank-client submits a deposit and a withdrawal too
// large, and exits; the bank starts and applies them while no client runs;
// a later bank-client with the same --client-name collects both results,
// the refusal with its code. Nothing is applied twice.
func TestAMQPSubmitWhileNoBankThenCollect(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	b := bankRef{transport: "amqp", addr: url, name: uniqueBank(t, "submit")}
	srv := startServer(t, dir, b, data)
	assert.Equal(t, "balance 100\n", mustRun(t, dir, b, "--id", "7", "deposit", "100"))
	srv.stop(t)

	name := []string{"--client-name", "alice-" + b.name, "--id", "7"}
	out := mustRun(t, dir, b, append(name, "submit", "deposit", "50")...)
	m := submittedLine.FindStringSubmatch(out)
	require.NotNil(t, m, "submit prints the call id: %q", out)
	deposit := m[2]
	out = mustRun(t, dir, b, append(name, "submit", "withdraw", "1000")...)
	m = submittedLine.FindStringSubmatch(out)
	require.NotNil(t, m, "submit prints the call id: %q", out)
	withdraw := m[2]

	r := runClient(t, dir, b, append(name, "collect", deposit)...)
	assert.Equal(t, 3, r.status, "no result while the bank is down: %v", r)
	assert.Contains(t, r.stdout, "no result yet")

	srv = startServer(t, dir, b, data)
	r = runClient(t, dir, b, append(name, "collect", withdraw, "--wait")...)
	assert.Equal(t, 1, r.status, "the bank refused the withdrawal: %v", r)
	assert.Regexp(t, `^`+regexp.QuoteMeta(withdraw)+` Withdraw: FAILED_PRECONDITION: .*insufficient funds`, r.stdout)
	require.Eventually(t, func() bool {
		messages, consumers := queueState(t, url, amqp.ServiceQueue(b.name))
		return messages == 0 && consumers == 1
	}, 10*time.Second, 50*time.Millisecond, "the bank has taken both calls")
	// The deposit's result reached the process that waited for the
	// withdrawal, which gave it back to the queue as it exited.
	out = mustRun(t, dir, b, append(name, "collect")...)
	assert.Equal(t, deposit+" Deposit: balance 150\n", out)
	assert.Equal(t, "no results waiting\n", mustRun(t, dir, b, append(name, "collect")...))
	assert.Equal(t, int64(150), balanceOf(t, dir, b, 7), "the deposit was applied once, the withdrawal not at all")
	srv.stop(t)
}
