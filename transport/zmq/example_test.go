package zmq_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// exampleBank credits deposits in memory.
type exampleBank struct {
	bankv1.UnimplementedBankServer
	balance int64
}

func (b *exampleBank) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	b.balance += in.GetAmount() // one call at a time in this example
	return &bankv1.DepositResponse{Balance: b.balance}, nil
}

// A bank served over ZeroMQ on a free port of 127.0.0.1, and a client
// depositing through the generated stub. Importing the package registers
// the zmq:// scheme with bankrpc.Listen and bankrpc.Dial.
func Example() {
	ctx := context.Background()

	ln, err := bankrpc.Listen(ctx, "zmq://127.0.0.1:0", bankrpc.WithTransportConfig(zmq.ServerConfig{Workers: 8}))
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, &exampleBank{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	addr := ln.(*zmq.Server).URL() // the port the server got
	conn, err := bankrpc.Dial(ctx, addr,
		bankrpc.WithDefaultTimeout(5*time.Second),
		bankrpc.WithTransportConfig(zmq.ClientConfig{DeadAfter: 3 * time.Second}))
	if err != nil {
		fmt.Println(err)
		return
	}
	bank := bankv1.NewBankClient(conn)
	for _, amount := range []int64{100, 250} {
		resp, err := bank.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: amount})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("balance:", resp.GetBalance())
	}

	_ = conn.Close()
	_ = srv.Shutdown(ctx)
	fmt.Println("serve:", <-served)
	// Output:
	// balance: 100
	// balance: 350
	// serve: bankrpc: server closed
}
