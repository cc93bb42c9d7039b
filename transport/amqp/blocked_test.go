package amqp

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
)

// TestBrokerAlarmBlocksPublishing raises a memory alarm on a private broker
// node, which makes the broker stop reading from connections that publish.
// Calls made meanwhile end at their deadline (their requests, some of them
// large enough to fill the socket buffers, are never written or are stuck in
// a write), Close returns promptly, a call with a long deadline completes
// once the alarm clears, and a fresh client is served. Not parallel: the
// alarm would stall the other tests that use the private node.
func TestBrokerAlarmBlocksPublishing(t *testing.T) {
	url := privateNodeURL(t)
	ctx := testCtx(t, 120*time.Second)
	svc := uniqueName(t)
	l := newLedger()
	serve(t, listen(t, url, ServerConfig{Service: svc}), handlerFor(l))
	c := dial(t, url, ClientConfig{Service: svc, ReconnectMax: time.Second})
	tc := testv1.NewTestServiceClient(bankrpc.NewConn(c))
	_, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "before"})
	require.NoError(t, err)

	alarm := func(on bool) {
		watermark := "0.4"
		if on {
			watermark = "0.0000001"
		}
		t.Logf("set_vm_memory_high_watermark %s: %s", watermark, privateNodeCtl(t, "set_vm_memory_high_watermark", watermark))
	}
	alarm(true)
	t.Cleanup(func() { alarm(false) })

	// The long call is made first, so that it waits behind the short ones.
	long := make(chan error, 1)
	go func() {
		_, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "long"}, bankrpc.WithTimeout(60*time.Second))
		long <- err
	}()
	big := bytes.Repeat([]byte("x"), 1<<20)
	const short = 8
	started := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, short)
	for i := range short {
		wg.Go(func() {
			_, errs[i] = tc.Echo(ctx, &testv1.EchoRequest{Tag: "short", Payload: big}, bankrpc.WithTimeout(time.Second))
		})
	}
	wg.Wait()
	elapsed := time.Since(started)
	for i, err := range errs {
		assert.Equal(t, bankrpc.DeadlineExceeded, bankrpc.CodeOf(err), "call %d: %v", i, err)
	}
	assert.Less(t, elapsed, 5*time.Second, "calls with a 1s deadline must end near it while the broker blocks the connection")
	t.Logf("%d calls with a 1s deadline ended after %v under the alarm", short, elapsed.Round(time.Millisecond))

	alarm(false)
	select {
	case err := <-long:
		require.NoError(t, err, "a request held back during the alarm is published when it clears")
	case <-ctx.Done():
		t.Fatal("the call held back during the alarm did not complete after it cleared")
	}

	// Close under the alarm, with large requests in the writer's queue and
	// possibly one stuck in a write.
	c2 := dial(t, url, ClientConfig{Service: svc})
	tc2 := testv1.NewTestServiceClient(bankrpc.NewConn(c2))
	_, err = tc2.Echo(ctx, &testv1.EchoRequest{Tag: "warm"})
	require.NoError(t, err)
	alarm(true)
	closed := make(chan error, short)
	for range short {
		go func() {
			_, err := tc2.Echo(ctx, &testv1.EchoRequest{Tag: "stuck", Payload: big})
			closed <- err
		}()
	}
	time.Sleep(time.Second) // the requests reach the writer and the broker blocks the connection
	started = time.Now()
	require.NoError(t, c2.Close())
	elapsed = time.Since(started)
	assert.Less(t, elapsed, 3*time.Second, "Close must not wait for the alarm to clear")
	t.Logf("Close returned after %v under the alarm", elapsed.Round(time.Millisecond))
	for range short {
		err := <-closed
		assert.True(t, errors.Is(err, bankrpc.ErrClosed) || bankrpc.CodeOf(err) == bankrpc.Canceled, "a call in flight during Close: %v", err)
	}

	alarm(false)
	c3 := dial(t, url, ClientConfig{Service: svc})
	_, err = testv1.NewTestServiceClient(bankrpc.NewConn(c3)).Echo(ctx, &testv1.EchoRequest{Tag: "after"}, bankrpc.WithTimeout(30*time.Second))
	require.NoError(t, err, "a fresh call succeeds once the alarm cleared")
}
