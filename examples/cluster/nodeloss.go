package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/amqp"
)

// FaultKind is a node loss the scenario injects.
type FaultKind string

const (
	// KillLeader kills with SIGKILL the node leading the bank's quorum queue.
	KillLeader FaultKind = "kill-leader"
	// KillConnected kills with SIGKILL the node the bank's server is
	// connected to (the clients follow the same order of nodes, so it is
	// theirs too).
	KillConnected FaultKind = "kill-connected"
	// StopOther stops gracefully a node that neither leads the bank's queue
	// nor carries the server's connection (another one when there is none).
	StopOther FaultKind = "stop-other"
)

// DefaultFaults is the default sequence: each node lost is started again,
// and rejoins, before the next fault.
var DefaultFaults = []FaultKind{KillLeader, KillConnected, StopOther}

// Config configures RunNodeLoss. Zero fields take the defaults.
type Config struct {
	Clients  int         // transferring clients, each with its own connection (default 16)
	Accounts int         // accounts (default 100), each opened with Initial
	Initial  int64       // initial balance (default 1000)
	Faults   []FaultKind // default DefaultFaults
	// Warmup is the traffic before the first fault (default 5 s); Settle
	// the traffic after every client was answered again, before the lost
	// node is started again (default 3 s).
	Warmup, Settle time.Duration
	// RecoverWithin is the bound on the time every client waits for an
	// answer after a loss (default 30 s): past it, the run is a failure.
	RecoverWithin time.Duration
	// AttemptTimeout is a client's deadline for one attempt of a call; the
	// call is then re-sent with the same call id (default 2 s).
	AttemptTimeout time.Duration
	// DataDir is the bank's directory (default a temporary one, removed).
	DataDir string
	// Progress receives one line per step (default discards); Logger the
	// transports' and the bank's logs (default discards).
	Progress func(format string, args ...any)
	Logger   *slog.Logger
}

func (cfg Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Clients, 16)
	def(&cfg.Accounts, 100)
	if cfg.Initial <= 0 {
		cfg.Initial = 1000
	}
	if cfg.Faults == nil {
		cfg.Faults = DefaultFaults
	}
	defD(&cfg.Warmup, 5*time.Second)
	defD(&cfg.Settle, 3*time.Second)
	defD(&cfg.RecoverWithin, 30*time.Second)
	defD(&cfg.AttemptTimeout, 2*time.Second)
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg
}

// FaultReport is what one fault cost.
type FaultReport struct {
	Kind FaultKind
	Node string // the node lost
	// Connected says whether the server was connected to it, Leader whether
	// it led the bank's queue.
	Connected, Leader bool
	// Recovered is how long after the loss the last client got an answer to
	// a call attempt it made after the loss.
	Recovered time.Duration
	// MaxGap and MedianGap: per client, the longest time without an answer
	// from the loss until the next fault (the restart of the node included);
	// the worst and the median client.
	MaxGap, MedianGap time.Duration
	Rejoin            time.Duration // how long the node took to start again, rejoin, and have every quorum queue's members online

	at time.Time // when the node was lost
}

// Report is the outcome of a run.
type Report struct {
	Clients, Accounts int
	Elapsed           time.Duration
	Attempts          int64            // call attempts, re-sends included
	Acknowledged      int64            // transfers the bank confirmed to their client
	Refused           int64            // transfers the bank refused (insufficient funds): not applied
	Aborted           int64            // ABORTED, outcome unknown: the bank never applies them
	Internal          int64            // INTERNAL answers (must be 0)
	Unresolved        int64            // calls still without an answer at the end (must be 0)
	Retried           map[string]int64 // attempts that failed and were re-sent, by code
	Faults            []FaultReport
	// Money is the sum of the balances at the end; WantMoney what it must
	// be. Mismatched lists the accounts whose balance differs from the
	// initial one plus the acknowledged transfers (an operation lost or
	// applied twice).
	Money, WantMoney int64
	Mismatched       []string
	LeftInQueues     map[string]int // messages left in the bank's and the clients' queues
	// DeadLettered counts the requests in the bank's dead-letter queue at
	// the end by x-death reason. "expired" is a call attempt whose
	// deadline passed in the queue (its caller retried); any other reason
	// (a delivery limit, a rejection) is a violation.
	DeadLettered map[string]int
	Violations   []string
}

// OK reports whether the run kept every promise.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node loss: %d clients, %d accounts, %v\n", r.Clients, r.Accounts, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "  attempts %d, acknowledged %d, refused %d, aborted %d, INTERNAL %d, unresolved %d, re-sent %v\n",
		r.Attempts, r.Acknowledged, r.Refused, r.Aborted, r.Internal, r.Unresolved, r.Retried)
	for _, f := range r.Faults {
		fmt.Fprintf(&b, "  %-14s %-32s connected=%-5v leader=%-5v every client answered again after %-8v longest gap %-8v (median client %v), rejoined in %v\n",
			f.Kind, f.Node, f.Connected, f.Leader, f.Recovered.Round(time.Millisecond), f.MaxGap.Round(time.Millisecond), f.MedianGap.Round(time.Millisecond), f.Rejoin.Round(time.Second))
	}
	fmt.Fprintf(&b, "  money %d (want %d), accounts off %d, messages left in queues %d, dead-lettered %v\n", r.Money, r.WantMoney, len(r.Mismatched), total(r.LeftInQueues), r.DeadLettered)
	if r.OK() {
		b.WriteString("  verdict: OK (every acknowledged transfer applied exactly once, money conserved, queues drained, no INTERNAL)\n")
	} else {
		fmt.Fprintf(&b, "  verdict: FAILED\n    %s\n", strings.Join(r.Violations, "\n    "))
	}
	return b.String()
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// bankName is the service the scenario serves.
const bankName = "nodeloss"

// RunNodeLoss runs the node-loss scenario on c: a bank served through
// bankrpc over AMQP with quorum queues (its server and Config.Clients
// clients connected through c.Address, so all to the first node at first),
// Config.Clients clients transferring among Config.Accounts accounts, and
// Config.Faults injected one after another, each lost node started again
// before the next. It returns the report; the error is for a run that could
// not be carried out (a broker command failed), not for a violation, which
// the report lists.
func RunNodeLoss(ctx context.Context, c *Cluster, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	start := time.Now()
	rep := &Report{Clients: cfg.Clients, Accounts: cfg.Accounts, Retried: map[string]int64{}}
	dir := cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "bankrpc-nodeloss-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	b, err := bank.Open(dir, bank.WithLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	defer b.Shutdown()

	address := c.Address + "?service=" + bankName + "&queue=quorum"
	var serverNode atomic.Int32
	serverNode.Store(-1)
	st, err := amqp.Listen(address, amqp.ServerConfig{
		SingleActiveConsumer: true,
		ConnectionName:       "nodeloss bank server",
		Dial:                 trackingDial(c, &serverNode),
		Logger:               cfg.Logger.With("side", "server"),
	})
	if err != nil {
		return nil, err
	}
	srv := bankrpc.NewServer(bankrpc.WithLogger(cfg.Logger))
	bankv1.RegisterBankServer(srv, b)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(st) }()
	serverStopped := false
	stopServer := func() {
		if serverStopped {
			return
		}
		serverStopped = true
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}
	defer stopServer()

	// The accounts, opened and funded by a setup client.
	setup, err := dialBank(address, cfg)
	if err != nil {
		return nil, err
	}
	for id := int32(1); id <= int32(cfg.Accounts); id++ {
		if err := retryCall(ctx, cfg.AttemptTimeout, setup.conn, func(ctx context.Context, opt bankrpc.CallOption) error {
			_, err := setup.bank.Open(ctx, &bankv1.OpenRequest{AccountId: id}, opt)
			return err
		}); err != nil {
			return nil, fmt.Errorf("open account %d: %w", id, err)
		}
		if err := retryCall(ctx, cfg.AttemptTimeout, setup.conn, func(ctx context.Context, opt bankrpc.CallOption) error {
			_, err := setup.bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: id, Amount: cfg.Initial}, opt)
			return err
		}); err != nil {
			return nil, fmt.Errorf("fund account %d: %w", id, err)
		}
	}
	_ = setup.conn.Close()
	cfg.Progress("%d accounts opened with %d each; the server is on node %d", cfg.Accounts, cfg.Initial, serverNode.Load()+1)

	// The clients.
	clients := make([]*client, cfg.Clients)
	for i := range clients {
		if clients[i], err = dialBank(address, cfg); err != nil {
			return nil, err
		}
		clients[i].acks = make(map[[2]int32]int64)
	}
	defer func() {
		for _, cl := range clients {
			_ = cl.conn.Close()
		}
	}()
	var (
		stop    = make(chan struct{})
		workers sync.WaitGroup
	)
	for i, cl := range clients {
		workers.Go(func() { cl.work(ctx, cfg, rep, stop, uint64(i)) })
	}

	// The faults.
	sleepCtx(ctx, cfg.Warmup)
	var ferr error
	for n, kind := range cfg.Faults {
		fr, err := injectFault(ctx, c, cfg, kind, &serverNode, clients)
		if err != nil {
			ferr = fmt.Errorf("fault %d (%s): %w", n+1, kind, err)
			cfg.Progress("%v", ferr)
			break
		}
		rep.Faults = append(rep.Faults, fr)
		if fr.Recovered > cfg.RecoverWithin {
			rep.Violations = append(rep.Violations, fmt.Sprintf("after %s of %s, a client was not answered again within %v", kind, fr.Node, cfg.RecoverWithin))
		}
	}
	// Some traffic after the last rejoin, then the drain: every call in
	// flight is retried until it has its answer.
	sleepCtx(ctx, cfg.Settle)
	close(stop)
	workers.Wait()
	if last := len(rep.Faults); last > 0 {
		f := &rep.Faults[last-1]
		f.MaxGap, f.MedianGap = gaps(clients, f.at, time.Now())
	}

	// Queues drained: with the clients still consuming, nothing is left.
	live := -1
	for i := range c.Nodes {
		if _, err := c.Ctl(ctx, i, "status"); err == nil {
			live = i
			break
		}
	}
	if live >= 0 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			depths, err := c.QueueDepths(ctx, live)
			if err != nil {
				return nil, err
			}
			rep.LeftInQueues = map[string]int{}
			for q, n := range depths {
				if n > 0 && strings.HasPrefix(q, "bankrpc.") && !strings.HasSuffix(q, ".status") && q != amqp.DeadLetterQueue(bankName) {
					rep.LeftInQueues[q] = n
				}
			}
			if len(rep.LeftInQueues) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if live >= 0 {
		if rep.DeadLettered, err = deadLetters(c.Nodes[live].URL, amqp.DeadLetterQueue(bankName)); err != nil {
			return nil, err
		}
		for reason, n := range rep.DeadLettered {
			if reason != "expired" {
				rep.Violations = append(rep.Violations, fmt.Sprintf("%d requests dead-lettered (%s)", n, reason))
			}
		}
	}
	for _, cl := range clients {
		_ = cl.conn.Close()
	}
	stopServer()

	// The verdict: the bank against what the clients were told.
	want := map[int32]int64{}
	for id := int32(1); id <= int32(cfg.Accounts); id++ {
		want[id] = cfg.Initial
	}
	for _, cl := range clients {
		for k, amount := range cl.acks {
			want[k[0]] -= amount
			want[k[1]] += amount
		}
	}
	for _, a := range b.Accounts() {
		rep.Money += a.Balance
		if a.Balance != want[a.ID] {
			rep.Mismatched = append(rep.Mismatched, fmt.Sprintf("account %d: balance %d, acknowledged transfers make %d", a.ID, a.Balance, want[a.ID]))
		}
	}
	rep.WantMoney = int64(cfg.Accounts) * cfg.Initial
	rep.Elapsed = time.Since(start)
	if rep.Money != rep.WantMoney {
		rep.Violations = append(rep.Violations, fmt.Sprintf("money not conserved: %d, want %d", rep.Money, rep.WantMoney))
	}
	if len(rep.Mismatched) > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d accounts differ from the acknowledged transfers (an operation lost or applied twice): %s",
			len(rep.Mismatched), strings.Join(rep.Mismatched[:min(5, len(rep.Mismatched))], "; ")))
	}
	if rep.Internal > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d calls answered INTERNAL", rep.Internal))
	}
	if rep.Unresolved > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d calls without an answer at the end", rep.Unresolved))
	}
	if len(rep.LeftInQueues) > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("queues not drained: %v", rep.LeftInQueues))
	}
	if live < 0 {
		rep.Violations = append(rep.Violations, "no live node left to check the queues")
	}
	return rep, ferr
}

// injectFault loses a node, waits until every client has been answered
// again (bounded by RecoverWithin plus a margin), lets traffic run Settle,
// and starts the node again.
func injectFault(ctx context.Context, c *Cluster, cfg Config, kind FaultKind, serverNode *atomic.Int32, clients []*client) (FaultReport, error) {
	queue := amqp.ServiceQueue(bankName)
	leader, err := c.Leader(ctx, queue)
	if err != nil {
		return FaultReport{}, err
	}
	connected := int(serverNode.Load())
	victim := leader
	switch kind {
	case KillConnected:
		victim = connected
	case StopOther:
		victim = -1
		for i := range c.Nodes {
			if i != leader && i != connected {
				victim = i
				break
			}
		}
		if victim < 0 {
			victim = (leader + 1) % len(c.Nodes)
		}
	}
	if victim < 0 {
		return FaultReport{}, errors.New("the server's node is not known")
	}
	fr := FaultReport{Kind: kind, Node: c.Nodes[victim].Name, Connected: victim == connected, Leader: victim == leader}
	cfg.Progress("%s: node %d (%s; leader of %s: node %d, server on node %d)", kind, victim+1, c.Nodes[victim].Name, queue, leader+1, connected+1)
	// The previous fault's gaps end here.
	fr.at = time.Now()
	if kind == StopOther {
		err = c.StopNode(ctx, victim)
	} else {
		err = c.Kill(ctx, victim)
	}
	if err != nil {
		return fr, err
	}
	// Every client answered again: a call attempt made after the loss.
	deadline := fr.at.Add(cfg.RecoverWithin + 10*time.Second)
	for {
		all, last := true, fr.at
		for _, cl := range clients {
			t := cl.freshAnswer(fr.at)
			if t.IsZero() {
				all = false
				break
			}
			if t.After(last) {
				last = t
			}
		}
		if all {
			fr.Recovered = last.Sub(fr.at)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fr.Recovered = time.Since(fr.at)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfg.Progress("  every client answered again after %v; server now on node %d", fr.Recovered.Round(time.Millisecond), serverNode.Load()+1)
	sleepCtx(ctx, cfg.Settle)
	t0 := time.Now()
	if err := c.StartNode(ctx, victim); err != nil {
		return fr, err
	}
	// Rejoined means healed: every queue has its members online again, so
	// that the next loss leaves each a majority (as Jepsen's analysis
	// waits for the cluster to heal between faults).
	if err := c.AwaitQuorum(ctx, victim); err != nil {
		return fr, err
	}
	fr.Rejoin = time.Since(t0)
	sleepCtx(ctx, cfg.Settle)
	fr.MaxGap, fr.MedianGap = gaps(clients, fr.at, time.Now())
	cfg.Progress("  node %d rejoined after %v; longest gap %v", victim+1, fr.Rejoin.Round(time.Second), fr.MaxGap.Round(time.Millisecond))
	return fr, nil
}

// client is one transferring client.
type client struct {
	name string // the AMQP client name
	conn *bankrpc.Conn
	bank bankv1.BankClient

	mu      sync.Mutex
	answers []answer           // every answer, in order
	acks    map[[2]int32]int64 // acknowledged amounts by (from, to)
}

type answer struct{ sent, at time.Time }

func dialBank(address string, cfg Config) (*client, error) {
	ct, err := amqp.Dial(address, amqp.ClientConfig{QueueType: amqp.QueueQuorum, Logger: cfg.Logger.With("side", "client")})
	if err != nil {
		return nil, err
	}
	conn := bankrpc.NewConn(ct)
	return &client{name: ct.Name(), conn: conn, bank: bankv1.NewBankClient(conn)}, nil
}

// work transfers until stop is closed, then finishes its call.
func (cl *client) work(ctx context.Context, cfg Config, rep *Report, stop <-chan struct{}, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		from := int32(1 + rng.IntN(cfg.Accounts))
		to := int32(1 + rng.IntN(cfg.Accounts-1))
		if to >= from {
			to++
		}
		amount := int64(1 + rng.IntN(5))
		id := cl.conn.NewCallID()
		drainBy := time.Time{}
		for {
			sent := time.Now()
			actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
			_, err := cl.bank.Transfer(actx, &bankv1.TransferRequest{AccountId: from, ToAccountId: to, Amount: amount}, bankrpc.WithCallID(id))
			cancel()
			atomic.AddInt64(&rep.Attempts, 1)
			code := bankrpc.CodeOf(err)
			done := true
			switch code {
			case bankrpc.OK:
				atomic.AddInt64(&rep.Acknowledged, 1)
				cl.mu.Lock()
				cl.acks[[2]int32{from, to}] += amount
				cl.mu.Unlock()
			case bankrpc.FailedPrecondition:
				atomic.AddInt64(&rep.Refused, 1)
			case bankrpc.Aborted:
				atomic.AddInt64(&rep.Aborted, 1)
			case bankrpc.Internal:
				atomic.AddInt64(&rep.Internal, 1)
				cfg.Logger.Error("nodeloss: INTERNAL", "call_id", id, "error", err)
			default:
				done = false
			}
			if done {
				cl.mu.Lock()
				cl.answers = append(cl.answers, answer{sent: sent, at: time.Now()})
				cl.mu.Unlock()
				break
			}
			rep.retried(code.String())
			if ctx.Err() != nil {
				atomic.AddInt64(&rep.Unresolved, 1)
				return
			}
			select {
			case <-stop:
				if drainBy.IsZero() {
					drainBy = time.Now().Add(cfg.RecoverWithin)
				}
				if time.Now().After(drainBy) {
					atomic.AddInt64(&rep.Unresolved, 1)
					cfg.Progress("  client %s: call %s still without an answer (last: %v)", cl.name, id, err)
					return
				}
			default:
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

var retriedMu sync.Mutex

func (r *Report) retried(code string) {
	retriedMu.Lock()
	r.Retried[code]++
	retriedMu.Unlock()
}

// freshAnswer returns when the client was first answered for an attempt
// sent after t; zero when not yet.
func (cl *client) freshAnswer(t time.Time) time.Time {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	i := sort.Search(len(cl.answers), func(i int) bool { return cl.answers[i].at.After(t) })
	for ; i < len(cl.answers); i++ {
		if cl.answers[i].sent.After(t) {
			return cl.answers[i].at
		}
	}
	return time.Time{}
}

// gaps returns, over the clients, the worst and the median of each client's
// longest time without an answer in [from, to].
func gaps(clients []*client, from, to time.Time) (worst, median time.Duration) {
	var longest []time.Duration
	for _, cl := range clients {
		cl.mu.Lock()
		prev, g := from, time.Duration(0)
		for _, a := range cl.answers {
			if a.at.Before(from) {
				continue
			}
			if a.at.After(to) {
				break
			}
			g = max(g, a.at.Sub(prev))
			prev = a.at
		}
		g = max(g, to.Sub(prev))
		cl.mu.Unlock()
		longest = append(longest, g)
	}
	if len(longest) == 0 {
		return 0, 0
	}
	slices.Sort(longest)
	return longest[len(longest)-1], longest[len(longest)/2]
}

// retryCall makes a call with one call id until it is answered.
func retryCall(ctx context.Context, attempt time.Duration, conn *bankrpc.Conn, call func(context.Context, bankrpc.CallOption) error) error {
	id := bankrpc.WithCallID(conn.NewCallID())
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := call(actx, id)
		cancel()
		switch bankrpc.CodeOf(err) {
		case bankrpc.OK:
			return nil
		case bankrpc.Unavailable, bankrpc.DeadlineExceeded:
			if ctx.Err() != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		default:
			return err
		}
	}
}

// trackingDial dials like the transport's default and records in node the
// index of the node dialed.
func trackingDial(c *Cluster, node *atomic.Int32) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		conn, err := net.DialTimeout(network, addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		// The AMQP handshake must not stall on a dead node; amqp091-go
		// clears the deadline after it.
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			_ = conn.Close()
			return nil, err
		}
		node.Store(int32(c.NodeOf(addr)))
		return conn, nil
	}
}

// deadLetters takes every message out of the dead-letter queue and counts
// them by the reason of their first death.
func deadLetters(url, queue string) (map[string]int, error) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	reasons := map[string]int{}
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			return nil, err
		}
		if !ok {
			return reasons, nil
		}
		reason, _ := d.Headers["x-first-death-reason"].(string)
		if reason == "" {
			reason, _ = d.Headers["bankrpc-dead-reason"].(string)
		}
		if reason == "" {
			reason = "unknown"
		}
		reasons[reason]++
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
