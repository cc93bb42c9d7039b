package zmq_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// childEnv makes the test binary a server process (TestServerProcess).
const childEnv = "BANKRPC_ZMQ_SERVER_PROCESS"

// TestServerProcess is the body of a server process started by
// TestAcrossProcesses: it serves on a free port, prints "addr <endpoint>",
// and exits when its standard input closes.
func TestServerProcess(t *testing.T) {
	name := os.Getenv(childEnv)
	if name == "" {
		t.Skip("run by TestAcrossProcesses")
	}
	s := serve(t, zmq.ServerConfig{}, newRPCServer(&svc{tag: name}))
	fmt.Printf("addr %s\n", s.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// Two server processes and clients in this one: each client is answered by
// the process it dialled.
func TestAcrossProcesses(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	exe, err := os.Executable()
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 2 {
		name := fmt.Sprintf("process-%d", i)
		cmd := exec.CommandContext(ctx, exe, "-test.run=^TestServerProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+name)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			assert.NoError(t, stdin.Close())
			assert.NoError(t, cmd.Wait(), "server process %s", name)
		})
		addr := readAddr(t, bufio.NewScanner(stdout))
		go func() { _, _ = io.Copy(io.Discard, stdout) }()

		for j := range 2 {
			c := stub(t, dial(t, addr, zmq.ClientConfig{}))
			wg.Go(func() {
				for k := range 20 {
					resp, err := c.Echo(ctx, &testv1.EchoRequest{Payload: []byte{byte(j), byte(k)}})
					if !assert.NoError(t, err) {
						return
					}
					assert.Equal(t, name, resp.GetTag())
				}
			})
		}
	}
	wg.Wait()
	require.NoError(t, context.Cause(ctx))
}

func readAddr(t *testing.T, lines *bufio.Scanner) string {
	t.Helper()
	for lines.Scan() {
		if addr, ok := strings.CutPrefix(lines.Text(), "addr "); ok {
			return addr
		}
	}
	t.Fatalf("the server process printed no address: %v", lines.Err())
	return ""
}
