package zmq_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bankrpc/bankrpc/transport/zmq"
)

// zmtpPeer is a DEALER spoken by hand over TCP (ZMTP 3.1, NULL mechanism),
// so that a test sees the commands the server's libzmq sends and chooses
// whether to answer its PINGs: a pebbe/zmq4 socket answers them by itself.
type zmtpPeer struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialZMTP connects to the server at endpoint (tcp://host:port) and
// completes the handshake.
func dialZMTP(t *testing.T, endpoint string) *zmtpPeer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(endpoint, "tcp://"), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	p := &zmtpPeer{conn: conn, r: bufio.NewReader(conn)}
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))

	greeting := make([]byte, 64)
	greeting[0], greeting[9] = 0xFF, 0x7F // signature
	greeting[10], greeting[11] = 3, 1     // ZMTP 3.1: heartbeats
	copy(greeting[12:32], "NULL")         // mechanism; as-server 0, filler
	_, err = conn.Write(greeting)
	require.NoError(t, err)
	theirs := make([]byte, 64)
	_, err = io.ReadFull(p.r, theirs)
	require.NoError(t, err)
	require.Equal(t, byte(0xFF), theirs[0], "not a ZMTP greeting")
	require.Equal(t, byte(3), theirs[10], "not ZMTP 3")

	var ready []byte
	ready = append(ready, byte(len("Socket-Type")))
	ready = append(ready, "Socket-Type"...)
	ready = binary.BigEndian.AppendUint32(ready, uint32(len("DEALER")))
	ready = append(ready, "DEALER"...)
	require.NoError(t, p.writeCommand("READY", ready))
	name, _, err := p.readCommand()
	require.NoError(t, err)
	require.Equal(t, "READY", name)
	require.NoError(t, conn.SetDeadline(time.Time{}))
	return p
}

// writeCommand sends a ZMTP command frame.
func (p *zmtpPeer) writeCommand(name string, data []byte) error {
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, data...)
	frame := []byte{0x04, byte(len(body))} // command, short
	if len(body) > 255 {
		return fmt.Errorf("command %s too long", name)
	}
	_, err := p.conn.Write(append(frame, body...))
	return err
}

// readCommand reads frames until a command, and returns its name and data.
func (p *zmtpPeer) readCommand() (string, []byte, error) {
	for {
		flags, err := p.r.ReadByte()
		if err != nil {
			return "", nil, err
		}
		var size uint64
		if flags&0x02 != 0 {
			var b [8]byte
			if _, err := io.ReadFull(p.r, b[:]); err != nil {
				return "", nil, err
			}
			size = binary.BigEndian.Uint64(b[:])
		} else {
			b, err := p.r.ReadByte()
			if err != nil {
				return "", nil, err
			}
			size = uint64(b)
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(p.r, body); err != nil {
			return "", nil, err
		}
		if flags&0x04 == 0 || len(body) == 0 || int(body[0]) > len(body)-1 {
			continue // a message frame
		}
		n := int(body[0])
		return string(body[1 : 1+n]), body[1+n:], nil
	}
}

// pings reads for d, answering each PING with a PONG when answer is set,
// and returns the PINGs seen and how the read ended: nil when d passed with
// the connection up, the read error (io.EOF when the server dropped it)
// otherwise.
func (p *zmtpPeer) pings(d time.Duration, answer bool) (int, error) {
	if err := p.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return 0, err
	}
	n := 0
	for {
		name, data, err := p.readCommand()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if name != "PING" {
			continue
		}
		n++
		if answer {
			ctx := data[min(2, len(data)):] // after the TTL
			if err := p.writeCommand("PONG", ctx); err != nil {
				return n, err
			}
		}
	}
}

// Target 5 of issue 16: the server does not PING idle peers every second.
// Each PING arms a timeout timer that libzmq cancels, when the PONG comes,
// by walking every connection's timers, so that 10,000 idle clients cost the
// server a whole core (BENCHMARKS.md). A peer now hears at most one PING per
// 30 s; it failed on the old 1 s interval with 2 PINGs in 2.5 s.
func TestServerPingsIdlePeersRarely(t *testing.T) {
	t.Parallel()
	s := serve(t, zmq.ServerConfig{}, handlerFunc(func(context.Context, []byte) ([]byte, error) { return nil, nil }))
	peer := dialZMTP(t, s.Addr())
	n, err := peer.pings(2500*time.Millisecond, true)
	require.NoError(t, err, "the server dropped an idle peer that answers its PINGs")
	assert.Zero(t, n, "PINGs to an idle peer in 2.5s")
}

// A peer that vanished without closing its TCP connection (it stops
// answering) is still dropped: after the server's PING goes unanswered for
// the heartbeat timeout. One that answers stays. The heartbeats are
// shortened here (30 s and 10 s by default).
func TestServerDropsPeerThatStopsAnswering(t *testing.T) {
	t.Parallel()
	cfg := zmq.WithServerHeartbeat(zmq.ServerConfig{}, 100*time.Millisecond, 300*time.Millisecond)
	s := serve(t, cfg, handlerFunc(func(context.Context, []byte) ([]byte, error) { return nil, nil }))
	live, gone := dialZMTP(t, s.Addr()), dialZMTP(t, s.Addr())

	done := make(chan error, 1)
	go func() {
		n, err := gone.pings(10*time.Second, false)
		if err == nil {
			err = fmt.Errorf("still connected after 10s (%d PINGs unanswered)", n)
		} else if errors.Is(err, io.EOF) && n > 0 {
			err = nil
		}
		done <- err
	}()
	n, err := live.pings(1500*time.Millisecond, true)
	require.NoError(t, err, "the server dropped a peer that answers its PINGs")
	assert.Greater(t, n, 3, "PINGs in 1.5s at a 100ms interval")
	assert.NoError(t, <-done, "the silent peer: want it dropped (EOF) after at least one PING")
}
