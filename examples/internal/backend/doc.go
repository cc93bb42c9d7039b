// Package backend turns the --transport, --addr, --bank and --timeout flags
// shared by bank-server and bank-client into a server or client half of the
// chosen bankrpc backend: ZeroMQ (transport/zmq) or RabbitMQ
// (transport/amqp). The in-memory inproc backend is refused: it only works
// inside one process.
package backend
