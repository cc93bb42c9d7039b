package health_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/health"
	_ "github.com/bankrpc/bankrpc/transport/inproc" // registers inproc://
)

var endpoints atomic.Int64

// serve serves hs alone over a fresh inproc address and returns a Conn to it.
func serve(t *testing.T, hs *health.Server) *bankrpc.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := fmt.Sprintf("inproc://health-%d", endpoints.Add(1))
	srv := bankrpc.NewServer()
	hs.Register(srv)
	l, err := bankrpc.Listen(ctx, addr)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, addr)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return conn
}

func check(t *testing.T, conn *bankrpc.Conn, service string) (health.Status, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return health.Check(ctx, conn, service)
}

func TestServerAsAWholeServesFromTheStart(t *testing.T) {
	conn := serve(t, health.NewServer())
	st, err := check(t, conn, "")
	require.NoError(t, err)
	assert.Equal(t, health.Serving, st)
}

func TestUnknownServiceIsNotFound(t *testing.T) {
	conn := serve(t, health.NewServer())
	st, err := check(t, conn, "no.such.Service")
	assert.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(err))
	assert.True(t, bankrpc.IsWireError(err))
	assert.Equal(t, health.Unknown, st)
}

func TestStatusesFollowSetServingStatus(t *testing.T) {
	hs := health.NewServer()
	conn := serve(t, hs)
	hs.SetServingStatus("bank.v1.Bank", health.Serving)
	st, err := check(t, conn, "bank.v1.Bank")
	require.NoError(t, err)
	assert.Equal(t, health.Serving, st)

	hs.SetServingStatus("bank.v1.Bank", health.NotServing)
	st, err = check(t, conn, "bank.v1.Bank")
	require.NoError(t, err)
	assert.Equal(t, health.NotServing, st)
	st, err = check(t, conn, "")
	require.NoError(t, err)
	assert.Equal(t, health.Serving, st, "one service's status leaves the others")
}

// TestShutdownTurnsEverythingNotServing: as grpc-go's, Shutdown sets every
// status NOT_SERVING and ignores later changes until Resume.
func TestShutdownTurnsEverythingNotServing(t *testing.T) {
	hs := health.NewServer()
	conn := serve(t, hs)
	hs.SetServingStatus("bank.v1.Bank", health.Serving)

	hs.Shutdown()
	hs.SetServingStatus("bank.v1.Bank", health.Serving)
	for _, svc := range []string{"", "bank.v1.Bank"} {
		st, err := check(t, conn, svc)
		require.NoError(t, err)
		assert.Equal(t, health.NotServing, st, "service %q", svc)
	}

	hs.Resume()
	for _, svc := range []string{"", "bank.v1.Bank"} {
		st, err := check(t, conn, svc)
		require.NoError(t, err)
		assert.Equal(t, health.Serving, st, "service %q", svc)
	}
}

func TestHealthyIsTheContainerCheck(t *testing.T) {
	hs := health.NewServer()
	conn := serve(t, hs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, health.Healthy(ctx, conn, ""))

	hs.Shutdown()
	err := health.Healthy(ctx, conn, "")
	assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err))
	assert.Contains(t, bankrpc.MessageOf(err), "NOT_SERVING")

	assert.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(health.Healthy(ctx, conn, "no.such.Service")))
}

// TestNoServerIsUnhealthy: a server that is gone is no healthy one.
func TestNoServerIsUnhealthy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr := fmt.Sprintf("inproc://health-%d", endpoints.Add(1))
	srv := bankrpc.NewServer()
	health.NewServer().Register(srv)
	l, err := bankrpc.Listen(ctx, addr)
	require.NoError(t, err)
	conn, err := bankrpc.Dial(ctx, addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, l.Close())
	assert.Error(t, health.Healthy(ctx, conn, ""))
}
