// Package banktest drives the bank-server and bank-client programs as a user
// would: its tests build both binaries once, start servers and clients as
// processes, send them signals (SIGTERM, SIGKILL) and check what they print,
// their exit statuses and the balances.
//
// The ZeroMQ tests always run. The RabbitMQ tests run when BANKRPC_AMQP_URL
// names a broker (make test sets it), fail loudly when it is set but the
// broker does not answer, and are skipped otherwise:
//
//	go test ./examples/banktest/
//	BANKRPC_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ go test ./examples/banktest/
//
// Every process a test starts is killed by its PID when the test ends, and
// TestMain fails when a process running one of the built binaries is left.
package banktest
