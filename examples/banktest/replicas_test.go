package banktest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

// Two replicas of one bank over RabbitMQ: two consumers of the bank's queue,
// each with its own connection, share the load, and the bank's files have a
// single writer because both serve the one *bank.Bank that holds the data
// directory's lock. (A second process on the same directory is refused: see
// TestSecondServerIsRefused; a standby process is the single-active-consumer
// arrangement bank-server uses.)
func TestAMQPTwoReplicasShareOneBank(t *testing.T) {
	url := amqptest.URL(t)
	ctx := testContext(t, 60*time.Second)
	name := uniqueBank(t, "replicas")
	data := t.TempDir()

	b, err := bank.Open(data)
	require.NoError(t, err)
	var served [2]atomic.Int64
	for i := range served {
		srv := bankrpc.NewServer(bankrpc.UnaryInterceptor(func(ctx context.Context, req any, _ *bankrpc.UnaryServerInfo, h bankrpc.UnaryHandler) (any, error) {
			served[i].Add(1)
			return h(ctx, req)
		}))
		bankv1.RegisterBankServer(srv, b)
		l, err := amqp.Listen(url, amqp.ServerConfig{Service: name, Prefetch: 4})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		t.Cleanup(func() {
			assert.NoError(t, srv.Close())
			assert.ErrorIs(t, <-done, bankrpc.ErrServerClosed)
		})
	}

	const clients, deposits = 8, 25
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			ct, err := amqp.Dial(url, amqp.ClientConfig{Service: name, ClientName: fmt.Sprintf("%s.c%d", name, c)})
			if !assert.NoError(t, err) {
				return
			}
			conn := bankrpc.NewConn(ct, bankrpc.WithDefaultTimeout(20*time.Second))
			defer conn.Close()
			client := bankv1.NewBankClient(conn)
			id := int32(c + 1)
			_, err = client.Open(ctx, &bankv1.OpenRequest{AccountId: id})
			assert.NoError(t, err)
			for range deposits {
				_, err := client.Deposit(ctx, &bankv1.DepositRequest{AccountId: id, Amount: 10})
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()

	assert.Positive(t, served[0].Load(), "replica 1 took no request")
	assert.Positive(t, served[1].Load(), "replica 2 took no request")
	assert.Equal(t, int64(clients*(deposits+1)), served[0].Load()+served[1].Load(), "every call executed once")
	for _, a := range b.Accounts() {
		assert.Equal(t, int64(10*deposits), a.Balance, "account %d", a.ID)
	}
	require.NoError(t, b.Shutdown())

	// What the replicas wrote together reads back whole.
	again, err := bank.Open(data)
	require.NoError(t, err)
	defer func() { assert.NoError(t, again.Shutdown()) }()
	accounts := again.Accounts()
	require.Len(t, accounts, clients)
	for _, a := range accounts {
		assert.Equal(t, int64(10*deposits), a.Balance, "account %d after reopening", a.ID)
	}
}
