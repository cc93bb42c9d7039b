package inproc_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// depositServer answers Deposit with a fixed balance: the benchmark measures
// the runtime and the backend, not the bank.
type depositServer struct {
	bankv1.UnimplementedBankServer
}

func (depositServer) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	return &bankv1.DepositResponse{Balance: in.GetAmount()}, nil
}

// BenchmarkUnaryCall is one Deposit through the generated stub, the runtime
// and the inproc backend.
func BenchmarkUnaryCall(b *testing.B) { benchmarkDeposits(b, depositClient(b)) }

// benchmarkDeposits makes one Deposit per iteration through client.
func benchmarkDeposits(b *testing.B, client bankv1.BankClient) {
	req := &bankv1.DepositRequest{AccountId: 7, Amount: 100}

	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Deposit(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// waitingServer is depositServer with a handler that looks at its ctx's
// Done, as a handler that blocks on I/O or a lock with its ctx does.
type waitingServer struct {
	bankv1.UnimplementedBankServer
}

func (waitingServer) Deposit(ctx context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	default:
	}
	return &bankv1.DepositResponse{Balance: in.GetAmount()}, nil
}

// BenchmarkUnaryCallWaitingOnCtx is BenchmarkUnaryCall with a 30 s deadline
// and a handler that looks at its ctx's Done: the runtime then makes the
// handler's ctx a channel and a deadline timer.
func BenchmarkUnaryCallWaitingOnCtx(b *testing.B) {
	benchmarkDeposits(b, clientOf(b, waitingServer{}, bankrpc.WithDefaultTimeout(30*time.Second)))
}

// depositClient serves depositServer over inproc until tb ends and returns
// a client of it.
func depositClient(tb testing.TB) bankv1.BankClient { return clientOf(tb, depositServer{}) }

// clientOf serves impl over inproc until tb ends and returns a client of it.
func clientOf(tb testing.TB, impl bankv1.BankServer, opts ...bankrpc.DialOption) bankv1.BankClient {
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, impl)
	l := inproc.NewListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	conn := bankrpc.NewConn(l.Dial(), opts...)
	tb.Cleanup(func() {
		_ = conn.Close()
		_ = srv.Close()
		<-done
	})
	return bankv1.NewBankClient(conn)
}

// maxUnaryCallAllocs pins what BenchmarkUnaryCall's call allocates once the
// reply cache is full: the client's call (with its call id and request
// frame in it) and reply message; the backend's copy of the frame; the
// server's call (which is the handler's ctx), call id, decode callback,
// request message, reply frame; and the handler's reply.
const maxUnaryCallAllocs = 9

// maxWaitingCallAllocs pins what BenchmarkUnaryCallWaitingOnCtx's call
// allocates: maxUnaryCallAllocs, the client's deadline (its context, timer
// and Done channel, and what the call's wait on it adds), and the handler's
// Done: one channel, and the timer of the deadline with its function.
const maxWaitingCallAllocs = 17

// TestUnaryCallAllocations keeps the unary call from allocating more than it
// does: an allocation added on the hot path fails here, with the count.
func TestUnaryCallAllocations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		impl   bankv1.BankServer
		opts   []bankrpc.DialOption
		allocs int
	}{
		{"plain", depositServer{}, nil, maxUnaryCallAllocs},
		{"deadline and a handler waiting on its ctx", waitingServer{}, []bankrpc.DialOption{bankrpc.WithDefaultTimeout(30 * time.Second)}, maxWaitingCallAllocs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testCallAllocations(t, clientOf(t, tc.impl, tc.opts...), tc.allocs)
		})
	}
}

func testCallAllocations(t *testing.T, client bankv1.BankClient, want int) {
	if raceEnabled {
		t.Skip("the race detector changes allocations")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &bankv1.DepositRequest{AccountId: 7, Amount: 100}

	// Fill the reply cache (10,000 replies), so that its growth is not
	// counted: a long-running server's calls do not grow it.
	for range bankrpc.DefaultReplyCacheSize + 1000 {
		_, err := client.Deposit(ctx, req)
		require.NoError(t, err)
	}
	var err error
	allocs := testing.AllocsPerRun(2000, func() {
		if _, e := client.Deposit(ctx, req); e != nil {
			err = e
		}
	})
	require.NoError(t, err)
	if allocs > float64(want) {
		t.Errorf("a unary call over inproc allocates %.0f times, want at most %d", allocs, want)
	}
}
