package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// Env is what the scenarios share.
type Env struct {
	Root     string // the module root (scripts/, examples/)
	Bin      string // bank-server and bank-client
	Work     string // scratch space, one directory per scenario
	Out      io.Writer
	Short    bool
	Duration time.Duration // of the faults, per scenario

	nodeOnce sync.Once
	node     *node
	nodeErr  error
}

// privateNode starts, once, the private RabbitMQ node the amqp scenarios
// use; never the shared broker.
func (e *Env) privateNode(ctx context.Context) (*node, error) {
	e.nodeOnce.Do(func() {
		if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil && os.Getenv("RABBITMQ_BIN_DIR") == "" {
			e.nodeErr = fmt.Errorf("rabbitmq-server is not installed: %w", errSkip)
			return
		}
		e.node, e.nodeErr = startNode(ctx, filepath.Join(e.Root, "scripts", "rabbitmq-node.sh"), filepath.Join(e.Work, "rabbitmq-node"))
	})
	return e.node, e.nodeErr
}

// Close stops the private node, if one was started.
func (e *Env) Close(ctx context.Context) error {
	if e.node == nil {
		return nil
	}
	return e.node.stop(ctx)
}

// errSkip marks a scenario that cannot run here.
var errSkip = errors.New("skipped")

// Scenario is one fault with its load and verdict.
type Scenario struct {
	Name, Fault string
	Run         func(ctx context.Context, e *Env, r *Result) error
}

// Scenarios lists every scenario, in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{"zmq-kill9", "bank-server over zmq killed with SIGKILL every ~2s and restarted", zmqKill},
		{"amqp-kill9", "bank-server over amqp (private node) killed with SIGKILL every ~2s and restarted", amqpKill},
		{"amqp-close-connections", "every broker connection force-closed (rabbitmqctl close_all_connections) every ~3s", amqpCloseConnections},
		{"amqp-broker-restart", "the private broker node stopped and started again", amqpBrokerRestart},
		{"cluster-node-loss", "kill -9 of RabbitMQ cluster nodes (the cluster suite, when present)", clusterNodeLoss},
		{"client-kill", "bank-client processes killed with SIGKILL mid-call, their calls re-sent late by new processes", clientKill},
		{"disk-full", "the bank's data on a small tmpfs that fills up; space freed and the server restarted", diskFull},
		{"zmq-network", "zmq through toxiproxy: latency, connection resets, bandwidth limits, cycled", zmqNetwork},
		{"zmq-garbage", "garbage and oversized frames to the zmq server, under load", garbage},
		{"amqp-garbage", "garbage and oversized requests published to the amqp bank's queue, under load", amqpGarbage},
	}
}

// bankRun is the common frame of a scenario: a bank-server, a load of
// clients, faults for e.Duration, then a verdict.
type bankRun struct {
	srv    *server
	load   *Load
	faults func(ctx context.Context, stop <-chan struct{}) (int, error)
	data   string
	// before runs after the server serves and before the load (e.g. a
	// toxiproxy in front of it).
	before func(ctx context.Context) error
	after  func()
	// more returns ops made outside the load (by processes), verified
	// into moreResult, whose figures are then added to the scenario's.
	more       func() []*Op
	moreResult *Result
	moreWhat   string
}

func (e *Env) dir(name string) (string, error) {
	d := filepath.Join(e.Work, name)
	return d, os.MkdirAll(d, 0o755)
}

func (e *Env) newLoad(dial func(ctx context.Context, w int) (*bankrpc.Conn, error)) *Load {
	workers := 8
	if e.Short {
		workers = 4
	}
	return &Load{Dial: dial, Workers: workers, Accounts: 20, AttemptTimeout: 5 * time.Second, OpBudget: 30 * time.Second}
}

// run runs b and fills r.
func (e *Env) run(ctx context.Context, b *bankRun, r *Result) error {
	if err := b.srv.start(ctx); err != nil {
		return err
	}
	defer b.srv.kill()
	if b.before != nil {
		if err := b.before(ctx); err != nil {
			return err
		}
	}
	if b.after != nil {
		defer b.after()
	}
	ledger := NewLedger(b.data)
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	err := b.load.Open(octx)
	cancel()
	if err != nil {
		return fmt.Errorf("open the accounts: %w", err)
	}
	stopLedger := make(chan struct{})
	followed := ledger.Follow(100*time.Millisecond, stopLedger)
	stopLoad := make(chan struct{})
	loaded := make(chan struct{})
	go func() {
		b.load.Run(ctx, stopLoad)
		close(loaded)
	}()
	stopFaults := make(chan struct{})
	timer := time.AfterFunc(e.Duration, func() { close(stopFaults) })
	defer timer.Stop()
	n, ferr := b.faults(ctx, stopFaults)
	r.Faults = n
	if ferr != nil {
		r.violate("fault injection failed: %v", ferr)
		<-stopFaults
	}
	if !b.srv.alive() {
		if err := b.srv.start(ctx); err != nil {
			r.violate("bank-server does not start after the faults: %v", err)
		}
	}
	close(stopLoad)
	select {
	case <-loaded:
	case <-time.After(b.load.OpBudget + 2*b.load.AttemptTimeout + 10*time.Second):
		r.violate("the clients did not stop within %v of the end of the faults", b.load.OpBudget+2*b.load.AttemptTimeout+10*time.Second)
		<-loaded
	}
	b.srv.kill()
	close(stopLedger)
	if err := <-followed; err != nil {
		r.violate("the log cannot be followed: %v", err)
	}
	if err := ledger.Poll(); err != nil {
		r.violate("the log cannot be read: %v", err)
		return nil
	}
	verifyOps(r, b.load.History.Ops(), ledger, b.srv.restartList())
	if b.more != nil {
		verifyOps(b.moreResult, b.more(), ledger, b.srv.restartList())
		r.add(b.moreResult, b.moreWhat)
	}
	checkMoney(r, ledger, b.data)
	return nil
}

// killLoop kills srv with SIGKILL every ~every and starts it again.
func killLoop(srv *server, every time.Duration) func(ctx context.Context, stop <-chan struct{}) (int, error) {
	return func(ctx context.Context, stop <-chan struct{}) (int, error) {
		n := 0
		for {
			sleep(stop, jitter(every))
			select {
			case <-stop:
				return n, nil
			default:
			}
			srv.kill()
			n++
			if err := srv.start(ctx); err != nil {
				return n, err
			}
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

func zmqDial(addr string) func(ctx context.Context, w int) (*bankrpc.Conn, error) {
	return func(ctx context.Context, _ int) (*bankrpc.Conn, error) {
		return bankrpc.Dial(ctx, addr, bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: 5 * time.Second}))
	}
}

func amqpDial(url, bank string) func(ctx context.Context, w int) (*bankrpc.Conn, error) {
	return func(ctx context.Context, w int) (*bankrpc.Conn, error) {
		ct, err := amqp.Dial(url, amqp.ClientConfig{Service: bank, ConnectionName: fmt.Sprintf("chaos client %d", w)})
		if err != nil {
			return nil, err
		}
		return bankrpc.NewConn(ct), nil
	}
}

// zmqServer returns a bank-server over zmq on a fixed free port.
func (e *Env) zmqServer(name string) (*server, string, error) {
	d, err := e.dir(name)
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return &server{bin: e.Bin, transport: "zmq", addr: "tcp://" + addr, bank: "chaos-" + name, data: filepath.Join(d, "data"), logDir: d}, addr, nil
}

func zmqKill(ctx context.Context, e *Env, r *Result) error {
	srv, addr, err := e.zmqServer("zmq-kill9")
	if err != nil {
		return err
	}
	return e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(zmqDial("zmq://" + addr)), faults: killLoop(srv, 2*time.Second)}, r)
}

func (e *Env) amqpServer(ctx context.Context, name string) (*server, *node, error) {
	n, err := e.privateNode(ctx)
	if err != nil {
		return nil, nil, err
	}
	d, err := e.dir(name)
	if err != nil {
		return nil, nil, err
	}
	bank := fmt.Sprintf("chaos-%s-%d", name, time.Now().UnixNano())
	return &server{bin: e.Bin, transport: "amqp", addr: n.url, bank: bank, data: filepath.Join(d, "data"), logDir: d}, n, nil
}

func amqpKill(ctx context.Context, e *Env, r *Result) error {
	srv, n, err := e.amqpServer(ctx, "amqp-kill9")
	if err != nil {
		return err
	}
	return e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(amqpDial(n.url, srv.bank)), faults: killLoop(srv, 2*time.Second)}, r)
}

func amqpCloseConnections(ctx context.Context, e *Env, r *Result) error {
	srv, n, err := e.amqpServer(ctx, "amqp-close-connections")
	if err != nil {
		return err
	}
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		k := 0
		for {
			sleep(stop, jitter(3*time.Second))
			select {
			case <-stop:
				return k, nil
			default:
			}
			if err := n.ctl(ctx, "close_all_connections", "chaos"); err != nil {
				return k, err
			}
			k++
		}
	}
	return e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(amqpDial(n.url, srv.bank)), faults: faults}, r)
}

func amqpBrokerRestart(ctx context.Context, e *Env, r *Result) error {
	srv, n, err := e.amqpServer(ctx, "amqp-broker-restart")
	if err != nil {
		return err
	}
	every := 6 * time.Second
	if e.Short {
		every = e.Duration / 2
	}
	faults := func(ctx context.Context, stop <-chan struct{}) (int, error) {
		k := 0
		for {
			sleep(stop, jitter(every))
			select {
			case <-stop:
				return k, nil
			default:
			}
			if err := n.restart(ctx); err != nil {
				return k, err
			}
			k++
		}
	}
	return e.run(ctx, &bankRun{srv: srv, data: srv.data, load: e.newLoad(amqpDial(n.url, srv.bank)), faults: faults}, r)
}

// clusterScript is the slot of the cluster node-loss suite: a script that
// starts a three-node cluster, runs the node-loss test on it and exits
// non-zero on a violation. It belongs to the cluster work; the scenario
// runs it when it is in the tree.
const clusterScript = "scripts/chaos-cluster.sh"

func clusterNodeLoss(ctx context.Context, e *Env, r *Result) error {
	script := filepath.Join(e.Root, clusterScript)
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("%s is not in this tree (the three-node cluster and its node-loss test come with the cluster work): %w", clusterScript, errSkip)
	}
	if e.Short {
		// Starting the three nodes alone takes 1-2 minutes here, and a run
		// 3-10: too long for the short variant in make test.
		return fmt.Errorf("the node-loss run takes 3-10 minutes: make chaos runs it, or %s: %w", clusterScript, errSkip)
	}
	args := []string{script}
	r.External = true
	out, err := runLogged(ctx, e, "cluster-node-loss", "bash", args...)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.TrimSpace(l) != "" {
			r.Extra = append(r.Extra, "| "+l)
		}
	}
	if err != nil {
		r.violate("%s failed: %v", clusterScript, err)
	}
	r.Extra = append(r.Extra, "figures: see the lines above, printed by "+clusterScript)
	return nil
}
