// Package inproc is the in-memory bankrpc backend: a Listener served by a
// transport.Handler and any number of clients dialled from it, in one
// process. It is the default for unit tests and for embedding a service in
// the program that calls it. Frames are copied as they would be on a wire, so
// code tested over inproc behaves as it will over a network backend.
//
// Importing the package registers the scheme "inproc": bankrpc.Listen(ctx,
// "inproc://NAME") makes a listener known by that name in this process until
// it is closed, and bankrpc.Dial(ctx, "inproc://NAME") a client of it.
package inproc

import (
	"context"
	"net/url"
	"sync"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

func init() {
	transport.Register(transport.Scheme{Name: "inproc", Dial: dial, Listen: listen})
}

// names holds the listeners opened by address.
var names struct {
	sync.Mutex
	m map[string]*Listener
}

func name(u *url.URL) (string, error) {
	n := u.Host + u.Path
	if n == "" {
		n = u.Opaque
	}
	if n == "" {
		return "", transport.ErrorfAddr(u, "inproc addresses name a listener: inproc://NAME")
	}
	return n, nil
}

func listen(_ context.Context, u *url.URL, o transport.Options) (transport.ServerTransport, error) {
	if _, _, err := transport.ConfigOf[struct{}](o, "inproc"); err != nil {
		return nil, err
	}
	n, err := name(u)
	if err != nil {
		return nil, err
	}
	names.Lock()
	defer names.Unlock()
	if names.m == nil {
		names.m = make(map[string]*Listener)
	}
	if _, taken := names.m[n]; taken {
		return nil, status.Errorf(status.FailedPrecondition, "inproc: a listener named %q is already open in this process", n)
	}
	l := NewListener()
	l.name = n
	names.m[n] = l
	return l, nil
}

func dial(_ context.Context, u *url.URL, o transport.Options) (transport.ClientTransport, error) {
	if _, _, err := transport.ConfigOf[struct{}](o, "inproc"); err != nil {
		return nil, err
	}
	n, err := name(u)
	if err != nil {
		return nil, err
	}
	names.Lock()
	l := names.m[n]
	names.Unlock()
	if l == nil {
		return nil, status.Errorf(status.Unavailable, "inproc: no listener named %q in this process (bankrpc.Listen it first)", n)
	}
	return l.Dial(), nil
}

// Listener is the server half. It is safe for concurrent use; Shutdown and
// Close are idempotent.
type Listener struct {
	name string // registered name, empty when made by NewListener

	mu      sync.Mutex // guards handler, stopped
	handler transport.Handler
	stopped bool
	serving chan struct{} // closed when Serve starts
	done    chan struct{} // closed when the listener stops taking calls
	closed  chan struct{} // closed when the listener is closed: replies are dropped
	ended   chan struct{} // closed when Serve returns
	calls   sync.WaitGroup
	once    sync.Once
	close1  sync.Once

	// Handlers run on long-lived workers, started on demand and stopped by
	// Close: a fresh goroutine per call would grow its stack on every call.
	jobs chan *job
}

var jobs = sync.Pool{New: func() any { return &job{replies: make(chan answer, 1)} }}

// job is one call handed to a worker.
type job struct {
	h       transport.Handler
	ctx     context.Context
	frame   []byte
	replies chan answer // buffered 1: a worker never blocks on a caller that gave up
}

type answer struct {
	reply []byte
	err   error
}

// run hands j to an idle worker, or starts one.
func (l *Listener) run(j *job) {
	select {
	case l.jobs <- j:
	default:
		go l.work(j)
	}
}

// work runs j, then the jobs it is handed, until the listener closes.
func (l *Listener) work(j *job) {
	for {
		reply, err := j.h.HandleFrame(j.ctx, j.frame)
		j.replies <- answer{reply, err}
		l.calls.Done()
		select {
		case j = <-l.jobs:
		case <-l.closed:
			return
		}
	}
}

// NewListener returns a Listener that takes calls once Serve is called.
func NewListener() *Listener {
	return &Listener{serving: make(chan struct{}), done: make(chan struct{}), closed: make(chan struct{}), ended: make(chan struct{}), jobs: make(chan *job)}
}

// Serve runs h for every call until Shutdown or Close, and returns nil.
// Handlers run concurrently, each call on its own goroutine.
func (l *Listener) Serve(h transport.Handler) error {
	l.mu.Lock()
	if l.handler != nil || l.stopped {
		l.mu.Unlock()
		return status.Errorf(status.FailedPrecondition, "inproc: Serve called twice or after Close")
	}
	l.handler = h
	close(l.serving)
	l.mu.Unlock()
	<-l.closed
	close(l.ended)
	return nil
}

// Shutdown stops taking calls and waits for those in flight to be answered,
// or for ctx to end; then it closes the listener.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.stop()
	idle := make(chan struct{})
	go func() { l.calls.Wait(); close(idle) }()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.Close()
	return err
}

// Close stops taking calls and returns at once; calls in flight get no reply
// (their callers fail with UNAVAILABLE) and calls waiting for a server fail
// with UNAVAILABLE.
func (l *Listener) Close() error {
	l.stop()
	l.close1.Do(func() {
		close(l.closed)
		if l.name != "" {
			names.Lock()
			if names.m[l.name] == l {
				delete(names.m, l.name)
			}
			names.Unlock()
		}
	})
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
func (l *Listener) start() (transport.Handler, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil, false
	}
	l.calls.Add(1)
	return l.handler, true
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

var (
	errServerClosed  = status.Errorf(status.Unavailable, "inproc: server closed")
	errServerStopped = status.Errorf(status.Unavailable, "inproc: the server stopped before it answered")
)

var peerCtx = transport.NewPeerContext(context.Background(), transport.Peer{Transport: "inproc"})

// RoundTrip runs the listener's handler on a copy of call.Frame. When ctx
// ends first, the handler's call is canceled (Handler.CancelCall).
func (c *Client) RoundTrip(ctx context.Context, call *transport.Call) ([]byte, error) {
	select {
	case <-c.closed:
		return nil, transport.ErrClosed
	case <-c.l.serving:
	case <-c.l.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h, ok := c.l.start()
	if !ok {
		return nil, errServerClosed
	}
	frame := append([]byte(nil), call.Frame...)
	hctx := peerCtx
	if call.OnStatus != nil {
		hctx = transport.NewStatusContext(hctx, func(_ context.Context, f []byte) error {
			call.OnStatus(append([]byte(nil), f...))
			return nil
		})
	}
	j := jobs.Get().(*job)
	j.h, j.ctx, j.frame = h, hctx, frame
	c.l.run(j)
	select {
	case a := <-j.replies:
		*j = job{replies: j.replies}
		jobs.Put(j) // only once its reply was taken: an abandoned job is not reused
		if a.err == transport.ErrNotServed {
			return nil, errServerStopped
		}
		return a.reply, nil
	case <-ctx.Done():
		h.CancelCall(call.ID)
		return nil, ctx.Err()
	case <-c.closed:
		h.CancelCall(call.ID)
		return nil, transport.ErrClosed
	case <-c.l.closed:
		return nil, errServerStopped
	}
}

// CarriesStatus reports that inproc delivers handler statuses to OnStatus.
func (c *Client) CarriesStatus() bool { return true }

// Close fails the calls in flight with transport.ErrClosed.
func (c *Client) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
