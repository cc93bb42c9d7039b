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

// A server and a client of one service, through a broker on 127.0.0.1,
// opened by address: importing the package registers amqp:// and amqps://.
// The client's name is stable, so after a restart it finds the replies sent
// while it was away.
func Example() {
	ctx := context.Background()
	const broker = "amqp://guest:guest@127.0.0.1:5672/"

	l, err := bankrpc.Listen(ctx, broker+"?service=example-bank&queue=quorum")
	if err != nil {
		log.Fatal(err)
	}
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, echo{})
	go func() { _ = srv.Serve(l) }()
	defer srv.Shutdown(ctx)

	conn, err := bankrpc.Dial(ctx, broker+"?service=example-bank&client=example-teller&queue=quorum",
		bankrpc.WithDefaultTimeout(10*time.Second),
		bankrpc.WithTransportConfig(amqp.ClientConfig{ConnectionName: "example teller"}))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	resp, err := testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{Payload: []byte("deposit 100")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.GetPayload())
}
