package zmq

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller handed the lead just before Close, whose wait then sees the
// client closing rather than the lead, gives the lead back: Close waits
// until nobody leads, and would wait forever (TestClientCloseCancelsCalls
// hung so, about once in a few hundred runs under load).
func TestPromotedCallerThatSeesCloseGivesTheLeadBack(t *testing.T) {
	s, err := Listen("tcp://127.0.0.1:0", ServerConfig{})
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.Close()) }()
	c, err := Dial(s.Addr(), ClientConfig{})
	require.NoError(t, err)

	m := c.box
	r := &request{id: "call-1", done: make(chan delivery, 1)}
	m.mu.Lock()
	m.leading = true // a caller leads,
	m.items = append(m.items, r)
	c.handoffLocked() // and leaves: r is promoted.
	m.mu.Unlock()
	require.True(t, r.promoted)

	// Close begins: what it does before it waits for the lead.
	c.markClosing()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()

	c.abandon(r) // r's caller took the closing over the lead
	m.mu.Lock()
	leading := m.leading
	m.leading = false // so that Close returns whatever abandon did
	m.closed = false
	m.mu.Unlock()
	assert.False(t, leading, "the promoted caller kept the lead: Close would wait forever")
	assert.NoError(t, c.Close())
}
