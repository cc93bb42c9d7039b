package transporttest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
)

// testService implements bankrpc.test.v1.TestService with one named
// behaviour per method, and counts the calls it executes.
type testService struct {
	testv1.UnimplementedTestServiceServer

	echoes atomic.Int64
	sleeps atomic.Int64

	barrierMu sync.Mutex
	barriers  map[string]*barrier
}

// barrier releases its callers once n of them are inside the handler at the
// same time: a way to prove handlers run concurrently without timing them.
type barrier struct {
	n       int
	arrived int
	open    chan struct{}
}

func newTestService() *testService {
	return &testService{barriers: make(map[string]*barrier)}
}

// Echo returns what the server saw. A tag "barrier:<name>:<n>" first waits
// until n calls with that tag are in the handler at once.
func (s *testService) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	s.echoes.Add(1)
	if rest, ok := strings.CutPrefix(in.GetTag(), "barrier:"); ok {
		if err := s.await(ctx, rest); err != nil {
			return nil, err
		}
	}
	out := &testv1.EchoResponse{
		Payload:  in.GetPayload(),
		Tag:      in.GetTag(),
		CallId:   transport.CallIDFromContext(ctx),
		Metadata: transport.MetadataFromContext(ctx),
	}
	if dl, ok := ctx.Deadline(); ok {
		out.DeadlineUnixNano = dl.UnixNano()
	}
	if p, ok := transport.PeerFromContext(ctx); ok {
		out.PeerIdentity = p.Identity
	}
	return out, nil
}

func (s *testService) await(ctx context.Context, spec string) error {
	name, count, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	if err != nil || n <= 0 {
		return transport.Errorf(transport.InvalidArgument, "bad barrier tag %q", spec)
	}
	s.barrierMu.Lock()
	b := s.barriers[name]
	if b == nil {
		b = &barrier{n: n, open: make(chan struct{})}
		s.barriers[name] = b
	}
	b.arrived++
	if b.arrived == b.n {
		close(b.open)
	}
	s.barrierMu.Unlock()
	select {
	case <-b.open:
		return nil
	case <-ctx.Done():
		return transport.Errorf(transport.DeadlineExceeded, "barrier %s: only %d of %d calls ran concurrently", name, b.arrived, b.n)
	}
}

// Sleep waits for the given duration or until the call's ctx ends.
func (s *testService) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	s.sleeps.Add(1)
	select {
	case <-time.After(time.Duration(in.GetNanos())):
		return &testv1.SleepResponse{}, nil
	case <-ctx.Done():
		return &testv1.SleepResponse{Interrupted: true}, nil
	}
}

// Fail returns the requested error.
func (s *testService) Fail(_ context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	return nil, transport.NewError(transport.Code(in.GetCode()), in.GetMessage())
}

// Panic panics with the requested message.
func (s *testService) Panic(_ context.Context, in *testv1.PanicRequest) (*testv1.PanicResponse, error) {
	panic(in.GetMessage())
}

// Progress sends the requested number of statuses, then returns.
func (s *testService) Progress(ctx context.Context, in *testv1.ProgressRequest) (*testv1.ProgressResponse, error) {
	var sent int32
	for i := range in.GetSteps() {
		err := transport.SendStatus(ctx, transport.Status{Reason: fmt.Sprintf("step %d", i+1), Data: []byte{byte(i + 1)}})
		if err != nil {
			return nil, err
		}
		sent++
	}
	return &testv1.ProgressResponse{Sent: sent}, nil
}
