package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bankrpc/bankrpc"
	editionsv1 "github.com/bankrpc/bankrpc/protoc-gen-bankrpc/testdata/goldenpkg/gentest/editions/v1"
	typesv1 "github.com/bankrpc/bankrpc/protoc-gen-bankrpc/testdata/goldenpkg/gentest/types/v1"
	gentestv1 "github.com/bankrpc/bankrpc/protoc-gen-bankrpc/testdata/goldenpkg/gentest/v1"
	"github.com/bankrpc/bankrpc/transport/inproc"
)

// epoch is the ledger's clock: entry n is recorded n seconds after it.
var epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// ledger implements LedgerService and AuditService in memory. Uncommented
// and AppendLegacy are left to the embedded Unimplemented servers.
type ledger struct {
	gentestv1.UnimplementedLedgerServiceServer
	gentestv1.UnimplementedAuditServiceServer

	mu      sync.Mutex // guards entries
	entries []*typesv1.Entry
}

func (l *ledger) Append(_ context.Context, req *gentestv1.AppendRequest) (*typesv1.Entry, error) {
	if req.GetAmount() == 0 {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "ledger: append: amount must not be zero")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := int64(len(l.entries) + 1)
	e := &typesv1.Entry{
		Seq:        seq,
		Amount:     req.GetAmount(),
		Memo:       req.Memo,
		RecordedAt: timestamppb.New(epoch.Add(time.Duration(seq) * time.Second)),
	}
	l.entries = append(l.entries, e)
	return e, nil
}

func (l *ledger) Since(_ context.Context, ts *timestamppb.Timestamp) (*typesv1.EntryList, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &typesv1.EntryList{}
	for _, e := range l.entries {
		if e.GetRecordedAt().AsTime().After(ts.AsTime()) {
			out.Entries = append(out.Entries, e)
		}
	}
	return out, nil
}

func (l *ledger) Ping(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (l *ledger) ListEntries(context.Context, *emptypb.Empty) (*typesv1.EntryList, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &typesv1.EntryList{Entries: slices.Clone(l.entries)}, nil
}

func (l *ledger) Count(_ context.Context, req *gentestv1.CountRequest) (*gentestv1.CountResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, e := range l.entries {
		if req.Before == nil || e.GetRecordedAt().AsTime().Before(req.GetBefore().AsTime()) {
			n++
		}
	}
	return &gentestv1.CountResponse{Count: n}, nil
}

// counter implements the editions file's CounterService.
type counter struct {
	editionsv1.UnimplementedCounterServiceServer

	mu     sync.Mutex // guards values
	values map[string]int64
}

func (c *counter) Add(_ context.Context, req *editionsv1.AddRequest) (*editionsv1.AddResponse, error) {
	if req.Note != nil && req.GetNote() == "" {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "counter: add to %q: a note, when set, must not be empty", req.GetKey())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[req.GetKey()] += req.GetDelta()
	return &editionsv1.AddResponse{Value: c.values[req.GetKey()]}, nil
}

// TestGoldenPackage serves the golden package's services on a
// transport.Server over inproc and calls them through the generated clients.
func TestGoldenPackage(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after serve's cleanup
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var (
		seenMu sync.Mutex
		seen   []string // the full method names the interceptor saw, in order
	)
	srv := bankrpc.NewServer(bankrpc.UnaryInterceptor(func(ctx context.Context, req any, info *bankrpc.UnaryServerInfo, handler bankrpc.UnaryHandler) (any, error) {
		seenMu.Lock()
		seen = append(seen, info.FullMethod)
		seenMu.Unlock()
		return handler(ctx, req)
	}))
	l := &ledger{}
	gentestv1.RegisterLedgerServiceServer(srv, l)
	gentestv1.RegisterAuditServiceServer(srv, l)
	editionsv1.RegisterCounterServiceServer(srv, &counter{values: map[string]int64{}})
	conn := serve(ctx, t, srv)

	ledgerClient := gentestv1.NewLedgerServiceClient(conn)
	auditClient := gentestv1.NewAuditServiceClient(conn)
	counterClient := editionsv1.NewCounterServiceClient(conn)

	t.Run("messages from another file and package, proto3 optional", func(t *testing.T) {
		first, err := ledgerClient.Append(ctx, &gentestv1.AppendRequest{Amount: 120, Memo: proto.String("")})
		require.NoError(t, err)
		second, err := ledgerClient.Append(ctx, &gentestv1.AppendRequest{Amount: -20})
		require.NoError(t, err)

		assert.Equal(t, int64(1), first.GetSeq())
		assert.Equal(t, int64(120), first.GetAmount())
		assert.NotNil(t, first.Memo, "a memo set to the empty string stays present")
		assert.Equal(t, int64(2), second.GetSeq())
		assert.Nil(t, second.Memo, "an unset memo stays absent")
		assert.True(t, epoch.Add(2*time.Second).Equal(second.GetRecordedAt().AsTime()), "recorded at %v", second.GetRecordedAt().AsTime())
	})

	t.Run("well-known types", func(t *testing.T) {
		_, err := ledgerClient.Ping(ctx, &emptypb.Empty{})
		require.NoError(t, err)

		list, err := ledgerClient.Since(ctx, timestamppb.New(epoch.Add(time.Second)))
		require.NoError(t, err)
		require.Len(t, list.GetEntries(), 1, "only the second entry is after epoch+1s")
		assert.Equal(t, int64(2), list.GetEntries()[0].GetSeq())
	})

	t.Run("snake_case method", func(t *testing.T) {
		list, err := ledgerClient.ListEntries(ctx, &emptypb.Empty{})
		require.NoError(t, err)
		assert.Len(t, list.GetEntries(), 2)
		assert.Equal(t, "/gentest.v1.LedgerService/list_entries", gentestv1.LedgerService_ListEntries_FullMethodName, "the wire name keeps the proto name")
	})

	t.Run("second service of the file", func(t *testing.T) {
		all, err := auditClient.Count(ctx, &gentestv1.CountRequest{})
		require.NoError(t, err)
		assert.Equal(t, int64(2), all.GetCount())
		before, err := auditClient.Count(ctx, &gentestv1.CountRequest{Before: timestamppb.New(epoch.Add(2 * time.Second))})
		require.NoError(t, err)
		assert.Equal(t, int64(1), before.GetCount())
	})

	t.Run("editions file", func(t *testing.T) {
		got, err := counterClient.Add(ctx, &editionsv1.AddRequest{Key: "apples", Delta: 3})
		require.NoError(t, err)
		assert.Equal(t, int64(3), got.GetValue())
		got, err = counterClient.Add(ctx, &editionsv1.AddRequest{Key: "apples", Delta: -1, Note: proto.String("ate one")})
		require.NoError(t, err)
		assert.Equal(t, int64(2), got.GetValue())

		// Explicit presence survives the wire: a note set to "" is refused.
		_, err = counterClient.Add(ctx, &editionsv1.AddRequest{Key: "apples", Delta: 1, Note: proto.String("")})
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err), "error: %v", err)
	})

	t.Run("an application error keeps its code and message", func(t *testing.T) {
		_, err := ledgerClient.Append(ctx, &gentestv1.AppendRequest{})
		assert.Equal(t, bankrpc.InvalidArgument, bankrpc.CodeOf(err))
		assert.Equal(t, "ledger: append: amount must not be zero", bankrpc.MessageOf(err))
	})

	t.Run("unimplemented methods answer UNIMPLEMENTED", func(t *testing.T) {
		_, err := ledgerClient.Uncommented(ctx, &gentestv1.AppendRequest{Amount: 1})
		assert.Equal(t, bankrpc.Unimplemented, bankrpc.CodeOf(err), "error: %v", err)
		assert.Equal(t, "method Uncommented not implemented", bankrpc.MessageOf(err))

		_, err = ledgerClient.AppendLegacy(ctx, &gentestv1.AppendRequest{Amount: 1})
		assert.Equal(t, bankrpc.Unimplemented, bankrpc.CodeOf(err), "error: %v", err)
	})

	// Each generated handler names its own method to the interceptor.
	seenMu.Lock()
	defer seenMu.Unlock()
	assert.Equal(t, []string{
		gentestv1.LedgerService_Append_FullMethodName,
		gentestv1.LedgerService_Append_FullMethodName,
		gentestv1.LedgerService_Ping_FullMethodName,
		gentestv1.LedgerService_Since_FullMethodName,
		gentestv1.LedgerService_ListEntries_FullMethodName,
		gentestv1.AuditService_Count_FullMethodName,
		gentestv1.AuditService_Count_FullMethodName,
		editionsv1.CounterService_Add_FullMethodName,
		editionsv1.CounterService_Add_FullMethodName,
		editionsv1.CounterService_Add_FullMethodName,
		gentestv1.LedgerService_Append_FullMethodName,
		gentestv1.LedgerService_Uncommented_FullMethodName,
		gentestv1.LedgerService_AppendLegacy_FullMethodName,
	}, seen)
}

// pointerEmbedded embeds the Unimplemented server by pointer, which the
// generated Register function refuses: a call of an unimplemented method
// would dereference the nil pointer.
type pointerEmbedded struct {
	*gentestv1.UnimplementedLedgerServiceServer
}

// twoServicesPointerEmbedded implements both services of ledger.proto with
// one type, embedding both Unimplemented servers by pointer.
type twoServicesPointerEmbedded struct {
	*gentestv1.UnimplementedLedgerServiceServer
	*gentestv1.UnimplementedAuditServiceServer
}

// TestRegisterRefusesBadImplementations checks the panics a user meets at
// start-up, instead of a nil dereference on the first call.
func TestRegisterRefusesBadImplementations(t *testing.T) {
	t.Run("nil implementation", func(t *testing.T) {
		assert.PanicsWithValue(t, "bankrpc: RegisterService(gentest.v1.LedgerService): the implementation is nil", func() {
			gentestv1.RegisterLedgerServiceServer(bankrpc.NewServer(), nil)
		})
	})
	t.Run("Unimplemented embedded by nil pointer", func(t *testing.T) {
		assert.PanicsWithValue(t, "bankrpc: Register gentest.v1.LedgerService: UnimplementedLedgerServiceServer is embedded by pointer and is nil; embed it by value", func() {
			gentestv1.RegisterLedgerServiceServer(bankrpc.NewServer(), pointerEmbedded{})
		})
	})
	t.Run("one type for two services, both embedded by nil pointer", func(t *testing.T) {
		assert.PanicsWithValue(t, "bankrpc: Register gentest.v1.LedgerService: UnimplementedLedgerServiceServer is embedded by pointer and is nil; embed it by value", func() {
			gentestv1.RegisterLedgerServiceServer(bankrpc.NewServer(), twoServicesPointerEmbedded{})
		})
		assert.PanicsWithValue(t, "bankrpc: Register gentest.v1.AuditService: UnimplementedAuditServiceServer is embedded by pointer and is nil; embed it by value", func() {
			gentestv1.RegisterAuditServiceServer(bankrpc.NewServer(), twoServicesPointerEmbedded{})
		})
	})
	t.Run("Unimplemented embedded by non-nil pointer", func(t *testing.T) {
		assert.NotPanics(t, func() {
			gentestv1.RegisterLedgerServiceServer(bankrpc.NewServer(), pointerEmbedded{&gentestv1.UnimplementedLedgerServiceServer{}})
		})
	})
}

// serve serves srv over inproc until the test ends, and returns a Conn to it.
func serve(ctx context.Context, t *testing.T, srv *bankrpc.Server) *bankrpc.Conn {
	t.Helper()
	lis := inproc.NewListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := bankrpc.NewConn(lis.Dial())
	t.Cleanup(func() {
		assert.NoError(t, conn.Close())
		assert.NoError(t, srv.Shutdown(context.WithoutCancel(ctx)))
		assert.ErrorIs(t, <-served, bankrpc.ErrServerClosed)
	})
	return conn
}
