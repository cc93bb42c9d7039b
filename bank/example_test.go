package bank_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// The bank served over the in-process transport: a client deposits, is
// refused a withdrawal, and finds its balance again after a restart.
func Example() {
	dir, err := os.MkdirTemp("", "bank-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	b, err := bank.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, b)
	l := inproc.NewListener()
	ctx := context.Background()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn := bankrpc.NewConn(l.Dial())
	client := bankv1.NewBankClient(conn)

	if _, err := client.Open(ctx, &bankv1.OpenRequest{AccountId: 7}); err != nil {
		log.Fatal(err)
	}
	d, err := client.Deposit(ctx, &bankv1.DepositRequest{AccountId: 7, Amount: 120})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance after deposit:", d.GetBalance())
	_, err = client.Withdraw(ctx, &bankv1.WithdrawRequest{AccountId: 7, Amount: 500})
	fmt.Printf("withdraw refused: %s (%s)\n", bankrpc.MessageOf(err), bankrpc.CodeOf(err))

	_ = conn.Close()
	_ = srv.Close()
	<-served
	if err := b.Shutdown(); err != nil { // writes the snapshot
		log.Fatal(err)
	}

	b, err = bank.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Shutdown()
	fmt.Printf("after a restart: %+v\n", b.Accounts())
	// Output:
	// balance after deposit: 120
	// withdraw refused: insufficient funds (balance 120, asked 500) (FAILED_PRECONDITION)
	// after a restart: [{ID:7 Balance:120 Online:true CreditLimit:0}]
}
