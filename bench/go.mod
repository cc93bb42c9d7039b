module github.com/bankrpc/bankrpc/bench

go 1.26.0

replace github.com/bankrpc/bankrpc => ../

require (
	github.com/bankrpc/bankrpc v0.0.0-00010101000000-000000000000
	github.com/pebbe/zmq4 v1.4.0
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/stretchr/testify v1.12.1
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)
