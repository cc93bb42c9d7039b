package amqp_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport/amqp"
)

// echo is a TestService that answers Echo.
type echo struct {
	testv1.UnimplementedTestServiceServer
}

func (echo) Echo(_ context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Payload: in.GetPayload()}, nil
}

// A server and a client of one service, through a broker on 127.0.0.1. The
// client's name is stable, so after a restart it finds the replies sent
// while it was away.
func Example() {
	const url = "amqp://guest:guest@127.0.0.1:5672/"

	srv, err := amqp.Listen(url, amqp.ServerConfig{Service: "example-bank"})
	if err != nil {
		log.Fatal(err)
	}
	handler := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(handler, echo{})
	go func() { _ = srv.Serve(context.Background(), handler) }()
	defer srv.Close()

	ct, err := amqp.Dial(url, amqp.ClientConfig{Service: "example-bank", ClientName: "example-teller"})
	if err != nil {
		log.Fatal(err)
	}
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(10*time.Second))
	defer conn.Close()

	resp, err := testv1.NewTestServiceClient(conn).Echo(context.Background(), &testv1.EchoRequest{Payload: []byte("deposit 100")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.GetPayload())
}
