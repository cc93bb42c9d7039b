package amqp

import "github.com/bankrpc/bankrpc/transport"

// The reasons of the events this backend reports (transport.Event.Reason):
// a small fixed set, as they are metric labels.
const (
	reasonConnectionLost = "connection lost"
	reasonUnconfirmed    = "unconfirmed"
	reasonNoCall         = "no call in flight"
	reasonPoison         = "delivery limit"
	reasonRefused        = "refused"
	reasonOversized      = "oversized"
	reasonForeignReplyTo = "foreign reply_to"
)

// emit reports an event of kind with reason to the sink k was given.
func (k *connector) emit(kind transport.EventKind, reason string) {
	k.events.Emit(transport.Event{Transport: "amqp", Kind: kind, Reason: reason})
}
