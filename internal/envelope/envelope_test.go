package envelope_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
)

func TestAppendRequestDecodesAsTheProtoMessage(t *testing.T) {
	md := map[string][]string{"trace": {"abc"}, "client": {"7", "8"}}
	frame := envelope.AppendRequest(nil, "c-1", "/bank.v1.Bank/Deposit", []byte{8, 7, 16, 100}, 1234567890, md, 3)
	var got wirev1.Request
	require.NoError(t, proto.Unmarshal(frame, &got))
	want := &wirev1.Request{CallId: "c-1", Method: "/bank.v1.Bank/Deposit", Payload: []byte{8, 7, 16, 100}, DeadlineUnixNano: 1234567890,
		Metadata:        []*wirev1.MetadataEntry{{Key: "client", Value: "7"}, {Key: "client", Value: "8"}, {Key: "trace", Value: "abc"}},
		FirstUnanswered: 3}
	assert.True(t, proto.Equal(want, &got), "got %v, want %v", &got, want)

	var v envelope.RequestView
	require.NoError(t, envelope.DecodeRequestView(frame, 0, &v))
	assert.Equal(t, "c-1", string(v.CallID))
	assert.Equal(t, "/bank.v1.Bank/Deposit", string(v.Method))
	assert.Equal(t, []byte{8, 7, 16, 100}, v.Payload)
	assert.Equal(t, int64(1234567890), v.DeadlineUnixNano)
	assert.Equal(t, []string{"client", "7", "client", "8", "trace", "abc"}, v.Metadata, "entries in key order, values in order")
	assert.Equal(t, uint64(3), v.FirstUnanswered)
	assert.False(t, v.Cancel)
}

func TestAppendAcceptStatusAndResultMethod(t *testing.T) {
	frame := envelope.AppendAcceptStatus(envelope.AppendRequest(nil, "c-2", "/bank.v1.Bank/Balance", nil, 0, nil, 0))
	var req wirev1.Request
	require.NoError(t, proto.Unmarshal(frame, &req))
	assert.True(t, proto.Equal(&wirev1.Request{CallId: "c-2", Method: "/bank.v1.Bank/Balance", AcceptStatus: true}, &req), "got %v", &req)
	var v envelope.RequestView
	require.NoError(t, envelope.DecodeRequestView(frame, 0, &v))
	assert.True(t, v.AcceptStatus)

	frame = envelope.AppendResultMethod(envelope.AppendResult(nil, []byte("c-2"), 0, "", []byte{8, 1}, []string{"read"}, nil), "/bank.v1.Bank/Balance")
	var res wirev1.Result
	require.NoError(t, proto.Unmarshal(frame, &res))
	assert.True(t, proto.Equal(&wirev1.Result{CallId: "c-2", Payload: []byte{8, 1}, Log: []string{"read"}, Method: "/bank.v1.Bank/Balance"}, &res), "got %v", &res)
	var rv envelope.ResultView
	require.NoError(t, envelope.DecodeResultView(frame, 0, &rv))
	assert.Equal(t, "/bank.v1.Bank/Balance", string(rv.Method))
	assert.Equal(t, []string{"read"}, rv.Log)
}

func TestAppendCancel(t *testing.T) {
	frame := envelope.AppendCancel(nil, "c-7")
	var got wirev1.Request
	require.NoError(t, proto.Unmarshal(frame, &got))
	assert.True(t, proto.Equal(&wirev1.Request{CallId: "c-7", Cancel: true}, &got))
	var v envelope.RequestView
	require.NoError(t, envelope.DecodeRequestView(frame, 0, &v), "a cancel needs no method")
	assert.True(t, v.Cancel)
	assert.Equal(t, "c-7", string(v.CallID))
}

func TestAppendResultDecodesAsTheProtoMessage(t *testing.T) {
	frame := envelope.AppendResult(nil, []byte("c-1"), 9, "insufficient funds (balance 120, asked 500)", nil, []string{"line 1", "line 2"}, nil)
	var got wirev1.Result
	require.NoError(t, proto.Unmarshal(frame, &got))
	want := &wirev1.Result{CallId: "c-1", Code: 9, Reason: "insufficient funds (balance 120, asked 500)", Log: []string{"line 1", "line 2"}}
	assert.True(t, proto.Equal(want, &got), "got %v, want %v", &got, want)

	r, err := envelope.DecodeResult(frame, 0)
	require.NoError(t, err)
	assert.True(t, proto.Equal(want, r), "got %v, want %v", r, want)
}

func TestDecodeRequestRefusesBadFrames(t *testing.T) {
	valid := envelope.AppendRequest(nil, "c-1", "/s.S/M", nil, 0, nil, 0)
	for name, tc := range map[string]struct {
		frame []byte
		limit int
		want  string
	}{
		"garbage":        {[]byte{0xff, 0xff, 0xff}, 0, "malformed envelope"},
		"empty":          {nil, 0, "request has no call id"},
		"no method":      {envelope.AppendRequest(nil, "c-1", "", nil, 0, nil, 0), 0, `method "" is not of the form`},
		"bad method":     {envelope.AppendRequest(nil, "c-1", "Deposit", nil, 0, nil, 0), 0, `method "Deposit" is not of the form`},
		"bad utf8":       {envelope.AppendRequest(nil, "c-\xff", "/s.S/M", nil, 0, nil, 0), 0, "call_id is not valid UTF-8"},
		"truncated":      {valid[:len(valid)-1], 0, "malformed envelope"},
		"over the limit": {valid, len(valid) - 1, "exceeds the limit"},
	} {
		t.Run(name, func(t *testing.T) {
			var v envelope.RequestView
			err := envelope.DecodeRequestView(tc.frame, tc.limit, &v)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	var tooLarge *envelope.FrameTooLargeError
	var v envelope.RequestView
	require.ErrorAs(t, envelope.DecodeRequestView(valid, 3, &v), &tooLarge)
	assert.Equal(t, envelope.FrameTooLargeError{Size: len(valid), Limit: 3}, *tooLarge)
}

func TestMalformedRequestKeepsItsCallID(t *testing.T) {
	frame := envelope.AppendRequest(nil, "c-9", "not a method", nil, 0, nil, 0)
	var v envelope.RequestView
	require.ErrorIs(t, envelope.DecodeRequestView(frame, 0, &v), envelope.ErrMalformed)
	assert.Equal(t, "c-9", string(v.CallID), "an error reply must be correlatable")
}

// FuzzDecodeRequestView checks the hand-written decoder against the
// generated one: whatever proto.Unmarshal accepts, the view reads the same.
func FuzzDecodeRequestView(f *testing.F) {
	f.Add(envelope.AppendRequest(nil, "c-1", "/s.S/M", []byte("payload"), 42, map[string][]string{"k": {"v", "w"}}, 1))
	f.Add(envelope.AppendCancel(nil, "c-2"))
	f.Add([]byte{0x0a, 0x01, 'x', 0x12, 0x06, '/', 's', '.', 'S', '/', 'M', 0x2a, 0x00})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, frame []byte) {
		var v envelope.RequestView
		viewErr := envelope.DecodeRequestView(frame, 0, &v)
		var m wirev1.Request
		protoErr := proto.Unmarshal(frame, &m)
		if protoErr != nil {
			if viewErr == nil {
				t.Fatalf("view accepted a frame proto refuses (%v)", protoErr)
			}
			return
		}
		if m.GetCallId() == "" || !m.GetCancel() && !envelope.ValidMethod(m.GetMethod()) {
			require.Error(t, viewErr)
			return
		}
		require.NoError(t, viewErr)
		assert.Equal(t, m.GetCallId(), string(v.CallID))
		assert.Equal(t, m.GetMethod(), string(v.Method))
		assert.True(t, bytes.Equal(m.GetPayload(), v.Payload))
		assert.Equal(t, m.GetDeadlineUnixNano(), v.DeadlineUnixNano)
		var pairs []string
		for _, e := range m.GetMetadata() {
			pairs = append(pairs, e.GetKey(), e.GetValue())
		}
		assert.Equal(t, pairs, v.Metadata)
		assert.Equal(t, m.GetCancel(), v.Cancel)
		assert.Equal(t, m.GetFirstUnanswered(), v.FirstUnanswered)
	})
}

// FuzzDecodeResultView is the same check for results.
func FuzzDecodeResultView(f *testing.F) {
	f.Add(envelope.AppendResult(nil, []byte("c-1"), 0, "", []byte("payload"), nil, nil))
	f.Add(envelope.AppendResult(nil, nil, 3, "bad", nil, []string{"log"}, [][]byte{{0x0a, 0x01, 'x', 0x12, 0x00}}))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var v envelope.ResultView
		viewErr := envelope.DecodeResultView(frame, 0, &v)
		var m wirev1.Result
		if protoErr := proto.Unmarshal(frame, &m); protoErr != nil {
			if viewErr == nil {
				t.Fatalf("view accepted a frame proto refuses (%v)", protoErr)
			}
			return
		}
		if m.GetCallId() == "" && m.GetCode() == 0 {
			require.Error(t, viewErr)
			return
		}
		require.NoError(t, viewErr)
		assert.Equal(t, m.GetCallId(), string(v.CallID))
		assert.Equal(t, m.GetCode(), v.Code)
		assert.Equal(t, m.GetReason(), string(v.Reason))
		assert.True(t, bytes.Equal(m.GetPayload(), v.Payload))
		assert.Equal(t, len(m.GetLog()), len(v.Log))
		assert.Equal(t, len(m.GetDetails()), len(v.Details))
	})
}

// The payload appended in place has its length written before it: frames
// whose payload length needs one, two and three varint bytes are the bytes
// proto.Marshal makes of the same messages.
func TestAppendFuncWritesThePayloadInPlace(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 300, 16383, 16384, 70000} {
		payload := bytes.Repeat([]byte{0xab}, n)
		appendPayload := func(dst []byte) ([]byte, error) { return append(dst, payload...), nil }
		opts := proto.MarshalOptions{Deterministic: true}

		frame, err := envelope.AppendRequestFunc([]byte("prefix"), "c-1", "/s.S/M", appendPayload, 42, nil, 0)
		require.NoError(t, err)
		want, err := opts.MarshalAppend([]byte("prefix"), &wirev1.Request{CallId: "c-1", Method: "/s.S/M", Payload: payload, DeadlineUnixNano: 42})
		require.NoError(t, err)
		assert.Equal(t, want, frame, "request with a payload of %d bytes", n)

		frame, err = envelope.AppendResultFunc(nil, []byte("c-1"), 0, "", appendPayload, []string{"line"}, nil)
		require.NoError(t, err)
		want, err = opts.Marshal(&wirev1.Result{CallId: "c-1", Payload: payload, Log: []string{"line"}})
		require.NoError(t, err)
		assert.Equal(t, want, frame, "result with a payload of %d bytes", n)
	}
}

func TestAppendFuncReturnsThePayloadError(t *testing.T) {
	bad := errors.New("cannot encode")
	failing := func(dst []byte) ([]byte, error) { return append(dst, 1, 2), bad }
	_, err := envelope.AppendRequestFunc(nil, "c-1", "/s.S/M", failing, 0, nil, 0)
	assert.ErrorIs(t, err, bad)
	_, err = envelope.AppendResultFunc(nil, []byte("c-1"), 0, "", failing, nil, nil)
	assert.ErrorIs(t, err, bad)
}
