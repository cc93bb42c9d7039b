package zmq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// MultiClient is the client half of the ZeroMQ backend for several servers
// of one service (replicas): one Client per endpoint, calls spread over the
// servers that are up, and a call whose server dies is sent to another.
//
// Choice of server. Each call goes to the server that ranks highest for its
// call id among those whose connection is up (rendezvous hashing): calls
// spread evenly, and a repeat of a call with the same call id (a caller's
// retry with bankrpc.WithCallID) goes to the same server as long as the set
// of live servers does not change, where that server's reply cache answers
// it. When no server is up yet (just after DialMulti, or while all are
// restarting) a call waits for the first one up, at most until every server
// has been down for ClientConfig.DeadAfter; it then fails with UNAVAILABLE
// naming each endpoint and why it is down.
//
// Failover. A call written to a server that then dies waits, as with one
// Client, for that server to come back for ClientConfig.DeadAfter (a server
// restarted in time answers it, from its reply cache if it had run it). Only
// when its Client gives up with UNAVAILABLE is the call sent, with the same
// call id and frame, to the next server in its ranking that is up, and so
// on until one answers, every server has been tried, or ctx ends. A
// server's reply cache is its own: a call re-sent to another server after
// its first server died may run on both, once each (the first run's reply
// being lost with the server). A service whose handlers are not idempotent
// must tell repeats apart itself, durably and shared by all replicas (the
// bank does so for one writer: it is not a service to replicate this way;
// see docs/RELIABILITY.md). No call is ever run twice by one server.
//
// Liveness is each Client's: ZMTP heartbeats (ClientConfig.HeartbeatTimeout)
// and TCP tell when a connection is lost, and a server is skipped while its
// connection is down and taken again as soon as it is back.
type MultiClient struct {
	clients []*Client
	cfg     ClientConfig

	closeOnce sync.Once
	closing   chan struct{}
	closeErr  error

	// refreshed[i]: when the events of clients[i] were last read for a
	// pick, Unix ns; they are read at most every refreshEvery.
	refreshed []atomic.Int64
}

var _ transport.ClientTransport = (*MultiClient)(nil)

// refreshEvery bounds how often an idle Client's connection events are read
// to choose a server; a busy Client's are read by its own calls.
const refreshEvery = 2 * time.Millisecond

// waitStep is how often a call that found no server up looks again.
const waitStep = 5 * time.Millisecond

// DialMulti returns a MultiClient of the servers at endpoints (each
// tcp://host:port or ipc://path, distinct), each dialled as Dial does with
// cfg. It does not wait for connections.
func DialMulti(endpoints []string, cfg ClientConfig) (*MultiClient, error) {
	if len(endpoints) == 0 {
		return nil, status.Errorf(status.InvalidArgument, "zmq: DialMulti needs at least one endpoint")
	}
	seen := make(map[string]bool, len(endpoints))
	for _, e := range endpoints {
		if err := checkEndpoint(e); err != nil {
			return nil, err
		}
		if seen[e] {
			return nil, status.Errorf(status.InvalidArgument, "zmq: endpoint %s is listed twice", e)
		}
		seen[e] = true
	}
	cfg = cfg.withDefaults()
	m := &MultiClient{cfg: cfg, closing: make(chan struct{}), refreshed: make([]atomic.Int64, len(endpoints))}
	for _, e := range endpoints {
		c, err := Dial(e, cfg)
		if err != nil {
			_ = m.closeClients()
			return nil, err
		}
		m.clients = append(m.clients, c)
	}
	return m, nil
}

// Endpoints returns the endpoints, in the order given to DialMulti.
func (m *MultiClient) Endpoints() []string {
	out := make([]string, len(m.clients))
	for i, c := range m.clients {
		out[i] = c.endpoint
	}
	return out
}

// RoundTrip sends the call to the live server that ranks highest for its
// call id and, when that server's Client fails the call with UNAVAILABLE
// (the server has been unreachable for DeadAfter), to the next one.
func (m *MultiClient) RoundTrip(ctx context.Context, call *transport.Call) ([]byte, error) {
	if m.isClosing() {
		return nil, transport.ErrClosed
	}
	if call.ID == "" {
		return nil, status.Errorf(status.InvalidArgument, "zmq: call to %s has no call id", m.describe())
	}
	tried := make([]bool, len(m.clients))
	var failures []string
	for {
		i, err := m.pick(ctx, call.ID, tried)
		if err != nil {
			if len(failures) > 0 && status.CodeOf(err) == status.Unavailable {
				return nil, status.Errorf(status.Unavailable, "zmq: no reply from any of %d servers: %s; %s",
					len(m.clients), strings.Join(failures, "; "), status.MessageOf(err))
			}
			return nil, err
		}
		c := m.clients[i]
		reply, err := c.RoundTrip(ctx, call)
		if err == nil || !failsOver(err) || ctx.Err() != nil || m.isClosing() {
			return reply, err
		}
		tried[i] = true
		failures = append(failures, status.MessageOf(err))
		c.log.Info("zmq: server unreachable; sending the call to another server", "endpoint", c.endpoint, "call_id", call.ID, "error", err)
	}
}

// failsOver tells the errors after which a call is sent to another server:
// UNAVAILABLE from a Client, whose server has been unreachable for
// DeadAfter. Every other error (the caller's ctx, a frame too large, Close)
// is the call's.
func failsOver(err error) bool {
	return status.CodeOf(err) == status.Unavailable && !errors.Is(err, transport.ErrClosed)
}

// pick returns the client for the next attempt of the call id: among those
// not tried, the highest ranked whose connection is up; when none is up,
// it waits until one is, or until every one not tried has been down for
// DeadAfter (UNAVAILABLE) or ctx ends.
func (m *MultiClient) pick(ctx context.Context, id string, tried []bool) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		best, bestScore, waiting := -1, uint64(0), false
		for i, c := range m.clients {
			if tried[i] {
				continue
			}
			m.refresh(i, now)
			if !c.connected.Load() {
				if now.Sub(time.Unix(0, c.downSince.Load())) < m.cfg.DeadAfter {
					waiting = true // connecting, or lost within DeadAfter: may come back
				}
				continue
			}
			if s := rank(id, c.endpoint); best < 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		if best >= 0 {
			return best, nil
		}
		if !waiting {
			return -1, m.noneUp(tried)
		}
		if timer == nil {
			timer = time.NewTimer(waitStep)
		} else {
			timer.Reset(waitStep)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return -1, m.noneUp(tried)
			}
			return -1, ctx.Err()
		case <-m.closing:
			return -1, transport.ErrClosed
		}
	}
}

// noneUp is the error of a call that found no server up.
func (m *MultiClient) noneUp(tried []bool) error {
	var why []string
	for i, c := range m.clients {
		if tried[i] {
			continue
		}
		down := time.Since(time.Unix(0, c.downSince.Load())).Round(time.Millisecond)
		why = append(why, fmt.Sprintf("%s: down for %v: %s", c.endpoint, down, *c.reason.Load()))
	}
	if len(why) == 0 {
		return status.Errorf(status.Unavailable, "zmq: every server was tried")
	}
	return status.Errorf(status.Unavailable, "zmq: no server up among %s", strings.Join(why, "; "))
}

// refresh reads the connection events of clients[i] when nobody uses its
// socket and they were not read in the last refreshEvery: an idle Client
// otherwise learns of a lost or restored connection only at its next call.
func (m *MultiClient) refresh(i int, now time.Time) {
	last := m.refreshed[i].Load()
	if now.UnixNano()-last < int64(refreshEvery) || !m.refreshed[i].CompareAndSwap(last, now.UnixNano()) {
		return
	}
	m.clients[i].pollEvents()
}

// pollEvents reads the socket monitor's events when no caller leads (one
// that leads reads them itself), taking the lead for that moment; a call
// that arrives meanwhile is handed the lead after.
func (c *Client) pollEvents() {
	b := c.box
	b.mu.Lock()
	if b.leading || b.closed {
		b.mu.Unlock()
		return
	}
	b.leading = true
	b.mu.Unlock()
	c.readEvents()
	b.mu.Lock()
	c.handoffLocked()
	b.mu.Unlock()
}

// endpointsOf turns a zmq address listing several servers,
// zmq://host1:port1,host2:port2, into their endpoints; ok is false when the
// address names one server.
func endpointsOf(u *url.URL) (endpoints []string, ok bool, err error) {
	if !strings.Contains(u.Host, ",") {
		return nil, false, nil
	}
	if strings.ToLower(u.Scheme) != schemeTCP {
		return nil, true, transport.ErrorfAddr(u, "only zmq://host:port addresses may list several servers")
	}
	for _, hp := range strings.Split(u.Host, ",") {
		one := *u
		one.Host = hp
		e, err := endpointOf(&one, false)
		if err != nil {
			return nil, true, transport.ErrorfAddr(u, "server %q: want host:port,host:port,... (%s)", hp, status.MessageOf(err))
		}
		endpoints = append(endpoints, e)
	}
	return endpoints, true, nil
}

// rank is the rendezvous hashing score of endpoint for call id.
func rank(id, endpoint string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(endpoint))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(id))
	// FNV-1a barely moves the high bits for a change in the last bytes,
	// where call ids of one session differ: mix them (splitmix64's
	// finalizer) so that the ranking spreads.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (m *MultiClient) describe() string {
	return strings.Join(m.Endpoints(), ",")
}

func (m *MultiClient) isClosing() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

// Close closes every Client; calls in flight return transport.ErrClosed.
func (m *MultiClient) Close() error {
	m.closeOnce.Do(func() {
		close(m.closing)
		m.closeErr = m.closeClients()
	})
	return m.closeErr
}

func (m *MultiClient) closeClients() error {
	var errs []error
	for _, c := range m.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
