package health_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/health"
)

// A server reports its services' health next to them; a client asks.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv := bankrpc.NewServer()
	hs := health.NewServer()
	hs.Register(srv)
	hs.SetServingStatus("bank.v1.Bank", health.Serving)
	l, err := bankrpc.Listen(ctx, "inproc://health-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, "inproc://health-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	st, err := health.Check(ctx, conn, "bank.v1.Bank")
	fmt.Println(st, err)
	hs.Shutdown() // draining: turn traffic away
	st, err = health.Check(ctx, conn, "bank.v1.Bank")
	fmt.Println(st, err)

	_ = srv.Shutdown(ctx)
	<-served
	// Output:
	// SERVING_STATUS_SERVING <nil>
	// SERVING_STATUS_NOT_SERVING <nil>
}
