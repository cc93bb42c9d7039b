package bankrpc_test

import (
	"context"
	"fmt"

	"github.com/bankrpc/bankrpc"
	greeterv1 "github.com/bankrpc/bankrpc/gen/quickstart/greeter/v1"
	_ "github.com/bankrpc/bankrpc/transport/inproc" // registers inproc://
)

type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
}

func (greeter) SayHello(_ context.Context, in *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if in.GetName() == "" {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "name must not be empty")
	}
	return &greeterv1.SayHelloResponse{Message: "hello, " + in.GetName()}, nil
}

// A service registered on a Server, served at an address, and called
// through the generated client over a Conn dialled by address. The scheme of
// the address picks the backend: "zmq://127.0.0.1:4040" or
// "amqp://guest:guest@127.0.0.1:5672/?service=greeter" serve the same code
// over the network, once their packages are imported.
func Example() {
	ctx := context.Background()
	srv := bankrpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(srv, greeter{})
	l, err := bankrpc.Listen(ctx, "inproc://example")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	conn, err := bankrpc.Dial(ctx, "inproc://example")
	if err != nil {
		fmt.Println(err)
		return
	}
	client := greeterv1.NewGreeterServiceClient(conn)

	resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
	fmt.Println(resp.GetMessage(), err)

	_, err = client.SayHello(ctx, &greeterv1.SayHelloRequest{})
	fmt.Println(bankrpc.CodeOf(err), bankrpc.MessageOf(err))

	_ = conn.Close()
	_ = srv.Shutdown(ctx)
	fmt.Println(<-served)
	// Output:
	// hello, Ada <nil>
	// INVALID_ARGUMENT name must not be empty
	// bankrpc: server closed
}
