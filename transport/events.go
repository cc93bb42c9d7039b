package transport

// Event is something a backend did to keep calls going, or refused, that no
// call's outcome shows: a reconnection, a resent request, a redelivery, a
// request set aside as poison, a frame refused before it reached the
// runtime. Backends report events to Options.Events; observability packages
// count them (see metrics.TransportMetrics).
type Event struct {
	// Transport names the backend: "inproc", "zmq", "amqp".
	Transport string
	// Kind says what happened.
	Kind EventKind
	// Reason refines Kind from a small fixed set of the backend's words
	// (e.g. "oversized", "malformed" for EventRefusedFrame; "connection
	// lost" for EventReconnect), or is empty. It is a metric label: never a
	// message, an address or an id.
	Reason string
}

// EventKind is the kind of an Event.
type EventKind string

// The kinds of Event.
const (
	// EventReconnect: the backend re-established a connection or socket it
	// had lost (a broker connection, a ZeroMQ peer).
	EventReconnect EventKind = "reconnect"
	// EventResend: a client sent a request again, with the same call id (a
	// ZeroMQ retry, an AMQP republish after a reconnection).
	EventResend EventKind = "resend"
	// EventRedelivery: a server received a request that was delivered
	// before (AMQP's redelivered flag).
	EventRedelivery EventKind = "redelivery"
	// EventDeadLetter: a request was set aside without an answer, never to
	// be delivered again (AMQP's poison queue).
	EventDeadLetter EventKind = "dead_letter"
	// EventRefusedFrame: a frame was refused before it reached the runtime
	// (too large, not a frame of the protocol, from an unknown peer).
	EventRefusedFrame EventKind = "refused_frame"
	// EventDroppedReply: a client dropped a reply no call waits for (a late
	// or duplicate reply).
	EventDroppedReply EventKind = "dropped_reply"
)

// EventSink receives a backend's events. It is called from the backend's
// goroutines, concurrently, and must not block; a nil EventSink drops events.
type EventSink func(Event)

// Emit passes e to s, unless s is nil.
func (s EventSink) Emit(e Event) {
	if s != nil {
		s(e)
	}
}
