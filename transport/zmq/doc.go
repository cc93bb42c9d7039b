// Package zmq is the ZeroMQ backend of bankrpc, over libzmq through
// pebbe/zmq4: brokerless, synchronous request/reply. It is the only package
// of the module that needs cgo.
//
// A Server binds a ROUTER socket, so that both plain REQ peers (a C or Python
// client sending one envelope frame) and Clients can call it; it runs
// handlers in a bounded pool of goroutines and routes each reply back to its
// caller. A Client is one DEALER socket multiplexing any number of concurrent
// calls, matched by call id, resent after a per-attempt timeout in the Lazy
// Pirate way, and resent at once when a lost connection comes back.
//
// Frames on the wire ([call id, envelope] from a Client, [envelope] from a
// REQ socket; the server echoes every frame before the envelope) are
// specified in the ZeroMQ section of PROTOCOL.md.
//
// CURVE encryption and authentication are off by default. With
// ServerConfig.Curve the server only accepts clients that know its public
// key and, when AllowedClients is not empty, whose own public key is listed;
// the handler sees the client's key as transport.Peer.Identity.
//
// Every Server and Client has its own zmq context, terminated by Close, so
// they can be created and closed independently, many in one process.
//
// # Closing
//
// Server.Close during Serve is a graceful stop, as the
// transport.ServerTransport contract says: the server stops reading
// requests, waits for the handlers in flight (their ctx is not canceled),
// sends their replies, lets libzmq write them for up to 500ms, and closes
// the socket; Close returns after that, once the address is free again, and
// Serve returns nil. Close before Serve just releases the socket; canceling
// Serve's ctx stops it like Close. Client.Close fails the calls in flight
// with transport.ErrClosed without waiting for their replies and returns
// once the socket is closed; a request already written may still reach the
// server. Both are idempotent and safe from any goroutine.
package zmq
