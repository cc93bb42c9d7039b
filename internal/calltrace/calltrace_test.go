package calltrace

import (
	"slices"
	"testing"
)

func TestMarkReachesTheHookUntilRestored(t *testing.T) {
	Mark(ClientSent) // no hook: nothing happens

	var got []Point
	restore := Set(func(p Point) { got = append(got, p) })
	Mark(ClientSent)
	Mark(ServerReceived)
	restore()
	Mark(ServerSent)

	if want := []Point{ClientSent, ServerReceived}; !slices.Equal(got, want) {
		t.Fatalf("the hook saw %v, want %v", got, want)
	}
}
