// Command quickstart is the smallest complete bankrpc program: it implements
// the GreeterService of proto/quickstart/greeter/v1/greeter.proto, serves it
// on a bankrpc.Server at the address --addr names, and calls it through the
// generated client, once with a name it refuses.
//
//	go run ./examples/quickstart                              # in memory: inproc://quickstart
//	go run ./examples/quickstart --addr zmq://127.0.0.1:4040  # over ZeroMQ
//	go run ./examples/quickstart --addr 'amqp://guest:guest@127.0.0.1:5672/?service=greeter'
//
// The address's scheme picks the backend: each backend imported below
// registers its own. README.md next to this file walks through writing a
// service of your own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc"
	greeterv1 "github.com/bankrpc/bankrpc/gen/quickstart/greeter/v1"
	_ "github.com/bankrpc/bankrpc/transport/amqp"   // amqp:// and amqps://
	_ "github.com/bankrpc/bankrpc/transport/inproc" // inproc://
	_ "github.com/bankrpc/bankrpc/transport/zmq"    // zmq://
)

func main() {
	addr := flag.String("addr", "inproc://quickstart",
		"where to serve and call: inproc://NAME, zmq://HOST:PORT or amqp://USER:PASS@HOST:PORT/VHOST?service=NAME")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := run(ctx, *addr, os.Stdout); err != nil {
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

// run serves the greeter at addr, makes the calls and writes what happens to
// out. It shuts the server down before it returns.
func run(ctx context.Context, addr string, out io.Writer) (err error) {
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}

	// 1. The server side: register the implementation on a bankrpc.Server,
	// which decodes requests, dispatches them and encodes replies.
	srv := bankrpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(srv, &greeter{out: out})

	// 2. The transport: Listen opens the backend the address names, Serve
	// serves it until Shutdown. Listening first means the client below finds
	// the server at once; a program that only serves calls
	// srv.ListenAndServe(ctx, addr), which does both.
	lis, err := bankrpc.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listen at %s: %w", u.Redacted(), err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		// Shutdown lets the calls in flight finish, then stops the listener;
		// Serve then returns ErrServerClosed.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if e := srv.Shutdown(sctx); e != nil && err == nil {
			err = fmt.Errorf("shut down: %w", e)
		}
		if e := <-served; !errors.Is(e, bankrpc.ErrServerClosed) && err == nil {
			err = fmt.Errorf("serve: %w", e)
		}
	}()
	fmt.Fprintf(out, "serving quickstart.greeter.v1.GreeterService at %s\n", u.Redacted())

	// 3. The client side: a Conn to the same address, and the generated
	// client on top of it.
	conn, err := bankrpc.Dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	defer conn.Close()
	client := greeterv1.NewGreeterServiceClient(conn)

	for _, name := range []string{"Ada", "Grace"} {
		fmt.Fprintf(out, "client: SayHello(name=%q)\n", name)
		resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: name}, bankrpc.WithTimeout(5*time.Second))
		if err != nil {
			return fmt.Errorf("say hello to %q: %w", name, err)
		}
		fmt.Fprintf(out, "client: got %q\n", resp.GetMessage())
	}

	// An error carries a canonical code (gRPC's names and numbers) and the
	// server's message; bankrpc.CodeOf reads the code of any error.
	fmt.Fprintln(out, `client: SayHello(name="")`)
	_, err = client.SayHello(ctx, &greeterv1.SayHelloRequest{}, bankrpc.WithTimeout(5*time.Second))
	if code := bankrpc.CodeOf(err); code != bankrpc.InvalidArgument {
		return fmt.Errorf("say hello to nobody: got code %s (error %v), want %s", code, err, bankrpc.InvalidArgument)
	}
	fmt.Fprintf(out, "client: refused as expected: code %s, message %q\n", bankrpc.CodeOf(err), bankrpc.MessageOf(err))
	return nil
}
