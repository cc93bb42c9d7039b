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
package zmq
