package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/bankrpc/bankrpc/internal/status"
)

// Options is what bankrpc.Dial and bankrpc.Listen hand to a backend besides
// the address.
type Options struct {
	// Logger receives the backend's reports; never nil.
	Logger *slog.Logger
	// MaxFrameSize is the largest envelope the runtime sends or accepts; a
	// backend bounds its messages by it plus its own overhead.
	MaxFrameSize int
	// Configs are backend-specific configuration values given with
	// bankrpc.WithTransportConfig, such as a zmq.ClientConfig. A backend
	// takes the values of its own types (see ConfigOf) and refuses the
	// others with an error naming them.
	Configs []any
	// Events receives what the backend does to keep calls going, or
	// refuses, that no call's outcome shows (see Event); nil drops them.
	Events EventSink
}

// FillDefaults sets the settings a backend's own config left at their zero
// value from o: the logger, the frame limit and the event sink. A config
// given with bankrpc.WithTransportConfig wins over the runtime's options.
func (o Options) FillDefaults(logger **slog.Logger, maxFrameSize *int, events *EventSink) {
	if *logger == nil {
		*logger = o.Logger
	}
	if *maxFrameSize <= 0 {
		*maxFrameSize = o.MaxFrameSize
	}
	if *events == nil {
		*events = o.Events
	}
}

// ConfigOf returns the last value of type T in o.Configs, and whether there
// was one; it fails when o.Configs holds a value of a type not in also and
// not T, so that a config meant for another backend is not silently ignored.
func ConfigOf[T any](o Options, scheme string, also ...any) (T, bool, error) {
	var (
		v     T
		found bool
	)
	for _, c := range o.Configs {
		if t, ok := c.(T); ok {
			v, found = t, true
			continue
		}
		ok := false
		for _, a := range also {
			if reflect.TypeOf(c) == reflect.TypeOf(a) {
				ok = true
			}
		}
		if !ok {
			return v, false, status.Errorf(status.InvalidArgument, "bankrpc: a %T does not configure a %s:// transport", c, scheme)
		}
	}
	return v, found, nil
}

// DialFunc opens the client half of a backend for addr, a URL with the
// backend's scheme. It must not block past ctx.
type DialFunc func(ctx context.Context, addr *url.URL, o Options) (ClientTransport, error)

// ListenFunc opens the server half of a backend for addr. It must not block
// past ctx; requests may queue until Serve is called.
type ListenFunc func(ctx context.Context, addr *url.URL, o Options) (ServerTransport, error)

// Scheme is a backend's entry in the registry.
type Scheme struct {
	// Name is the URL scheme, e.g. "zmq". A backend may register several
	// (amqp and amqps).
	Name   string
	Dial   DialFunc
	Listen ListenFunc
}

var registry struct {
	sync.RWMutex
	schemes map[string]Scheme
}

// Register makes a backend available under s.Name to bankrpc.Dial and
// bankrpc.Listen. Backends call it from an init function, as database/sql
// drivers do, so that importing the backend's package is enough. It panics
// when the name is empty or taken, or a function is nil.
func Register(s Scheme) {
	if s.Name == "" || s.Dial == nil || s.Listen == nil {
		panic("transport: Register of an incomplete scheme " + s.Name)
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.schemes == nil {
		registry.schemes = make(map[string]Scheme)
	}
	if _, dup := registry.schemes[s.Name]; dup {
		panic("transport: Register called twice for scheme " + s.Name)
	}
	registry.schemes[s.Name] = s
}

// Schemes returns the registered scheme names, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.schemes))
	for n := range registry.schemes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup parses addr and returns it with the backend registered for its
// scheme. The error names the registered schemes when there is none, and
// reminds that a backend registers itself when its package is imported.
func Lookup(addr string) (*url.URL, Scheme, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, Scheme{}, status.Errorf(status.InvalidArgument, "bankrpc: address %q: %v", addr, err)
	}
	if u.Scheme == "" {
		return nil, Scheme{}, status.Errorf(status.InvalidArgument, "bankrpc: address %q has no scheme; want one of %s", addr, schemeList())
	}
	registry.RLock()
	s, ok := registry.schemes[strings.ToLower(u.Scheme)]
	registry.RUnlock()
	if !ok {
		return nil, Scheme{}, status.Errorf(status.InvalidArgument, "bankrpc: no transport registered for %s:// (address %q); registered: %s (import a backend, e.g. _ \"github.com/bankrpc/bankrpc/transport/zmq\", to register it)", u.Scheme, addr, schemeList())
	}
	return u, s, nil
}

func schemeList() string {
	names := Schemes()
	if len(names) == 0 {
		return "none"
	}
	for i, n := range names {
		names[i] = n + "://"
	}
	return strings.Join(names, ", ")
}

// ErrorfAddr is a helper for backends: an InvalidArgument error about addr.
func ErrorfAddr(addr *url.URL, format string, args ...any) error {
	return status.Errorf(status.InvalidArgument, "bankrpc: address %q: %s", addr.Redacted(), fmt.Sprintf(format, args...))
}
