package amqp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOrphans(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newOrphans(2, time.Minute)

	m.put("a", outcome{frame: []byte("first")}, now)
	m.put("a", outcome{frame: []byte("duplicate")}, now)
	o, ok := m.take("a", now)
	require.True(t, ok)
	assert.Equal(t, "first", string(o.frame), "the first reply for a call id wins")
	_, ok = m.take("a", now)
	assert.False(t, ok, "an outcome is taken once")

	m.put("b", outcome{frame: []byte("b")}, now)
	m.put("c", outcome{frame: []byte("c")}, now.Add(time.Second))
	m.put("d", outcome{frame: []byte("d")}, now.Add(2*time.Second))
	_, ok = m.take("b", now.Add(2*time.Second))
	assert.False(t, ok, "the oldest goes first beyond the limit")
	assert.Len(t, m.byID, 2)

	_, ok = m.take("c", now.Add(time.Second+time.Minute))
	assert.False(t, ok, "an outcome older than the TTL is dropped")
	o, ok = m.take("d", now.Add(time.Second+time.Minute))
	require.True(t, ok)
	assert.Equal(t, "d", string(o.frame))
	assert.Empty(t, m.byID)
}
