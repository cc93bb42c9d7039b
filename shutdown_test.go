package bankrpc_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
)

// stuckWorker's Work ignores its ctx until released, and reports the cause
// its ctx ended with.
type stuckWorker struct {
	testv1.UnimplementedTestServiceServer
	started chan struct{}
	release chan struct{}
	causes  chan error
}

func (w *stuckWorker) Work(ctx context.Context, _ *testv1.WorkRequest) (*testv1.WorkResponse, error) {
	stop := context.AfterFunc(ctx, func() { w.causes <- context.Cause(ctx) })
	defer stop()
	w.started <- struct{}{}
	<-w.release
	return &testv1.WorkResponse{}, nil
}

// TestShutdownAlwaysCancelsStuckHandlers: when Shutdown's ctx ends, the
// handlers still running see their ctx canceled with cause ErrServerStopping,
// every time. A ctx's Done channel is closed before its children are canceled
// (context.AfterFunc's function is started by that), so a Shutdown that
// returned on Done and then stopped an AfterFunc could skip the cancel. The
// many children given to Shutdown's ctx here widen that window: the cancel
// walks them in map order, so AfterFunc's turn comes late in about half the
// rounds.
func TestShutdownAlwaysCancelsStuckHandlers(t *testing.T) {
	const rounds, children = 20, 50_000
	for i := range rounds {
		w := &stuckWorker{started: make(chan struct{}, 1), release: make(chan struct{}), causes: make(chan error, 1)}
		srv := bankrpc.NewServer()
		testv1.RegisterTestServiceServer(srv, w)
		addr := "inproc://shutdown-" + uniqueSuffix(t)
		l, err := bankrpc.Listen(context.Background(), addr)
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		conn, err := bankrpc.Dial(context.Background(), addr)
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = testv1.NewTestServiceClient(conn).Work(context.Background(), &testv1.WorkRequest{}) })
		<-w.started

		sctx, cancel := context.WithCancel(context.Background())
		for range children {
			context.AfterFunc(sctx, func() {})
		}
		go cancel()
		require.ErrorIs(t, srv.Shutdown(sctx), context.Canceled)
		select {
		case cause := <-w.causes:
			require.True(t, errors.Is(cause, bankrpc.ErrServerStopping), "round %d: handler ctx ended with %v", i, cause)
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Shutdown returned on its ctx's end without canceling the stuck handler", i)
		}
		close(w.release)
		wg.Wait()
		require.ErrorIs(t, <-served, bankrpc.ErrServerClosed)
		require.NoError(t, conn.Close())
	}
}
