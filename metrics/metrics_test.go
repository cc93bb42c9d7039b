package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
	"github.com/bankrpc/bankrpc/metrics"
	"github.com/bankrpc/bankrpc/transport"
)

func newMetrics(t *testing.T) (*prometheus.Registry, *metrics.ServerMetrics, *metrics.ClientMetrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srvMetrics, cliMetrics := metrics.NewServerMetrics(), metrics.NewClientMetrics()
	reg.MustRegister(srvMetrics, cliMetrics)
	return reg, srvMetrics, cliMetrics
}

// requestFrame encodes a request as a client would send it.
func requestFrame(t *testing.T, callID, method string, msg proto.Message, deadline time.Time) []byte {
	t.Helper()
	payload, err := proto.Marshal(msg)
	require.NoError(t, err)
	var dl int64
	if !deadline.IsZero() {
		dl = deadline.UnixNano()
	}
	return envelope.AppendRequest(nil, callID, method, payload, dl, nil, 0)
}

// TestEveryCallIsCountedByCode makes a known mix of calls — OK, two
// application errors, a duplicate, an expired one, an undecodable one, an
// unknown method and a garbage frame — and checks every count, server and
// client.
func TestEveryCallIsCountedByCode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, srvMetrics, cliMetrics := newMetrics(t)
	srv, conn := pair(t, []bankrpc.ServerOption{srvMetrics.Option()}, cliMetrics.Option())
	c := testv1.NewTestServiceClient(conn)

	for range 3 {
		_, err := c.Echo(ctx, &testv1.EchoRequest{Payload: []byte("x")})
		require.NoError(t, err)
	}
	for range 2 {
		_, err := c.Echo(ctx, &testv1.EchoRequest{}, bankrpc.WithCallID("dup-1"))
		require.NoError(t, err)
	}
	_, err := c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.FailedPrecondition), Message: "no"})
	require.Equal(t, bankrpc.FailedPrecondition, bankrpc.CodeOf(err))
	_, err = c.Fail(ctx, &testv1.FailRequest{Code: uint32(bankrpc.NotFound), Message: "none"})
	require.Equal(t, bankrpc.NotFound, bankrpc.CodeOf(err))

	// What no well-behaved client sends, fed to the server directly.
	_, err = srv.HandleFrame(ctx, requestFrame(t, "expired-1", testv1.TestService_Echo_FullMethodName, &testv1.EchoRequest{}, time.Now().Add(-time.Second)))
	require.NoError(t, err)
	_, err = srv.HandleFrame(ctx, envelope.AppendRequest(nil, "undecodable-1", testv1.TestService_Echo_FullMethodName, []byte{0xff, 0xff}, 0, nil, 0))
	require.NoError(t, err)
	_, err = srv.HandleFrame(ctx, requestFrame(t, "unknown-1", "/no.such.Service/Method", &testv1.EchoRequest{}, time.Time{}))
	require.NoError(t, err)
	_, err = srv.HandleFrame(ctx, []byte("garbage, not a frame"))
	require.Error(t, err)

	all := samples(t, reg)
	assert.Equal(t, map[string]float64{
		"bankrpc_server_started_total{method=Echo,service=bankrpc.test.v1.TestService}":                            7,
		"bankrpc_server_started_total{method=Fail,service=bankrpc.test.v1.TestService}":                            2,
		"bankrpc_server_started_total{method=unknown,service=unknown}":                                             2,
		"bankrpc_server_handled_total{code=OK,method=Echo,service=bankrpc.test.v1.TestService}":                    5,
		"bankrpc_server_handled_total{code=DEADLINE_EXCEEDED,method=Echo,service=bankrpc.test.v1.TestService}":     1,
		"bankrpc_server_handled_total{code=INVALID_ARGUMENT,method=Echo,service=bankrpc.test.v1.TestService}":      1,
		"bankrpc_server_handled_total{code=FAILED_PRECONDITION,method=Fail,service=bankrpc.test.v1.TestService}":   1,
		"bankrpc_server_handled_total{code=NOT_FOUND,method=Fail,service=bankrpc.test.v1.TestService}":             1,
		"bankrpc_server_handled_total{code=UNIMPLEMENTED,method=unknown,service=unknown}":                          1,
		"bankrpc_server_handled_total{code=INVALID_ARGUMENT,method=unknown,service=unknown}":                       1,
		"bankrpc_server_handling_seconds{method=Echo,service=bankrpc.test.v1.TestService}":                         7,
		"bankrpc_server_handling_seconds{method=Fail,service=bankrpc.test.v1.TestService}":                         2,
		"bankrpc_server_handling_seconds{method=unknown,service=unknown}":                                          2,
		"bankrpc_server_in_flight{method=Echo,service=bankrpc.test.v1.TestService}":                                0,
		"bankrpc_server_in_flight{method=Fail,service=bankrpc.test.v1.TestService}":                                0,
		"bankrpc_server_in_flight{method=unknown,service=unknown}":                                                 0,
		"bankrpc_server_refused_total{method=Echo,reason=expired,service=bankrpc.test.v1.TestService}":             1,
		"bankrpc_server_refused_total{method=Echo,reason=undecodable payload,service=bankrpc.test.v1.TestService}": 1,
		"bankrpc_server_refused_total{method=unknown,reason=unknown method,service=unknown}":                       1,
		"bankrpc_server_refused_total{method=unknown,reason=malformed frame,service=unknown}":                      1,
		"bankrpc_server_duplicates_total{method=Echo,service=bankrpc.test.v1.TestService}":                         1,
		"bankrpc_server_duplicates_total{method=Fail,service=bankrpc.test.v1.TestService}":                         0,
		"bankrpc_server_duplicates_total{method=unknown,service=unknown}":                                          0,
	}, withPrefix(all, "bankrpc_server_"))
	assert.Equal(t, map[string]float64{
		"bankrpc_client_started_total{method=Echo,service=bankrpc.test.v1.TestService}":                          5,
		"bankrpc_client_started_total{method=Fail,service=bankrpc.test.v1.TestService}":                          2,
		"bankrpc_client_handled_total{code=OK,method=Echo,service=bankrpc.test.v1.TestService}":                  5,
		"bankrpc_client_handled_total{code=FAILED_PRECONDITION,method=Fail,service=bankrpc.test.v1.TestService}": 1,
		"bankrpc_client_handled_total{code=NOT_FOUND,method=Fail,service=bankrpc.test.v1.TestService}":           1,
		"bankrpc_client_handling_seconds{method=Echo,service=bankrpc.test.v1.TestService}":                       5,
		"bankrpc_client_handling_seconds{method=Fail,service=bankrpc.test.v1.TestService}":                       2,
		"bankrpc_client_in_flight{method=Echo,service=bankrpc.test.v1.TestService}":                              0,
		"bankrpc_client_in_flight{method=Fail,service=bankrpc.test.v1.TestService}":                              0,
	}, withPrefix(all, "bankrpc_client_"))
}

// TestMadeUpMethodNamesShareOneSeries: a client sending a thousand method
// names the server does not have adds no series per name.
func TestMadeUpMethodNamesShareOneSeries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, srvMetrics, _ := newMetrics(t)
	srv, _ := pair(t, []bankrpc.ServerOption{srvMetrics.Option()})
	for i := range 1000 {
		method := fmt.Sprintf("/made.up.Service%d/Method%d", i, i)
		_, err := srv.HandleFrame(ctx, requestFrame(t, fmt.Sprintf("c-%d", i), method, &testv1.EchoRequest{}, time.Time{}))
		require.NoError(t, err)
		// An expired call of an unknown method is refused before the
		// server looks the method up: it must not make the name known.
		_, err = srv.HandleFrame(ctx, requestFrame(t, fmt.Sprintf("e-%d", i), method, &testv1.EchoRequest{}, time.Now().Add(-time.Second)))
		require.NoError(t, err)
	}
	assert.Equal(t, map[string]float64{
		"bankrpc_server_started_total{method=unknown,service=unknown}": 2000,
	}, withPrefix(samples(t, reg), "bankrpc_server_started_total"))
	assert.Equal(t, map[string]float64{
		"bankrpc_server_refused_total{method=unknown,reason=expired,service=unknown}":        1000,
		"bankrpc_server_refused_total{method=unknown,reason=unknown method,service=unknown}": 1000,
	}, withPrefix(samples(t, reg), "bankrpc_server_refused_total"))
}

// TestInitializeMetricsNamesMethodsUpFront: the series of every method exist
// at zero before a call, and an expired first call is counted under its
// method, since the server is known to have it.
func TestInitializeMetricsNamesMethodsUpFront(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, srvMetrics, _ := newMetrics(t)
	srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
	started := withPrefix(samples(t, reg), "bankrpc_server_started_total")
	assert.Len(t, started, len(testv1.TestService_ServiceDesc.Methods)+1, "each method's, and unknown's")
	for _, v := range started {
		assert.Zero(t, v)
	}
	assert.Contains(t, samples(t, reg), "bankrpc_server_handled_total{code=OK,method=Work,service=bankrpc.test.v1.TestService}")

	srv, _ := pair(t, []bankrpc.ServerOption{srvMetrics.Option()})
	_, err := srv.HandleFrame(ctx, requestFrame(t, "expired-1", testv1.TestService_Sleep_FullMethodName, &testv1.SleepRequest{}, time.Now().Add(-time.Second)))
	require.NoError(t, err)
	assert.Equal(t, 1.0, samples(t, reg)["bankrpc_server_refused_total{method=Sleep,reason=expired,service=bankrpc.test.v1.TestService}"])
}

// TestInFlightCountsRunningCalls: a call running shows in in_flight on both
// sides, and leaves it when done.
func TestInFlightCountsRunningCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, srvMetrics, cliMetrics := newMetrics(t)
	srvMetrics.InitializeMetrics(&testv1.TestService_ServiceDesc)
	_, conn := pair(t, []bankrpc.ServerOption{srvMetrics.Option()}, cliMetrics.Option())
	c := testv1.NewTestServiceClient(conn)

	done := make(chan error, 1)
	go func() {
		_, err := c.Sleep(ctx, &testv1.SleepRequest{Nanos: int64(300 * time.Millisecond)})
		done <- err
	}()
	const srvKey = "bankrpc_server_in_flight{method=Sleep,service=bankrpc.test.v1.TestService}"
	const cliKey = "bankrpc_client_in_flight{method=Sleep,service=bankrpc.test.v1.TestService}"
	require.Eventually(t, func() bool {
		s := samples(t, reg)
		return s[srvKey] == 1 && s[cliKey] == 1
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, <-done)
	s := samples(t, reg)
	assert.Zero(t, s[srvKey])
	assert.Zero(t, s[cliKey])
}

func TestTransportEventsAreCountedByKindAndReason(t *testing.T) {
	reg := prometheus.NewRegistry()
	tm := metrics.NewTransportMetrics()
	reg.MustRegister(tm)
	sink := tm.Sink()
	sink.Emit(transport.Event{Transport: "amqp", Kind: transport.EventReconnect, Reason: "connection lost"})
	sink.Emit(transport.Event{Transport: "amqp", Kind: transport.EventReconnect, Reason: "connection lost"})
	sink.Emit(transport.Event{Transport: "amqp", Kind: transport.EventDeadLetter, Reason: "poison"})
	sink.Emit(transport.Event{Transport: "zmq", Kind: transport.EventRefusedFrame, Reason: "oversized"})
	assert.Equal(t, map[string]float64{
		"bankrpc_transport_events_total{kind=reconnect,reason=connection lost,transport=amqp}": 2,
		"bankrpc_transport_events_total{kind=dead_letter,reason=poison,transport=amqp}":        1,
		"bankrpc_transport_events_total{kind=refused_frame,reason=oversized,transport=zmq}":    1,
	}, samples(t, reg))
}

// TestHandlerServesTheRegistry scrapes /metrics as Prometheus would.
func TestHandlerServesTheRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg := metrics.NewRegistry()
	srvMetrics, cliMetrics, tm := metrics.NewServerMetrics(), metrics.NewClientMetrics(), metrics.NewTransportMetrics()
	reg.MustRegister(srvMetrics, cliMetrics, tm)
	_, conn := pair(t, []bankrpc.ServerOption{srvMetrics.Option()}, cliMetrics.Option())
	_, err := testv1.NewTestServiceClient(conn).Echo(ctx, &testv1.EchoRequest{})
	require.NoError(t, err)

	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	text := string(body)
	assert.Contains(t, text, `bankrpc_server_handled_total{code="OK",method="Echo",service="bankrpc.test.v1.TestService"} 1`)
	assert.Contains(t, text, `bankrpc_client_handled_total{code="OK",method="Echo",service="bankrpc.test.v1.TestService"} 1`)
	assert.Contains(t, text, "go_goroutines ")
	assert.Contains(t, text, "process_start_time_seconds ")
}

func TestConstLabelsAndBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewServerMetrics(metrics.WithConstLabels(prometheus.Labels{"bank": "b1"}), metrics.WithHistogramBuckets([]float64{1}))
	reg.MustRegister(m)
	m.InitializeMetrics(&testv1.TestService_ServiceDesc)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			assert.Equal(t, "bank", metric.GetLabel()[0].GetName(), mf.GetName())
			if h := metric.GetHistogram(); h != nil {
				assert.Len(t, h.GetBucket(), 1)
			}
		}
	}
}

// TestConcurrentCallsWhileAMethodBecomesKnown: calls of a method that
// become known while others are in flight are each counted once, and leave
// in_flight at zero.
func TestConcurrentCallsWhileAMethodBecomesKnown(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewServerMetrics()
	reg.MustRegister(m)
	const goroutines, calls = 8, 500
	ctx := context.Background()
	done := make(chan struct{})
	for g := range goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range calls {
				info := &bankrpc.CallInfo{Method: testv1.TestService_Echo_FullMethodName, CallID: fmt.Sprint(g, "-", i), Begin: time.Now()}
				ctx := m.Begin(ctx, info)
				m.End(ctx, info, &bankrpc.CallEnd{Code: bankrpc.OK})
			}
		}()
	}
	for range goroutines {
		<-done
	}
	s := samples(t, reg)
	assert.Equal(t, float64(goroutines*calls), s["bankrpc_server_started_total{method=Echo,service=bankrpc.test.v1.TestService}"])
	assert.Equal(t, float64(goroutines*calls), s["bankrpc_server_handled_total{code=OK,method=Echo,service=bankrpc.test.v1.TestService}"])
	assert.Zero(t, s["bankrpc_server_in_flight{method=Echo,service=bankrpc.test.v1.TestService}"])
	assert.Zero(t, s["bankrpc_server_started_total{method=unknown,service=unknown}"])
}
