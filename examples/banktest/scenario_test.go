package banktest

import (
	"fmt"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestScenarioZMQ runs the story of the issue over ZeroMQ: two banks at once,
// three clients each, balances checked after every step, then a restart.
func TestScenarioZMQ(t *testing.T) {
	testContext(t, 2*time.Minute)
	banks := []bankRef{
		{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: "north"},
		{transport: "zmq", addr: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)), name: "south"},
	}
	runScenario(t, banks)
}

// TestScenarioAMQP runs the same story over RabbitMQ.
func TestScenarioAMQP(t *testing.T) {
	testContext(t, 2*time.Minute)
	url := amqptest.URL(t)
	banks := []bankRef{
		{transport: "amqp", addr: url, name: uniqueBank(t, "north")},
		{transport: "amqp", addr: url, name: uniqueBank(t, "south")},
	}
	runScenario(t, banks)
}

// runScenario starts the banks side by side, in one working directory (each
// keeps its data in ./data/<bank>), and on each one: clients 1 and 2 run one
// command per process, client 3 is an interactive session on a pipe. Bank i
// works with amounts multiplied by i+1, so that a call reaching the wrong
// bank shows.
func runScenario(t *testing.T, banks []bankRef) {
	dir := t.TempDir()
	servers := make([]*server, len(banks))
	for i, b := range banks {
		servers[i] = startServer(t, dir, b, filepath.Join("data", b.name))
	}
	prompts := make([]*prompt, len(banks))
	for i, b := range banks {
		prompts[i] = startPrompt(t, dir, b, 3)
		require.Equal(t, "balance 0", prompts[i].do(t, "balance"), "client 3 of bank %s is logged on", b.name)
	}

	type step struct {
		name string
		run  func(t *testing.T, i int, b bankRef, f int64)
		want func(f int64) map[int32]int64
	}
	steps := []step{{
		name: "three deposits",
		run: func(t *testing.T, i int, b bankRef, f int64) {
			assert.Equal(t, fmt.Sprintf("balance %d\n", 100*f), mustRun(t, dir, b, "--id", "1", "deposit", fmt.Sprint(100*f)))
			assert.Equal(t, fmt.Sprintf("balance %d\n", 50*f), mustRun(t, dir, b, "--id", "2", "deposit", fmt.Sprint(50*f)))
			assert.Equal(t, fmt.Sprintf("balance %d", 10*f), prompts[i].do(t, fmt.Sprintf("deposit %d", 10*f)))
		},
		want: func(f int64) map[int32]int64 { return map[int32]int64{1: 100 * f, 2: 50 * f, 3: 10 * f} },
	}, {
		name: "a withdrawal beyond the balance",
		run: func(t *testing.T, i int, b bankRef, f int64) {
			r := runClient(t, dir, b, "--id", "1", "withdraw", fmt.Sprint(500*f))
			assert.Equal(t, 1, r.status, "refused: %v", r)
			assert.Equal(t, fmt.Sprintf("withdraw refused: insufficient funds (balance %d, asked %d)\n", 100*f, 500*f), r.stdout)
		},
		want: func(f int64) map[int32]int64 { return map[int32]int64{1: 100 * f, 2: 50 * f, 3: 10 * f} },
	}, {
		name: "a transfer",
		run: func(t *testing.T, i int, b bankRef, f int64) {
			assert.Equal(t, fmt.Sprintf("balance %d\n", 70*f), mustRun(t, dir, b, "--id", "1", "transfer", "2", fmt.Sprint(30*f)))
		},
		want: func(f int64) map[int32]int64 { return map[int32]int64{1: 70 * f, 2: 80 * f, 3: 10 * f} },
	}, {
		name: "a transfer to an unknown account",
		run: func(t *testing.T, i int, b bankRef, f int64) {
			assert.Equal(t, "transfer refused: no such receiver 42", prompts[i].do(t, "transfer 42 5"))
			r := runClient(t, dir, b, "--json", "--id", "2", "transfer", "42", "5")
			assert.Equal(t, 1, r.status, "refused: %v", r)
			assert.Equal(t, `{"error":{"code":"NOT_FOUND","message":"no such receiver 42"}}`+"\n", r.stdout)
		},
		want: func(f int64) map[int32]int64 { return map[int32]int64{1: 70 * f, 2: 80 * f, 3: 10 * f} },
	}, {
		name: "a transfer to the interactive client and a withdrawal",
		run: func(t *testing.T, i int, b bankRef, f int64) {
			assert.Equal(t, "balance 0\n", mustRun(t, dir, b, "--id", "2", "transfer", "3", fmt.Sprint(80*f)))
			assert.Equal(t, fmt.Sprintf("balance %d", 90*f), prompts[i].do(t, "balance"))
			assert.Equal(t, fmt.Sprintf("balance %d", 80*f), prompts[i].do(t, fmt.Sprintf("withdraw %d", 10*f)))
		},
		want: func(f int64) map[int32]int64 { return map[int32]int64{1: 70 * f, 2: 0, 3: 80 * f} },
	}}
	for _, st := range steps {
		// Both banks take the step before either is checked: they run at the same time.
		for i, b := range banks {
			st.run(t, i, b, int64(i+1))
		}
		for i, b := range banks {
			checkBalances(t, dir, b, st.name, st.want(int64(i+1)))
		}
	}

	for i := range banks {
		assert.Equal(t, 1, prompts[i].quit(t), "the session ends with its input, with the status of its refused transfer; stderr:\n%s", prompts[i].stderr.String())
	}

	// Restart: SIGTERM, then a new server on the same data.
	for i, s := range servers {
		s.stop(t)
		servers[i] = startServer(t, dir, banks[i], s.data)
	}
	for i, b := range banks {
		checkBalances(t, dir, b, "a restart", steps[len(steps)-1].want(int64(i+1)))
	}
	for _, s := range servers {
		s.stop(t)
	}
}
