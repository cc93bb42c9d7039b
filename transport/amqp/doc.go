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
//   - A caller's cancel is a transient message to the durable direct
//     exchange bankrpc.cancels, routed by service name to a transient,
//     exclusive queue of every server connection: it reaches the replica
//     that runs the call, which cancels the handler's ctx.
//   - The deadline of a call sets the request's expiration; a server answers
//     DEADLINE_EXCEEDED for a request that waited past it.
//   - A request delivered ServerConfig.DeliveryLimit times without an answer
//     goes to the dead-letter queue bankrpc.svc.<service>.dead, and its caller
//     gets an INTERNAL error.
//   - A publish the broker refuses (basic.nack) replaces the publishing
//     channel by a fresh one and is published again with back-off: a
//     refused reply is never given back to the queue, so it neither runs
//     again nor counts toward the delivery limit.
//   - Both halves reconnect by themselves (their own connection manager, not
//     amqp091-go's Config.Recovery), publish unconfirmed requests again with
//     the same call id, and never acknowledge a delivery on a channel other
//     than the one it came from.
//
// Client implements transport.ClientTransport and transport.StatusCapable;
// Server implements transport.ServerTransport.
//
// # Addresses
//
// Importing the package registers the schemes amqp and amqps with
// bankrpc.Dial and bankrpc.Listen. An address is the broker URL with
// bankrpc's parameters:
//
//	amqp://USER:PASSWORD@HOST:PORT/VHOST?service=NAME[&client=NAME][&queue=classic|quorum]
//
// The host part may list the nodes of a RabbitMQ cluster,
// HOST1:PORT1,HOST2:PORT2,...: they share the credentials, vhost and
// parameters; each connection goes to the first node that answers and a lost
// one is reopened on the next node of the list. With queue=quorum the
// service, dead-letter, result and error queues are replicated quorum
// queues (docs/cluster.md).
//
// service is required (ClientConfig.Service, ServerConfig.Service); client is
// the stable client name (ClientConfig.ClientName, Dial only); queue the
// queue type (QueueType). The broker's own URL parameters (heartbeat,
// certfile, ...) pass through to amqp091-go; any other parameter is an
// error. A ClientConfig or ServerConfig given with bankrpc.WithTransportConfig
// configures everything else; where both give a value, the address wins.
// The config's Logger and MaxFrameSize, when unset, are the runtime's
// (bankrpc.WithLogger, the frame size limit). Listen and Dial, the direct
// constructors, take the same addresses and configs.
//
// # Stopping
//
// Server.Shutdown cancels the consumer (requests the broker had already sent
// but no handler runs are given back to the queue), waits until every call
// in flight is answered, its reply confirmed and its request acknowledged,
// and closes; when its ctx ends first it closes at once, as Close, and
// returns ctx's error. Server.Close closes the connection at once: the broker
// delivers the unacknowledged requests again, to another replica or the next
// server, and the replies of handlers still running are dropped. Close does
// not wait for handlers; it returns once the server's own goroutines have
// ended, and Serve then returns nil. A request the handler does not serve
// (transport.ErrNotServed) is given back to the queue. Client.Close returns
// once the client's goroutines have ended; it does not cancel the calls in
// flight, whose replies wait in the durable result queue.
//
// The tests need a broker: set BANKRPC_AMQP_URL (make test sets it to
// amqp://guest:guest@127.0.0.1:5672/); without it they skip.
package amqp
