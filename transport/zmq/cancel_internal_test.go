package zmq

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
)

// isCancel agrees with the envelope decoder on cancel messages, requests and
// garbage.
func TestIsCancel(t *testing.T) {
	encoded := func(r *wirev1.Request) []byte {
		b, err := envelope.EncodeRequest(r)
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"AppendCancel", envelope.AppendCancel(nil, "call-1"), true},
		{"generated cancel", encoded(&wirev1.Request{CallId: "call-1", Cancel: true}), true},
		{"cancel with a method", encoded(&wirev1.Request{CallId: "c", Method: "/a.B/C", Cancel: true}), true},
		{"request", envelope.AppendRequest(nil, "call-1", "/a.B/C", []byte("payload"), 42, map[string][]string{"k": {"v"}}, 3), false},
		{"empty", nil, false},
		{"garbage", []byte("\xff\xff\xff\xff"), false},
		{"truncated cancel", envelope.AppendCancel(nil, "call-1")[:9], false},
		{"cancel then not", append(envelope.AppendCancel(nil, "c"), 0x30, 0x00), false},
	} {
		assert.Equal(t, tc.want, isCancel(tc.frame), tc.name)
		var req envelope.RequestView
		if envelope.DecodeRequestView(tc.frame, 0, &req) == nil {
			assert.Equal(t, req.Cancel, isCancel(tc.frame), "%s: as the decoder", tc.name)
		}
	}
}
