package bankrpc

import "context"

// UnaryInvoker performs a call; the last client interceptor's invoker sends
// it.
type UnaryInvoker func(ctx context.Context, method string, req, reply any, cc *Conn, opts ...CallOption) error

// UnaryClientInterceptor wraps the calls a Conn makes, as grpc-go's: it sees
// the full method name, the request, the reply to fill, the Conn and the call
// options; it may add metadata to ctx (AppendToOutgoingContext) and must call
// invoker to proceed.
type UnaryClientInterceptor func(ctx context.Context, method string, req, reply any, cc *Conn, invoker UnaryInvoker, opts ...CallOption) error

// UnaryServerInfo describes the call an interceptor intercepts.
type UnaryServerInfo struct {
	// Server is the service implementation.
	Server any
	// FullMethod is the full method name, e.g. "/bank.v1.Bank/Deposit".
	FullMethod string
}

// UnaryHandler calls the implementation of a method with a decoded request.
type UnaryHandler func(ctx context.Context, req any) (any, error)

// UnaryServerInterceptor wraps the call of every method on a Server; it must
// call handler to proceed. The caller's metadata is in ctx
// (FromIncomingContext), as are the call id and the peer.
type UnaryServerInterceptor func(ctx context.Context, req any, info *UnaryServerInfo, handler UnaryHandler) (any, error)

// chainClient folds is into one interceptor, the first outermost; nil for none.
func chainClient(is []UnaryClientInterceptor) UnaryClientInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, method string, req, reply any, cc *Conn, invoker UnaryInvoker, opts ...CallOption) error {
		return is[0](ctx, method, req, reply, cc, clientStep(is, 0, invoker), opts...)
	}
}

func clientStep(is []UnaryClientInterceptor, cur int, final UnaryInvoker) UnaryInvoker {
	if cur == len(is)-1 {
		return final
	}
	return func(ctx context.Context, method string, req, reply any, cc *Conn, opts ...CallOption) error {
		return is[cur+1](ctx, method, req, reply, cc, clientStep(is, cur+1, final), opts...)
	}
}

// chainServer folds is into one interceptor, the first outermost; nil for none.
func chainServer(is []UnaryServerInterceptor) UnaryServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, req any, info *UnaryServerInfo, handler UnaryHandler) (any, error) {
		return is[0](ctx, req, info, serverStep(is, 0, info, handler))
	}
}

func serverStep(is []UnaryServerInterceptor, cur int, info *UnaryServerInfo, final UnaryHandler) UnaryHandler {
	if cur == len(is)-1 {
		return final
	}
	return func(ctx context.Context, req any) (any, error) {
		return is[cur+1](ctx, req, info, serverStep(is, cur+1, info, final))
	}
}
