package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/bank"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/internal/loadgen"
	"github.com/bankrpc/bankrpc/transport/amqp/amqpbench"
	"github.com/bankrpc/bankrpc/transport/zmq"
	"github.com/bankrpc/bankrpc/transport/zmq/zmqbench"
)

// Scenario keys, in the order of the report's rows.
const (
	TCP       = "tcp"
	GRPC      = "grpc"
	ZMQRaw    = "zmq-raw"
	ZMQ       = "zmq"
	ZMQBank   = "zmq-bank"
	AMQPRaw   = "amqp-raw"
	AMQP      = "amqp"
	thesisKey = "thesis"
)

// Scenario is one row of the table: a closed loop of calls at a number of
// callers, set up and torn down by Run.
type Scenario struct {
	Key    string
	Name   string // the row's title
	Broker bool   // needs the RabbitMQ broker
	// Run measures for duration d with the given callers (warm-up and
	// observer come through ctx, see loadgen).
	Run func(ctx context.Context, env *Env, callers int, d time.Duration) (loadgen.Result, error)
}

// Env is what scenarios need from the run.
type Env struct {
	AMQPURL string // the broker; "" when the amqp rows are skipped
	TempDir string // where the durable bank keeps its files
}

// Scenarios returns every row, in the report's order.
func Scenarios() []Scenario {
	return []Scenario{
		{Key: TCP, Name: "raw TCP echo (length prefix + protobuf)", Run: runTCP},
		{Key: GRPC, Name: "grpc-go unary, one ClientConn", Run: runGRPC},
		{Key: ZMQRaw, Name: "raw pebbe/zmq4 REQ per caller + ROUTER", Run: func(ctx context.Context, _ *Env, n int, d time.Duration) (loadgen.Result, error) {
			return zmqbench.RunRaw(ctx, n, d)
		}},
		{Key: ZMQ, Name: "bankrpc over zmq, in-memory handler", Run: func(ctx context.Context, _ *Env, n int, d time.Duration) (loadgen.Result, error) {
			return zmqbench.RunBankrpc(ctx, n, d)
		}},
		{Key: ZMQBank, Name: "bankrpc over zmq, the real durable bank", Run: runZMQBank},
		{Key: AMQPRaw, Name: "raw amqp091-go durable (persistent, confirms, ack after reply)", Broker: true, Run: func(ctx context.Context, env *Env, n int, d time.Duration) (loadgen.Result, error) {
			return amqpbench.RunRawDurable(ctx, env.AMQPURL, n, d)
		}},
		{Key: AMQP, Name: "bankrpc over amqp", Broker: true, Run: func(ctx context.Context, env *Env, n int, d time.Duration) (loadgen.Result, error) {
			return amqpbench.RunBankrpc(ctx, env.AMQPURL, n, d)
		}},
	}
}

// memBank is the trivial in-memory Deposit handler of the raw TCP and
// grpc-go rows, the same as transport/zmq/zmqbench's: a map under a mutex.
type memBank struct {
	bankv1.UnimplementedBankServer
	mu       sync.Mutex
	balances map[int32]int64
}

func newMemBank() *memBank { return &memBank{balances: make(map[int32]int64)} }

func (b *memBank) Deposit(_ context.Context, in *bankv1.DepositRequest) (*bankv1.DepositResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.balances[in.GetAccountId()] += in.GetAmount()
	return &bankv1.DepositResponse{Balance: b.balances[in.GetAccountId()]}, nil
}

// --- raw TCP ----------------------------------------------------------------------------

// maxTCPFrame bounds a frame of the raw TCP protocol.
const maxTCPFrame = 1 << 20

// runTCP is the practical ceiling: a connection per caller, each request a
// 4-byte big-endian length and an encoded DepositRequest, each reply the
// same framing of a DepositResponse, decoded and encoded on both sides.
func runTCP(ctx context.Context, _ *Env, callers int, d time.Duration) (loadgen.Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadgen.Result{}, err
	}
	h := newMemBank()
	var (
		serving sync.WaitGroup
		mu      sync.Mutex
		conns   []net.Conn
	)
	serving.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			serving.Go(func() { serveTCP(c, h) })
		}
	})
	stop := func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		serving.Wait()
	}
	clients := make([]*tcpClient, callers)
	for i := range clients {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			for _, c := range clients[:i] {
				_ = c.conn.Close()
			}
			stop()
			return loadgen.Result{}, err
		}
		clients[i] = &tcpClient{conn: c, r: bufio.NewReader(c)}
	}
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(_ context.Context, i int) error {
		return clients[i].deposit(&bankv1.DepositRequest{AccountId: int32(i + 1), Amount: 100})
	})
	for _, c := range clients {
		_ = c.conn.Close()
	}
	stop()
	return res, runErr
}

func serveTCP(c net.Conn, h *memBank) {
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	var in, out []byte
	req := new(bankv1.DepositRequest)
	for {
		var err error
		if in, err = readFrame(r, in); err != nil {
			return
		}
		if err := proto.Unmarshal(in, req); err != nil {
			return
		}
		resp, _ := h.Deposit(context.Background(), req)
		if out, err = appendFrame(out[:0], resp); err != nil {
			return
		}
		if _, err := w.Write(out); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

type tcpClient struct {
	conn    net.Conn
	r       *bufio.Reader
	in, out []byte
}

func (c *tcpClient) deposit(req *bankv1.DepositRequest) error {
	var err error
	if c.out, err = appendFrame(c.out[:0], req); err != nil {
		return err
	}
	if _, err := c.conn.Write(c.out); err != nil {
		return err
	}
	if c.in, err = readFrame(c.r, c.in); err != nil {
		return err
	}
	var resp bankv1.DepositResponse
	return proto.Unmarshal(c.in, &resp)
}

func appendFrame(b []byte, m proto.Message) ([]byte, error) {
	b = append(b, 0, 0, 0, 0)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxTCPFrame {
		return nil, fmt.Errorf("tcp: frame of %d bytes", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// --- grpc-go ----------------------------------------------------------------------------

// depositer is the service grpc-go dispatches to; the descriptor below is
// what protoc-gen-go-grpc would generate for bank.v1.Bank's Deposit, written
// by hand so that the bench needs no second generator.
type depositer interface {
	Deposit(context.Context, *bankv1.DepositRequest) (*bankv1.DepositResponse, error)
}

var grpcBankDesc = grpc.ServiceDesc{
	ServiceName: "bank.v1.Bank",
	HandlerType: (*depositer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Deposit",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(bankv1.DepositRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(depositer).Deposit(ctx, in)
		},
	}},
	Metadata: "bank/v1/bank.proto",
}

// runGRPC is grpc-go unary calls of the same Deposit over one ClientConn
// (one HTTP/2 connection) shared by the callers, as the grpc-go docs
// recommend, with the same in-memory handler.
func runGRPC(ctx context.Context, _ *Env, callers int, d time.Duration) (loadgen.Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadgen.Result{}, err
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpcBankDesc, newMemBank())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return loadgen.Result{}, errors.Join(err, <-served)
	}
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, i int) error {
		var out bankv1.DepositResponse
		return cc.Invoke(ctx, bankv1.Bank_Deposit_FullMethodName, &bankv1.DepositRequest{AccountId: int32(i + 1), Amount: 100}, &out)
	})
	closeErr := cc.Close()
	srv.Stop()
	return res, errors.Join(runErr, closeErr, <-served)
}

// --- the durable bank over zmq ----------------------------------------------------------

// runZMQBank serves the real bank (package bank: file persistence, group
// commit, exactly-once sessions) over transport/zmq, its files in a fresh
// directory under env.TempDir, and calls Deposit through the generated
// stubs on one zmq.Client, each caller on an account of its own opened
// first. Every reply waits for its record's fdatasync.
func runZMQBank(ctx context.Context, env *Env, callers int, d time.Duration) (loadgen.Result, error) {
	dir, err := os.MkdirTemp(env.TempDir, "bank-")
	if err != nil {
		return loadgen.Result{}, err
	}
	defer os.RemoveAll(dir)
	bk, err := bank.Open(dir)
	if err != nil {
		return loadgen.Result{}, err
	}
	ln, err := zmq.Listen("tcp://127.0.0.1:0", zmq.ServerConfig{})
	if err != nil {
		return loadgen.Result{}, errors.Join(err, bk.Shutdown())
	}
	srv := bankrpc.NewServer()
	bankv1.RegisterBankServer(srv, bk)
	served := make(chan error, 1)
	go func() { served <- ln.Serve(srv) }()
	stop := func() error { return errors.Join(ln.Close(), <-served, bk.Shutdown()) }
	cl, err := zmq.Dial(ln.Addr(), zmq.ClientConfig{})
	if err != nil {
		return loadgen.Result{}, errors.Join(err, stop())
	}
	conn := bankrpc.NewConn(cl, bankrpc.WithDefaultTimeout(30*time.Second))
	stub := bankv1.NewBankClient(conn)
	for i := range callers {
		if _, err := stub.Open(ctx, &bankv1.OpenRequest{AccountId: int32(i + 1)}); err != nil {
			return loadgen.Result{}, errors.Join(fmt.Errorf("open account %d: %w", i+1, err), conn.Close(), stop())
		}
	}
	res, runErr := loadgen.ClosedLoop(ctx, callers, d, func(ctx context.Context, i int) error {
		_, err := stub.Deposit(ctx, &bankv1.DepositRequest{AccountId: int32(i + 1), Amount: 100})
		return err
	})
	return res, errors.Join(runErr, conn.Close(), stop())
}
