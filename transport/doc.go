// Package transport is the bankrpc runtime: what generated stubs call, what
// backends implement, and the error model both share.
//
// The client side is Conn: generated clients call its Invoke, which encodes
// the request envelope (package codec), hands it to a backend's
// ClientTransport and decodes the reply. The server side is Server: generated
// Register functions add services to it, and backends feed it request frames
// through its HandleFrame method (the Handler interface).
//
// Backends (transport/inproc, transport/zmq, transport/amqp) move opaque
// frames and never see typed messages. Each implements two small interfaces:
// ClientTransport (RoundTrip, Close) and ServerTransport (Serve, Close).
// Optional abilities, such as carrying progress statuses, are separate
// interfaces found by type assertion (StatusCapable).
//
// Every error that crosses the runtime is an *Error carrying a Code with
// gRPC's names and numbers; CodeOf extracts it from any error.
//
// Call ids: each call carries an id, unique per logical call and kept by
// retries and redeliveries. Servers read it with CallIDFromContext to apply a
// mutating call at most once; WithCallID lets a restarted client ask again
// for the outcome of a call it lost track of.
package transport
