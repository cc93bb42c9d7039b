package inproc_test

import (
	"context"
	"testing"

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
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, depositServer{})
	l := inproc.NewListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	conn := bankrpc.NewConn(l.Dial())
	client := bankv1.NewBankClient(conn)
	req := &bankv1.DepositRequest{AccountId: 7, Amount: 100}

	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Deposit(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = conn.Close()
	_ = srv.Close()
	<-done
}
