package metrics_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	_ "github.com/bankrpc/bankrpc/transport/inproc" // registers inproc://
)

// service is the test service: Echo echoes, Fail fails with the code asked,
// Sleep sleeps.
type service struct {
	testv1.UnimplementedTestServiceServer
}

func (service) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	return &testv1.EchoResponse{Payload: in.GetPayload(), Tag: in.GetTag(), CallId: bankrpc.CallIDFromContext(ctx)}, nil
}

func (service) Fail(_ context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

func (service) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	select {
	case <-time.After(time.Duration(in.GetNanos())):
		return &testv1.SleepResponse{}, nil
	case <-ctx.Done():
		return &testv1.SleepResponse{Interrupted: true}, nil
	}
}

var endpoints atomic.Int64

// pair serves service over a fresh inproc address with srvOpts and returns
// the server and a Conn dialled with dialOpts; both stop at the test's end.
func pair(t testing.TB, srvOpts []bankrpc.ServerOption, dialOpts ...bankrpc.DialOption) (*bankrpc.Server, *bankrpc.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := fmt.Sprintf("inproc://metrics-%d", endpoints.Add(1))
	srv := bankrpc.NewServer(srvOpts...)
	testv1.RegisterTestServiceServer(srv, service{})
	l, err := bankrpc.Listen(ctx, addr)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := bankrpc.Dial(ctx, addr, dialOpts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return srv, conn
}

// samples gathers reg into "name{label=value,...}" -> value; a histogram
// gives its sample count under its own name.
func samples(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// withPrefix keeps the samples whose name starts with prefix.
func withPrefix(all map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		if strings.HasPrefix(k, prefix) {
			out[k] = all[k]
		}
	}
	return out
}
