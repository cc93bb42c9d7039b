// Package zmq is the ZeroMQ backend of bankrpc, over libzmq through
// pebbe/zmq4: brokerless, synchronous request/reply. It is the only package
// of the module that needs cgo.
//
// Importing the package registers the address schemes "zmq" and "zmq+ipc"
// with bankrpc.Dial and bankrpc.Listen: "zmq://host:port" is the ZeroMQ
// endpoint tcp://host:port (port 0 picks a free one when listening; see
// Server.URL) and "zmq+ipc:///path" is ipc:///path. A ClientConfig (for
// Dial) or a ServerConfig (for Listen), given with
// bankrpc.WithTransportConfig, configures the backend; the runtime's
// WithLogger and frame size limit apply when the config leaves them unset.
// Listen and Dial open the halves directly.
//
// A Server binds a ROUTER socket, so that both plain REQ peers (a C or Python
// client sending one envelope frame) and Clients can call it; it runs
// handlers in a bounded pool of goroutines and routes each reply back to its
// caller. A Client is one DEALER socket multiplexing any number of
// concurrent calls, matched by call id.
//
// # Calls, dead servers and cancellation
//
// A Client writes a call once and waits for its reply as long as the server
// is alive, with or without a deadline: there is no resend on a timer, so a
// slow handler runs once. ZMTP heartbeats tell a live server, however busy,
// from a frozen one. When the connection drops, the calls in flight are
// written again as soon as it is back, so a server restart is survived; when
// it has been down for ClientConfig.DeadAfter (5s by default), the calls
// waiting fail with UNAVAILABLE naming the endpoint and the reason. A caller
// that gives up (its ctx ends, or the Client is closed) sends the server a
// cancel message, and the server's Handler cancels the handler's ctx.
//
// # Several servers
//
// A client may list several servers of one service, replicas answering the
// same methods: "zmq://host1:port1,host2:port2,host3:port3" (bankrpc.Dial),
// or DialMulti with their endpoints. A MultiClient keeps one Client per
// server and sends each call to one whose connection is up, ranked by call
// id (a repeat with the same call id goes to the same server while the set
// of live servers stays the same); a call whose server has been unreachable
// for DeadAfter is sent again, same call id, to the next live one. Each
// server's reply cache is its own, so a call re-sent after its server died
// may run on two servers, once on each; no server runs it twice. Servers
// always listen on one address each. See MultiClient and docs/RELIABILITY.md.
//
// Frames on the wire ([call id, envelope] from a Client, [envelope] from a
// REQ socket; the server echoes every frame before the envelope) are
// specified in docs/protocol-zmq.md.
//
// CURVE encryption and authentication are off by default. With
// ServerConfig.Curve the server only accepts clients that know its public
// key and, when AllowedClients is not empty, whose own public key is listed;
// the handler sees the client's key as transport.Peer.Identity.
//
// Every Server and Client has its own zmq context, terminated by Close, so
// they can be created and closed independently, many in one process.
//
// # Stopping
//
// Server.Shutdown stops taking requests (those that arrive meanwhile are
// left unanswered, and a Client sends them again to the server that listens
// next), waits until every handler in flight has returned and its reply is
// written, and closes the socket, letting libzmq write the last replies for
// up to 500ms; when its ctx ends first it closes at once and returns the
// ctx's error. Server.Close closes at once without waiting for handlers:
// their replies are dropped. Serve returns nil after either. Client.Close
// fails the calls in flight with transport.ErrClosed, sends their cancel
// messages, and returns once the socket is closed. All are idempotent and
// safe from any goroutine.
package zmq
