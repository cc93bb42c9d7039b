package zmq

import "github.com/bankrpc/bankrpc/transport"

// The reasons of the events this backend reports (transport.Event.Reason):
// a small fixed set, as they are metric labels.
const (
	reasonConnectionLost = "connection lost"
	reasonMalformed      = "malformed"
	reasonNoCall         = "no call in flight"
	reasonEmpty          = "empty"
	reasonRouting        = "routing frames"
	reasonOversized      = "oversized"
	reasonNoCurve        = "curve required"
	reasonKeyNotAllowed  = "key not allowed"
)

// emit reports an event of kind with reason to sink.
func emit(sink transport.EventSink, kind transport.EventKind, reason string) {
	sink.Emit(transport.Event{Transport: "zmq", Kind: kind, Reason: reason})
}
