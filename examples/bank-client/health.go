package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/backend"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
	"github.com/bankrpc/bankrpc/health"
)

// cmdHealth asks the bank's health service, without logging on: bank-client
// health [SERVICE] exits 0 when the server (or SERVICE, e.g. bank.v1.Bank)
// is SERVING and 1 otherwise — not serving, unknown, or not answering — so
// that it can serve as a container's health check.
const cmdHealth = "health"

// healthCheck runs bank-client health [SERVICE] against t and returns the
// exit status.
func healthCheck(ctx context.Context, t backend.Target, args []string, logger *slog.Logger, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		return usageFailure(stderr, cli.Usagef("health takes at most one argument, the service name (e.g. bank.v1.Bank), got %d", len(args)))
	}
	service := ""
	if len(args) == 1 {
		service = args[0]
	}
	what := "the server"
	if service != "" {
		what = service
	}
	ct, err := backend.Dial(t, backend.ClientOptions{Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "health: %s over %s: not healthy: %s\n", what, t, bankrpc.MessageOf(err))
		return cli.ExitRefused
	}
	conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(t.Timeout))
	defer conn.Close()
	st, err := health.Check(ctx, conn, service)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "health: %s over %s: not healthy: %s: %s\n", what, t, bankrpc.CodeOf(err), bankrpc.MessageOf(err))
		return cli.ExitRefused
	case st != health.Serving:
		fmt.Fprintln(stdout, statusName(st))
		fmt.Fprintf(stderr, "health: %s over %s is %s\n", what, t, statusName(st))
		return cli.ExitRefused
	}
	fmt.Fprintln(stdout, statusName(st))
	return cli.ExitOK
}

// statusName is st as grpc.health.v1 spells it: SERVING, NOT_SERVING, ...
func statusName(st health.Status) string {
	return strings.TrimPrefix(st.String(), "SERVING_STATUS_")
}
