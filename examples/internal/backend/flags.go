package backend

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/bankrpc/bankrpc/examples/internal/cli"
)

// Kind names a backend, as --transport spells it.
type Kind string

// The backends bank-server and bank-client can use.
const (
	ZMQ  Kind = "zmq"
	AMQP Kind = "amqp"
)

// Default addresses, per backend, when --addr is not given.
const (
	DefaultZMQAddr  = "tcp://127.0.0.1:4040"
	DefaultAMQPAddr = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultBank     = "bank"
)

// Flags holds the values of the flags both programs take.
type Flags struct {
	Transport string
	Addr      string
	Bank      string
	Queue     string
	Timeout   time.Duration
}

// Register defines --transport, --addr, --bank and --timeout on fs, with
// timeoutUsage and defaultTimeout for --timeout, whose meaning differs
// between the server and the client.
func (f *Flags) Register(fs *flag.FlagSet, timeoutUsage string, defaultTimeout time.Duration) {
	fs.StringVar(&f.Transport, "transport", string(ZMQ), "the `backend`: zmq (ZeroMQ, brokerless) or amqp (RabbitMQ, durable queues);\na shorthand: an --addr with a scheme names the backend itself")
	fs.StringVar(&f.Addr, "addr", "", "the `address`: zmq://HOST:PORT (or a ZeroMQ endpoint, default "+DefaultZMQAddr+"),\nor amqp://USER:PASS@HOST:PORT/VHOST[?service=BANK] (default "+DefaultAMQPAddr+")")
	fs.StringVar(&f.Bank, "bank", DefaultBank, "the bank's `name`: names its data directory and its AMQP service queue")
	fs.StringVar(&f.Queue, "queue", "", "AMQP only: the `type` of the durable queues, classic (default) or quorum (replicated: for a\nRabbitMQ cluster, whose nodes --addr lists as amqp://USER:PASS@HOST1:PORT1,HOST2:PORT2/);\nan address's ?queue= says the same")
	fs.DurationVar(&f.Timeout, "timeout", defaultTimeout, timeoutUsage)
}

// Target is a checked choice of backend, address and bank.
type Target struct {
	Kind    Kind
	Addr    string
	Bank    string
	Queue   string // AMQP: "", "classic" or "quorum"
	Timeout time.Duration
}

// Resolve checks the flag values, after cli.Parse, and fills in the default
// address of the chosen backend unless --addr (or BANKRPC_ADDR) was set.
// Errors are *cli.UsageError.
func (f *Flags) Resolve(set map[string]bool) (Target, error) {
	t := Target{Addr: f.Addr, Bank: f.Bank, Queue: f.Queue, Timeout: f.Timeout}
	transport := f.Transport
	if set["addr"] {
		// An address in bankrpc's form names its backend, as bankrpc.Dial
		// reads it; --transport, when also given, must agree.
		scheme, _, _ := strings.Cut(t.Addr, "://")
		kind := map[string]string{"zmq": "zmq", "tcp": "zmq", "ipc": "zmq", "amqp": "amqp", "amqps": "amqp"}[strings.ToLower(scheme)]
		if kind != "" && !set["transport"] {
			transport = kind
		}
		var err error
		if t, err = fromAddress(t, set["bank"]); err != nil {
			return t, err
		}
	}
	switch strings.ToLower(transport) {
	case string(ZMQ):
		t.Kind = ZMQ
	case string(AMQP):
		t.Kind = AMQP
	case "inproc":
		return t, cli.Usagef("--transport inproc is refused: the inproc backend moves calls in memory inside one process " +
			"(tests, examples/quickstart), and bank-server and bank-client are separate processes; use --transport zmq or --transport amqp")
	default:
		return t, cli.Usagef("--transport %q is not a backend: give zmq or amqp", f.Transport)
	}
	if err := cli.CheckBankName(t.Bank); err != nil {
		return t, err
	}
	switch {
	case t.Queue != "" && t.Kind != AMQP:
		return t, cli.Usagef("--queue %q is for the amqp backend: ZeroMQ has no queues", t.Queue)
	case t.Queue != "" && t.Queue != "classic" && t.Queue != "quorum":
		return t, cli.Usagef("--queue %q is not a queue type: give classic or quorum", t.Queue)
	}
	if t.Timeout <= 0 {
		return t, cli.Usagef("--timeout %v is not accepted: give a positive duration such as 5s or 1m30s", t.Timeout)
	}
	if !set["addr"] {
		t.Addr = DefaultZMQAddr
		if t.Kind == AMQP {
			t.Addr = DefaultAMQPAddr
		}
		return t, nil
	}
	scheme, _, _ := strings.Cut(t.Addr, "://")
	switch t.Kind {
	case ZMQ:
		if scheme != "tcp" && scheme != "ipc" {
			return t, cli.Usagef("--addr %q is not a ZeroMQ endpoint: give tcp://HOST:PORT or ipc:///PATH (or pick --transport amqp for a broker URL)", Redact(t.Addr))
		}
	case AMQP:
		if scheme != "amqp" && scheme != "amqps" {
			return t, cli.Usagef("--addr %q is not an AMQP URL: give amqp://USER:PASSWORD@HOST:PORT/VHOST (or pick --transport zmq for a ZeroMQ endpoint)", Redact(t.Addr))
		}
	}
	return t, nil
}

// String describes the target for messages: "zmq tcp://127.0.0.1:4040" or
// `amqp amqp://guest:xxxxx@127.0.0.1:5672/ (bank "bank")`, never showing a
// password.
func (t Target) String() string {
	if t.Kind == AMQP {
		return fmt.Sprintf("amqp %s (bank %q)", Redact(t.Addr), t.Bank)
	}
	return fmt.Sprintf("%s %s", t.Kind, t.Addr)
}

// Redact hides the password of a URL; other addresses are returned as they
// are.
func Redact(addr string) string {
	u, err := url.Parse(addr)
	if err != nil || u.User == nil {
		return addr
	}
	return u.Redacted()
}

// fromAddress rewrites bankrpc's address forms into what the backends'
// constructors take: zmq://HOST:PORT is the endpoint tcp://HOST:PORT, and
// an AMQP URL's ?service=NAME names the bank (and must agree with an
// explicit --bank).
func fromAddress(t Target, bankSet bool) (Target, error) {
	if rest, ok := strings.CutPrefix(t.Addr, "zmq://"); ok {
		t.Addr = "tcp://" + rest
		return t, nil
	}
	u, err := url.Parse(t.Addr)
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
		return t, nil
	}
	q := u.Query()
	service := q.Get("service")
	if service == "" {
		return t, nil
	}
	if bankSet && service != t.Bank {
		return t, cli.Usagef("--addr names service %q but --bank is %q: give one of them", service, t.Bank)
	}
	t.Bank = service
	q.Del("service")
	u.RawQuery = q.Encode()
	t.Addr = u.String()
	return t, nil
}
