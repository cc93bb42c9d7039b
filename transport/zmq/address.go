package zmq

import (
	"context"
	"net/url"
	"strings"

	"github.com/bankrpc/bankrpc/transport"
)

// Importing the package registers the schemes "zmq" (TCP) and "zmq+ipc"
// (Unix domain sockets) with bankrpc.Dial and bankrpc.Listen.
func init() {
	transport.Register(transport.Scheme{Name: schemeTCP, Dial: dialURL, Listen: listenURL})
	transport.Register(transport.Scheme{Name: schemeIPC, Dial: dialURL, Listen: listenURL})
}

const (
	schemeTCP = "zmq"
	schemeIPC = "zmq+ipc"
)

// dialURL opens a Client for bankrpc.Dial. A ClientConfig among the
// options configures it; its zero MaxFrameSize and nil Logger take the
// runtime's.
func dialURL(_ context.Context, u *url.URL, o transport.Options) (transport.ClientTransport, error) {
	cfg, _, err := transport.ConfigOf[ClientConfig](o, u.Scheme)
	if err != nil {
		return nil, err
	}
	endpoint, err := endpointOf(u, false)
	if err != nil {
		return nil, err
	}
	o.FillDefaults(&cfg.Logger, &cfg.MaxFrameSize, &cfg.Events)
	return Dial(endpoint, cfg)
}

// listenURL opens a Server for bankrpc.Listen, configured as dialURL does
// with a ServerConfig.
func listenURL(_ context.Context, u *url.URL, o transport.Options) (transport.ServerTransport, error) {
	cfg, _, err := transport.ConfigOf[ServerConfig](o, u.Scheme)
	if err != nil {
		return nil, err
	}
	endpoint, err := endpointOf(u, true)
	if err != nil {
		return nil, err
	}
	o.FillDefaults(&cfg.Logger, &cfg.MaxFrameSize, &cfg.Events)
	return Listen(endpoint, cfg)
}

// endpointOf turns a bankrpc address into a ZeroMQ endpoint:
// zmq://host:port is tcp://host:port (port 0 or * picks a free one, for
// Listen only) and zmq+ipc:///path is ipc:///path. Settings go in the
// typed configs, not in the address.
func endpointOf(u *url.URL, listen bool) (string, error) {
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", transport.ErrorfAddr(u, "a zmq address has no user, query or fragment; configure the backend with zmq.ClientConfig or zmq.ServerConfig (bankrpc.WithTransportConfig)")
	}
	switch strings.ToLower(u.Scheme) {
	case schemeIPC:
		path := u.Host + u.Path
		if path == "" {
			path = u.Opaque
		}
		if path == "" {
			return "", transport.ErrorfAddr(u, "want zmq+ipc:///path/to/socket")
		}
		return "ipc://" + path, nil
	default:
		if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
			return "", transport.ErrorfAddr(u, "want zmq://host:port")
		}
		port := u.Port()
		if u.Hostname() == "" || port == "" {
			return "", transport.ErrorfAddr(u, "want zmq://host:port")
		}
		if !listen && (port == "0" || port == "*") {
			return "", transport.ErrorfAddr(u, "port %s picks a free port when listening; a client needs the port the server got (zmq.Server.URL)", port)
		}
		return "tcp://" + u.Host, nil
	}
}

// addressOf is the bankrpc address of a bound ZeroMQ endpoint.
func addressOf(endpoint string) string {
	if rest, ok := strings.CutPrefix(endpoint, "tcp://"); ok {
		return schemeTCP + "://" + rest
	}
	if rest, ok := strings.CutPrefix(endpoint, "ipc://"); ok {
		return schemeIPC + "://" + rest
	}
	return endpoint
}
