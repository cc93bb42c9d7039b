package zmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

type keypair struct{ public, secret string }

func newKeypair(t *testing.T) keypair {
	t.Helper()
	pub, sec, err := zmq.NewCurveKeypair()
	require.NoError(t, err)
	require.Len(t, pub, 40)
	return keypair{pub, sec}
}

func curveClient(server, client keypair) *zmq.CurveClient {
	return &zmq.CurveClient{ServerPublicKey: server.public, PublicKey: client.public, SecretKey: client.secret}
}

func TestCurveAllowedKeyIsTheIdentity(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	server, alice := newKeypair(t), newKeypair(t)
	s := serve(t, zmq.ServerConfig{Curve: &zmq.CurveServer{
		PublicKey: server.public, SecretKey: server.secret, AllowedClients: []string{alice.public},
	}}, newRPCServer(&svc{}))
	c := stub(t, dial(t, s.Addr(), zmq.ClientConfig{Curve: curveClient(server, alice)}))
	resp, err := c.Echo(ctx, &testv1.EchoRequest{Tag: "secret"})
	require.NoError(t, err)
	assert.Equal(t, "secret", resp.GetTag())
	assert.Equal(t, alice.public, resp.GetPeerIdentity(), "the handler sees the client's public key")
}

// A key missing from the allow-list, a wrong server key and a plain-text
// client are all refused; each call ends UNAVAILABLE when its deadline
// passes, saying why, and the allowed client is served meanwhile.
func TestCurveRefusals(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	server, alice, mallory := newKeypair(t), newKeypair(t), newKeypair(t)
	logs := &logRecorder{}
	impl := &svc{}
	s := serve(t, zmq.ServerConfig{Logger: logs.logger(), Curve: &zmq.CurveServer{
		PublicKey: server.public, SecretKey: server.secret, AllowedClients: []string{alice.public},
	}}, newRPCServer(impl))

	for _, tc := range []struct {
		name   string
		curve  *zmq.CurveClient
		reason string
	}{
		{"unknown client key", curveClient(server, mallory), "refused this client's CURVE key"},
		{"wrong server key", curveClient(mallory, alice), "handshake failed"},
		{"no CURVE", nil, "handshake failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s.Addr(), zmq.ClientConfig{Curve: tc.curve})
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.RoundTrip(callCtx, &transport.Call{ID: "refused", Frame: echoFrame(t, "refused", "no")})
			require.Error(t, err)
			assert.Equal(t, bankrpc.Unavailable, bankrpc.CodeOf(err), "%v", err)
			assert.Contains(t, err.Error(), tc.reason)
		})
	}
	assert.True(t, logs.has("refused a CURVE client key that is not allowed"))
	assert.Equal(t, int64(0), impl.echoes.Load(), "no refused call may reach the handler")

	resp, err := stub(t, dial(t, s.Addr(), zmq.ClientConfig{Curve: curveClient(server, alice)})).Echo(ctx, &testv1.EchoRequest{Tag: "alice"})
	require.NoError(t, err)
	assert.Equal(t, alice.public, resp.GetPeerIdentity())
}

// Without an allow-list any key is accepted (encryption only), and still
// reported as the identity.
func TestCurveAnyClientKey(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	server, bob := newKeypair(t), newKeypair(t)
	s := serve(t, zmq.ServerConfig{Curve: &zmq.CurveServer{PublicKey: server.public, SecretKey: server.secret}}, newRPCServer(&svc{}))
	resp, err := stub(t, dial(t, s.Addr(), zmq.ClientConfig{Curve: curveClient(server, bob)})).Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)
	assert.Equal(t, bob.public, resp.GetPeerIdentity())
}

func TestCurveConfigErrors(t *testing.T) {
	server, alice := newKeypair(t), newKeypair(t)
	for _, tc := range []struct {
		name string
		cfg  zmq.CurveServer
		msg  string
	}{
		{"short key", zmq.CurveServer{PublicKey: "abc", SecretKey: server.secret}, "want 40 Z85 characters, got 3"},
		{"not Z85", zmq.CurveServer{PublicKey: server.public[:39] + "~", SecretKey: server.secret}, "not a Z85 character"},
		{"mismatched pair", zmq.CurveServer{PublicKey: alice.public, SecretKey: server.secret}, "does not belong to its secret key"},
		{"bad allowed key", zmq.CurveServer{PublicKey: server.public, SecretKey: server.secret, AllowedClients: []string{"x"}}, "allowed client key"},
	} {
		_, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{Curve: &tc.cfg})
		require.Error(t, err, tc.name)
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%s: %v", tc.name, err)
		assert.Contains(t, err.Error(), tc.msg, tc.name)
		assert.NotContains(t, err.Error(), server.secret, "%s: errors must not print secret keys", tc.name)
	}
	_, err := zmq.Dial("tcp://127.0.0.1:1", zmq.ClientConfig{Curve: &zmq.CurveClient{ServerPublicKey: server.public, PublicKey: alice.public, SecretKey: server.secret}})
	assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "%v", err)
	assert.NotContains(t, err.Error(), server.secret)
}
