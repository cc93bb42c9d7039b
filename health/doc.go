// Package health serves and checks bankrpc.health.v1.Health, the health
// service modelled on grpc.health.v1 (Check only: Watch streams, and bankrpc
// calls are unary).
//
// A server registers a Server next to its services, sets their statuses,
// and calls Shutdown when it starts draining:
//
//	hs := health.NewServer()
//	hs.Register(srv)
//	hs.SetServingStatus("bank.v1.Bank", health.Serving)
//	...
//	hs.Shutdown() // every status NOT_SERVING
//	srv.Shutdown(ctx)
//
// A client, such as a container's health check, asks with Check or Healthy.
package health
