//go:build !race

package inproc_test

// raceEnabled tells the tests that count allocations to skip: the race
// detector changes them.
const raceEnabled = false
