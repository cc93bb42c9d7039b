package main

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the *_bankrpc.pb.go files of testdata/goldenpkg with the plugin's output")

const (
	goldenDir    = "testdata/golden"
	goldenPkgDir = "testdata/goldenpkg"
)

// goldenCase is one run of the plugin over files of a checked-in descriptor
// set, and the files it must emit. testdata/regen.sh builds the sets; keep
// the two in step.
type goldenCase struct {
	name     string
	set      string   // FileDescriptorSet under testdata/
	generate []string // CodeGeneratorRequest.FileToGenerate
	want     []string // the names of the files the plugin emits
}

var goldenCases = []goldenCase{
	{
		name:     "two services, imported messages, well-known types, comments, optional",
		set:      "descriptors.binpb",
		generate: []string{"gentest/v1/ledger.proto", "gentest/types/v1/types.proto"},
		want:     []string{"gentest/v1/ledger_bankrpc.pb.go"},
	},
	{
		name:     "edition 2023",
		set:      "descriptors_editions.binpb",
		generate: []string{"gentest/editions/v1/counter.proto"},
		want:     []string{"gentest/editions/v1/counter_bankrpc.pb.go"},
	},
}

// TestGolden runs the plugin in process on compiled descriptors, so it needs
// no protoc, and compares its output with testdata/golden. The golden package
// in testdata/goldenpkg must hold the same bytes, since it is what
// TestGoldenPackage calls through.
func TestGolden(t *testing.T) {
	produced := map[string]bool{}
	for _, tc := range goldenCases {
		rsp := runPlugin(t, request(t, tc.set, tc.generate...))
		require.Empty(t, rsp.GetError(), "%s: the plugin failed", tc.name)

		var names []string
		for _, f := range rsp.GetFile() {
			names = append(names, f.GetName())
			produced[f.GetName()] = true
			golden := filepath.Join(goldenDir, filepath.FromSlash(f.GetName())+".golden")
			inPkg := filepath.Join(goldenPkgDir, filepath.FromSlash(f.GetName()))
			if *update {
				writeFile(t, golden, f.GetContent())
				writeFile(t, inPkg, f.GetContent())
				continue
			}
			assert.Equal(t, string(readFile(t, golden)), f.GetContent(), "%s: %s differs from %s; if the change is intended, run go test ./protoc-gen-bankrpc -run TestGolden -update", tc.name, f.GetName(), golden)
			assert.Equal(t, string(readFile(t, inPkg)), f.GetContent(), "%s: %s differs from %s; run protoc-gen-bankrpc/testdata/regen.sh", tc.name, f.GetName(), inPkg)
		}
		assert.ElementsMatch(t, tc.want, names, "%s: files emitted", tc.name)
	}
	if *update {
		return
	}
	// A golden file that no case produces any more is stale.
	err := filepath.WalkDir(goldenDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(goldenDir, path)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.ToSlash(rel), ".golden")
		assert.True(t, produced[name], "%s is not produced by any golden case: delete it or add its case", path)
		return nil
	})
	require.NoError(t, err)
}

// TestDeterministic checks that two runs on the same input emit the same
// bytes: generated code is checked in and `make check-generate` diffs it.
func TestDeterministic(t *testing.T) {
	for _, tc := range goldenCases {
		first := runPlugin(t, request(t, tc.set, tc.generate...))
		second := runPlugin(t, request(t, tc.set, tc.generate...))
		require.Empty(t, first.GetError())
		require.NotEmpty(t, first.GetFile(), tc.name)
		assert.True(t, proto.Equal(first, second), "%s: two runs emitted different output", tc.name)
	}
}

// TestSupportedFeatures checks what the plugin declares to protoc and buf:
// without proto3 optional support protoc refuses files with optional fields,
// and without the editions range it refuses editions files.
func TestSupportedFeatures(t *testing.T) {
	rsp := runPlugin(t, request(t, "descriptors.binpb", "gentest/v1/ledger.proto"))
	require.Empty(t, rsp.GetError())
	want := uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL | pluginpb.CodeGeneratorResponse_FEATURE_SUPPORTS_EDITIONS)
	assert.Equal(t, want, rsp.GetSupportedFeatures())
	assert.Equal(t, int32(descriptorpb.Edition_EDITION_PROTO2), rsp.GetMinimumEdition())
	assert.Equal(t, int32(descriptorpb.Edition_EDITION_2023), rsp.GetMaximumEdition())
}

// TestNoServiceNoFile checks that a file without services gets no
// _bankrpc.pb.go: an empty Go file would still need the runtime import.
func TestNoServiceNoFile(t *testing.T) {
	rsp := runPlugin(t, request(t, "descriptors.binpb", "gentest/types/v1/types.proto"))
	require.Empty(t, rsp.GetError())
	assert.Empty(t, rsp.GetFile())
}

// TestProgressMessageNotFound checks that a progress option naming no
// message fails the run with an error naming the method and the name.
func TestProgressMessageNotFound(t *testing.T) {
	const file = "gentest/v1/ledger.proto"
	req := request(t, "descriptors.binpb", file, "gentest/types/v1/types.proto")
	m := findMethod(t, req, file, "AuditService", "Rebuild")
	m.Options = nil
	rsp := runPlugin(t, req)
	require.Empty(t, rsp.GetError(), "a method without the option is fine")
	for _, f := range rsp.GetFile() {
		assert.NotContains(t, f.GetContent(), "ReportRebuildProgress")
	}

	req = request(t, "descriptors.binpb", file, "gentest/types/v1/types.proto")
	m = findMethod(t, req, file, "AuditService", "Rebuild")
	b, err := proto.Marshal(m.Options)
	require.NoError(t, err)
	b = bytes.Replace(b, []byte("RebuildProgress"), []byte("RebuildProgresz"), 1)
	m.Options = &descriptorpb.MethodOptions{}
	require.NoError(t, proto.Unmarshal(b, m.Options))
	rsp = runPlugin(t, req)
	assert.Equal(t, file+`: method gentest.v1.AuditService.Rebuild: progress message "RebuildProgresz" not found (give a full name, or a message of package gentest.v1, in a file this one imports)`, rsp.GetError())
	assert.Empty(t, rsp.GetFile())
}

// TestStreamingRefused checks that a streaming method fails the whole run
// with an error naming the file, the method and its kind, instead of being
// dropped from the generated code.
func TestStreamingRefused(t *testing.T) {
	const file = "gentest/streaming/v1/streaming.proto"
	tests := []struct {
		kind           string
		client, server bool
	}{
		{kind: "client streaming", client: true},
		{kind: "server streaming", server: true},
		{kind: "bidirectional streaming", client: true, server: true},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			req := request(t, "descriptors.binpb", file)
			// The checked-in file has a server-streaming Tail; set the kind
			// under test on it.
			tail := findMethod(t, req, file, "TailService", "Tail")
			tail.ClientStreaming = proto.Bool(tt.client)
			tail.ServerStreaming = proto.Bool(tt.server)

			rsp := runPlugin(t, req)
			assert.Equal(t, file+": method gentest.streaming.v1.TailService.Tail is "+tt.kind+"; bankrpc supports unary methods only", rsp.GetError())
			assert.Empty(t, rsp.GetFile(), "no file may be emitted when a method is refused")
		})
	}

	t.Run("alongside a good file", func(t *testing.T) {
		rsp := runPlugin(t, request(t, "descriptors.binpb", "gentest/v1/ledger.proto", file))
		assert.Contains(t, rsp.GetError(), "method gentest.streaming.v1.TailService.Tail is server streaming")
		assert.Empty(t, rsp.GetFile(), "the good file's output must not be emitted either")
	})
}

// request builds the CodeGeneratorRequest protoc would send for generate,
// from the descriptor set testdata/<set>.
func request(t *testing.T, set string, generate ...string) *pluginpb.CodeGeneratorRequest {
	t.Helper()
	var fds descriptorpb.FileDescriptorSet
	require.NoError(t, proto.Unmarshal(readFile(t, filepath.Join("testdata", set)), &fds), "testdata/%s", set)
	for _, name := range generate {
		require.True(t, slices.ContainsFunc(fds.GetFile(), func(f *descriptorpb.FileDescriptorProto) bool { return f.GetName() == name }),
			"testdata/%s does not hold %s: run testdata/regen.sh", set, name)
	}
	return &pluginpb.CodeGeneratorRequest{
		FileToGenerate: generate,
		Parameter:      proto.String("paths=source_relative"),
		ProtoFile:      fds.GetFile(),
	}
}

// runPlugin runs generate as the plugin's main does, and returns what it
// would write to protoc.
func runPlugin(t *testing.T, req *pluginpb.CodeGeneratorRequest) *pluginpb.CodeGeneratorResponse {
	t.Helper()
	gen, err := protogen.Options{}.New(req)
	require.NoError(t, err)
	if err := generate(gen); err != nil {
		gen.Error(err)
	}
	return gen.Response()
}

func findMethod(t *testing.T, req *pluginpb.CodeGeneratorRequest, file, service, method string) *descriptorpb.MethodDescriptorProto {
	t.Helper()
	for _, f := range req.GetProtoFile() {
		if f.GetName() != file {
			continue
		}
		for _, s := range f.GetService() {
			if s.GetName() != service {
				continue
			}
			for _, m := range s.GetMethod() {
				if m.GetName() == method {
					return m
				}
			}
		}
	}
	require.FailNow(t, "method not found", "%s: %s.%s", file, service, method)
	return nil
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err, "if the file is missing, run protoc-gen-bankrpc/testdata/regen.sh")
	return b
}

func writeFile(t *testing.T, path string, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}
