//go:build !race

package zmq_test

// raceEnabled: the race detector multiplies a process's memory (5-10x by its
// documentation), so memory budgets are scaled in race builds.
const raceEnabled = false
