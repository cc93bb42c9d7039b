package zmqbench

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/bankrpc/bankrpc/internal/calltrace"
)

// Segments is where the time of one caller's calls goes, as medians over
// the calls of one measurement. Each call is split at the moments the
// request and the reply are handed to and read from the sockets
// (internal/calltrace), so the caller's and the server's own work stand
// apart from the wire and the wake-ups between them. bankrpc's server marks
// the request read at its first frame, the raw echo server once it read
// the whole message; both mark the reply sent after its last frame.
type Segments struct {
	Calls int
	// Caller: from the call until the request is on the socket (bankrpc:
	// the runtime's encoding, the call table, the client's lead; raw: one
	// zmq_send).
	Caller time.Duration
	// Out: from the request on the client's socket until the server read
	// it: libzmq's I/O threads, TCP on 127.0.0.1, the server's wake-up.
	Out time.Duration
	// Server: from reading the request until the reply is on the socket.
	Server time.Duration
	// Handler: of Server, the time in the transport.Handler (the runtime
	// and the in-memory bank); zero for raw, which has none.
	Handler time.Duration
	// Back: from the reply on the server's socket until the client read it.
	Back time.Duration
	// Return: from reading the reply until the call returns (bankrpc:
	// delivery to the caller, decoding; raw: nothing, the read returns).
	Return time.Duration
	Total  time.Duration
}

// SegmentFields are the fields of Segments, in the order a call passes
// them, each with its name and what it holds, for reports and metrics.
var SegmentFields = []struct {
	Name, What string
	Get        func(Segments) time.Duration
}{
	{"caller", "the call until its request is on the client's socket", func(s Segments) time.Duration { return s.Caller }},
	{"out", "request on the socket → the server read it (libzmq I/O threads, TCP, wake-up)", func(s Segments) time.Duration { return s.Out }},
	{"server", "the server read the request → its reply is on the socket", func(s Segments) time.Duration { return s.Server }},
	{"handler", "within server: the runtime and the in-memory bank (raw: none)", func(s Segments) time.Duration { return s.Handler }},
	{"back", "reply on the socket → the client read it", func(s Segments) time.Duration { return s.Back }},
	{"return", "the client read the reply → the call returns", func(s Segments) time.Duration { return s.Return }},
	{"total", "one call", func(s Segments) time.Duration { return s.Total }},
}

// RawSegments measures RunRaw's calls, one caller, for duration d.
func RawSegments(ctx context.Context, d time.Duration) (Segments, error) {
	return measureSegments(ctx, d, runRaw)
}

// BankrpcSegments measures RunBankrpc's calls, one caller, for duration d.
func BankrpcSegments(ctx context.Context, d time.Duration) (Segments, error) {
	return measureSegments(ctx, d, runBankrpc)
}

type loop func(ctx context.Context, callers int, d time.Duration, around func(func() error) error) (Result, error)

func measureSegments(ctx context.Context, d time.Duration, run loop) (Segments, error) {
	var m segmenter
	m.base = time.Now()
	restore := calltrace.Set(m.mark)
	defer restore()
	if _, err := run(ctx, 1, d, m.around); err != nil {
		return Segments{}, err
	}
	med := func(i int) time.Duration {
		xs := m.samples[i]
		if len(xs) == 0 {
			return 0
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	return Segments{
		Calls:   len(m.samples[segTotal]),
		Caller:  med(segCaller),
		Out:     med(segOut),
		Server:  med(segServer),
		Handler: med(segHandler),
		Back:    med(segBack),
		Return:  med(segReturn),
		Total:   med(segTotal),
	}, nil
}

const (
	segCaller = iota
	segOut
	segServer
	segHandler
	segBack
	segReturn
	segTotal
	numSegs
)

// segmenter records the marks of the call in flight (there is one caller)
// and, when it returns, its segments.
type segmenter struct {
	base    time.Time
	marks   [calltrace.NumPoints]atomic.Int64 // since base; -1: not passed
	samples [numSegs][]time.Duration
}

func (m *segmenter) mark(p calltrace.Point) { m.marks[p].Store(int64(time.Since(m.base))) }

// around runs one call and keeps its segments. A call whose marks are not
// all there, or not in order, is left out (none is expected to be).
func (m *segmenter) around(call func() error) error {
	for i := range m.marks {
		m.marks[i].Store(-1)
	}
	start := time.Since(m.base)
	if err := call(); err != nil {
		return err
	}
	end := time.Since(m.base)
	at := func(p calltrace.Point) time.Duration { return time.Duration(m.marks[p].Load()) }
	points := []time.Duration{start, at(calltrace.ClientSent), at(calltrace.ServerReceived), at(calltrace.ServerSent), at(calltrace.ClientReceived), end}
	if slices.Contains(points, -1) || !slices.IsSorted(points) {
		return nil
	}
	handler := time.Duration(0)
	if hs, he := at(calltrace.HandlerStart), at(calltrace.HandlerEnd); hs >= 0 && he >= hs {
		handler = he - hs
	}
	for i, v := range []time.Duration{
		points[1] - points[0], points[2] - points[1], points[3] - points[2], handler,
		points[4] - points[3], points[5] - points[4], points[5] - points[0],
	} {
		m.samples[i] = append(m.samples[i], v)
	}
	return nil
}
