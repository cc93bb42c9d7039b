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
func BenchmarkUnaryCall(b *testing.B) {
	client := depositClient(b)
	req := &bankv1.DepositRequest{AccountId: 7, Amount: 100}

	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Deposit(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// depositClient serves depositServer over inproc until tb ends and returns
// a client of it.
func depositClient(tb testing.TB) bankv1.BankClient {
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, depositServer{})
	l := inproc.NewListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	conn := bankrpc.NewConn(l.Dial())
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

// TestUnaryCallAllocations keeps the unary call from allocating more than it
// does: an allocation added on the hot path fails here, with the count.
func TestUnaryCallAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocations")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := depositClient(t)
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
	if allocs > maxUnaryCallAllocs {
		t.Errorf("a unary call over inproc allocates %.0f times, want at most %d", allocs, maxUnaryCallAllocs)
	}
}
