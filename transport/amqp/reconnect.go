package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

// connector is the connection manager of the thesis: it dials the broker and
// keeps one session (a connection with its channels, declarations and
// consumers) running, opening a fresh one with exponential backoff whenever
// the previous one fails. It deliberately does not use amqp091-go's
// Config.Recovery: after a recovery the delivery tags of a consumer restart
// at 1, so acknowledging a delivery taken before it would acknowledge a
// different message. Here every delivery is acknowledged on the channel it
// came from, and a channel never outlives its connection.
//
// With several broker URLs (the nodes of a cluster) it connects to the first
// and, whenever a connection cannot be opened or is lost, moves on to the
// next one (round robin): a connection to a node that died is replaced by
// one to a surviving node within one backoff step. Each attempt tries every
// node once; the backoff applies between attempts.
//
// A connector is safe for concurrent use; only cur changes after
// construction.
type connector struct {
	urls     []string
	cur      atomic.Uint32                                // index in urls of the node to connect to next
	config   amqp091.Config                               // Dial is set per connection, see connect
	dial     func(network, addr string) (net.Conn, error) // the user's, or nil
	min, max time.Duration
	logger   *slog.Logger
	events   transport.EventSink // reconnections and what the client or server built on k reports
}

func newConnector(urls []string, connectionName string, dial func(network, addr string) (net.Conn, error), minBackoff, maxBackoff time.Duration, logger *slog.Logger) *connector {
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName(connectionName)
	props["product"] = "bankrpc"
	return &connector{
		urls:   urls,
		config: amqp091.Config{Heartbeat: defaultHeartbeat, Locale: "en_US", Properties: props},
		dial:   dial,
		min:    minBackoff,
		max:    maxBackoff,
		logger: logger,
	}
}

// connect opens one connection and runs setup on it. The end of ctx
// interrupts both: it closes the socket, and connect returns ctx's error
// (the TCP connect of a ClientConfig.Dial or ServerConfig.Dial function is
// bounded by that function's own timeout only). A failed setup closes the
// connection.
func (k *connector) connect(ctx context.Context, setup func(*amqp091.Connection) error) (*amqp091.Connection, error) {
	var (
		mu       sync.Mutex // guards raw, ended, timedOut
		raw      net.Conn
		ended    bool
		timedOut bool
		config   = k.config
		netDial  = k.dial
	)
	if netDial == nil {
		netDial = func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: defaultDialTimeout}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// As amqp091.DefaultDial: the TLS and AMQP handshakes must not
			// stall on a dead broker; the library clears the deadline after.
			if err := conn.SetDeadline(time.Now().Add(defaultDialTimeout)); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		}
	}
	config.Dial = func(network, addr string) (net.Conn, error) {
		conn, err := netDial(network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if ended {
			_ = conn.Close()
			return nil, ctx.Err()
		}
		raw = conn
		return conn, nil
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		ended = true
		if raw != nil {
			_ = raw.Close()
		}
	})
	// Every node is tried once, from the current one: a node that refuses
	// the connection is skipped at once, one that does not complete the
	// handshake and the setup within setupTimeout (a node overwhelmed, or
	// one that holds a declaration while a quorum queue elects its leader:
	// the library waits for the answer forever) after that.
	var (
		url  string
		conn *amqp091.Connection
		err  error
	)
	for range k.urls {
		url = k.node()
		mu.Lock()
		timedOut = false
		mu.Unlock()
		bound := time.AfterFunc(setupTimeout, func() {
			mu.Lock()
			defer mu.Unlock()
			timedOut = true
			if raw != nil {
				_ = raw.Close()
			}
		})
		if conn, err = amqp091.DialConfig(url, config); err == nil {
			if err = setup(conn); err != nil {
				closeConn(conn)
			}
		}
		bound.Stop()
		mu.Lock()
		if timedOut && err != nil {
			err = status.Errorf(status.Unavailable, "amqp: connect to %s: no connection set up within %v (%v)", redactURL(url), setupTimeout, err)
		}
		mu.Unlock()
		if err == nil || ctx.Err() != nil {
			break
		}
		k.failover()
	}
	if !stop() {
		if err == nil {
			closeConn(conn)
		}
		return nil, status.FromContextError(ctx.Err())
	}
	if err != nil {
		return nil, k.dialError(url, err)
	}
	return conn, nil
}

// node returns the URL of the node to connect to next.
func (k *connector) node() string { return k.urls[int(k.cur.Load())%len(k.urls)] }

// failover makes the next node of the list the one to connect to: the
// current one could not be reached or its connection was lost.
func (k *connector) failover() {
	if len(k.urls) > 1 {
		k.cur.Add(1)
	}
}

// dialError gives a failure to connect its code: PERMISSION_DENIED for
// refused credentials, UNAVAILABLE otherwise; an error from setup, which has
// one, is kept.
func (k *connector) dialError(url string, err error) error {
	var se *status.Error
	if errors.As(err, &se) {
		return err
	}
	var ae *amqp091.Error
	if errors.As(err, &ae) && ae.Code == amqp091.AccessRefused {
		return status.Errorf(status.PermissionDenied, "amqp: connect to %s: %s", redactURL(url), ae.Reason)
	}
	return status.Errorf(status.Unavailable, "amqp: connect to %s: %v", redactURL(url), err)
}

// openSession connects and sets up a session on the new connection (see
// connect).
func openSession[S session](ctx context.Context, k *connector, setup func(*amqp091.Connection) (S, error)) (session, error) {
	var s S
	if _, err := k.connect(ctx, func(conn *amqp091.Connection) (err error) {
		s, err = setup(conn)
		return err
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// session is the work done over one connection.
type session interface {
	// run serves until the connection or one of its channels fails, or until
	// ctx ends; it closes the connection before it returns. The error says
	// why the session ended.
	run(ctx context.Context) error
}

// supervise runs first, then sessions made by open, one after another, until
// ctx ends. Between attempts it waits an exponential backoff with jitter,
// reset once a session has lasted longer than the maximum backoff. open gets
// ctx and must return when it ends.
func (k *connector) supervise(ctx context.Context, first session, open func(context.Context) (session, error)) {
	backoff := k.min
	s := first
	var down time.Time // when the last session ended
	for {
		for attempt := 1; s == nil; attempt++ {
			if ctx.Err() != nil {
				return
			}
			var err error
			if s, err = open(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				// The first failure of an outage is worth a warning; the
				// retries that follow are not.
				level := slog.LevelDebug
				if attempt == 1 {
					level = slog.LevelWarn
				}
				k.logger.Log(ctx, level, "amqp: connect failed", "error", err, "attempt", attempt, "retry_in", backoff, "next", redactURL(k.node()))
				if !sleep(ctx, jitter(backoff)) {
					return
				}
				backoff = min(backoff*2, k.max)
			}
		}
		if !down.IsZero() {
			k.logger.InfoContext(ctx, "amqp: reconnected", "after", time.Since(down).Round(time.Millisecond))
			k.emit(transport.EventReconnect, reasonConnectionLost)
		}
		started := time.Now()
		err := s.run(ctx)
		s = nil
		if ctx.Err() != nil {
			return
		}
		down = time.Now()
		if len(k.urls) > 1 {
			// The node may be gone: a surviving one is the better bet.
			k.failover()
		}
		k.logger.WarnContext(ctx, "amqp: connection lost; reconnecting", "error", err, "next", redactURL(k.node()))
		if time.Since(started) > k.max {
			backoff = k.min
		}
		if !sleep(ctx, jitter(backoff)) {
			return
		}
	}
}

// jitter spreads reconnections of many clients over [d/2, d).
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// setupTimeout bounds the opening of a connection to one node, handshake
// and setup (channels, declarations, consumers) included.
const setupTimeout = 15 * time.Second

// closeWait bounds the close handshake with a broker.
const closeWait = 2 * time.Second

// closeConn closes a connection politely but without waiting long for a
// broker that no longer answers.
func closeConn(conn *amqp091.Connection) { closeConnWithin(conn, closeWait) }

// closeConnWithin closes conn, waiting at most wait for the broker's answer.
// The deadline applies to the socket, so it also ends a write in progress
// (held up by a broker that stopped reading). Safe to call concurrently: the
// first call closes, the others return at once.
func closeConnWithin(conn *amqp091.Connection, wait time.Duration) {
	if !conn.IsClosed() {
		_ = conn.CloseDeadline(time.Now().Add(wait)) // the connection is gone either way
	}
}

// notifyClose registers a listener for the close of a connection or a
// channel. Each source gets its own listener: the library closes every
// listener it holds, so a shared one would be closed twice.
func notifyClose(src interface {
	NotifyClose(chan *amqp091.Error) chan *amqp091.Error
}) <-chan *amqp091.Error {
	return src.NotifyClose(make(chan *amqp091.Error, 1))
}

// closedError turns a close notification into the error a session reports.
func closedError(what string, e *amqp091.Error) error {
	if e == nil {
		return errors.New(what + " closed")
	}
	return fmt.Errorf("%s closed: %w", what, e)
}

// redactURL drops the password from an AMQP URL, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the broker URL"
	}
	return u.Redacted()
}
