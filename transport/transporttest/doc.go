// Package transporttest is the conformance suite every bankrpc backend runs.
//
// A backend's test file is a few lines:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Features{ConcurrentHandlers: true},
//			func(t *testing.T) transporttest.Endpoint {
//				l := inproc.NewListener()
//				return transporttest.Endpoint{
//					Server: l,
//					Dial:   func(t *testing.T) transport.ClientTransport { return l.Dial() },
//				}
//			})
//	}
//
// The suite serves bankrpc.test.v1.TestService (proto/bankrpc/test/v1) on
// the endpoint and calls it through the generated client: round trips, 64×100
// concurrent calls matched to their replies, error codes and messages end to
// end, deadlines, cancellation, unknown methods, panics, oversized and
// garbage frames, Close, and the features a backend promises in Features.
// Every subtest checks for goroutine leaks with goleak.
package transporttest
