package bankrpc

import (
	"context"
	"errors"
	"sync"

	"github.com/bankrpc/bankrpc/transport"
)

// Listen opens the server half of the backend addr names, as Dial does for
// clients: "zmq://127.0.0.1:4040" (port 0 picks one), "amqp://user:pass@host/
// vhost?service=NAME", "inproc://name". Requests may queue until a Server
// serves it. Listen does not block past ctx. Of opts, WithLogger,
// WithServerMaxFrameSize and WithTransportConfig apply.
func Listen(ctx context.Context, addr string, opts ...ServerOption) (transport.ServerTransport, error) {
	o := defaultServerOptions()
	for _, opt := range opts {
		opt.applyServer(&o)
	}
	return listen(ctx, addr, o)
}

func listen(ctx context.Context, addr string, o serverOptions) (transport.ServerTransport, error) {
	u, s, err := transport.Lookup(addr)
	if err != nil {
		return nil, err
	}
	return s.Listen(ctx, u, transport.Options{Logger: o.logger, MaxFrameSize: o.maxFrame, Configs: o.configs, Events: eventSink(o.events)})
}

// acceptingNew reports whether the server takes new calls.
func (s *Server) acceptingNew() bool {
	s.life.Lock()
	defer s.life.Unlock()
	return s.state == running
}

// Serve serves requests from l until Shutdown or Close, which also stop l,
// and then returns ErrServerClosed; or until l fails, returning its error.
// Serve may be called for several listeners at once (one per backend), each
// in its own goroutine. A listener given after Shutdown or Close is closed.
func (s *Server) Serve(l transport.ServerTransport) error {
	s.life.Lock()
	if s.state != running {
		s.life.Unlock()
		_ = l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.life.Unlock()

	err := l.Serve(s)

	s.life.Lock()
	delete(s.listeners, l)
	state := s.state
	s.life.Unlock()
	if state != running {
		return ErrServerClosed
	}
	return err
}

// ListenAndServe listens on every address (see Listen, with the server's own
// options) and serves them all until Shutdown or Close, then returns
// ErrServerClosed. When an address cannot be opened it closes the others and
// returns that error; ctx bounds the opening only.
func (s *Server) ListenAndServe(ctx context.Context, addrs ...string) error {
	ls := make([]transport.ServerTransport, 0, len(addrs))
	for _, a := range addrs {
		l, err := listen(ctx, a, s.o)
		if err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
			return err
		}
		ls = append(ls, l)
	}
	return s.ServeAll(ls...)
}

// ServeAll serves every listener (see Serve) and returns when all of them
// have stopped: ErrServerClosed after Shutdown or Close, else the first
// error of a listener that failed (the others are then closed).
func (s *Server) ServeAll(ls ...transport.ServerTransport) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, l := range ls {
		wg.Go(func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, ErrServerClosed) {
				once.Do(func() {
					first = err
					for _, o := range ls {
						_ = o.Close()
					}
				})
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ErrServerClosed
}

// Shutdown stops the server gracefully, as net/http's: every listener stops
// taking requests (a new call that still reaches the server is answered
// UNAVAILABLE, or, over AMQP, left in its queue), the calls in flight run to
// their end and their replies are sent. When ctx ends first, the handlers'
// contexts are canceled (cause ErrServerStopping), the listeners are closed
// at once, and Shutdown returns ctx's error: calls not answered by then are
// not answered (AMQP delivers them again). It never waits beyond ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	ls := s.beginStop(draining)
	errs := make(chan error, len(ls)+1)
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { errs <- l.Shutdown(ctx) })
	}
	wg.Go(func() {
		// Canceled here, before Shutdown returns, rather than by
		// context.AfterFunc: ctx's Done is closed before AfterFunc's
		// function starts, and a Shutdown that returned on Done and then
		// stopped it would leave the handlers running uncanceled.
		err := s.calls.wait(ctx)
		if err != nil {
			s.calls.cancelAll(ErrServerStopping)
		}
		errs <- err
	})
	wg.Wait()
	close(errs)
	s.finishStop()
	var err error
	for e := range errs {
		if e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Close stops the server at once: the handlers' contexts are canceled (cause
// ErrServerStopping) and every listener is closed without waiting for them.
// Calls in flight get no reply (AMQP delivers them again).
func (s *Server) Close() error {
	ls := s.beginStop(stopped)
	s.calls.cancelAll(ErrServerStopping)
	var err error
	for _, l := range ls {
		if e := l.Close(); e != nil && err == nil {
			err = e
		}
	}
	s.finishStop()
	return err
}

// beginStop moves the server to state (unless it is further on) and returns
// its listeners.
func (s *Server) beginStop(state serverState) []transport.ServerTransport {
	s.life.Lock()
	defer s.life.Unlock()
	if s.state < state {
		s.state = state
	}
	ls := make([]transport.ServerTransport, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	return ls
}

func (s *Server) finishStop() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.state != stopped {
		s.state = stopped
	}
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
	}
}
