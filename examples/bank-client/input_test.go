package main

import (
	"io"
	"testing"
)

// newBlockingInput returns a reader that blocks until the returned func
// closes it, as a terminal nobody types into.
func newBlockingInput(t *testing.T) (io.Reader, func()) {
	t.Helper()
	r, w := io.Pipe()
	return r, func() { _ = w.Close() }
}
