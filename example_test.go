package bankrpc_test

import (
	"context"
	"fmt"

	"github.com/bankrpc/bankrpc"
	greeterv1 "github.com/bankrpc/bankrpc/gen/quickstart/greeter/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
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

// A service registered on a Server, served by a backend, and called through
// the generated client over a Conn.
func Example() {
	srv := bankrpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(srv, greeter{})

	ctx, stop := context.WithCancel(context.Background())
	l := inproc.NewListener()
	served := make(chan error, 1)
	go func() { served <- l.Serve(ctx, srv) }()

	conn := bankrpc.NewConn(l.Dial())
	client := greeterv1.NewGreeterServiceClient(conn)

	resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
	fmt.Println(resp.GetMessage(), err)

	_, err = client.SayHello(ctx, &greeterv1.SayHelloRequest{})
	fmt.Println(bankrpc.CodeOf(err), bankrpc.MessageOf(err))

	_ = conn.Close()
	stop()
	<-served
	// Output:
	// hello, Ada <nil>
	// INVALID_ARGUMENT name must not be empty
}
