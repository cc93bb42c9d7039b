// Package python_test runs the Python client of clients/python against the Go
// bank: over ZeroMQ (REQ and DEALER clients) and, when BANKRPC_AMQP_URL names
// a broker, over RabbitMQ, including calls submitted while no server runs and
// collected by a later Python process. The message classes are generated with
// protoc --python_out into a temporary directory.
//
// It needs Debian's python3 with python3-zmq, python3-pika and
// python3-protobuf (scripts/setup.sh installs them) and protoc. Without them
// the test is skipped, with a message, unless CI=true: then it fails.
package python_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	testv1 "github.com/bankrpc/bankrpc/gen/bankrpc/test/v1"
	"github.com/bankrpc/bankrpc/transport"
	"github.com/bankrpc/bankrpc/transport/amqp"
	"github.com/bankrpc/bankrpc/transport/amqp/amqptest"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// timedUnittest runs python3 -m unittest -v on argv[1], printing each
// test's duration, so that a slow test shows in the log.
const timedUnittest = `import sys, time, unittest
class Result(unittest.TextTestResult):
    def startTest(self, test):
        self._began = time.monotonic()
        super().startTest(test)
    def stopTest(self, test):
        super().stopTest(test)
        self.stream.write("    (%.2fs)\n" % (time.monotonic() - self._began))
unittest.main(module=None, argv=["unittest", "-v", sys.argv[1]], testRunner=unittest.TextTestRunner(resultclass=Result, verbosity=2))
`

// pythonModules are the Debian packages' modules the client imports.
const pythonModules = "import zmq, pika, google.protobuf"

func TestPythonClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	py := python(t)
	dir := sourceDir(t)
	gen := generate(t, ctx, dir)

	b, err := bank.Open(t.TempDir())
	require.NoError(t, err)
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, b)
	testv1.RegisterTestServiceServer(srv, anyService{}) // a service other than the bank
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		require.NoError(t, b.Shutdown())
	})

	zl, err := bankrpc.Listen(ctx, "zmq://127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(zl) }()
	env := []string{
		"PYTHONPATH=" + gen + string(os.PathListSeparator) + dir,
		"PYTHONDONTWRITEBYTECODE=1", // no __pycache__ in the source tree
		"BANKRPC_ZMQ_ENDPOINT=" + zl.(*zmq.Server).Addr(),
	}

	var idle transport.ServerTransport
	if os.Getenv(amqptest.EnvURL) != "" {
		url := amqptest.URL(t)
		service, idleService := uniqueService(t, url, "py"), uniqueService(t, url, "py-idle")
		al, err := bankrpc.Listen(ctx, url+"?service="+service)
		require.NoError(t, err)
		go func() { _ = srv.Serve(al) }()
		// Declared (Listen declares the topology) but not served until the
		// submitted calls are to be collected.
		idle, err = bankrpc.Listen(ctx, url+"?service="+idleService)
		require.NoError(t, err)
		env = append(env, "BANKRPC_AMQP_URL="+url, "BANKRPC_AMQP_SERVICE="+service, "BANKRPC_AMQP_IDLE_SERVICE="+idleService)
	} else {
		t.Logf("%s not set: the Python client runs over ZeroMQ only", amqptest.EnvURL)
	}

	zmqRan := "skipped 'BANKRPC_ZMQ_ENDPOINT not set'"
	if idle == nil {
		runPython(t, ctx, py, dir, env, "tests.test_bank", zmqRan)
		return
	}
	runPython(t, ctx, py, dir, env, "tests.test_bank", zmqRan, "skipped 'BANKRPC_AMQP_URL")
	state := filepath.Join(t.TempDir(), "submitted.json")
	env = append(env, "BANKRPC_STATE="+state)
	runPython(t, ctx, py, dir, append(env, "BANKRPC_PHASE=submit"), "tests.test_bank.AmqpSubmitWhileNoServer", "skipped")
	go func() { _ = srv.Serve(idle) }()
	runPython(t, ctx, py, dir, append(env, "BANKRPC_PHASE=collect"), "tests.test_bank.AmqpCollectLater", "skipped")
}

// python returns Debian's python3 (where apt's python3-* modules are), or
// BANKRPC_PYTHON; it skips the test, or fails it when CI=true, when the
// interpreter or the client's modules are missing.
func python(t *testing.T) string {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format+" (scripts/setup.sh installs python3-zmq, python3-pika and python3-protobuf)", args...)
		}
		t.Skipf(format+" (run scripts/setup.sh; CI=true makes this a failure)", args...)
	}
	py := os.Getenv("BANKRPC_PYTHON")
	if py == "" {
		py = "/usr/bin/python3" // apt installs its modules for this one, not for a pyenv's
		if _, err := os.Stat(py); err != nil {
			if py, err = exec.LookPath("python3"); err != nil {
				missing("python3 not found")
			}
		}
	}
	if out, err := exec.Command(py, "-c", pythonModules).CombinedOutput(); err != nil {
		missing("%s cannot %s: %v\n%s", py, pythonModules, err, out)
	}
	return py
}

func sourceDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Dir(file)
}

// generate writes the Python message classes of the envelope and the bank
// with protoc --python_out into a temporary directory.
func generate(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("protoc not found (scripts/setup.sh installs protobuf-compiler)")
		}
		t.Skip("protoc not found: run scripts/setup.sh")
	}
	out := t.TempDir()
	protos := filepath.Join(dir, "..", "..", "proto")
	real, err := filepath.EvalSymlinks(protoc)
	require.NoError(t, err)
	include := filepath.Join(filepath.Dir(real), "..", "include") // google/protobuf/any.proto, as protoc ships it
	cmd := exec.CommandContext(ctx, protoc, "-I", protos, "-I", include, "--python_out="+out,
		"bankrpc/wire/v1/envelope.proto", "bank/v1/bank.proto", "bankrpc/options/v1/options.proto", "bankrpc/test/v1/test.proto")
	cmd.Dir = protos
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "protoc: %s", msg)
	return out
}

// runPython runs the client's tests named by target (python3 -m unittest)
// with env, bounded by ctx and 2 minutes, and fails the test with their
// output if they fail or if the output holds one of notWant (skips that
// must not happen).
func runPython(t *testing.T, ctx context.Context, py, dir string, env []string, target string, notWant ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", timedUnittest, target)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	t.Logf("python3 -m unittest %s (%s):\n%s", target, env[len(env)-1], out.String())
	require.NoError(t, err, "the Python client's tests failed (output above)")
	for _, w := range notWant {
		require.NotContains(t, out.String(), w, "a test was skipped")
	}
}

// uniqueService returns a service name of its own; its queues are deleted
// at the end of the test.
func uniqueService(t *testing.T, url, prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := prefix + "-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		conn, err := amqp091.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, q := range []string{amqp.ServiceQueue(name), amqp.DeadLetterQueue(name)} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	return name
}

// anyService is the bankrpc.test.v1.TestService the Python client calls to
// show that it works for any service: Echo tells what the handler saw,
// Sleep ends early when the call is canceled, Fail returns the error asked
// for, Panic panics, Progress sends statuses (over AMQP).
type anyService struct {
	testv1.UnimplementedTestServiceServer
}

func (anyService) Echo(ctx context.Context, in *testv1.EchoRequest) (*testv1.EchoResponse, error) {
	out := &testv1.EchoResponse{Payload: in.GetPayload(), Tag: in.GetTag(), CallId: bankrpc.CallIDFromContext(ctx)}
	if dl, ok := ctx.Deadline(); ok {
		out.DeadlineUnixNano = dl.UnixNano()
	}
	md, _ := bankrpc.FromIncomingContext(ctx)
	for k, vs := range md {
		for _, v := range vs {
			out.Metadata = append(out.Metadata, k+"="+v)
		}
	}
	slices.Sort(out.Metadata)
	return out, nil
}

func (anyService) Sleep(ctx context.Context, in *testv1.SleepRequest) (*testv1.SleepResponse, error) {
	select {
	case <-time.After(time.Duration(in.GetNanos())):
		return &testv1.SleepResponse{}, nil
	case <-ctx.Done():
		return &testv1.SleepResponse{Interrupted: true}, nil
	}
}

func (anyService) Fail(_ context.Context, in *testv1.FailRequest) (*testv1.FailResponse, error) {
	return nil, bankrpc.NewError(bankrpc.Code(in.GetCode()), in.GetMessage())
}

func (anyService) Panic(_ context.Context, in *testv1.PanicRequest) (*testv1.PanicResponse, error) {
	panic(in.GetMessage())
}

func (anyService) Progress(ctx context.Context, in *testv1.ProgressRequest) (*testv1.ProgressResponse, error) {
	var sent int32
	for i := range in.GetSteps() {
		if err := bankrpc.SendStatus(ctx, bankrpc.Status{Reason: fmt.Sprintf("step %d", i+1)}); err != nil {
			break // ZeroMQ carries no statuses
		}
		sent++
	}
	return &testv1.ProgressResponse{Sent: sent}, nil
}
