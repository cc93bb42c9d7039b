// Package amqp is the RabbitMQ backend of bankrpc: persistent, asynchronous
// RPC over AMQP 0-9-1 (github.com/rabbitmq/amqp091-go) that survives restarts
// of the client, the server and the broker. It is the protocol of the
// persistent-RPC thesis bankrpc starts from, made safe for money; the wire
// specification is docs/protocol-amqp.md (the AMQP section of PROTOCOL.md).
//
// In short:
//
//   - A service has one durable queue, bankrpc.svc.<service>, bound to the
//     durable direct exchange bankrpc.requests with the service name as
//     routing key, and shared by all its replicas (Listen, Serve).
//   - A client has a durable result queue and a durable error queue, and a
//     transient, exclusive status queue, named after its stable client name
//     (Dial, ClientConfig.ClientName).
//   - Requests and replies are persistent and published with publisher
//     confirms; a request is acknowledged only once its reply is confirmed.
//     The call id is the correlation-id; clients drop duplicate replies.
//   - The deadline of a call sets the request's expiration; a server answers
//     DEADLINE_EXCEEDED for a request that waited past it.
//   - A request delivered ServerConfig.DeliveryLimit times without an answer
//     goes to the dead-letter queue bankrpc.svc.<service>.dead, and its caller
//     gets an INTERNAL error.
//   - Both halves reconnect by themselves (their own connection manager, not
//     amqp091-go's Config.Recovery), publish unconfirmed requests again with
//     the same call id, and never acknowledge a delivery on a channel other
//     than the one it came from.
//
// Client implements transport.ClientTransport and transport.StatusCapable;
// Server implements transport.ServerTransport.
//
// Server.Close returns at once, before Serve does: it only asks Serve to
// stop. Serve then cancels its consumer, finishes the requests already
// delivered, waits for their replies to be confirmed and acknowledged, and
// returns; wait for Serve's return to know that the server has stopped
// (unlike the zmq backend, whose Close waits). Client.Close returns once the
// client's goroutines have ended.
//
// The tests need a broker: set BANKRPC_AMQP_URL (make test sets it to
// amqp://guest:guest@127.0.0.1:5672/); without it they skip.
package amqp
