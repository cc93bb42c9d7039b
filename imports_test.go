package bankrpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/bankrpc/bankrpc"

// importRule is one row of DESIGN.md's package map: the module-internal
// packages that a package, or every package under a prefix, may import.
type importRule struct {
	pkg     string   // relative to the module; "gen/..." for every package under gen/
	allowed []string // relative to the module; nil for none
	any     bool     // may import anything (examples/...)
}

// importTable is DESIGN.md's "Package map and import rules". It constrains
// direct imports of non-test files; layering then holds for the transitive
// ones. A change here needs the same change, and its reason, in DESIGN.md.
var importTable = []importRule{
	// A .proto may import another of the module's .protos (docs/architecture.md).
	{pkg: "gen/...", allowed: []string{".", "gen/..."}},
	{pkg: "codec"},
	// The runtime users import, at the module root.
	{pkg: ".", allowed: []string{"transport", "codec", "internal/envelope", "internal/status", "internal/ratelog", "gen/bankrpc/wire/v1"}},
	// Rate-limited logging of refused input, for the runtime and the backends.
	{pkg: "internal/ratelog"},
	{pkg: "internal/envelope", allowed: []string{"gen/bankrpc/wire/v1"}},
	// Codes and the error type, shared by the root package (which re-exports
	// them) and the backends, which must not import the root
	// (docs/architecture.md).
	{pkg: "internal/status"},
	{pkg: "transport", allowed: []string{"internal/status"}},
	{pkg: "transport/inproc", allowed: []string{"transport", "internal/status"}},
	{pkg: "transport/zmq", allowed: []string{"transport", "internal/status", "internal/envelope", "internal/ratelog", "internal/calltrace"}},
	{pkg: "transport/amqp", allowed: []string{"transport", "internal/status", "internal/envelope", "internal/ratelog"}},
	// Test support: the broker of the tests (docs/architecture.md).
	{pkg: "transport/amqp/amqptest"},
	// The suite calls its own generated test service through the root
	// package, and reads envelopes to check what backends put on the wire.
	{pkg: "transport/transporttest", allowed: []string{".", "transport", "internal/envelope", "gen/bankrpc/test/v1", "gen/bankrpc/wire/v1"}},
	{pkg: "protoc-gen-bankrpc"},
	{pkg: "bank", allowed: []string{"gen/bank/v1", "."}},
	// Observability (docs/observability.md), one option each, built on the
	// root package's StatsHandler, interceptors and metadata: the only
	// packages that import Prometheus and OpenTelemetry. metrics counts the
	// backends' transport.Events; logging rate-limits as the runtime does.
	{pkg: "metrics", allowed: []string{".", "transport"}},
	{pkg: "tracing", allowed: []string{"."}},
	{pkg: "logging", allowed: []string{".", "internal/ratelog"}},
	{pkg: "health", allowed: []string{".", "gen/bankrpc/health/v1"}},
	{pkg: "examples/...", any: true},
	// Programs and harnesses that measure the module from outside, like
	// examples/: the bench command and each backend's raw-vs-bankrpc harness.
	{pkg: "cmd/...", any: true},
	// Closed-loop load and latency statistics for the harnesses; standard library only.
	{pkg: "internal/loadgen"},
	// A process's RSS and threads from /proc, for the memory tests and the bench harness.
	{pkg: "internal/procstat"},
	// Timestamps of the points a call passes in a backend, for the benchmark
	// that splits a call's latency into segments; standard library only.
	{pkg: "internal/calltrace"},
	{pkg: "transport/zmq/zmqbench", any: true},
	{pkg: "transport/amqp/amqpbench", any: true},
}

// externalRule keeps a third-party module to the packages that own it:
// libzmq is linked by cgo and only transport/zmq may pull it in; only
// transport/amqp talks AMQP. Transitive dependencies count.
type externalRule struct {
	module string
	owners []string // table packages allowed to depend on it, besides examples/...
}

var externalRules = []externalRule{
	{module: "github.com/pebbe/zmq4", owners: []string{"transport/zmq"}},
	{module: "github.com/rabbitmq/amqp091-go", owners: []string{"transport/amqp", "transport/amqp/amqptest"}},
	// The core (the runtime, transport, the backends, the bank, generated
	// code) never imports Prometheus or OpenTelemetry: only their packages.
	{module: "github.com/prometheus", owners: []string{"metrics"}},
	{module: "go.opentelemetry.io", owners: []string{"tracing"}},
}

// forbiddenDeps are module-internal packages a package must not depend on,
// even transitively.
var forbiddenDeps = map[string][]string{
	// The plugin emits runtime identifiers by import path; it does not link
	// the runtime, so that it builds and versions on its own.
	"protoc-gen-bankrpc": {".", "transport"},
	// Backends never link the runtime users import: they move frames.
	"transport/inproc": {"."},
	"transport/zmq":    {"."},
	"transport/amqp":   {"."},
}

// goPackage is the part of `go list -json` this test reads.
type goPackage struct {
	ImportPath string
	Name       string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	Deps       []string
}

func TestImportsFollowDesign(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pkgs := listModulePackages(ctx, t)
	require.NotEmpty(t, pkgs)
	require.Contains(t, pkgs, ".", "go list did not see the runtime; is the test running at the module root?")

	for _, rel := range sortedKeys(pkgs) {
		p := pkgs[rel]
		if len(p.GoFiles)+len(p.CgoFiles) == 0 {
			continue // test-only packages, like this one, have no constrained imports
		}
		rule, ok := ruleFor(rel)
		if !assert.True(t, ok, "package %s is not in DESIGN.md's table: add it there, with the module packages it may import, and to importTable in imports_test.go", rel) {
			continue
		}
		if rule.any {
			continue
		}
		for _, imp := range p.Imports {
			dep, internal := strings.CutPrefix(imp, module+"/")
			if imp == module {
				dep, internal = ".", true
			}
			if !internal {
				continue
			}
			assert.True(t, slices.ContainsFunc(rule.allowed, func(a string) bool { return covers(a, dep) }), "package %s imports %s, which DESIGN.md's table does not allow (allowed: %s)", rel, dep, describe(rule.allowed))
		}
	}
}

func TestExternalModulesStayInTheirBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pkgs := listModulePackages(ctx, t)

	for _, rule := range externalRules {
		for _, row := range importTable {
			if row.any || slices.Contains(rule.owners, row.pkg) {
				continue
			}
			for _, rel := range matching(pkgs, row.pkg) {
				for _, dep := range pkgs[rel].Deps {
					if dep == rule.module || strings.HasPrefix(dep, rule.module+"/") {
						assert.Fail(t, "forbidden dependency", "package %s depends on %s (its non-standard imports: %s); only %s may", rel, dep, describe(nonStandard(pkgs[rel].Imports)), describe(rule.owners))
						break
					}
				}
			}
		}
	}
	for pkg, forbidden := range forbiddenDeps {
		for _, rel := range matching(pkgs, pkg) {
			for _, f := range forbidden {
				dep := module + "/" + f
				if f == "." {
					dep = module
				}
				assert.NotContains(t, pkgs[rel].Deps, dep, "package %s depends on %s, which DESIGN.md forbids", rel, f)
			}
		}
	}
}

// TestImportRulesName checks the table against the packages that exist, so
// that a renamed package does not leave a rule that silently checks nothing.
// Packages the design names but nobody has written yet are skipped.
func TestImportRulesName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pkgs := listModulePackages(ctx, t)
	for _, row := range importTable {
		if len(matching(pkgs, row.pkg)) == 0 {
			t.Logf("%s does not exist yet: its rule will apply once it does", row.pkg)
		}
		for _, a := range row.allowed {
			_, known := pkgs[a]
			_, ruled := ruleFor(a)
			assert.True(t, known || ruled, "importTable: %s may import %s, which is neither a package nor a row of the table", row.pkg, a)
		}
	}
}

// listModulePackages returns the module's packages, by path relative to the
// module, with their non-test imports and transitive dependencies.
func listModulePackages(ctx context.Context, t *testing.T) map[string]goPackage {
	t.Helper()
	var stdout, stderr bytes.Buffer
	// -e: a package with errors (someone's work in progress, or a cgo package
	// without cgo) is still listed, with the imports go could read.
	cmd := exec.CommandContext(ctx, "go", "list", "-e", "-json=ImportPath,Name,GoFiles,CgoFiles,Imports,Deps", "./...")
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "go list: %s", stderr.String())

	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(&stdout)
	for {
		var p goPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "decode go list output")
		if p.ImportPath == module {
			pkgs["."] = p
			continue
		}
		if rel, ok := strings.CutPrefix(p.ImportPath, module+"/"); ok {
			pkgs[rel] = p
		}
	}
	return pkgs
}

// ruleFor returns the table row that governs rel.
func ruleFor(rel string) (importRule, bool) {
	for _, r := range importTable {
		if covers(r.pkg, rel) {
			return r, true
		}
	}
	return importRule{}, false
}

// covers reports whether a table entry, "x" or "x/...", names rel.
func covers(entry, rel string) bool {
	if prefix, ok := strings.CutSuffix(entry, "/..."); ok {
		return rel == prefix || strings.HasPrefix(rel, prefix+"/")
	}
	return rel == entry
}

func matching(pkgs map[string]goPackage, entry string) []string {
	var out []string
	for _, rel := range sortedKeys(pkgs) {
		if covers(entry, rel) {
			out = append(out, rel)
		}
	}
	return out
}

func sortedKeys(pkgs map[string]goPackage) []string {
	return slices.Sorted(maps.Keys(pkgs))
}

// nonStandard drops standard-library packages, whose first element has no dot.
func nonStandard(imports []string) []string {
	var out []string
	for _, imp := range imports {
		first, _, _ := strings.Cut(imp, "/")
		if strings.Contains(first, ".") {
			out = append(out, imp)
		}
	}
	return out
}

func describe(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}
