package usermodule_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
)

const runtimeModule = "github.com/bankrpc/bankrpc"

// The bounds of the test: the whole of it, a step that builds, a run of the
// program.
const (
	testTimeout  = 2 * time.Minute
	buildTimeout = 90 * time.Second
	runTimeout   = 30 * time.Second
)

// TestUserModule does what a new user does in a module of their own (see the
// package doc), step by step, each command bounded and logged.
func TestUserModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module of its own and runs a program: not with -short")
	}
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("protoc not found on PATH: install protobuf-compiler and libprotobuf-dev (make setup does)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	root := repoRoot(t, ctx)
	buf := findBuf(t, root)
	env := offlineGoEnv(t, ctx, root)
	mod := t.TempDir()
	require.NoError(t, os.CopyFS(mod, os.DirFS("testdata/inventory")))

	// 1. A module of one's own, using the unpublished runtime through a
	// replace, with its go.sum lines so that nothing needs the checksum
	// database (every module comes from the local module cache).
	run(t, ctx, mod, env, "go", "mod", "init", "example.com/inventory")
	run(t, ctx, mod, env, "go", "mod", "edit", "-replace="+runtimeModule+"="+root)
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.sum"), sums, 0o644))

	// 2. The plugins, as tools of the module: buf.gen.yaml runs them with
	// `go tool`.
	run(t, ctx, mod, env, "go", "get", "-tool", runtimeModule+"/protoc-gen-bankrpc")
	run(t, ctx, mod, env, "go", "get", "-tool", "google.golang.org/protobuf/cmd/protoc-gen-go")

	// 3. Generate with buf, then with protoc and the plugins built with
	// go build -o: the same files.
	run(t, ctx, mod, env, buf, "lint")
	run(t, ctx, mod, env, buf, "generate")
	bin := filepath.Join(mod, "bin")
	run(t, ctx, mod, env, "go", "build", "-o", bin+string(filepath.Separator),
		runtimeModule+"/protoc-gen-bankrpc", "google.golang.org/protobuf/cmd/protoc-gen-go")
	protocOut := filepath.Join(mod, "gen-protoc")
	require.NoError(t, os.Mkdir(protocOut, 0o755))
	run(t, ctx, mod, env, protoc, "-I", "proto",
		"--plugin=protoc-gen-go="+filepath.Join(bin, "protoc-gen-go"),
		"--plugin=protoc-gen-bankrpc="+filepath.Join(bin, "protoc-gen-bankrpc"),
		"--go_out="+protocOut, "--go_opt=paths=source_relative",
		"--bankrpc_out="+protocOut, "--bankrpc_opt=paths=source_relative",
		"inventory/v1/inventory.proto")
	sameGenerated(t, filepath.Join(mod, "gen"), protocOut)

	// 4. The program: both services, served and called over --addr.
	program := filepath.Join(bin, "inventory")
	run(t, ctx, mod, env, "go", "build", "-o", program, ".")

	t.Run("inproc", func(t *testing.T) {
		runProgram(t, ctx, program, "inproc://inventory")
	})
	t.Run("zmq", func(t *testing.T) {
		runProgram(t, ctx, program, "zmq://127.0.0.1:"+strconv.Itoa(freePort(t)))
	})
	t.Run("amqp", func(t *testing.T) {
		broker := amqptest.URL(t) // skips when BANKRPC_AMQP_URL is unset, fails when it does not answer
		service := "usermodule-" + randomHex(t)
		t.Cleanup(func() { deleteServiceQueues(t, broker, service) })
		runProgram(t, ctx, program, withService(t, broker, service))
	})
}

// runProgram runs the inventory program over addr and checks everything it
// prints.
func runProgram(t *testing.T, ctx context.Context, program, addr string) {
	t.Helper()
	u, err := url.Parse(addr)
	require.NoError(t, err)
	out := runFor(t, ctx, runTimeout, filepath.Dir(program), nil, program, "--addr", addr, "--timeout", "20s")
	want := "serving inventory.v1.StockService and inventory.v1.PricingService over " + u.Scheme + `
stock: AddStock(apple, 12) -> 12 on hand
stock: AddStock(apple, 3) -> 15 on hand
stock: GetStock(apple) -> 15 on hand
stock: GetStock(pear) -> NOT_FOUND: stock: no SKU "pear"
pricing: SetPrice(apple, 45 cents) -> ok
pricing: Quote(apple, 10) -> 450 cents, valid for 10m0s
pricing: Quote(apple, 100) -> FAILED_PRECONDITION: pricing: quote 100 of "apple": only 15 on hand
server: shut down
`
	assert.Equal(t, want, out)
}

// run runs a command in dir with env (nil: this process's), bounded by
// buildTimeout, logs it, fails t with its output when it fails, and returns
// its standard output.
func run(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	return runFor(t, ctx, buildTimeout, dir, env, name, args...)
}

// runFor is run bounded by limit.
func runFor(t *testing.T, ctx context.Context, limit time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if u, err := url.Parse(a); err == nil && u.User != nil {
			shown[i] = u.Redacted() // no broker password in the log
		}
	}
	t.Logf("$ %s %s", filepath.Base(name), strings.Join(shown, " "))
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		t.Fatalf("%s %s (in %s): %v after %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(shown, " "), dir, err,
			time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	}
	return stdout.String()
}

// repoRoot is the directory of this repository's go.mod.
func repoRoot(t *testing.T, ctx context.Context) string {
	t.Helper()
	gomod := strings.TrimSpace(run(t, ctx, ".", nil, "go", "env", "GOMOD"))
	require.NotEmpty(t, gomod, "go env GOMOD: not in a module")
	return filepath.Dir(gomod)
}

// findBuf returns the buf that scripts/setup.sh installs in .tools/, or the
// one on PATH, and skips t when there is none.
func findBuf(t *testing.T, root string) string {
	t.Helper()
	local := filepath.Join(root, ".tools", "node_modules", ".bin", "buf")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if p, err := exec.LookPath("buf"); err == nil {
		return p
	}
	t.Skipf("buf not found in %s or on PATH: run make setup", filepath.Dir(local))
	return ""
}

// offlineGoEnv returns the environment for the go commands in the user's
// module. The module proxy is the local module cache (file://), so go get
// resolves without a network; `go mod download` in the repository first puts
// every module the runtime needs there (a no-op when they are, as after make
// setup). -mod=mod lets go build add the requirements main.go brings, which is
// what `go mod tidy` does for a user (tidy itself would also want the modules
// of the tools' tests, which are not in the cache).
func offlineGoEnv(t *testing.T, ctx context.Context, root string) []string {
	t.Helper()
	run(t, ctx, root, nil, "go", "mod", "download")
	cache := strings.TrimSpace(run(t, ctx, root, nil, "go", "env", "GOMODCACHE"))
	require.NotEmpty(t, cache)
	return append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(filepath.Join(cache, "cache", "download")),
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"CGO_ENABLED=1", // transport/zmq links libzmq
	)
}

// protocVersion is the line protoc-gen-go writes with the compiler's version:
// protoc's own, or "(unknown)" under buf. It is the one line allowed to differ.
var protocVersion = regexp.MustCompile(`(?m)^// \tprotoc +\S.*$`)

// sameGenerated checks that buf and protoc generated the same files with the
// same bytes (but for protoc-gen-go's compiler version line), and that they
// hold both services.
func sameGenerated(t *testing.T, bufOut, protocOut string) {
	t.Helper()
	fromBuf, fromProtoc := readTree(t, bufOut), readTree(t, protocOut)
	require.Equal(t, slices.Sorted(maps.Keys(fromBuf)), slices.Sorted(maps.Keys(fromProtoc)), "files generated by buf (left) and by protoc (right)")
	require.Contains(t, fromBuf, "inventory/v1/inventory_bankrpc.pb.go")
	for name, b := range fromBuf {
		p := fromProtoc[name]
		if strings.HasSuffix(name, "_bankrpc.pb.go") {
			assert.True(t, bytes.Equal(b, p), "%s: buf's and protoc's output differ", name)
			continue
		}
		assert.Equal(t, string(protocVersion.ReplaceAll(b, nil)), string(protocVersion.ReplaceAll(p, nil)),
			"%s: buf's and protoc's output differ beyond the protoc version line", name)
	}
	stubs := string(fromBuf["inventory/v1/inventory_bankrpc.pb.go"])
	for _, decl := range []string{
		"func NewStockServiceClient(", "func RegisterStockServiceServer(",
		"func NewPricingServiceClient(", "func RegisterPricingServiceServer(",
		"// AddStock puts items of a SKU on the shelf", "PricingService_Quote_FullMethodName",
	} {
		assert.Contains(t, stubs, decl)
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, path))
		files[path] = b
		return err
	})
	require.NoError(t, err)
	return files
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a moment
// ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

// withService is the broker URL with ?service=NAME: the address of one service.
func withService(t *testing.T, broker, service string) string {
	t.Helper()
	u, err := url.Parse(broker)
	require.NoError(t, err)
	q := u.Query()
	q.Set("service", service)
	u.RawQuery = q.Encode()
	if u.Path == "" {
		u.Path = "/"
	}
	return u.String()
}

// deleteServiceQueues removes the durable queues the run left in the shared
// broker (the client's own expire by themselves).
func deleteServiceQueues(t *testing.T, broker, service string) {
	conn, err := amqp091.DialConfig(broker, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Errorf("delete the queues of service %s: %v", service, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("delete the queues of service %s: %v", service, err)
		return
	}
	for _, q := range []string{amqp.ServiceQueue(service), amqp.DeadLetterQueue(service)} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("delete queue %s: %v", q, err)
			return // the channel is closed after an error
		}
	}
}
