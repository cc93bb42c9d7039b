package amqp

import (
	"errors"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bankrpc/bankrpc/internal/status"
)

// RequestExchange is the durable direct exchange every request is published
// to, with the service name as routing key. Clients need write permission on
// it and on nothing else.
const RequestExchange = "bankrpc.requests"

// CancelExchange is the durable direct exchange cancel messages are published
// to, with the service name as routing key. Every server binds a queue of its
// own to it (see CancelQueue), so that a cancel reaches every replica of the
// service, among them the one running the call. Clients need write
// permission on it.
const CancelExchange = "bankrpc.cancels"

// Arguments of a server's cancel queue: a cancel is useful for seconds, and a
// server that stopped reading must not make the broker hoard them.
const (
	cancelQueueTTL    = time.Minute
	cancelQueueLength = 10000
)

// Message headers of the protocol (PROTOCOL.md, section AMQP).
const (
	// headerCode carries the canonical code of a plain-text error-queue
	// message, as a signed 32-bit integer.
	headerCode = "bankrpc-code"
	// headerDeadReason says why a request was moved to the dead-letter queue.
	headerDeadReason = "bankrpc-dead-reason"
	// headerUserID keeps the validated user-id of a request a server copied
	// (to the dead-letter queue, or back into the service queue counted): a
	// server cannot publish another user's id. Trusted only on a message
	// whose user-id is the server's own broker user (see identity).
	headerUserID = "bankrpc-user-id"
	// headerFailed counts the failed deliveries of a request in a classic
	// service queue (a long), on the copy a server publishes back (see
	// overLimit).
	headerFailed = "bankrpc-failed-deliveries"
	// headerDeadline is the absolute deadline of a request, in milliseconds
	// since the Unix epoch (a long), so that a server's counted copy gets the
	// expiration left.
	headerDeadline = "bankrpc-deadline"
)

// Content types and message types of the three envelopes and of error text.
const (
	contentProto = "application/x-protobuf"
	contentText  = "text/plain; charset=utf-8"
	typeRequest  = "bankrpc.wire.v1.Request"
	typeResult   = "bankrpc.wire.v1.Result"
	typeStatus   = "bankrpc.wire.v1.Status"
	typeError    = "bankrpc.error"
)

// ServiceQueue returns the name of the durable request queue of a service,
// shared by all its replicas.
func ServiceQueue(service string) string { return "bankrpc.svc." + service }

// DeadLetterQueue returns the name of the queue where a service's poison and
// unanswerable requests end up, for an operator to inspect.
func DeadLetterQueue(service string) string { return "bankrpc.svc." + service + ".dead" }

// CancelQueue returns the name of the transient, exclusive queue through
// which the server whose connection has the given id receives the cancel
// messages of a service.
func CancelQueue(service, id string) string { return "bankrpc.svc." + service + ".cancel." + id }

// ResultQueue returns the name of a client's durable result queue: the
// reply_to of its requests.
func ResultQueue(client string) string { return clientQueuePrefix + client + resultSuffix }

// ErrorQueue returns the name of a client's durable error queue (plain-text
// errors the protocol cannot express, such as an undecodable request).
func ErrorQueue(client string) string { return clientQueuePrefix + client + ".errors" }

// StatusQueue returns the name of a client's transient status queue.
func StatusQueue(client string) string { return clientQueuePrefix + client + ".status" }

const (
	clientQueuePrefix = "bankrpc.client."
	resultSuffix      = ".results"
)

// companionQueues derives the error and status queues from a request's
// reply_to, <prefix>.results; ok is false when reply_to does not follow the
// convention, and then errors and statuses cannot be sent.
func companionQueues(replyTo string) (errorQueue, statusQueue string, ok bool) {
	prefix, ok := strings.CutSuffix(replyTo, resultSuffix)
	if !ok || prefix == "" {
		return "", "", false
	}
	return prefix + ".errors", prefix + ".status", true
}

func queueTypeArgs(q QueueType) amqp091.Table {
	args := amqp091.Table{}
	if q == QueueQuorum {
		// Classic is the broker's default; naming it explicitly would make
		// the declaration differ from queues declared before by other tools.
		args["x-queue-type"] = string(QueueQuorum)
	}
	return args
}

// serviceQueueArgs returns the arguments of the service queue. Classic:
// dead-lettering goes back into the queue itself, a cycle in which the
// broker drops an expired request (servers never reject a classic request;
// the argument also keeps the declaration equal to that of queues made by
// earlier versions, which counted deliveries through it). Quorum: the broker
// counts deliveries (x-delivery-limit) and dead-letters into the dead-letter
// queue.
func serviceQueueArgs(cfg ServerConfig) amqp091.Table {
	args := queueTypeArgs(cfg.QueueType)
	args["x-dead-letter-exchange"] = ""
	switch cfg.QueueType {
	case QueueQuorum:
		args["x-dead-letter-routing-key"] = DeadLetterQueue(cfg.Service)
		if cfg.DeliveryLimit > 0 {
			args["x-delivery-limit"] = int64(cfg.DeliveryLimit)
		}
	default:
		args["x-dead-letter-routing-key"] = ServiceQueue(cfg.Service)
	}
	if cfg.SingleActiveConsumer {
		args["x-single-active-consumer"] = true
	}
	return args
}

// declareService declares the request and cancel exchanges, the service
// queue bound to the first, and the dead-letter queue.
func declareService(ch *amqp091.Channel, cfg ServerConfig) error {
	for _, x := range []string{RequestExchange, CancelExchange} {
		if err := ch.ExchangeDeclare(x, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
			return declareError("exchange", x, err)
		}
	}
	if _, err := ch.QueueDeclare(DeadLetterQueue(cfg.Service), true, false, false, false, queueTypeArgs(cfg.QueueType)); err != nil {
		return declareError("queue", DeadLetterQueue(cfg.Service), err)
	}
	q := ServiceQueue(cfg.Service)
	if _, err := ch.QueueDeclare(q, true, false, false, false, serviceQueueArgs(cfg)); err != nil {
		return declareError("queue", q, err)
	}
	if err := ch.QueueBind(q, cfg.Service, RequestExchange, false, nil); err != nil {
		return declareError("binding of queue", q, err)
	}
	return nil
}

// declareCancelQueue declares a server's cancel queue, named after id, and
// binds it to the cancel exchange with the service name as routing key. It
// is exclusive: the broker deletes it, and the cancels in it, with the
// connection.
func declareCancelQueue(ch *amqp091.Channel, service, id string) (string, error) {
	q := CancelQueue(service, id)
	args := amqp091.Table{
		"x-message-ttl": cancelQueueTTL.Milliseconds(),
		"x-max-length":  int64(cancelQueueLength),
	}
	if _, err := ch.QueueDeclare(q, false, true, true, false, args); err != nil {
		return "", declareError("queue", q, err)
	}
	if err := ch.QueueBind(q, service, CancelExchange, false, nil); err != nil {
		return "", declareError("binding of queue", q, err)
	}
	return q, nil
}

// declareClient checks that the service's exchanges and queue exist (a
// passive declaration needs no permission) and declares the client's queues.
// A cancel published to a missing exchange would close the channel, so the
// cancel exchange is checked too.
func declareClient(ch *amqp091.Channel, cfg ClientConfig) error {
	for _, x := range []string{RequestExchange, CancelExchange} {
		if err := ch.ExchangeDeclarePassive(x, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
			return declareError("exchange", x, err)
		}
	}
	if _, err := ch.QueueDeclarePassive(ServiceQueue(cfg.Service), true, false, false, false, nil); err != nil {
		return declareError("queue", ServiceQueue(cfg.Service), err)
	}
	durable := queueTypeArgs(cfg.QueueType)
	if cfg.QueueExpires > 0 {
		durable["x-expires"] = cfg.QueueExpires.Milliseconds()
	}
	for _, q := range []string{ResultQueue(cfg.ClientName), ErrorQueue(cfg.ClientName)} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, durable); err != nil {
			return declareError("queue", q, err)
		}
	}
	// Exclusive: it disappears with the connection, and it makes a second
	// live client with the same name fail instead of stealing replies.
	if _, err := ch.QueueDeclare(StatusQueue(cfg.ClientName), false, true, true, false, nil); err != nil {
		return declareError("queue", StatusQueue(cfg.ClientName), err)
	}
	return nil
}

// declareError explains the broker errors a declaration meets in practice.
func declareError(kind, name string, err error) error {
	var ae *amqp091.Error
	if !errors.As(err, &ae) {
		return status.Errorf(status.Unavailable, "amqp: declare %s %s: %v", kind, name, err)
	}
	switch ae.Code {
	case amqp091.NotFound:
		return status.Errorf(status.FailedPrecondition, "amqp: %s %s does not exist: start a server of the service once, it declares the service topology (%s)", kind, name, ae.Reason)
	case amqp091.ResourceLocked:
		return &nameInUseError{err: status.Errorf(status.FailedPrecondition, "amqp: %s %s is held by another connection: another live client uses this client name (%s)", kind, name, ae.Reason)}
	case amqp091.PreconditionFailed:
		return status.Errorf(status.FailedPrecondition, "amqp: %s %s exists with other arguments (queue type, delivery limit, single active consumer or expiry differ): %s", kind, name, ae.Reason)
	case amqp091.AccessRefused:
		return status.Errorf(status.PermissionDenied, "amqp: declare %s %s: %s", kind, name, ae.Reason)
	}
	return status.Errorf(status.Unavailable, "amqp: declare %s %s: %s", kind, name, ae.Reason)
}

// nameInUseError reports that a client name's exclusive status queue belongs
// to another connection. It unwraps to a *transport.Error.
type nameInUseError struct{ err *status.Error }

func (e *nameInUseError) Error() string { return e.err.Error() }
func (e *nameInUseError) Unwrap() error { return e.err }

// intHeader reads an integer header the broker set (x-delivery-count),
// whatever integer type the broker chose.
func intHeader(h amqp091.Table, key string) (int64, bool) {
	switch v := h[key].(type) {
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int16:
		return int64(v), true
	case int8:
		return int64(v), true
	case int:
		return int64(v), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	}
	return 0, false
}

// expiration formats the time left until deadline as a per-message TTL in
// milliseconds, at least 1; "" without deadline.
func expiration(deadline time.Time, now time.Time) string {
	if deadline.IsZero() {
		return ""
	}
	ms := deadline.Sub(now).Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}
