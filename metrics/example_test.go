package metrics_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/metrics"
)

// Server and client metrics on a registry of the program's own, one option
// each.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg := metrics.NewRegistry()
	srvMetrics, cliMetrics := metrics.NewServerMetrics(), metrics.NewClientMetrics()
	reg.MustRegister(srvMetrics, cliMetrics)

	srv := bankrpc.NewServer(srvMetrics.Option())
	testv1.RegisterTestServiceServer(srv, service{})
	srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
	l, err := bankrpc.Listen(ctx, "inproc://metrics-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, "inproc://metrics-example", cliMetrics.Option())
	if err != nil {
		fmt.Println(err)
		return
	}
	c := testv1.NewTestServiceClient(conn)
	_, _ = c.Echo(ctx, &testv1.EchoRequest{})
	_, _ = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound)})
	_ = conn.Close()
	_ = srv.Shutdown(ctx)
	<-served

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "bankrpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				fmt.Println(m.GetLabel()[0].GetValue(), m.GetLabel()[1].GetValue(), v)
			}
		}
	}
	// Output:
	// NOT_FOUND Fail 1
	// OK Echo 1
}
