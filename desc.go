package bankrpc

import "context"

// SupportPackageIsVersion1 is referenced by every file protoc-gen-bankrpc
// generates. A generated file that refers to a version this runtime does not
// define fails to compile with this name in the message: regenerate the code
// or upgrade the module.
const SupportPackageIsVersion1 = true

// ClientConnInterface is what generated client stubs call. *Conn implements
// it; tests and middleware may provide their own.
type ClientConnInterface interface {
	// Invoke performs a unary call of method (a full method name such as
	// "/bank.v1.Bank/Deposit"), encoding args and decoding the reply into
	// reply. The error is nil or carries a Code (see CodeOf).
	Invoke(ctx context.Context, method string, args, reply any, opts ...CallOption) error
}

// ServiceRegistrar registers service implementations. *Server implements it.
type ServiceRegistrar interface {
	// RegisterService registers impl, which must implement desc.HandlerType.
	RegisterService(desc *ServiceDesc, impl any)
}

// MethodHandler is the generated function that decodes a request with dec and
// calls the implementation, through interceptor when it is not nil.
type MethodHandler func(srv any, ctx context.Context, dec func(any) error, interceptor UnaryServerInterceptor) (any, error)

// MethodDesc describes one unary method of a service.
type MethodDesc struct {
	MethodName string
	Handler    MethodHandler
}

// ServiceDesc describes a service; generated code declares one per service.
// It is plain data.
type ServiceDesc struct {
	// ServiceName is the fully qualified proto name, e.g. "bank.v1.Bank".
	ServiceName string
	// HandlerType is a nil pointer to the service's server interface, used to
	// check at registration that the implementation satisfies it.
	HandlerType any
	Methods     []MethodDesc
	// Metadata is the proto file the service is declared in.
	Metadata any
}
