// Command quickstart is the smallest complete bankrpc program: it implements
// the GreeterService of proto/quickstart/greeter/v1/greeter.proto, serves it
// on a transport.Server over the in-memory inproc backend, and calls it
// through the generated client, once with a name it refuses.
//
//	go run ./examples/quickstart
//
// README.md next to this file walks through writing a service of your own.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc"
	greeterv1 "github.com/bankrpc/bankrpc/gen/quickstart/greeter/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// greeter implements greeterv1.GreeterServiceServer. It embeds
// UnimplementedGreeterServiceServer by value, as every implementation must: a
// method added to the service later then answers UNIMPLEMENTED instead of
// breaking the build. SayHello may run concurrently; mu guards out.
type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer

	mu  sync.Mutex
	out io.Writer
}

// SayHello greets the caller by name. It refuses an empty name with
// INVALID_ARGUMENT: the code and message reach the client as they are.
func (g *greeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	peer, _ := bankrpc.PeerFromContext(ctx)
	g.mu.Lock()
	fmt.Fprintf(g.out, "  server: SayHello(name=%q) over %s\n", req.GetName(), peer.Transport)
	g.mu.Unlock()
	if req.GetName() == "" {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "greeter: name must not be empty")
	}
	return &greeterv1.SayHelloResponse{Message: "hello, " + req.GetName()}, nil
}

// run serves the greeter, makes the calls and writes what happens to out.
func run(ctx context.Context, out io.Writer) error {
	// 1. The server side: register the implementation on a transport.Server,
	// which decodes requests, dispatches them and encodes replies.
	srv := bankrpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(srv, &greeter{out: out})

	// 2. The transport: inproc moves frames in memory. transport/zmq and
	// transport/amqp move the same frames over a network; only these lines
	// change.
	lis := inproc.NewListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		_ = srv.Shutdown(ctx)
		<-served
	}()
	fmt.Fprintln(out, "serving quickstart.greeter.v1.GreeterService over inproc (in memory)")

	// 3. The client side: a Conn over the backend's client half, and the
	// generated client on top of it.
	conn := bankrpc.NewConn(lis.Dial())
	defer conn.Close()
	client := greeterv1.NewGreeterServiceClient(conn)

	for _, name := range []string{"Ada", "Grace"} {
		fmt.Fprintf(out, "client: SayHello(name=%q)\n", name)
		resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: name}, bankrpc.WithTimeout(time.Second))
		if err != nil {
			return fmt.Errorf("say hello to %q: %w", name, err)
		}
		fmt.Fprintf(out, "client: got %q\n", resp.GetMessage())
	}

	// An error carries a canonical code (gRPC's names and numbers) and the
	// server's message; transport.CodeOf reads the code of any error.
	fmt.Fprintln(out, `client: SayHello(name="")`)
	_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{})
	if code := bankrpc.CodeOf(err); code != bankrpc.InvalidArgument {
		return fmt.Errorf("say hello to nobody: got code %s (error %v), want %s", code, err, bankrpc.InvalidArgument)
	}
	fmt.Fprintf(out, "client: refused as expected: code %s, message %q\n", bankrpc.CodeOf(err), bankrpc.MessageOf(err))
	return nil
}
