// Package cluster drives a private RabbitMQ cluster on this machine, made by
// scripts/rabbitmq-node.sh (cluster-start, kill, start, stop,
// cluster-leader, cluster-stop), and runs the node-loss scenario on it: the
// durable bank served through bankrpc over AMQP with quorum queues, many
// clients transferring money, nodes killed with kill -9 and started again,
// and a verdict on what the clients were told against what the bank holds
// (RunNodeLoss). docs/cluster.md explains the setup and the figures.
//
// Run it as a test (it starts and removes its own cluster, about four
// minutes):
//
//	BANKRPC_CLUSTER=1 go test -run TestNodeLoss -v -timeout 25m ./examples/cluster/
//
// or as a command, which prints the figures and exits non-zero on any
// violation:
//
//	go run ./examples/cluster/nodeloss [-runs 3] [-clients 16] [-accounts 100]
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Node is one node of a cluster.
type Node struct {
	Name string // the Erlang node name, rabbit-...@localhost
	Dir  string // its directory: data, logs, node.env
	URL  string // amqp://guest:guest@127.0.0.1:PORT/
	Host string // 127.0.0.1:PORT
}

// Cluster is a private cluster started by Start.
type Cluster struct {
	Script string // path of scripts/rabbitmq-node.sh
	Dir    string
	Nodes  []Node
	// Address lists every node: amqp://guest:guest@HOST1,HOST2,HOST3/.
	Address string
}

// Start starts a cluster of n nodes in dir (which must not hold one) with
// script, and returns once every node runs and has joined.
func Start(ctx context.Context, script, dir string, n int) (*Cluster, error) {
	out, err := run(ctx, script, "cluster-start", dir, fmt.Sprint(n))
	if err != nil {
		return nil, err
	}
	env := parseEnv(out)
	c := &Cluster{Script: script, Dir: dir, Address: env["ADDRESS"]}
	names, dirs, urls := strings.Fields(env["NODES"]), strings.Fields(env["DIRS"]), strings.Fields(env["URLS"])
	if len(names) != n || len(dirs) != n || len(urls) != n || c.Address == "" {
		return nil, fmt.Errorf("cluster: %s cluster-start printed an unexpected cluster.env:\n%s", script, out)
	}
	for i := range n {
		u, err := url.Parse(urls[i])
		if err != nil {
			return nil, fmt.Errorf("cluster: node URL %q: %w", urls[i], err)
		}
		c.Nodes = append(c.Nodes, Node{Name: names[i], Dir: dirs[i], URL: urls[i], Host: u.Host})
	}
	return c, nil
}

// Stop stops every node and removes the cluster's directory.
func (c *Cluster) Stop(ctx context.Context) error {
	_, err := run(ctx, c.Script, "cluster-stop", c.Dir)
	return err
}

// Kill kills node i with SIGKILL.
func (c *Cluster) Kill(ctx context.Context, i int) error {
	_, err := run(ctx, c.Script, "kill", c.Nodes[i].Dir)
	return err
}

// StopNode stops node i gracefully (rabbitmqctl stop).
func (c *Cluster) StopNode(ctx context.Context, i int) error {
	_, err := run(ctx, c.Script, "stop", c.Nodes[i].Dir)
	return err
}

// StartNode starts node i again, after Kill or StopNode: it rejoins the
// cluster with its data.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	_, err := run(ctx, c.Script, "start", c.Nodes[i].Dir)
	return err
}

// AwaitQuorum waits until every quorum queue with a member on node i has
// a quorum plus one members online (rabbitmq-upgrade
// await_online_quorum_plus_one): node i, or any one node of a three-node
// cluster, can be lost without a queue losing its majority.
func (c *Cluster) AwaitQuorum(ctx context.Context, i int) error {
	_, err := run(ctx, c.Script, "await-quorum", c.Nodes[i].Dir)
	return err
}

// Leader returns the index of the node leading the quorum queue.
func (c *Cluster) Leader(ctx context.Context, queue string) (int, error) {
	out, err := run(ctx, c.Script, "cluster-leader", c.Dir, queue)
	if err != nil {
		return -1, err
	}
	dir := strings.TrimSpace(string(out))
	for i, n := range c.Nodes {
		if n.Dir == dir {
			return i, nil
		}
	}
	return -1, fmt.Errorf("cluster: leader of %s is in %q, not a node of %s", queue, dir, c.Dir)
}

// Ctl runs rabbitmqctl against node i.
func (c *Cluster) Ctl(ctx context.Context, i int, args ...string) (string, error) {
	out, err := run(ctx, c.Script, append([]string{"ctl", c.Nodes[i].Dir}, args...)...)
	return string(out), err
}

// NodeOf returns the index of the node listening on hostPort, or -1.
func (c *Cluster) NodeOf(hostPort string) int {
	for i, n := range c.Nodes {
		if n.Host == hostPort {
			return i
		}
	}
	return -1
}

// QueueDepths returns the messages ready and unacknowledged of every queue,
// asked of node i.
func (c *Cluster) QueueDepths(ctx context.Context, i int) (map[string]int, error) {
	out, err := c.Ctl(ctx, i, "list_queues", "-q", "--no-table-headers", "name", "messages")
	if err != nil {
		return nil, err
	}
	depths := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		var n int
		if _, err := fmt.Sscan(f[1], &n); err == nil {
			depths[f[0]] = n
		}
	}
	return depths, nil
}

// scriptWait bounds one command of the script: a cluster start takes a
// minute or more on a busy machine.
const scriptWait = 8 * time.Minute

func run(ctx context.Context, script string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, scriptWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	if os.Getenv("BANKRPC_NODE_WAIT") == "" {
		// A node started again on a busy machine may take over a minute.
		cmd.Env = append(os.Environ(), "BANKRPC_NODE_WAIT=180")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cluster: %s %s: %w: %s", script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// parseEnv reads KEY='value' lines.
func parseEnv(out []byte) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}
