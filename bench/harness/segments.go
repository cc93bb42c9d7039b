package harness

import (
	"context"
	"slices"
	"time"

	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// SegmentPair is one round of the lone-call segment measurement: raw
// pebbe/zmq4 and bankrpc over zmq, one after the other (the order
// alternates between rounds).
type SegmentPair struct {
	Raw, Bankrpc zmqbench.Segments
}

// measuresSegments reports whether the run splits a lone zmq call into
// segments: when it measures both zmq rows at one caller (target 1).
func (r *Report) measuresSegments() bool {
	has := func(key string) bool {
		return slices.ContainsFunc(r.Scenarios, func(s Scenario) bool { return s.Key == key })
	}
	return has(ZMQRaw) && has(ZMQ) && slices.Contains(r.Config.Callers, 1)
}

func measureSegments(ctx context.Context, round int, d time.Duration) (SegmentPair, error) {
	var p SegmentPair
	var err error
	raw := func() error { p.Raw, err = zmqbench.RawSegments(ctx, d); return err }
	rpc := func() error { p.Bankrpc, err = zmqbench.BankrpcSegments(ctx, d); return err }
	first, second := raw, rpc
	if round%2 == 1 {
		first, second = rpc, raw
	}
	if err := first(); err != nil {
		return p, err
	}
	return p, second()
}

// segmentMedian is the median over the rounds of one side's segment.
func (r *Report) segmentMedian(bankrpc bool, get func(zmqbench.Segments) time.Duration) time.Duration {
	xs := make([]float64, len(r.Segments))
	for i, p := range r.Segments {
		s := p.Raw
		if bankrpc {
			s = p.Bankrpc
		}
		xs[i] = float64(get(s))
	}
	return time.Duration(median(xs))
}
