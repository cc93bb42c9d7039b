package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/metrics"
)

// definedMetrics returns the names of the series this package exports,
// with the _bucket, _sum and _count series of its histograms, and the
// labels it uses.
func definedMetrics(t *testing.T) (names, labels map[string]bool) {
	t.Helper()
	ch := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{metrics.NewServerMetrics(), metrics.NewClientMetrics(), metrics.NewTransportMetrics()} {
		c.Describe(ch)
	}
	close(ch)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	variableLabels := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	names, labels = map[string]bool{}, map[string]bool{"le": true}
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		names[m[1]] = true
		if strings.HasSuffix(m[1], "_seconds") {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+s] = true
			}
		}
		if l := variableLabels.FindStringSubmatch(d.String()); l != nil {
			for _, name := range strings.Split(l[1], ",") {
				labels[strings.TrimSpace(name)] = true
			}
		}
	}
	require.Contains(t, names, "bankrpc_server_handled_total")
	require.Contains(t, labels, "code")
	return names, labels
}

// promQLWords are the PromQL functions, operators and Grafana variables a
// dashboard expression may use besides metric and label names.
var promQLWords = map[string]bool{
	"sum": true, "by": true, "without": true, "rate": true, "irate": true, "increase": true,
	"histogram_quantile": true, "avg": true, "max": true, "min": true, "count": true,
	"label_values": true, "__rate_interval": true, "__interval": true, "and": true, "or": true, "unless": true,
}

var (
	quoted      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers    = regexp.MustCompile(`\{[^}]*\}`)
	ranges      = regexp.MustCompile(`\[[^\]]*\]`)
	identifiers = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	numbers     = regexp.MustCompile(`^[0-9.]+$`)
)

// identifiersOf returns the words of a PromQL expression outside strings,
// label matchers and range selectors: metric names, label names in by(),
// functions.
func identifiersOf(expr string) []string {
	bare := ranges.ReplaceAllString(matchers.ReplaceAllString(quoted.ReplaceAllString(expr, `""`), " "), " ")
	var out []string
	for _, w := range identifiers.FindAllString(bare, -1) {
		if !numbers.MatchString(w) {
			out = append(out, w)
		}
	}
	return out
}

// exprsOf collects every PromQL expression of a Grafana dashboard: panel
// targets and templating queries.
func exprsOf(t *testing.T, dash map[string]any) []string {
	t.Helper()
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash["panels"])
	walk(dash["templating"])
	return exprs
}

// TestDashboardUsesOnlyOurMetrics parses docs/grafana/bankrpc.json and
// checks that every PromQL expression names only metrics and labels this
// package exports, and that the dashboard shows what it promises.
func TestDashboardUsesOnlyOurMetrics(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana/bankrpc.json")
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(raw, &dash))
	for _, k := range []string{"title", "uid", "panels", "templating", "schemaVersion"} {
		require.Contains(t, dash, k, "an importable dashboard has %s", k)
	}

	names, labels := definedMetrics(t)
	exprs := exprsOf(t, dash)
	require.NotEmpty(t, exprs)
	used := map[string]bool{}
	for _, expr := range exprs {
		metricsInExpr := 0
		for _, w := range identifiersOf(expr) {
			switch {
			case names[w]:
				used[w] = true
				metricsInExpr++
			case labels[w], promQLWords[w]:
			default:
				assert.Fail(t, "unknown name in dashboard", "%q in %s is neither a metric of package metrics, nor one of its labels, nor a PromQL function", w, expr)
			}
		}
		assert.Positive(t, metricsInExpr, "no metric in %s", expr)
	}
	for _, want := range []string{
		"bankrpc_server_handled_total", "bankrpc_server_handling_seconds_bucket", "bankrpc_server_in_flight",
		"bankrpc_transport_events_total",
	} {
		assert.True(t, used[want], "the dashboard shows %s", want)
	}
	text := string(raw)
	for _, want := range []string{`code!=\"OK\"`, "histogram_quantile(0.5", "histogram_quantile(0.99", `kind=\"reconnect\"`, `kind=\"dead_letter\"`} {
		assert.Contains(t, text, want)
	}
}

// TestObservabilityDocListsEveryMetric keeps docs/observability.md's table
// in step with the code.
func TestObservabilityDocListsEveryMetric(t *testing.T) {
	raw, err := os.ReadFile("../docs/observability.md")
	require.NoError(t, err)
	names, _ := definedMetrics(t)
	for name := range names {
		if strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") {
			continue
		}
		assert.Contains(t, string(raw), "`"+name+"`", "docs/observability.md documents %s", name)
	}
}

func TestIdentifiersOf(t *testing.T) {
	assert.Equal(t, []string{"sum", "by", "code", "rate", "bankrpc_server_handled_total"},
		identifiersOf(`sum by (code) (rate(bankrpc_server_handled_total{service=~"$service", code!="OK"}[$__rate_interval]))`))
	assert.Equal(t, []string{"histogram_quantile", "sum", "by", "le", "rate", "x_bucket"},
		identifiersOf(`histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))`))
}
