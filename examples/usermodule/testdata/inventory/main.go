// Command inventory is what a bankrpc user writes in a module of their own: it
// serves the StockService and the PricingService of
// proto/inventory/v1/inventory.proto and calls both through the generated
// clients, over the transport that --addr names:
//
//	inventory --addr inproc://inventory
//	inventory --addr zmq://127.0.0.1:4040
//	inventory --addr 'amqp://guest:guest@127.0.0.1:5672/?service=inventory'
//
// examples/usermodule's test builds it in a fresh module and runs it over each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/bankrpc/bankrpc"
	// Each backend registers its URL scheme when imported.
	_ "github.com/bankrpc/bankrpc/transport/amqp"
	_ "github.com/bankrpc/bankrpc/transport/inproc"
	_ "github.com/bankrpc/bankrpc/transport/zmq"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "example.com/inventory/gen/inventory/v1"
)

func main() {
	addr := flag.String("addr", "inproc://inventory",
		"where to serve and call: inproc://NAME, zmq://HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST?service=NAME")
	timeout := flag.Duration("timeout", 30*time.Second, "the longest the whole run may take")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

// run serves both services on addr, calls them and writes what happens to out.
func run(ctx context.Context, addr string, out io.Writer) (err error) {
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}

	// The server: one bankrpc.Server carries both services.
	stock := &stockServer{onHand: map[string]int64{}}
	srv := bankrpc.NewServer()
	inventoryv1.RegisterStockServiceServer(srv, stock)
	inventoryv1.RegisterPricingServiceServer(srv, &pricingServer{stock: stock, cents: map[string]int64{}})

	// Listen before serving, so that the client below finds the server
	// (srv.ListenAndServe(ctx, addr) does both, for a server-only program).
	l, err := bankrpc.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", u.Redacted(), err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if e := srv.Shutdown(sctx); e != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", e)
		}
		if e := <-served; !errors.Is(e, bankrpc.ErrServerClosed) && err == nil {
			err = fmt.Errorf("serve: %w", e)
		}
		if err == nil {
			fmt.Fprintln(out, "server: shut down")
		}
	}()
	fmt.Fprintf(out, "serving inventory.v1.StockService and inventory.v1.PricingService over %s\n", u.Scheme)

	// The client: one Conn, both generated clients on it.
	conn, err := bankrpc.Dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	defer conn.Close()
	stockc := inventoryv1.NewStockServiceClient(conn)
	pricingc := inventoryv1.NewPricingServiceClient(conn)
	opt := bankrpc.WithTimeout(5 * time.Second)

	for _, n := range []int64{12, 3} {
		resp, err := stockc.AddStock(ctx, &inventoryv1.AddStockRequest{Sku: "apple", Count: n}, opt)
		if err != nil {
			return fmt.Errorf("AddStock: %w", err)
		}
		fmt.Fprintf(out, "stock: AddStock(apple, %d) -> %d on hand\n", n, resp.GetOnHand())
	}
	got, err := stockc.GetStock(ctx, &inventoryv1.GetStockRequest{Sku: "apple"}, opt)
	if err != nil {
		return fmt.Errorf("GetStock: %w", err)
	}
	fmt.Fprintf(out, "stock: GetStock(apple) -> %d on hand\n", got.GetOnHand())
	_, err = stockc.GetStock(ctx, &inventoryv1.GetStockRequest{Sku: "pear"}, opt)
	if err := refused(out, "stock: GetStock(pear)", err, bankrpc.NotFound); err != nil {
		return err
	}

	if _, err := pricingc.SetPrice(ctx, &inventoryv1.SetPriceRequest{Sku: "apple", Cents: 45}, opt); err != nil {
		return fmt.Errorf("SetPrice: %w", err)
	}
	fmt.Fprintln(out, "pricing: SetPrice(apple, 45 cents) -> ok")
	asked := time.Now()
	quote, err := pricingc.Quote(ctx, &inventoryv1.QuoteRequest{Sku: "apple", Count: 10}, opt)
	if err != nil {
		return fmt.Errorf("Quote: %w", err)
	}
	valid := quote.GetValidUntil().AsTime().Sub(asked).Round(time.Minute)
	fmt.Fprintf(out, "pricing: Quote(apple, 10) -> %d cents, valid for %s\n", quote.GetTotalCents(), valid)
	_, err = pricingc.Quote(ctx, &inventoryv1.QuoteRequest{Sku: "apple", Count: 100}, opt)
	return refused(out, "pricing: Quote(apple, 100)", err, bankrpc.FailedPrecondition)
}

// refused prints a refusal the program expects, and fails on any other outcome.
func refused(out io.Writer, call string, err error, want bankrpc.Code) error {
	if code := bankrpc.CodeOf(err); code != want {
		return fmt.Errorf("%s: got code %s (error %v), want %s", call, code, err, want)
	}
	fmt.Fprintf(out, "%s -> %s: %s\n", call, bankrpc.CodeOf(err), bankrpc.MessageOf(err))
	return nil
}

// stockServer implements inventoryv1.StockServiceServer. Backends may run
// handlers concurrently; mu guards onHand.
type stockServer struct {
	inventoryv1.UnimplementedStockServiceServer

	mu     sync.Mutex
	onHand map[string]int64
}

func (s *stockServer) AddStock(_ context.Context, req *inventoryv1.AddStockRequest) (*inventoryv1.AddStockResponse, error) {
	if req.GetCount() <= 0 {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "stock: add %d of %q: count must be positive", req.GetCount(), req.GetSku())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onHand[req.GetSku()] += req.GetCount()
	return &inventoryv1.AddStockResponse{OnHand: s.onHand[req.GetSku()]}, nil
}

func (s *stockServer) GetStock(_ context.Context, req *inventoryv1.GetStockRequest) (*inventoryv1.GetStockResponse, error) {
	n, ok := s.count(req.GetSku())
	if !ok {
		return nil, bankrpc.Errorf(bankrpc.NotFound, "stock: no SKU %q", req.GetSku())
	}
	return &inventoryv1.GetStockResponse{OnHand: n}, nil
}

func (s *stockServer) count(sku string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.onHand[sku]
	return n, ok
}

// pricingServer implements inventoryv1.PricingServiceServer; it reads the
// stock to refuse orders larger than it. mu guards cents.
type pricingServer struct {
	inventoryv1.UnimplementedPricingServiceServer

	stock *stockServer
	mu    sync.Mutex
	cents map[string]int64
}

func (p *pricingServer) SetPrice(_ context.Context, req *inventoryv1.SetPriceRequest) (*inventoryv1.SetPriceResponse, error) {
	if req.GetCents() <= 0 {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "pricing: price of %q: %d cents, must be positive", req.GetSku(), req.GetCents())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cents[req.GetSku()] = req.GetCents()
	return &inventoryv1.SetPriceResponse{}, nil
}

func (p *pricingServer) Quote(_ context.Context, req *inventoryv1.QuoteRequest) (*inventoryv1.QuoteResponse, error) {
	if req.GetCount() <= 0 {
		return nil, bankrpc.Errorf(bankrpc.InvalidArgument, "pricing: quote %d of %q: count must be positive", req.GetCount(), req.GetSku())
	}
	p.mu.Lock()
	unit, ok := p.cents[req.GetSku()]
	p.mu.Unlock()
	if !ok {
		return nil, bankrpc.Errorf(bankrpc.NotFound, "pricing: no price for %q", req.GetSku())
	}
	if onHand, _ := p.stock.count(req.GetSku()); req.GetCount() > onHand {
		return nil, bankrpc.Errorf(bankrpc.FailedPrecondition, "pricing: quote %d of %q: only %d on hand", req.GetCount(), req.GetSku(), onHand)
	}
	return &inventoryv1.QuoteResponse{
		TotalCents: unit * req.GetCount(),
		ValidUntil: timestamppb.New(time.Now().Add(10 * time.Minute)),
	}, nil
}
