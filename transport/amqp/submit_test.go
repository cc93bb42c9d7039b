package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// awayService is a TestService whose Echo and Fail add their requests' log
// lines to the result, and which counts runs per call id.
type awayService struct {
	*ledger
}

func (s awayService) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	for _, l := range in.GetLog() {
		bankrpc.Log(ctx, l)
	}
	return s.ledger.Echo(ctx, in)
}

func (s awayService) Fail(ctx context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	s.mu.Lock()
	s.executions[bankrpc.CallIDFromContext(ctx)]++
	s.mu.Unlock()
	for _, l := range in.GetLog() {
		bankrpc.Log(ctx, l)
	}
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

func awayServer(l *ledger) *bankrpc.Server {
	s := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(s, awayService{l})
	return s
}

// TestSubmitCollectAcrossClientRestart: a client submits calls while no
// server runs and exits; a server then handles them while no client runs;
// a new process of the same client name collects the results (typed, with
// their log lines and errors), lists them first, and runs its own calls on
// a session of its own. Nothing is applied twice.
func TestSubmitCollectAcrossClientRestart(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	brokerURL := amqptest.URL(t)
	svc, name := uniqueName(t), uniqueName(t)
	srv := listen(t, brokerURL, ServerConfig{Service: svc}) // declares the service's queue; not serving yet

	first := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	c1 := testv1.NewTestServiceClient(first)
	ok, err := c1.SubmitEcho(ctx, &testv1.EchoRequest{Tag: "while away", Log: []string{"applied once"}})
	require.NoError(t, err)
	failed, err := c1.SubmitFail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.FailedPrecondition), Message: "insufficient funds", Log: []string{"balance 120"}})
	require.NoError(t, err)
	require.NoError(t, first.Close(), "the first process exits with its calls submitted")

	l := newLedger()
	stop := serve(t, srv, awayServer(l))
	require.Eventually(t, func() bool { ex, _ := l.counts(); return ex >= 2 }, 20*time.Second, 10*time.Millisecond, "the server did not handle the submitted call")
	stop() // the server handled the calls while no client ran, and stops

	second := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	t.Cleanup(func() { _ = second.Close() })
	c2 := testv1.NewTestServiceClient(second)
	fin, err := second.Finished(ctx)
	require.NoError(t, err)
	got := map[bankrpc.CallID]bankrpc.FinishedCall{}
	for _, f := range fin {
		got[f.ID] = f
	}
	assert.Equal(t, bankrpc.FinishedCall{ID: ok, Method: testv1.TestService_Echo_FullMethodName, Code: bankrpc.OK}, got[ok])
	assert.Equal(t, bankrpc.FinishedCall{ID: failed, Method: testv1.TestService_Fail_FullMethodName, Code: bankrpc.FailedPrecondition}, got[failed])

	_, err = c2.CollectSleep(ctx, ok)
	assert.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err), "a result is not decoded as another method's: %v", err)
	var lines []string
	echo, err := c2.CollectEcho(ctx, ok, bankrpc.LogLines(&lines))
	require.NoError(t, err)
	assert.Equal(t, "while away", echo.GetTag())
	assert.Equal(t, string(ok), echo.GetCallId())
	assert.Equal(t, []string{"applied once"}, lines)

	_, err = c2.CollectFail(ctx, failed)
	require.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err))
	var be *bankrpc.Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, []string{"balance 120"}, be.Log(), "log lines travel with an error result")

	fin, err = second.Finished(ctx)
	require.NoError(t, err)
	assert.Empty(t, fin, "collected results are gone")
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = c2.CollectEcho(short, ok)
	assert.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "a collected result cannot be collected twice")

	// The new process's own calls are a session of their own.
	serve(t, listen(t, brokerURL, ServerConfig{Service: svc}), awayServer(l))
	mine, err := c2.Echo(ctx, &testv1.EchoRequest{Tag: "mine"})
	require.NoError(t, err)
	assert.NotEqual(t, prefixOf(string(ok)), prefixOf(mine.GetCallId()))
	assert.Equal(t, 1, l.executionsOf(string(ok)), "the submitted call ran once")
}

func prefixOf(id string) string {
	for i := range id {
		if id[i] == '-' {
			return id[:i]
		}
	}
	return id
}

// TestKeptResultsOutliveTheProcessThatReceivedThem: a process that received
// results it did not collect (they were acknowledged when they reached it)
// gives them back to the durable result queue when it closes, so that the
// next process of the client name collects them.
func TestKeptResultsOutliveTheProcessThatReceivedThem(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	brokerURL := amqptest.URL(t)
	svc, name := uniqueName(t), uniqueName(t)
	srv := listen(t, brokerURL, ServerConfig{Service: svc})

	first := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	id, err := testv1.NewTestServiceClient(first).SubmitEcho(ctx, &testv1.EchoRequest{Tag: "kept"})
	require.NoError(t, err)
	failed, err := testv1.NewTestServiceClient(first).SubmitFail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound), Message: "gone"})
	require.NoError(t, err)
	require.NoError(t, first.Close())
	l := newLedger()
	stop := serve(t, srv, awayServer(l))
	require.Eventually(t, func() bool { ex, _ := l.counts(); return ex >= 2 }, 20*time.Second, 10*time.Millisecond)
	stop()

	second := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	fin, err := second.Finished(ctx)
	require.NoError(t, err)
	require.Len(t, fin, 2, "both results reached the second process")
	require.NoError(t, second.Close(), "it exits without collecting them")

	third := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	t.Cleanup(func() { _ = third.Close() })
	c3 := testv1.NewTestServiceClient(third)
	echo, err := c3.CollectEcho(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "kept", echo.GetTag())
	_, err = c3.CollectFail(ctx, failed)
	assert.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(err))
	assert.Equal(t, "gone", bankrpc.MessageOf(err))
}

// TestUncollectedSubmittedResultOutlivesItsProcess: a process submits a
// call, whose result arrives while it still runs, and exits without
// collecting it; the next process of the client name collects it.
func TestUncollectedSubmittedResultOutlivesItsProcess(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	brokerURL := amqptest.URL(t)
	svc, name := uniqueName(t), uniqueName(t)
	serve(t, listen(t, brokerURL, ServerConfig{Service: svc}), awayServer(newLedger()))

	first := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	id, err := testv1.NewTestServiceClient(first).SubmitEcho(ctx, &testv1.EchoRequest{Tag: "arrived"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		fin, err := first.Finished(ctx)
		return err == nil && len(fin) == 1
	}, 20*time.Second, 10*time.Millisecond, "the result reached the first process")
	require.NoError(t, first.Close())

	second := bankrpc.NewConn(dial(t, brokerURL, ClientConfig{Service: svc, ClientName: name}))
	t.Cleanup(func() { _ = second.Close() })
	echo, err := testv1.NewTestServiceClient(second).CollectEcho(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "arrived", echo.GetTag())
}
