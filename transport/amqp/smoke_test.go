package amqp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
)

func TestSmoke(t *testing.T) {
	url := brokerURL(t)
	ctx := testCtx(t, 20*time.Second)
	svc := uniqueName(t)
	srv := listen(t, url, ServerConfig{Service: svc})
	l := newLedger()
	serve(t, srv, handlerFor(l))
	c := dial(t, url, ClientConfig{Service: svc, ClientName: uniqueName(t)})
	tc := testv1.NewTestServiceClient(transport.NewConn(c))
	resp, err := tc.Echo(ctx, &testv1.EchoRequest{Tag: "x", Payload: []byte("hi")})
	require.NoError(t, err)
	require.Equal(t, "x", resp.GetTag())
	require.Equal(t, "guest", resp.GetPeerIdentity())
}
