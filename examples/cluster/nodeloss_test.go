package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// EnvCluster turns the cluster tests on: they start a private three-node
// RabbitMQ cluster (a minute on a busy machine) and run for minutes, so
// they are not part of a plain go test ./... or make test.
const EnvCluster = "BANKRPC_CLUSTER"

func startCluster(t *testing.T) *Cluster {
	t.Helper()
	if os.Getenv(EnvCluster) == "" {
		t.Skipf("cluster tests are off: set %s=1 (they start a private three-node RabbitMQ cluster and run for minutes)", EnvCluster)
	}
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil && os.Getenv("RABBITMQ_BIN_DIR") == "" {
		t.Skipf("rabbitmq-server is not installed: %v", err)
	}
	script, err := filepath.Abs("../../scripts/rabbitmq-node.sh")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "cluster")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, script, dir, 3)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop the cluster: %v", err)
		}
	})
	return c
}

// TestNodeLoss is the Jepsen-style node-loss scenario (see RunNodeLoss):
// 16 clients transferring among 100 accounts through the durable bank over
// quorum queues; the node leading the bank's queue is killed (kill -9), then
// after it rejoined the node the server and the clients are connected to,
// then another is stopped. Every acknowledged transfer is applied exactly
// once, money is conserved, the queues are drained, no call is answered
// INTERNAL, and every client is answered again within 30 s of each loss.
func TestNodeLoss(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := RunNodeLoss(ctx, c, Config{Progress: t.Logf})
	require.NoError(t, err)
	t.Log("\n" + rep.String())
	require.True(t, rep.OK(), "violations: %v", rep.Violations)
	require.Len(t, rep.Faults, len(DefaultFaults))
}
