package zmq_test

import (
	"context"
	"testing"
	"time"

	zmq4 "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// progressSvc reports typed progress from Steps.
type progressSvc struct{ svc }

func (s *progressSvc) Steps(ctx context.Context, in *testv1.StepsRequest) (*testv1.StepsResponse, error) {
	var reported int32
	for i := range in.GetSteps() {
		if testv1.ReportStepsProgress(ctx, &testv1.Step{Done: i + 1, Total: in.GetSteps()}) == nil {
			reported++
		}
	}
	return &testv1.StepsResponse{Reported: reported}, nil
}

func progressServer() *bankrpc.Server {
	srv := bankrpc.NewServer()
	testv1.RegisterTestServiceServer(srv, &progressSvc{})
	return srv
}

func stepsFrame(t *testing.T, callID string, steps int32, acceptStatus bool) []byte {
	t.Helper()
	payload, err := proto.Marshal(&testv1.StepsRequest{Steps: steps})
	require.NoError(t, err)
	frame, err := envelope.EncodeRequest(&wirev1.Request{CallId: callID, Method: testv1.TestService_Steps_FullMethodName, Payload: payload, AcceptStatus: acceptStatus})
	require.NoError(t, err)
	return frame
}

func stepsReported(t *testing.T, frame []byte) int32 {
	t.Helper()
	res, err := envelope.DecodeResult(frame, 0)
	require.NoError(t, err)
	require.Zero(t, res.GetCode(), res.GetReason())
	var out testv1.StepsResponse
	require.NoError(t, proto.Unmarshal(res.GetPayload(), &out))
	return out.GetReported()
}

// A REQ client never gets a status: one request, one frame back, and the
// handler's reports are refused (it learns the caller takes none).
func TestREQClientGetsNoProgress(t *testing.T) {
	s := serve(t, zmq.ServerConfig{}, progressServer())
	req := rawPeer(t, zmq4.REQ, s.Addr())
	_, err := req.SendBytes(stepsFrame(t, "req-steps", 3, false), 0)
	require.NoError(t, err)
	reply, err := req.RecvMessageBytes(0)
	require.NoError(t, err)
	require.Len(t, reply, 1)
	assert.Equal(t, int32(0), stepsReported(t, reply[0]))

	// And the next call in lockstep gets its own reply, not a stray status.
	_, err = req.SendBytes(echoFrame(t, "req-echo", "after"), 0)
	require.NoError(t, err)
	reply, err = req.RecvMessageBytes(0)
	require.NoError(t, err)
	assert.Equal(t, "after", echoTag(t, reply[0]))
}

// A DEALER client that asks (Request.accept_status) gets its statuses as
// [correlation id] ["bankrpc.wire.v1.Status"] [Status], before the result.
func TestDEALERStatusFraming(t *testing.T) {
	s := serve(t, zmq.ServerConfig{}, progressServer())
	d := rawPeer(t, zmq4.DEALER, s.Addr())
	require.NoError(t, d.SetRcvtimeo(5*time.Second))
	_, err := d.SendMessage("corr-1", stepsFrame(t, "dealer-steps", 2, true))
	require.NoError(t, err)
	var statuses []*testv1.Step
	for {
		msg, err := d.RecvMessageBytes(0)
		require.NoError(t, err)
		require.Equal(t, "corr-1", string(msg[0]))
		if len(msg) == 2 {
			assert.Equal(t, int32(2), stepsReported(t, msg[1]))
			break
		}
		require.Len(t, msg, 3)
		assert.Equal(t, "bankrpc.wire.v1.Status", string(msg[1]))
		st, err := envelope.DecodeStatus(msg[2], 0)
		require.NoError(t, err)
		assert.Equal(t, "dealer-steps", st.GetCallId())
		var step testv1.Step
		require.NoError(t, proto.Unmarshal(st.GetData(), &step))
		statuses = append(statuses, &step)
	}
	require.NotEmpty(t, statuses, "the statuses come before the result")
	assert.Equal(t, int32(2), statuses[len(statuses)-1].GetDone(), "the latest wins")
}

// The Go client gets typed progress through bankrpc.
func TestClientTypedProgress(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	s := serve(t, zmq.ServerConfig{}, progressServer())
	conn, err := bankrpc.Dial(ctx, s.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var last int32
	resp, err := testv1.NewTestServiceClient(conn).Steps(ctx, &testv1.StepsRequest{Steps: 4}, testv1.OnStepsProgress(func(s *testv1.Step) { last = s.GetDone() }))
	require.NoError(t, err)
	assert.Equal(t, int32(4), resp.GetReported())
	assert.Equal(t, int32(4), last, "statuses sent before the result are delivered before it")
}
