// Package zmqbench measures the ZeroMQ backend against raw pebbe/zmq4 in the
// same process and run, so that a benchmark report can print ratios rather
// than absolute figures that vary between machines.
//
// Both measurements are closed loops on 127.0.0.1 (internal/loadgen): each
// caller sends its next request when the previous reply arrived.
//
//   - RunRaw: a REQ socket per caller, a ROUTER echo server in its own
//     goroutine, a 16 byte payload (the size of an encoded Deposit request).
//   - RunBankrpc: generated bank.v1 stubs calling Deposit through one shared
//     zmq.Client (a multiplexed DEALER) on a zmq.Server running a trivial
//     in-memory bank.
package zmqbench

import (
	"context"
	"errors"
	"sync"
	"time"

	zmq4 "github.com/pebbe/zmq4"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/internal/calltrace"
	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/zmq"
)

// PayloadSize is the size of the raw benchmark's request, that of an encoded
// Deposit request.
const PayloadSize = 16

// Result is one measurement: the number of calls, the rate, and the
// latency percentiles, mean and standard deviation.
type Result = loadgen.Result

// RunRaw measures raw pebbe/zmq4 REQ/REP for duration d with the given
// number of callers.
//
// The server and the callers have a zmq context each, as the two processes
// of a deployment have (and as a zmq.Server and a zmq.Client have): each
// side has its own I/O thread.
func RunRaw(ctx context.Context, callers int, d time.Duration) (Result, error) {
	return runRaw(ctx, callers, d, direct)
}

// direct runs a call as it is; the segment measurement wraps calls instead
// (see Segments).
func direct(call func() error) error { return call() }

func runRaw(ctx context.Context, callers int, d time.Duration, around func(func() error) error) (Result, error) {
	zctx, err := zmq4.NewContext()
	if err != nil {
		return Result{}, err
	}
	cctx, err := zmq4.NewContext()
	if err != nil {
		return Result{}, errors.Join(err, zctx.Term())
	}
	closeAll := func(socks ...*zmq4.Socket) error {
		var errs []error
		for _, s := range socks {
			errs = append(errs, s.Close())
		}
		return errors.Join(append(errs, zctx.Term(), cctx.Term())...)
	}
	router, err := zctx.NewSocket(zmq4.ROUTER)
	if err != nil {
		return Result{}, errors.Join(err, closeAll())
	}
	if err := errors.Join(router.SetLinger(0), router.Bind("tcp://127.0.0.1:*")); err != nil {
		return Result{}, errors.Join(err, closeAll(router))
	}
	addr, err := router.GetLastEndpoint()
	if err != nil {
		return Result{}, errors.Join(err, closeAll(router))
	}
	// The echo server stops when a control PAIR tells it to.
	ctlIn, err := zctx.NewSocket(zmq4.PAIR)
	if err != nil {
		return Result{}, errors.Join(err, closeAll(router))
	}
	ctlOut, err := zctx.NewSocket(zmq4.PAIR)
	if err != nil {
		return Result{}, errors.Join(err, closeAll(router, ctlIn))
	}
	if err := errors.Join(ctlIn.Bind("inproc://stop"), ctlOut.Connect("inproc://stop")); err != nil {
		return Result{}, errors.Join(err, closeAll(router, ctlIn, ctlOut))
	}
	echoDone := make(chan error, 1)
	go func() { echoDone <- echo(router, ctlIn) }()

	socks := make([]*zmq4.Socket, callers)
	for i := range socks {
		s, err := cctx.NewSocket(zmq4.REQ)
		if err == nil {
			// A bound on each receive, so that a lost reply fails the run.
			err = errors.Join(s.SetLinger(0), s.SetRcvtimeo(10*time.Second), s.Connect(addr))
		}
		if err != nil {
			_, _ = ctlOut.Send("stop", 0)
			<-echoDone
			return Result{}, errors.Join(err, closeAll(append(socks[:i:i], router, ctlIn, ctlOut)...))
		}
		socks[i] = s
	}
	payload := make([]byte, PayloadSize)
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(_ context.Context, i int) error {
		return around(func() error {
			if _, err := socks[i].SendBytes(payload, 0); err != nil {
				return err
			}
			calltrace.Mark(calltrace.ClientSent)
			if _, err := socks[i].RecvBytes(0); err != nil {
				return err
			}
			calltrace.Mark(calltrace.ClientReceived)
			return nil
		})
	})
	_, stopErr := ctlOut.Send("stop", 0)
	echoErr := <-echoDone
	return res, errors.Join(runErr, stopErr, echoErr, closeAll(append(socks, router, ctlIn, ctlOut)...))
}

// echo sends every message back on router until ctl is readable.
func echo(router, ctl *zmq4.Socket) error {
	poller := zmq4.NewPoller()
	poller.Add(router, zmq4.POLLIN)
	poller.Add(ctl, zmq4.POLLIN)
	for {
		polled, err := poller.Poll(-1)
		if err != nil {
			return err
		}
		for _, p := range polled {
			if p.Socket == ctl {
				_, err := ctl.Recv(0)
				return err
			}
			msg, err := router.RecvMessageBytes(0)
			if err != nil {
				return err
			}
			calltrace.Mark(calltrace.ServerReceived)
			if _, err := router.SendMessage(msg); err != nil {
				return err
			}
			calltrace.Mark(calltrace.ServerSent)
		}
	}
}

// bank is the trivial in-memory BankServer the bankrpc measurement calls.
type bank struct {
	bankv1.UnimplementedBankServer
	mu       sync.Mutex
	balances map[int32]int64
}

func (b *bank) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.balances[in.GetAccountId()] += in.GetAmount()
	return &bankv1.DepositResponse{Balance: b.balances[in.GetAccountId()]}, nil
}

// RunBankrpc measures Deposit calls through the generated stubs over the
// ZeroMQ backend for duration d with the given number of callers sharing
// one connection.
func RunBankrpc(ctx context.Context, callers int, d time.Duration) (Result, error) {
	return runBankrpc(ctx, callers, d, direct)
}

func runBankrpc(ctx context.Context, callers int, d time.Duration, around func(func() error) error) (Result, error) {
	ln, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	if err != nil {
		return Result{}, err
	}
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, &bank{balances: make(map[int32]int64)})
	served := make(chan error, 1)
	go func() { served <- ln.Serve(srv) }()
	cl, err := zmq.Dial(ln.Addr(), zmq.ClientConfig{})
	if err != nil {
		return Result{}, errors.Join(err, ln.Close(), <-served)
	}
	conn := bankrpc.NewConn(cl, bankrpc.WithDefaultTimeout(30*time.Second))
	stub := bankv1.NewBankClient(conn)
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, i int) error {
		return around(func() error {
			_, err := stub.Deposit(ctx, &bankv1.DepositRequest{AccountId: int32(i + 1), Amount: 100})
			return err
		})
	})
	return res, errors.Join(runErr, conn.Close(), ln.Close(), <-served)
}
