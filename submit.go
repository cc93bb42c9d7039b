package bankrpc

import (
	"context"
	"slices"
	"sync"

	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport"
)

// CallID is the id of a submitted call (see Conn.Submit): what Collect
// takes to find its result. It is the call id of the request on the wire.
type CallID string

// SubmitConnInterface is what generated Submit<Method> and Collect<Method>
// call, through the helpers Submit and Collect. *Conn implements it.
type SubmitConnInterface interface {
	Submit(ctx context.Context, method string, args any, opts ...CallOption) (CallID, error)
	Collect(ctx context.Context, id CallID, method string, reply any, opts ...CallOption) error
}

// Submit submits a call through cc (see Conn.Submit); cc must implement
// SubmitConnInterface, or the call fails with Unimplemented.
func Submit(ctx context.Context, cc ClientConnInterface, method string, args any, opts ...CallOption) (CallID, error) {
	s, ok := cc.(SubmitConnInterface)
	if !ok {
		return "", Errorf(Unimplemented, "bankrpc: %T cannot submit calls (it does not implement bankrpc.SubmitConnInterface)", cc)
	}
	return s.Submit(ctx, method, args, opts...)
}

// Collect collects a submitted call's result through cc (see
// Conn.Collect); cc must implement SubmitConnInterface, or the call fails
// with Unimplemented.
func Collect(ctx context.Context, cc ClientConnInterface, id CallID, method string, reply any, opts ...CallOption) error {
	s, ok := cc.(SubmitConnInterface)
	if !ok {
		return Errorf(Unimplemented, "bankrpc: %T cannot collect calls (it does not implement bankrpc.SubmitConnInterface)", cc)
	}
	return s.Collect(ctx, id, method, reply, opts...)
}

var _ SubmitConnInterface = (*Conn)(nil)

// submissions are the calls a Conn submitted and whose results were not
// collected yet. mu guards byID and order.
type submissions struct {
	mu    sync.Mutex
	byID  map[CallID]*submission
	order []CallID // submission order, for Pending and Finished
}

// submission is one submitted call: in flight until done is closed, then
// its outcome.
type submission struct {
	method string
	done   chan struct{}
	cancel context.CancelFunc

	// Written before done is closed, read after.
	frame []byte
	err   error
}

func (s *submissions) add(id CallID, sub *submission) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = make(map[CallID]*submission)
	}
	if _, dup := s.byID[id]; dup {
		return false
	}
	s.byID[id] = sub
	s.order = append(s.order, id)
	return true
}

func (s *submissions) get(id CallID) *submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// remove forgets id if it is still sub (nil: whatever it is).
func (s *submissions) remove(id CallID, sub *submission) *submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byID[id]
	if cur == nil || (sub != nil && cur != sub) {
		return nil
	}
	delete(s.byID, id)
	if i := slices.Index(s.order, id); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
	return cur
}

// list returns the ids submitted and not collected whose outcome is known
// (finished) or not.
func (s *submissions) list(finished bool) []CallID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []CallID
	for _, id := range s.order {
		select {
		case <-s.byID[id].done:
			if finished {
				ids = append(ids, id)
			}
		default:
			if !finished {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// Submit sends a call of method without waiting for its result, and returns
// its call id, with which Collect gets the result later. It returns once
// the request is handed over: over AMQP once the broker holds it durably
// (the process may exit: the call is served even while no client runs, and
// its result waits in the client's durable result queue for a process that
// connects with the same client name); over ZeroMQ and inproc at once (the
// process must live until the result comes: the call is the process's).
//
// The call's deadline is only what WithTimeout gives, counted from now;
// ctx bounds the submission, not the call, and its metadata travels with
// the request. When ctx ends before the request is handed over, Submit
// returns the call id with ctx's error: the call may still be sent (Forget
// it to stop that). OnProgress and OnStatus options work while this process
// waits for the result; LogLines belongs to Collect. Submit does not run the
// Conn's interceptors or stats handlers, which wrap a call from its request
// to its reply.
//
// A call id given with WithCallID that this Conn has already submitted and
// not collected is refused (AlreadyExists).
func (c *Conn) Submit(ctx context.Context, method string, args any, opts ...CallOption) (CallID, error) {
	if c.closed.Load() {
		return "", ErrClosed
	}
	var o callOptions
	for _, opt := range opts {
		opt.applyCall(&o)
	}
	if err := ctx.Err(); err != nil {
		return "", FromContextError(err)
	}
	md, _ := FromOutgoingContext(ctx)
	if err := checkMetadata(md, c.o.maxMetadata, false); err != nil {
		return "", err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if o.timeout > 0 {
		var cancelTimeout context.CancelFunc
		rctx, cancelTimeout = context.WithTimeout(rctx, o.timeout)
		cancelCtx := cancel
		cancel = func() { cancelTimeout(); cancelCtx() }
	}
	if o.callID != "" && c.subs.get(CallID(o.callID)) != nil {
		cancel()
		return "", Errorf(AlreadyExists, "bankrpc: call %s is already submitted and not collected", o.callID)
	}
	call, seq, err := c.newCall(rctx, method, args, md, &o)
	if err != nil {
		cancel()
		return "", err
	}
	id := CallID(call.ID)
	sub := &submission{method: method, done: make(chan struct{}), cancel: cancel}
	sent := make(chan struct{})
	if sc, ok := c.t.(transport.SendConfirmer); ok && sc.ConfirmsSends() {
		var once sync.Once
		call.Sent = func() { once.Do(func() { close(sent) }) }
	} else {
		close(sent)
	}
	if !c.subs.add(id, sub) {
		cancel()
		if seq != 0 {
			c.pending.end(seq, true)
		}
		return "", Errorf(AlreadyExists, "bankrpc: call %s is already submitted and not collected", id)
	}
	go func() {
		frame, err := c.t.RoundTrip(rctx, call)
		if seq != 0 {
			c.pending.end(seq, err == nil)
		}
		if err != nil {
			err = c.roundTripError(rctx, method, err)
		}
		cancel()
		sub.frame, sub.err = frame, err
		close(sub.done)
	}()
	select {
	case <-sent:
		return id, nil
	case <-sub.done:
		select {
		case <-sent:
		default:
			if sub.err != nil {
				// Never handed over (refused by the broker, unroutable, the
				// Conn closed): nothing to collect.
				c.subs.remove(id, sub)
				return "", sub.err
			}
		}
		return id, nil
	case <-ctx.Done():
		return id, FromContextError(ctx.Err())
	}
}

// Collect waits for the result of the submitted call id, a call of method
// (its full name), and decodes it into reply, or returns the call's error;
// either way the result is collected: this Conn forgets it. ctx bounds the
// wait only: when it ends, the call goes on and can be collected later.
//
// A call this Conn submitted is collected from this process. Another one,
// submitted by an earlier process under the same client name, is collected
// from the backend when it keeps results (transport.ResultKeeper: AMQP);
// on other backends it fails with NotFound. A result for another method
// fails with FailedPrecondition and stays to be collected.
func (c *Conn) Collect(ctx context.Context, id CallID, method string, reply any, opts ...CallOption) error {
	var o callOptions
	for _, opt := range opts {
		opt.applyCall(&o)
	}
	if sub := c.subs.get(id); sub != nil {
		if sub.method != method {
			return Errorf(FailedPrecondition, "bankrpc: call %s was a %s call, not %s", id, sub.method, method)
		}
		select {
		case <-sub.done:
		case <-ctx.Done():
			return FromContextError(ctx.Err())
		}
		c.subs.remove(id, sub)
		if sub.err != nil {
			return sub.err
		}
		return c.decodeResult(method, string(id), sub.frame, reply, &o)
	}
	k, ok := c.t.(transport.ResultKeeper)
	if !ok {
		return Errorf(NotFound, "bankrpc: call %s was not submitted through this Conn, and this transport keeps no results across processes", id)
	}
	r, err := k.WaitResult(ctx, string(id))
	if err != nil {
		return FromContextError(err)
	}
	if r.Err != nil {
		k.DropResult(string(id))
		return r.Err
	}
	var res envelope.ResultView
	if envelope.DecodeResultView(r.Frame, c.o.maxFrame, &res) == nil && len(res.Method) > 0 && string(res.Method) != method {
		return Errorf(FailedPrecondition, "bankrpc: call %s was a %s call, not %s", id, res.Method, method)
	}
	err = c.decodeResult(method, string(id), r.Frame, reply, &o)
	k.DropResult(string(id))
	return err
}

// FinishedCall is a submitted call whose result can be collected.
type FinishedCall struct {
	ID CallID
	// Method is the call's full method name; empty when the result came
	// from a server that does not say (Result.method) and the call was not
	// submitted by this process.
	Method string
	// Code is the result's code.
	Code Code
}

// Finished returns the submitted calls whose results can be collected: this
// Conn's, in the order of submission, then those the backend keeps
// (transport.ResultKeeper: over AMQP, the results that waited in the
// client's durable result queue, all of which have reached this process
// when Finished returns). ctx bounds that wait.
func (c *Conn) Finished(ctx context.Context) ([]FinishedCall, error) {
	var out []FinishedCall
	for _, id := range c.subs.list(true) {
		sub := c.subs.get(id)
		if sub == nil {
			continue
		}
		fc := FinishedCall{ID: id, Method: sub.method, Code: CodeOf(sub.err)}
		if sub.err == nil {
			var res envelope.ResultView
			if err := envelope.DecodeResultView(sub.frame, c.o.maxFrame, &res); err != nil {
				fc.Code = Internal
			} else {
				fc.Code = Code(res.Code)
			}
		}
		out = append(out, fc)
	}
	k, ok := c.t.(transport.ResultKeeper)
	if !ok {
		return out, nil
	}
	kept, err := k.KeptResults(ctx)
	if err != nil {
		return out, FromContextError(err)
	}
	for _, r := range kept {
		fc := FinishedCall{ID: CallID(r.CallID), Code: CodeOf(r.Err)}
		if r.Err == nil {
			var res envelope.ResultView
			if err := envelope.DecodeResultView(r.Frame, c.o.maxFrame, &res); err != nil {
				fc.Code = Internal
			} else {
				fc.Code, fc.Method = Code(res.Code), string(res.Method)
			}
		}
		out = append(out, fc)
	}
	return out, nil
}

// Pending returns the calls this Conn submitted that have no result yet, in
// the order of submission. Calls submitted by an earlier process are not
// known here until their results arrive (see Finished).
func (c *Conn) Pending() []CallID {
	return c.subs.list(false)
}

// Forget forgets the submitted call id: its result, if it came, is dropped,
// and, if it is still in flight from this process, this process stops
// waiting for it and asks the server, best-effort, to cancel it (the call
// may still complete). It reports whether there was anything to forget.
// Over AMQP a result that arrives after Forget is kept again.
func (c *Conn) Forget(id CallID) bool {
	known := false
	if sub := c.subs.remove(id, nil); sub != nil {
		sub.cancel()
		known = true
	}
	if k, ok := c.t.(transport.ResultKeeper); ok && k.DropResult(string(id)) {
		known = true
	}
	return known
}
