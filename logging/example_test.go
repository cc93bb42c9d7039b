package logging_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/logging"
)

// One line per finished call; at Debug every call, at Info only the
// server's failures.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{} // vary from run to run
			}
			return a
		},
	}))
	srv := bankrpc.NewServer(logging.Option(logger))
	testv1.RegisterTestServiceServer(srv, service{})
	l, err := bankrpc.Listen(ctx, "inproc://logging-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, "inproc://logging-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	c := testv1.NewTestServiceClient(conn)
	_, _ = c.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("c1"))
	_, _ = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.Internal), Message: "disk on fire"}, bankrpc.WithCallID("c2"))
	_ = conn.Close()
	_ = srv.Shutdown(ctx)
	<-served
	// Output:
	// level=DEBUG msg="finished call" side=server method=/bankrpc.test.v1.TestService/Echo code=OK call_id=c1 peer.transport=inproc
	// level=WARN msg="finished call" side=server method=/bankrpc.test.v1.TestService/Fail code=INTERNAL call_id=c2 peer.transport=inproc error="disk on fire" kind="server INTERNAL"
}
