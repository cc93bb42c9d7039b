package harness_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSDKDoesNotDependOnGRPC keeps grpc-go, the peer this module measures
// against, out of the SDK: the root module's build list must not hold it.
func TestSDKDoesNotDependOnGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "all")
	cmd.Dir = "../.." // the repository's root module
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), errOut.String())
	require.Contains(t, out.String(), "github.com/bankrpc/bankrpc\n", "go list ran in the root module")
	for _, line := range strings.Split(out.String(), "\n") {
		require.False(t, strings.HasPrefix(line, "google.golang.org/grpc "), "the root module depends on %s: grpc-go belongs to the bench module only", line)
	}
}
