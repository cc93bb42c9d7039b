package amqp

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// The private node: a RabbitMQ node of this test binary alone, on its own
// ports, started by scripts/rabbitmq-node.sh for the tests that restart the
// broker or close every connection on it. It is started once, on first use,
// and stopped by TestMain.
var privateNode struct {
	mu      sync.Mutex
	dir     string
	url     string
	err     error
	started bool
}

const nodeScript = "../../scripts/rabbitmq-node.sh"

// privateNodeURL starts the private node if needed and returns its URL. It
// skips when rabbitmq-server is not installed.
func privateNodeURL(t *testing.T) string {
	t.Helper()
	amqptest.URL(t) // the broker tests are on
	bin := os.Getenv("RABBITMQ_BIN_DIR")
	if bin == "" {
		bin = "/usr/lib/rabbitmq/bin"
	}
	if _, err := os.Stat(filepath.Join(bin, "rabbitmq-server")); err != nil {
		t.Skipf("rabbitmq-server is not installed (%v): the tests that restart a private broker node need it", err)
	}
	privateNode.mu.Lock()
	defer privateNode.mu.Unlock()
	if !privateNode.started && privateNode.err == nil {
		dir, err := os.MkdirTemp("", "bankrpc-node-")
		if err != nil {
			t.Fatal(err)
		}
		privateNode.dir = dir
		privateNode.started = true
		var out []byte
		out, privateNode.err = nodeCommand("start", dir)
		if privateNode.err == nil {
			privateNode.url = nodeValue(out, "URL")
		}
	}
	if privateNode.err != nil {
		t.Fatalf("start a private RabbitMQ node: %v", privateNode.err)
	}
	return privateNode.url
}

// privateNodeRestart stops and starts the private node (same ports, same data).
func privateNodeRestart(t *testing.T) {
	t.Helper()
	privateNode.mu.Lock()
	defer privateNode.mu.Unlock()
	if _, err := nodeCommand("restart", privateNode.dir); err != nil {
		t.Fatalf("restart the private RabbitMQ node: %v", err)
	}
}

// privateNodeCtl runs rabbitmqctl against the private node.
func privateNodeCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := nodeCommand("ctl", append([]string{privateNode.dir}, args...)...)
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func privateNodeStop() {
	privateNode.mu.Lock()
	defer privateNode.mu.Unlock()
	if !privateNode.started {
		return
	}
	if _, err := nodeCommand("stop", privateNode.dir); err != nil {
		os.Stderr.WriteString("stop the private RabbitMQ node: " + err.Error() + "\n")
		return // keep its directory, with its logs
	}
	_ = os.RemoveAll(privateNode.dir)
}

func nodeCommand(cmd string, args ...string) ([]byte, error) {
	c := exec.Command("bash", append([]string{nodeScript, cmd}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	c.WaitDelay = 5 * time.Second
	out, err := c.Output()
	if err != nil {
		return out, &nodeError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type nodeError struct {
	err    error
	stderr string
}

func (e *nodeError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

func nodeValue(out []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	return ""
}
