package tracing_test

import (
	"context"
	"fmt"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/tracing"
)

// A traced client and server: the server's span is a child of the client's.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(ctx) }()

	srv := bankrpc.NewServer(tracing.ServerOption(tracing.WithTracerProvider(tp)))
	testv1.RegisterTestServiceServer(srv, service{})
	l, err := bankrpc.Listen(ctx, "inproc://tracing-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, "inproc://tracing-example", tracing.ClientOption(tracing.WithTracerProvider(tp)))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{})
	fmt.Println(err)
	_ = conn.Close()
	_ = srv.Shutdown(ctx)
	<-served

	got := spans.GetSpans() // in the order they ended: the server's first
	server, client := got[0], got[1]
	fmt.Println(server.SpanKind, server.Name)
	fmt.Println(client.SpanKind, client.Name)
	fmt.Println("server's parent is the client:", server.Parent.SpanID() == client.SpanContext.SpanID())
	// Output:
	// <nil>
	// server bankrpc.test.v1.TestService/Echo
	// client bankrpc.test.v1.TestService/Echo
	// server's parent is the client: true
}
