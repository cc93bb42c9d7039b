// Package inproc is the in-memory bankrpc backend: a Listener served by a
// transport.Handler and any number of clients dialled from it, in one
// process. It is the default for unit tests and for embedding a service in
// the program that calls it. Frames are copied as they would be on a wire, so
// code tested over inproc behaves as it will over a network backend.
package inproc

import (
	"context"
	"sync"

	"github.com/bankrpc/bankrpc/transport"
)

// Listener is the server half. It is safe for concurrent use; Close is
// idempotent.
type Listener struct {
	mu      sync.Mutex // guards handler, base, stopped
	handler transport.Handler
	base    context.Context
	stopped bool
	serving chan struct{} // closed when Serve starts
	done    chan struct{} // closed when the listener stops taking calls
	calls   sync.WaitGroup
	once    sync.Once

	// Handlers run on long-lived workers, started on demand and stopped with
	// Serve: a fresh goroutine per call would grow its stack on every call.
	jobs    chan *job
	workers sync.WaitGroup
}

var jobs = sync.Pool{New: func() any { return &job{replies: make(chan []byte, 1)} }}

// job is one call handed to a worker.
type job struct {
	h       transport.Handler
	ctx     context.Context
	frame   []byte
	replies chan []byte // buffered 1: a worker never blocks on a caller that gave up
}

// NewListener returns a Listener that takes calls once Serve is called.
func NewListener() *Listener {
	return &Listener{serving: make(chan struct{}), done: make(chan struct{}), jobs: make(chan *job)}
}

// Serve runs h for every call until ctx is done or Close is called, then
// waits for the calls in flight and returns nil. Handlers run concurrently.
func (l *Listener) Serve(ctx context.Context, h transport.Handler) error {
	l.mu.Lock()
	if l.handler != nil || l.stopped {
		l.mu.Unlock()
		return transport.Errorf(transport.FailedPrecondition, "inproc: Serve called twice or after Close")
	}
	l.handler = h
	l.base = transport.NewPeerContext(context.WithoutCancel(ctx), transport.Peer{Transport: "inproc"})
	close(l.serving)
	l.mu.Unlock()

	select {
	case <-ctx.Done():
		l.stop()
	case <-l.done:
	}
	l.calls.Wait()
	close(l.jobs)
	l.workers.Wait()
	return nil
}

// run hands j to an idle worker, or starts one.
func (l *Listener) run(j *job) {
	select {
	case l.jobs <- j:
	default:
		l.workers.Add(1)
		go l.work(j)
	}
}

func (l *Listener) work(j *job) {
	defer l.workers.Done()
	for ; j != nil; j = <-l.jobs {
		reply, _ := j.h.HandleFrame(j.ctx, j.frame) // a refused frame still has an error reply
		j.replies <- reply
		l.calls.Done()
	}
}

// Close stops taking calls; calls waiting for a server fail with Unavailable.
func (l *Listener) Close() error {
	l.stop()
	return nil
}

func (l *Listener) stop() {
	l.once.Do(func() {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
		close(l.done)
	})
}

// start registers one call and returns the handler to run it with.
func (l *Listener) start() (transport.Handler, context.Context, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil, nil, false
	}
	l.calls.Add(1)
	return l.handler, l.base, true
}

// Dial returns a new client of l. A call made before Serve starts waits for
// it, within the call's ctx.
func (l *Listener) Dial() *Client {
	return &Client{l: l, closed: make(chan struct{})}
}

// Client is the client half. It is safe for concurrent use; Close is
// idempotent and fails the calls in flight with transport.ErrClosed.
type Client struct {
	l      *Listener
	closed chan struct{}
	once   sync.Once
}

var (
	_ transport.ClientTransport = (*Client)(nil)
	_ transport.StatusCapable   = (*Client)(nil)
	_ transport.ServerTransport = (*Listener)(nil)
)

var errServerClosed = transport.Errorf(transport.Unavailable, "inproc: server closed")

// RoundTrip runs the listener's handler on a copy of call.Frame.
func (c *Client) RoundTrip(ctx context.Context, call *transport.Call) ([]byte, error) {
	select {
	case <-c.closed:
		return nil, transport.ErrClosed
	case <-c.l.serving:
	case <-c.l.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h, base, ok := c.l.start()
	if !ok {
		return nil, errServerClosed
	}
	frame := append([]byte(nil), call.Frame...)
	hctx := base
	if call.OnStatus != nil {
		hctx = transport.NewStatusContext(base, func(_ context.Context, f []byte) error {
			call.OnStatus(append([]byte(nil), f...))
			return nil
		})
	}
	j := jobs.Get().(*job)
	j.h, j.ctx, j.frame = h, hctx, frame
	c.l.run(j)
	select {
	case reply := <-j.replies:
		*j = job{replies: j.replies}
		jobs.Put(j) // only once its reply was taken: an abandoned job is not reused
		return reply, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, transport.ErrClosed
	}
}

// CarriesStatus reports that inproc delivers handler statuses to OnStatus.
func (c *Client) CarriesStatus() bool { return true }

// Close fails the calls in flight with transport.ErrClosed.
func (c *Client) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
