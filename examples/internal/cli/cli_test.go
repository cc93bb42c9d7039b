package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func newFlagSet() (*flag.FlagSet, *string, *time.Duration, *bool) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("client-name", "default", "")
	timeout := fs.Duration("timeout", time.Second, "")
	js := fs.Bool("json", false, "")
	return fs, name, timeout, js
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "BANKRPC_CLIENT_NAME", EnvName("client-name"))
	assert.Equal(t, "BANKRPC_EXIT_WHEN_IDLE", EnvName("exit-when-idle"))
	assert.Equal(t, "BANKRPC_ID", EnvName("id"))
}

func TestParseFlagsWinOverEnvironment(t *testing.T) {
	fs, name, timeout, js := newFlagSet()
	set, err := Parse(fs, []string{"--client-name", "from-flag", "balance"},
		env(map[string]string{"BANKRPC_CLIENT_NAME": "from-env", "BANKRPC_TIMEOUT": "3s", "BANKRPC_JSON": "true"}))
	require.NoError(t, err)
	assert.Equal(t, "from-flag", *name, "a flag on the command line wins")
	assert.Equal(t, 3*time.Second, *timeout, "the environment fills a flag not given")
	assert.True(t, *js, "boolean flags are read from the environment too")
	assert.Equal(t, map[string]bool{"client-name": true, "timeout": true, "json": true}, set)
	assert.Equal(t, []string{"balance"}, fs.Args())
}

func TestParseDefaultsStayUnset(t *testing.T) {
	fs, name, timeout, _ := newFlagSet()
	set, err := Parse(fs, nil, env(nil))
	require.NoError(t, err)
	assert.Equal(t, "default", *name)
	assert.Equal(t, time.Second, *timeout)
	assert.Empty(t, set, "a default is not a choice")
}

func TestParseInvalidEnvironmentNamesTheVariable(t *testing.T) {
	fs, _, _, _ := newFlagSet()
	_, err := Parse(fs, nil, env(map[string]string{"BANKRPC_TIMEOUT": "soon"}))
	require.Error(t, err)
	assert.ErrorAs(t, err, new(*UsageError))
	assert.Contains(t, err.Error(), `BANKRPC_TIMEOUT="soon"`)
	assert.Contains(t, err.Error(), "--timeout")
}

func TestParseErrors(t *testing.T) {
	fs, _, _, _ := newFlagSet()
	_, err := Parse(fs, []string{"--help"}, env(nil))
	assert.ErrorIs(t, err, flag.ErrHelp)

	fs, _, _, _ = newFlagSet()
	_, err = Parse(fs, []string{"--nope"}, env(nil))
	require.Error(t, err)
	assert.ErrorAs(t, err, new(*UsageError))
	assert.Contains(t, err.Error(), "nope")
}

func TestPrintDefaultsShowsEnvironmentVariables(t *testing.T) {
	fs, _, _, _ := newFlagSet()
	var out bytes.Buffer
	fs.SetOutput(&out)
	PrintDefaults(fs)
	assert.Contains(t, out.String(), "--client-name")
	assert.Contains(t, out.String(), "env BANKRPC_CLIENT_NAME")
	assert.Contains(t, out.String(), "(default 1s)")
}

func TestParseAmount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"150", 150},
		{"007", 7},
		{"9223372036854775807", 9223372036854775807},
	} {
		got, err := ParseAmount(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	for _, tc := range []struct{ in, says string }{
		{"abc", "digits only"},
		{"-5", "digits only"},
		{"+5", "digits only"},
		{"0", "must be positive"},
		{"1e3", "digits only"},
		{"1.50", "digits only"},
		{" 5", "digits only"},
		{"", "missing"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999", "too large"},
	} {
		_, err := ParseAmount(tc.in)
		require.Error(t, err, "%q must be refused", tc.in)
		assert.ErrorAs(t, err, new(*UsageError), tc.in)
		assert.Contains(t, err.Error(), tc.says, tc.in)
		assert.Contains(t, err.Error(), "positive whole number of minor units", "%q: the message says what is accepted", tc.in)
	}
}

func TestParseAccountID(t *testing.T) {
	got, err := ParseAccountID("--id", "2147483647")
	require.NoError(t, err)
	assert.Equal(t, int32(2147483647), got)
	for _, in := range []string{"0", "-1", "2147483648", "x", "7.0", ""} {
		_, err := ParseAccountID("--id", in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), "--id", in)
		assert.Contains(t, err.Error(), "positive 32-bit integer", in)
	}
}

func TestCheckBankName(t *testing.T) {
	for _, ok := range []string{"bank", "Bank_2", "b.east-1", "_x"} {
		assert.NoError(t, CheckBankName(ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "-b", ".hidden", "a/b", "a b", "ü", strings.Repeat("b", 65)} {
		err := CheckBankName(bad)
		require.Error(t, err, "%q", bad)
		assert.ErrorAs(t, err, new(*UsageError))
	}
}

func TestExitStatus(t *testing.T) {
	for code, want := range map[bankrpc.Code]int{bankrpc.OK: ExitOK, bankrpc.FailedPrecondition: ExitRefused, bankrpc.NotFound: ExitRefused, bankrpc.InvalidArgument: ExitRefused, bankrpc.OutOfRange: ExitRefused, bankrpc.ResourceExhausted: ExitRefused, bankrpc.Internal: ExitRefused, bankrpc.Unavailable: ExitUnreachable, bankrpc.DeadlineExceeded: ExitUnreachable, bankrpc.Canceled: ExitInterrupted} {
		assert.Equal(t, want, ExitStatus(code), code.String())
	}
	assert.True(t, Refusal(bankrpc.FailedPrecondition))
	assert.False(t, Refusal(bankrpc.Internal), "an internal error is a failure, not a refusal")
}

func TestNewLogger(t *testing.T) {
	var out bytes.Buffer
	l, err := NewLogger(&out, "json", "warn")
	require.NoError(t, err)
	l.Info("hidden")
	l.Warn("shown", "n", 1)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &rec), "one JSON record: %s", out.String())
	assert.Equal(t, "shown", rec["msg"])

	out.Reset()
	l, err = NewLogger(&out, "TEXT", "Debug")
	require.NoError(t, err)
	l.Debug("detail")
	assert.Contains(t, out.String(), "msg=detail")

	_, err = NewLogger(&out, "xml", "info")
	assert.ErrorContains(t, err, "text or json")
	_, err = NewLogger(&out, "text", "loud")
	assert.ErrorContains(t, err, "debug, info, warn or error")
}
