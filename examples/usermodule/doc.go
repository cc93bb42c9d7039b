// Package usermodule holds a test that walks a new user's path outside this
// repository: in a fresh module (example.com/inventory, with a replace of
// github.com/bankrpc/bankrpc pointing at this checkout) it installs
// protoc-gen-bankrpc with `go get -tool`, generates code for a proto with two
// services with buf and again with protoc (the outputs must be the same),
// builds a program that serves and calls both services over the transport its
// --addr flag names, and runs it over inproc, ZeroMQ and, when
// BANKRPC_AMQP_URL is set, RabbitMQ.
//
// The module's sources are in testdata/inventory; README.md's "Your own
// service" section shows the same steps.
package usermodule
