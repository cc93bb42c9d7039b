package health

import (
	"context"
	"sync"

	"github.com/bankrpc/bankrpc"
	healthv1 "github.com/bankrpc/bankrpc/gen/bankrpc/health/v1"
)

// Status is a serving status.
type Status = healthv1.ServingStatus

// The serving statuses, numbered as grpc.health.v1's.
const (
	Unknown        = healthv1.ServingStatus_SERVING_STATUS_UNKNOWN
	Serving        = healthv1.ServingStatus_SERVING_STATUS_SERVING
	NotServing     = healthv1.ServingStatus_SERVING_STATUS_NOT_SERVING
	ServiceUnknown = healthv1.ServingStatus_SERVING_STATUS_SERVICE_UNKNOWN
)

// Server is the bankrpc.health.v1.Health service, as grpc-go's health.Server:
// a table of serving statuses by service name that the program sets and
// clients read with Check. The empty name is the server as a whole, SERVING
// from the start. It is safe for concurrent use.
type Server struct {
	healthv1.UnimplementedHealthServer

	mu       sync.Mutex // guards the fields below
	statuses map[string]Status
	shutdown bool // statuses are NOT_SERVING and stay so until Resume
}

var _ healthv1.HealthServer = (*Server)(nil)

// NewServer returns a Server whose overall status ("") is SERVING.
func NewServer() *Server {
	return &Server{statuses: map[string]Status{"": Serving}}
}

// Register registers s on r, usually the *bankrpc.Server whose services it
// reports on: health is then served on every transport r serves.
func (s *Server) Register(r bankrpc.ServiceRegistrar) {
	healthv1.RegisterHealthServer(r, s)
}

// Check implements healthv1.HealthServer: the status of req's service, or
// NOT_FOUND for a service with none.
func (s *Server) Check(_ context.Context, req *healthv1.CheckRequest) (*healthv1.CheckResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[req.GetService()]
	if !ok {
		return nil, bankrpc.Errorf(bankrpc.NotFound, "health: unknown service %q", req.GetService())
	}
	return &healthv1.CheckResponse{Status: st}, nil
}

// SetServingStatus sets the status of service ("" for the server as a
// whole). After Shutdown it is ignored until Resume.
func (s *Server) SetServingStatus(service string, status Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.shutdown {
		s.statuses[service] = status
	}
}

// Shutdown sets every status to NOT_SERVING and ignores SetServingStatus
// from then on, until Resume: call it when the server starts to drain, so
// that health checks turn away new traffic while calls in flight finish.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = true
	for k := range s.statuses {
		s.statuses[k] = NotServing
	}
}

// Resume sets every status to SERVING and takes SetServingStatus again.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = false
	for k := range s.statuses {
		s.statuses[k] = Serving
	}
}
