package amqp

import (
	"context"
	"net/url"
	"slices"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
	"github.com/bankrpc/bankrpc/transport"
)

func init() {
	for _, scheme := range []string{"amqp", "amqps"} {
		transport.Register(transport.Scheme{Name: scheme, Dial: dialScheme, Listen: listenScheme})
	}
}

// The parameters of an address that bankrpc reads; the broker URL passed to
// amqp091-go is the address without them.
const (
	paramService = "service" // the service called or served: ClientConfig.Service, ServerConfig.Service
	paramClient  = "client"  // the stable client name: ClientConfig.ClientName (Dial only)
	paramQueue   = "queue"   // the queue type, classic or quorum: ClientConfig.QueueType, ServerConfig.QueueType
)

// brokerParams are the query parameters amqp091-go reads from a broker URL
// (RabbitMQ's URI query parameters); they are passed through.
var brokerParams = []string{"auth_mechanism", "cacertfile", "certfile", "channel_max", "connection_timeout", "heartbeat", "keyfile", "server_name_indication"}

// address is a parsed address: the broker URLs and bankrpc's parameters.
type address struct {
	brokers         []string // one per host, in the address's order
	service, client string
	queue           QueueType
}

// parseAddress splits raw, amqp[s]://user:password@host:port/vhost?PARAMS,
// into the broker URLs and bankrpc's parameters. The host part may list the
// nodes of a cluster, host1:port1,host2:port2,...: every node gets the same
// credentials, vhost and broker parameters, and the connection managers try
// them in turn (see connector). An unknown parameter is an error (a misspelt
// "service" must not go unnoticed); so is client= when forDial is false.
func parseAddress(raw string, forDial bool) (address, error) {
	a, err := parseOneAddress(raw, forDial)
	if err != nil {
		return a, err
	}
	u, err := url.Parse(a.brokers[0])
	if err != nil || !strings.Contains(u.Host, ",") {
		return a, nil // an error here was reported by parseOneAddress
	}
	hosts := strings.Split(u.Host, ",")
	a.brokers = make([]string, 0, len(hosts))
	for _, h := range hosts {
		if h == "" {
			return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: empty host in the list of broker nodes (give host:port,host:port)", u.Redacted())
		}
		one := *u
		one.Host = h
		if _, err := url.Parse(one.String()); err != nil {
			return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: broker node %q: %v", u.Redacted(), h, err)
		}
		a.brokers = append(a.brokers, one.String())
	}
	return a, nil
}

func parseOneAddress(raw string, forDial bool) (address, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return address{}, status.Errorf(status.InvalidArgument, "amqp: broker URL %s: %v", redactURL(raw), err)
	}
	scheme := u.Scheme
	if scheme != "amqp" && scheme != "amqps" {
		return address{}, status.Errorf(status.InvalidArgument, "amqp: broker URL %s: the scheme must be amqp or amqps", u.Redacted())
	}
	a := address{brokers: []string{raw}}
	if !strings.HasPrefix(raw, scheme+":") {
		a.brokers[0] = u.String() // amqp091-go knows the lower-case names only; url.Parse lowered it
	}
	if u.RawQuery == "" {
		return a, nil
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: query: %v", u.Redacted(), err)
	}
	kept := url.Values{}
	for k, vs := range q {
		ours := k == paramService || k == paramQueue || (k == paramClient && forDial)
		switch {
		case ours && (len(vs) != 1 || vs[0] == ""):
			return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: give %s= exactly once, with a value", u.Redacted(), k)
		case k == paramService:
			a.service = vs[0]
		case ours && k == paramClient:
			a.client = vs[0]
		case k == paramQueue:
			if a.queue, err = checkQueueType(QueueType(vs[0])); err != nil {
				return address{}, err
			}
		case slices.Contains(brokerParams, k):
			kept[k] = vs
		case k == paramClient:
			return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: client= names a client; a server's address takes service= and queue=", u.Redacted())
		default:
			return address{}, status.Errorf(status.InvalidArgument, "amqp: address %s: unknown parameter %q (bankrpc reads %s, %s and %s; the broker URL %s)",
				u.Redacted(), k, paramService, paramClient, paramQueue, strings.Join(brokerParams, ", "))
		}
	}
	u.RawQuery = kept.Encode()
	a.brokers[0] = u.String()
	return a, nil
}

// fromAddress applies the parameters of the address raw to c (they take
// precedence over c's fields) and returns the broker URLs.
func (c *ClientConfig) fromAddress(raw string) ([]string, error) {
	a, err := parseAddress(raw, true)
	if err != nil {
		return nil, err
	}
	if a.service != "" {
		c.Service = a.service
	}
	if a.client != "" {
		c.ClientName = a.client
	}
	if a.queue != "" {
		c.QueueType = a.queue
	}
	return a.brokers, nil
}

// fromAddress applies the parameters of the address raw to c (they take
// precedence over c's fields) and returns the broker URLs.
func (c *ServerConfig) fromAddress(raw string) ([]string, error) {
	a, err := parseAddress(raw, false)
	if err != nil {
		return nil, err
	}
	if a.service != "" {
		c.Service = a.service
	}
	if a.queue != "" {
		c.QueueType = a.queue
	}
	return a.brokers, nil
}

// brokerUser checks every broker URL and returns the user name of the
// first (the nodes of one address share it).
func brokerUser(brokers []string) (string, error) {
	var user string
	for i, b := range brokers {
		uri, err := amqp091.ParseURI(b)
		if err != nil {
			return "", status.Errorf(status.InvalidArgument, "amqp: broker URL %s: %v", redactURL(b), err)
		}
		if i == 0 {
			user = uri.Username
		}
	}
	return user, nil
}

// requireService refuses an address, given to bankrpc.Dial or
// bankrpc.Listen, that does not name its service.
func requireService(u *url.URL) error {
	if u.Query().Get(paramService) == "" {
		return transport.ErrorfAddr(u, "an AMQP address names its service: %s://USER:PASSWORD@HOST:PORT/VHOST?service=NAME", strings.ToLower(u.Scheme))
	}
	return nil
}

// dialScheme is the registry's Dial: the address's parameters, then a
// ClientConfig given with bankrpc.WithTransportConfig, then o.
func dialScheme(ctx context.Context, u *url.URL, o transport.Options) (transport.ClientTransport, error) {
	cfg, _, err := transport.ConfigOf[ClientConfig](o, u.Scheme, ServerConfig{})
	if err != nil {
		return nil, err
	}
	if err := requireService(u); err != nil {
		return nil, err
	}
	o.FillDefaults(&cfg.Logger, &cfg.MaxFrameSize, &cfg.Events)
	return dialContext(ctx, u.String(), cfg)
}

// listenScheme is the registry's Listen: the address's parameters, then a
// ServerConfig given with bankrpc.WithTransportConfig, then o.
func listenScheme(ctx context.Context, u *url.URL, o transport.Options) (transport.ServerTransport, error) {
	cfg, _, err := transport.ConfigOf[ServerConfig](o, u.Scheme, ClientConfig{})
	if err != nil {
		return nil, err
	}
	if err := requireService(u); err != nil {
		return nil, err
	}
	o.FillDefaults(&cfg.Logger, &cfg.MaxFrameSize, &cfg.Events)
	return listenContext(ctx, u.String(), cfg)
}
