package metrics

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bankrpc/bankrpc"
)

// numCodes is the number of canonical codes, OK to UNAUTHENTICATED.
const numCodes = int(bankrpc.Unauthenticated) + 1

// unknownLabel is the service and method label of calls to a method the
// server does not know (see ServerMetrics), and the service label of a
// method name without one.
const unknownLabel = "unknown"

// splitMethod splits "/package.Service/Method" into its service and method;
// a name without a service gets service "unknown".
func splitMethod(full string) (service, method string) {
	name := strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i], name[i+1:]
	}
	if name == "" {
		return unknownLabel, unknownLabel
	}
	return unknownLabel, name
}

// byCode resolves the child of a {service,method,code} counter vector on
// first use of each code, so that the codes never seen make no series.
type byCode struct {
	vec             *prometheus.CounterVec
	service, method string
	counters        [numCodes]atomic.Pointer[prometheus.Counter]
}

func (b *byCode) inc(c bankrpc.Code) { b.counter(c).Inc() }

// makeOK makes the OK series, at zero.
func (b *byCode) makeOK() { b.counter(bankrpc.OK) }

func (b *byCode) counter(c bankrpc.Code) prometheus.Counter {
	if int(c) >= numCodes {
		return b.vec.WithLabelValues(b.service, b.method, c.String())
	}
	if p := b.counters[c].Load(); p != nil {
		return *p
	}
	ctr := b.vec.WithLabelValues(b.service, b.method, c.String())
	b.counters[c].Store(&ctr)
	return ctr
}

// table maps full method names to their series, made once per method: the
// hot path is one sync.Map lookup, no label hashing.
type table[T any] struct {
	m    sync.Map // full method name -> *T
	make func(service, method string) *T
}

func (t *table[T]) get(full string) *T {
	if v, ok := t.m.Load(full); ok {
		return v.(*T)
	}
	v, _ := t.m.LoadOrStore(full, t.make(splitMethod(full)))
	return v.(*T)
}

func (t *table[T]) lookup(full string) (*T, bool) {
	v, ok := t.m.Load(full)
	if !ok {
		return nil, false
	}
	return v.(*T), true
}
