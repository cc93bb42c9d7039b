package health

import (
	"context"

	"github.com/bankrpc/bankrpc"
	healthv1 "github.com/bankrpc/bankrpc/gen/bankrpc/health/v1"
)

// Check asks the server behind cc for the status of service ("" for the
// server as a whole). The error is the call's: NOT_FOUND for a service the
// server has no status for, UNAVAILABLE or DEADLINE_EXCEEDED for a server
// that does not answer (give ctx a deadline: over AMQP a call waits in the
// queue while no server runs).
func Check(ctx context.Context, cc bankrpc.ClientConnInterface, service string, opts ...bankrpc.CallOption) (Status, error) {
	resp, err := healthv1.NewHealthClient(cc).Check(ctx, &healthv1.CheckRequest{Service: service}, opts...)
	if err != nil {
		return Unknown, err
	}
	return resp.GetStatus(), nil
}

// Healthy returns nil when the server behind cc reports service SERVING,
// and otherwise an error saying what it reports or why it did not answer:
// the test of a container health check (exit 0 when nil, 1 otherwise).
func Healthy(ctx context.Context, cc bankrpc.ClientConnInterface, service string, opts ...bankrpc.CallOption) error {
	st, err := Check(ctx, cc, service, opts...)
	if err != nil {
		return err
	}
	if st != Serving {
		return bankrpc.Errorf(bankrpc.Unavailable, "health: service %q is %s", service, st)
	}
	return nil
}
