// Package logging writes one structured line (log/slog) per finished
// bankrpc call, on the server and on the client: method, code, duration,
// call id and peer, at Debug for successes and at Warn for the failures of
// the server (see DefaultLevel), including the calls a server refuses
// without running them, rate-limited.
//
// One option adds it to a Server or a Conn:
//
//	srv := bankrpc.NewServer(logging.Option(logger))
//	conn, err := bankrpc.Dial(ctx, addr, logging.Option(logger))
package logging
