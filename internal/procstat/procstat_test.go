package procstat

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	st := parse("Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t7\n")
	assert.Equal(t, Status{RSS: 1234 << 10, Threads: 7}, st)
	assert.Equal(t, Status{}, parse("garbage\n:\nVmRSS:\n"))
}

func TestReadThisProcess(t *testing.T) {
	st, err := Read(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, st.RSS)
	assert.Positive(t, st.Threads)
	assert.Equal(t, st.RSS > 0, RSS(os.Getpid()) > 0)

	_, err = Read(-1)
	assert.Error(t, err)
	assert.Zero(t, RSS(-1))
}
