package zmq

import (
	"log/slog"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc/transport"
)

// zapEndpoint is where libzmq sends ZAP (ZeroMQ Authentication Protocol,
// RFC 27) requests, in the context of the socket being connected to. Each
// Server has its own context, so each has its own handler and allow-list;
// pebbe/zmq4's AuthStart would share one global handler and context.
const zapEndpoint = "inproc://zeromq.zap.01"

// zapDomain is set on the server socket; the handler does not use it, but a
// domain makes libzmq consult the handler for every mechanism.
const zapDomain = "bankrpc"

// zapHandler answers the ZAP requests of one Server's CURVE handshakes. It
// belongs to the server's socket owner goroutine, which polls sock.
type zapHandler struct {
	sock    *zmq4.Socket // REP, bound at zapEndpoint
	allowed map[string]bool
	log     *slog.Logger
	events  transport.EventSink
}

// newZAPHandler binds the handler. It must be bound before the server
// socket, so no handshake ever happens without it.
func newZAPHandler(zctx *zmq4.Context, allowed []string, log *slog.Logger, events transport.EventSink) (*zapHandler, error) {
	sock, err := newSocket(zctx, zmq4.REP)
	if err != nil {
		return nil, err
	}
	if err := sock.Bind(zapEndpoint); err != nil {
		_ = sock.Close()
		return nil, endpointError("bind", zapEndpoint, err)
	}
	z := &zapHandler{sock: sock, log: log, events: events}
	if len(allowed) > 0 {
		z.allowed = make(map[string]bool, len(allowed))
		for _, k := range allowed {
			z.allowed[k] = true
		}
	}
	return z, nil
}

// serve answers every queued request.
func (z *zapHandler) serve() {
	for {
		req, err := z.sock.RecvMessageBytes(zmq4.DONTWAIT)
		if err != nil {
			return
		}
		if _, err := z.sock.SendMessageDontwait(z.decide(req)); err != nil {
			z.log.Error("zmq: send ZAP reply", "error", err)
		}
	}
}

// decide returns the reply frames for one request: version, request id,
// status code, status text, user id, metadata. The user id, the client's
// Z85 public key, becomes the "User-Id" property of the client's messages.
func (z *zapHandler) decide(req [][]byte) [][]byte {
	reply := func(reqID []byte, code, text, user string) [][]byte {
		return [][]byte{[]byte("1.0"), reqID, []byte(code), []byte(text), []byte(user), {}}
	}
	if len(req) < 6 || string(req[0]) != "1.0" {
		z.log.Error("zmq: malformed ZAP request", "frames", len(req))
		var id []byte
		if len(req) > 1 {
			id = req[1]
		}
		return reply(id, "500", "malformed ZAP request", "")
	}
	reqID, address, mechanism := req[1], string(req[3]), string(req[5])
	if mechanism != "CURVE" || len(req) != 7 || len(req[6]) != 32 {
		z.log.Warn("zmq: refused a client that does not use CURVE", "address", address, "mechanism", mechanism)
		emit(z.events, transport.EventRefusedFrame, reasonNoCurve)
		return reply(reqID, "400", "CURVE required", "")
	}
	key := zmq4.Z85encode(string(req[6]))
	if z.allowed != nil && !z.allowed[key] {
		z.log.Warn("zmq: refused a CURVE client key that is not allowed", "address", address, "key", key)
		emit(z.events, transport.EventRefusedFrame, reasonKeyNotAllowed)
		return reply(reqID, "400", "client key not allowed", "")
	}
	return reply(reqID, "200", "OK", key)
}
