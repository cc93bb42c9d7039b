package bankrpc

import (
	"context"
	"strconv"
	"strings"
	"sync"
)

// A Conn is a client session: the call ids it makes are "<session>-<seq>",
// a random 16-hex-digit session and a sequence number from 1, and each
// request tells the server the lowest sequence of the session whose reply
// the client still lacks (first_unanswered, PROTOCOL.md 2.1), so that a
// server that records call ids durably can forget the replies below it and
// prove, for any call id, either "already applied, here is the reply" or
// "too old to know" — Raft's client sessions (Ongaro's dissertation §6.3)
// and Kafka's idempotent producer work the same way.

// CallSession is what the call id of the request being handled says of its
// client session; see CallSessionFromContext.
type CallSession struct {
	// ID is the session, the part of the call id before the last '-'.
	ID string
	// Seq is the call's sequence number in the session, from 1.
	Seq uint64
	// FirstUnanswered is the lowest sequence number of the session whose
	// reply the client still lacks; 0 when the client did not say.
	// Replies of lower sequence numbers will not be asked for again.
	FirstUnanswered uint64
}

// ParseCallID splits a call id of the session form "<session>-<seq>". ok is
// false for ids of any other form (chosen by hand with WithCallID, or by a
// client in another language that does not use sessions).
func ParseCallID(id string) (session string, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	return id[:i], seq, true
}

// CallSessionFromContext returns the client session of the request being
// handled, when its call id has the session form.
func CallSessionFromContext(ctx context.Context) (CallSession, bool) {
	ci, ok := ctx.Value(callInfoKey{}).(*callInfo)
	if !ok {
		return CallSession{}, false
	}
	id, seq, ok := ParseCallID(ci.id)
	if !ok {
		return CallSession{}, false
	}
	fu := ci.firstUnanswered
	if fu > seq {
		fu = 0 // impossible: this call is unanswered; trust nothing
	}
	return CallSession{ID: id, Seq: seq, FirstUnanswered: fu}, true
}

// maxUnknown bounds how many calls whose outcome stayed unknown (the caller
// gave up, the connection failed) a Conn keeps pending, so that a retry
// with their call id can still be answered from the server's record.
const maxUnknown = 1024

// pendingSeqs tracks the sequence numbers of a Conn's session whose replies
// the client lacks: the calls in flight, and the latest maxUnknown calls
// that ended without a reply from the server.
type pendingSeqs struct {
	mu      sync.Mutex
	last    uint64 // the last sequence handed out
	set     map[uint64]struct{}
	unknown []uint64 // oldest first
	min     uint64   // the lowest in set; 0 when set is empty
}

// next hands out the next sequence and adds it, in one step, so that no
// request can tell the server a first unanswered sequence above one that is
// about to be sent. It returns the sequence and the session's first
// unanswered one.
func (p *pendingSeqs) next() (seq, firstUnanswered uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last++
	return p.last, p.addLocked(p.last)
}

// reserve hands out the next sequence for a caller that sends it later
// (Conn.NewCallID): it is pending, as an unknown outcome, from now on.
func (p *pendingSeqs) reserve() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last++
	p.addLocked(p.last)
	p.endLocked(p.last, false)
	return p.last
}

// begin adds seq, a sequence handed out before, and returns the session's
// first unanswered sequence.
func (p *pendingSeqs) begin(seq uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addLocked(seq)
}

func (p *pendingSeqs) addLocked(seq uint64) uint64 {
	if p.set == nil {
		p.set = make(map[uint64]struct{})
	}
	p.set[seq] = struct{}{}
	if p.min == 0 || seq < p.min {
		p.min = seq
	}
	return p.min
}

// end settles seq: answered (the server's reply arrived) removes it;
// otherwise it stays pending among the latest maxUnknown unknown outcomes.
func (p *pendingSeqs) end(seq uint64, answered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked(seq, answered)
}

func (p *pendingSeqs) endLocked(seq uint64, answered bool) {
	if _, ok := p.set[seq]; !ok {
		return
	}
	if !answered {
		p.unknown = append(p.unknown, seq)
		if len(p.unknown) <= maxUnknown {
			return
		}
		seq = p.unknown[0]
		p.unknown = append(p.unknown[:0], p.unknown[1:]...)
	}
	delete(p.set, seq)
	if seq == p.min {
		p.min = 0
		for s := range p.set {
			if p.min == 0 || s < p.min {
				p.min = s
			}
		}
	}
}
