package bank

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// The tests in this file drive the bank as clients do, through the
// generated stubs and the runtime's Conn, which makes the call ids and
// tells the bank each request's first unanswered sequence number.

// retryServer serves a bank over inproc. Its runtime keeps no replies of
// finished calls, so that every repeat reaches the bank, and it can hold
// back the reply of a call (the bank applied it, the client never hears):
// the client's call then times out with its outcome unknown.
type retryServer struct {
	l    *inproc.Listener
	mu   sync.Mutex
	held map[string]chan struct{}
}

func newRetryServer(t testing.TB, b *Bank) *retryServer {
	t.Helper()
	s := &retryServer{l: inproc.NewListener(), held: map[string]chan struct{}{}}
	srv := bankrpc.NewServer(bankrpc.WithReplyCache(0, 0), bankrpc.UnaryInterceptor(s.intercept))
	bankv1.RegisterBankServer(srv, b)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(s.l) })
	t.Cleanup(func() {
		s.mu.Lock()
		for id, ch := range s.held {
			close(ch)
			delete(s.held, id)
		}
		s.mu.Unlock()
		_ = srv.Close()
		wg.Wait()
	})
	return s
}

func (s *retryServer) intercept(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, h bankrpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	s.mu.Lock()
	ch := s.held[bankrpc.CallIDFromContext(ctx)]
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return resp, err
}

// hold holds back the reply of the call with id until the returned func is
// called.
func (s *retryServer) hold(id string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.held[id] = ch
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held[id] == ch {
			close(ch)
			delete(s.held, id)
		}
	}
}

// client returns a new client: a Conn of its own, so a client session of
// its own, as a new process has.
func (s *retryServer) client(t testing.TB) (bankv1.BankClient, *bankrpc.Conn) {
	t.Helper()
	conn := bankrpc.NewConn(s.l.Dial())
	t.Cleanup(func() { _ = conn.Close() })
	return bankv1.NewBankClient(conn), conn
}

func balanceOf(t testing.TB, b *Bank, id int32) int64 {
	t.Helper()
	for _, a := range b.Accounts() {
		if a.ID == id {
			return a.Balance
		}
	}
	t.Fatalf("no account %d", id)
	return 0
}

// TestRetryAfterManyCallsIsAnsweredFromTheRecord is the finding of issue
// 12: a deposit whose reply is lost, retried with its call id after 100
// more calls on the account (from its own client and from others), must be
// answered with the recorded reply, not applied again: from the client
// that made it, from a new process, after a crash (the log) and after a
// clean restart (the snapshot). The bank used to remember the last 64 call
// ids of each account and applied such a retry twice.
func TestRetryAfterManyCallsIsAnsweredFromTheRecord(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	s := newRetryServer(t, b)
	c, conn := s.client(t)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)

	x := conn.NewCallID()
	release := s.hold(x)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = c.Deposit(short, &bankv1.DepositRequest{AccountId: 7, Amount: 100}, bankrpc.WithCallID(x))
	cancel()
	require.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "the reply was held back: the outcome is unknown to the client")
	release()
	require.Equal(t, int64(100), balanceOf(t, b, 7), "the bank applied it")

	for range 50 {
		_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1})
		require.NoError(t, err)
		other, _ := s.client(t)
		_, err = other.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1})
		require.NoError(t, err)
	}
	require.Equal(t, int64(200), balanceOf(t, b, 7))

	retry := func(c bankv1.BankClient, from string) {
		t.Helper()
		d, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 100}, bankrpc.WithCallID(x))
		require.NoError(t, err, from)
		assert.Equal(t, int64(100), d.GetBalance(), "%s: the recorded reply: the balance right after the deposit", from)
		assert.Equal(t, int64(200), balanceOf(t, b, 7), "%s: not applied again", from)
	}
	retry(c, "the client that made the call")
	again, _ := s.client(t)
	retry(again, "a new process")

	b.crash()
	b = openBank(t, dir)
	s = newRetryServer(t, b)
	again, _ = s.client(t)
	retry(again, "after a crash, from the log")

	require.NoError(t, b.Shutdown())
	b = openBank(t, dir)
	s = newRetryServer(t, b)
	again, _ = s.client(t)
	retry(again, "after a restart, from the snapshot")
}

// TestRetryOfAnsweredCallAfterManyCallsIsNotApplied: a call whose reply
// the client got is forgotten once the client's later calls say so; a
// retry of its call id (a script that runs a printed command again) must
// then be refused as of unknown outcome, never applied a second time.
func TestRetryOfAnsweredCallAfterManyCallsIsNotApplied(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	b := openBank(t, dir)
	s := newRetryServer(t, b)
	c, conn := s.client(t)
	_, err := c.Open(ctx, &bankv1.OpenRequest{AccountId: 7})
	require.NoError(t, err)
	x := conn.NewCallID()
	_, err = c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 100}, bankrpc.WithCallID(x))
	require.NoError(t, err)
	for range 50 {
		_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1})
		require.NoError(t, err)
		other, _ := s.client(t)
		_, err = other.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 1})
		require.NoError(t, err)
	}
	require.Equal(t, int64(200), balanceOf(t, b, 7))

	refused := func(c bankv1.BankClient, from string) {
		t.Helper()
		_, err := c.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 100}, bankrpc.WithCallID(x))
		code, msg := codeAndMessage(err)
		assert.Equal(t, bankrpc.Aborted, code, "%s: %v", from, err)
		assert.Contains(t, msg, "outcome unknown", from)
		assert.Equal(t, int64(200), balanceOf(t, b, 7), "%s: not applied again", from)
	}
	refused(c, "the client that made the call")
	again, _ := s.client(t)
	refused(again, "a new process")
	b.crash()
	b = openBank(t, dir)
	s = newRetryServer(t, b)
	again, _ = s.client(t)
	refused(again, "after a crash")
	require.NoError(t, b.Shutdown())
	b = openBank(t, dir)
	s = newRetryServer(t, b)
	again, _ = s.client(t)
	refused(again, "after a restart")
}
