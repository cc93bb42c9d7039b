package amqp

import "time"

// outcome is how a call ended: a reply frame, or an error from the error
// queue, a refused publish or an unroutable request.
type outcome struct {
	frame []byte
	err   error
}

// orphans keeps outcomes that arrived for calls not in flight: the reply to
// a call submitted before the client restarted, the reply of a call whose
// caller gave up, or a duplicate reply after a redelivery. Collect reads
// them; a call re-issued with the same call id takes its outcome from here
// instead of asking the server again. At most max outcomes are kept, each
// for at most ttl when ttl is positive; the oldest go first (evicted counts
// them). It is not safe for concurrent use (Client.mu guards it).
type orphans struct {
	max     int
	ttl     time.Duration
	byID    map[string]orphan
	evicted int
	// order lists insertions, oldest first; entries for ids taken since are
	// skipped when they reach the front.
	order []orphanRef
}

type orphan struct {
	o  outcome
	at time.Time
}

type orphanRef struct {
	id string
	at time.Time
}

func newOrphans(maxEntries int, ttl time.Duration) orphans {
	return orphans{max: maxEntries, ttl: ttl, byID: make(map[string]orphan)}
}

// put keeps o for id, unless an outcome for id is already kept: duplicates of
// a reply carry the same outcome.
func (m *orphans) put(id string, o outcome, now time.Time) {
	if _, ok := m.byID[id]; ok {
		return
	}
	m.byID[id] = orphan{o: o, at: now}
	m.order = append(m.order, orphanRef{id: id, at: now})
	m.prune(now)
}

// get returns the outcome kept for id, leaving it kept.
func (m *orphans) get(id string, now time.Time) (outcome, bool) {
	m.prune(now)
	e, ok := m.byID[id]
	return e.o, ok
}

// all returns the ids and outcomes kept, oldest first.
func (m *orphans) all(now time.Time) (ids []string, os []outcome) {
	m.prune(now)
	for _, ref := range m.order {
		if e, ok := m.byID[ref.id]; ok && e.at.Equal(ref.at) {
			ids = append(ids, ref.id)
			os = append(os, e.o)
		}
	}
	return ids, os
}

// take removes and returns the outcome kept for id.
func (m *orphans) take(id string, now time.Time) (outcome, bool) {
	m.prune(now)
	e, ok := m.byID[id]
	if ok {
		delete(m.byID, id)
	}
	return e.o, ok
}

func (m *orphans) prune(now time.Time) {
	for len(m.order) > 0 {
		ref := m.order[0]
		e, ok := m.byID[ref.id]
		live := ok && e.at.Equal(ref.at)
		if live && len(m.byID) <= m.max && (m.ttl <= 0 || now.Sub(ref.at) < m.ttl) {
			return
		}
		if live {
			delete(m.byID, ref.id)
			m.evicted++
		}
		m.order[0] = orphanRef{}
		m.order = m.order[1:]
	}
}
