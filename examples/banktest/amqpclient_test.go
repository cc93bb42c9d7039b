package banktest

import (
	"fmt"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport/amqp"
)

var callIDLine = regexp.MustCompile(`\(call id (\S+)\) may or may not have been applied`)

// TestAMQPTimedOutDepositIsNotAppliedLater checks what bank-client tells the
// user when a deposit gets no answer over RabbitMQ because the bank is down:
// the deposit is not applied when the bank comes back, and repeating it
// with the call id the client printed applies it exactly once.
func TestAMQPTimedOutDepositIsNotAppliedLater(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	b := bankRef{transport: "amqp", addr: url, name: uniqueBank(t, "late")}
	srv := startServer(t, dir, b, data)

	p := startPrompt(t, dir, b, 7, "--json", "--timeout", "1s")
	require.Equal(t, `{"balance":"100"}`, p.do(t, "deposit 100"))
	srv.stop(t)

	assert.Equal(t, `{"error":{"code":"DEADLINE_EXCEEDED","message":"deadline exceeded"}}`, p.do(t, "deposit 5"))
	assert.Equal(t, 3, p.quit(t), "the session's last failure: no answer")
	m := callIDLine.FindStringSubmatch(p.stderr.String())
	require.NotNil(t, m, "the client prints the call id of the deposit whose outcome is unknown:\n%s", p.stderr.String())
	callID := m[1]
	assert.Contains(t, p.stderr.String(), "it will not be applied from now on")
	assert.Contains(t, p.stderr.String(), "--call-id "+callID+" deposit 5")

	srv = startServer(t, dir, b, data)
	require.Eventually(t, func() bool {
		messages, consumers := queueState(t, url, amqp.ServiceQueue(b.name))
		return messages == 0 && consumers == 1
	}, 10*time.Second, 50*time.Millisecond, "the bank is back and nothing waits in its queue")
	assert.Equal(t, int64(100), balanceOf(t, dir, b, 7), "the timed-out deposit was not applied when the bank came back")

	again := []string{"--id", "7", "--call-id", callID, "deposit", "5"}
	assert.Equal(t, "balance 105\n", mustRun(t, dir, b, again...), "the repeat applies it")
	assert.Equal(t, "balance 105\n", mustRun(t, dir, b, again...), "a second repeat gets the recorded reply")
	r := runClient(t, dir, b, "--id", "7", "--call-id", callID, "deposit", "6")
	assert.Equal(t, 1, r.status, "a call id reused for another amount is refused: %v", r)
	// Refused by the server's runtime, which still has the call in its reply
	// cache, or by the bank, which has it on record.
	assert.Regexp(t, `^deposit refused: (bankrpc: )?call id "`+regexp.QuoteMeta(callID)+`" (is|was) already used`, r.stdout)
	assert.Equal(t, int64(105), balanceOf(t, dir, b, 7))
	srv.stop(t)
}

// TestAMQPClientNames checks the two ways of naming a client: a stable
// --client-name, used by one process at a time and kept across runs, and the
// default fresh name, which lets any number of clients of one account run at
// once.
func TestAMQPClientNames(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	dir := t.TempDir()
	b := bankRef{transport: "amqp", addr: url, name: uniqueBank(t, "names")}
	name := b.name + ".teller"
	t.Cleanup(func() { deleteQueues(t, url, amqp.ResultQueue(name), amqp.ErrorQueue(name)) })
	srv := startServer(t, dir, b, filepath.Join(dir, "data"))

	p := startPrompt(t, dir, b, 1, "--client-name", name)
	require.Equal(t, "balance 0", p.do(t, "balance"))
	r := runClient(t, dir, b, "--client-name", name, "--id", "1", "deposit", "5")
	assert.Equal(t, 3, r.status, "a second process with the same name: %v", r)
	assert.Contains(t, r.stderr, "uses this client name")
	assert.Contains(t, r.stderr, "nothing was sent")
	require.Equal(t, 0, p.quit(t))
	assert.Equal(t, "balance 5\n", mustRun(t, dir, b, "--client-name", name, "--id", "1", "deposit", "5"), "the name is free again")

	const clients = 4
	var wg sync.WaitGroup
	results := make([]result, clients)
	for i := range clients {
		wg.Go(func() { results[i] = runClient(t, dir, b, "--id", "2", "deposit", fmt.Sprint(10*(i+1))) })
	}
	wg.Wait()
	for i, r := range results {
		assert.Equal(t, 0, r.status, "client %d: %v", i, r)
	}
	assert.Equal(t, int64(10+20+30+40), balanceOf(t, dir, b, 2), "clients of one account at once do not take each other's replies")
	srv.stop(t)
}
