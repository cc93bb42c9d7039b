package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/pluginpb"
)

// These tests run the plugin as protoc and buf do: a binary built from this
// package, talking on stdin and stdout.

func TestVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildPlugin(ctx, t)

	stdout, stderr, err := runBinary(ctx, bin, nil, "--version")
	require.NoError(t, err, "stderr: %s", stderr)
	assert.Equal(t, "protoc-gen-bankrpc "+version+"\n", stdout)
	assert.Empty(t, stderr)
}

// TestStrayArguments checks that a user who runs the plugin by hand is told
// what it is, rather than left waiting for a request on stdin.
func TestStrayArguments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildPlugin(ctx, t)

	_, stderr, err := runBinary(ctx, bin, nil, "gentest/v1/ledger.proto")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 2, exit.ExitCode())
	assert.Contains(t, stderr, "this is a protoc plugin")
}

// TestOptions checks the plugin's options as the binary parses them: the
// protogen ones (paths, module, M) are accepted, anything else is refused by
// name.
func TestOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildPlugin(ctx, t)

	tests := []struct {
		param    string
		wantFile string // the name of the emitted file, when the run succeeds
		wantErr  string // a part of the error, when it fails
	}{
		{param: "paths=source_relative", wantFile: "gentest/v1/ledger_bankrpc.pb.go"},
		{param: "", wantFile: "github.com/bankrpc/bankrpc/protoc-gen-bankrpc/testdata/goldenpkg/gentest/v1/ledger_bankrpc.pb.go"},
		{param: "module=github.com/bankrpc/bankrpc/protoc-gen-bankrpc/testdata", wantFile: "goldenpkg/gentest/v1/ledger_bankrpc.pb.go"},
		{param: "paths=source_relative,no_such_option=1", wantErr: "no_such_option"},
	}
	for _, tt := range tests {
		t.Run("param="+tt.param, func(t *testing.T) {
			req := request(t, "descriptors.binpb", "gentest/v1/ledger.proto")
			req.Parameter = proto.String(tt.param)
			in, err := proto.Marshal(req)
			require.NoError(t, err)

			stdout, stderr, err := runBinary(ctx, bin, in)
			if tt.wantErr != "" {
				// protogen fails the process on a bad option, before
				// generating; protoc shows the stderr.
				var exit *exec.ExitError
				require.ErrorAs(t, err, &exit)
				assert.Contains(t, stderr, tt.wantErr)
				return
			}
			require.NoError(t, err, "stderr: %s", stderr)
			var rsp pluginpb.CodeGeneratorResponse
			require.NoError(t, proto.Unmarshal([]byte(stdout), &rsp))
			require.Empty(t, rsp.GetError())
			require.Len(t, rsp.GetFile(), 1)
			assert.Equal(t, tt.wantFile, rsp.GetFile()[0].GetName())
			golden := readFile(t, filepath.Join(goldenDir, "gentest/v1/ledger_bankrpc.pb.go.golden"))
			assert.Equal(t, string(golden), rsp.GetFile()[0].GetContent(), "the options choose where the file goes, not what it holds")
		})
	}
}

// TestProtoc runs the real protoc with the built plugin on the test protos
// and checks that it writes the golden files byte for byte.
func TestProtoc(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("protoc is not on PATH: install protobuf-compiler (scripts/setup.sh does) to run the plugin through protoc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildPlugin(ctx, t)
	protocMajor := protocMajorVersion(ctx, t, protoc)

	// runProtoc runs protoc on files and returns the files it wrote, by name.
	runProtoc := func(t *testing.T, files ...string) (map[string]string, string, error) {
		t.Helper()
		out := t.TempDir()
		args := append([]string{
			"-I", "testdata/proto",
			"-I", "../proto", // bankrpc/options/v1/options.proto
			"--plugin=protoc-gen-bankrpc=" + bin,
			"--bankrpc_out=" + out,
			"--bankrpc_opt=paths=source_relative",
		}, files...)
		_, stderr, err := runBinary(ctx, protoc, nil, args...)
		written := map[string]string{}
		walkErr := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(out, path)
			if err != nil {
				return err
			}
			written[filepath.ToSlash(rel)] = string(readFile(t, path))
			return nil
		})
		require.NoError(t, walkErr)
		return written, stderr, err
	}

	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set == "descriptors_editions.binpb" && protocMajor < 27 {
				t.Skipf("protoc %d.x cannot compile edition 2023 files (protoc 27 and later can); TestGolden checks this case from buf-compiled descriptors", protocMajor)
			}
			written, stderr, err := runProtoc(t, tc.generate...)
			require.NoError(t, err, "protoc: %s", stderr)
			for _, name := range tc.want {
				golden := readFile(t, filepath.Join(goldenDir, filepath.FromSlash(name)+".golden"))
				assert.Equal(t, string(golden), written[name], "protoc wrote a different %s than the golden file", name)
			}
			assert.Len(t, written, len(tc.want), "protoc wrote other files than expected")
		})
	}

	t.Run("streaming refused", func(t *testing.T) {
		written, stderr, err := runProtoc(t, "gentest/streaming/v1/streaming.proto")
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "protoc must fail on a streaming method")
		assert.Contains(t, stderr, "gentest/streaming/v1/streaming.proto: method gentest.streaming.v1.TailService.Tail is server streaming; bankrpc supports unary methods only")
		assert.Empty(t, written)
	})
}

// plugin is the binary built from this package, once for all tests.
var plugin struct {
	once sync.Once
	dir  string // removed by TestMain
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if plugin.dir != "" {
		_ = os.RemoveAll(plugin.dir)
	}
	os.Exit(code)
}

// buildPlugin builds this package, on the first call, into a temporary
// directory and returns the binary's path.
func buildPlugin(ctx context.Context, t *testing.T) string {
	t.Helper()
	plugin.once.Do(func() {
		plugin.dir, plugin.err = os.MkdirTemp("", "protoc-gen-bankrpc-test-")
		if plugin.err != nil {
			return
		}
		plugin.path = filepath.Join(plugin.dir, "protoc-gen-bankrpc")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", plugin.path, ".").CombinedOutput()
		if err != nil {
			plugin.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, plugin.err)
	return plugin.path
}

// runBinary runs bin with args and stdin, and returns its output. The error
// is an *exec.ExitError when it ran and failed.
func runBinary(ctx context.Context, bin string, stdin []byte, args ...string) (stdout, stderr string, err error) {
	var outBuf, errBuf bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &outBuf
	cmd.Stderr = &errBuf
	err = cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = errors.Join(err, ctxErr)
	}
	return outBuf.String(), errBuf.String(), err
}

var protocVersion = regexp.MustCompile(`^libprotoc (\d+)\.`)

// protocMajorVersion returns protoc's major version: 3 for "libprotoc
// 3.21.12", 27 for "libprotoc 27.1".
func protocMajorVersion(ctx context.Context, t *testing.T, protoc string) int {
	t.Helper()
	stdout, stderr, err := runBinary(ctx, protoc, nil, "--version")
	require.NoError(t, err, "protoc --version: %s", stderr)
	m := protocVersion.FindStringSubmatch(stdout)
	require.NotNil(t, m, "protoc --version printed %q", stdout)
	major, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return major
}
