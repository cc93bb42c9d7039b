package bank

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
	"github.com/bankrpc/bankrpc/internal/envelope"
)

// TestLateRepeatWithPastDeadline pins PROTOCOL.md §2.2: a server answers a
// duplicate from the call it ran, whatever the duplicate's deadline; with
// that reply gone (a restart: a new runtime in front of the same bank), a
// repeat whose deadline has passed is DEADLINE_EXCEEDED without running —
// although the call was applied — and a repeat with a deadline in the
// future gets the recorded result (rule C6). Applied once throughout.
func TestLateRepeatWithPastDeadline(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := openBank(t, t.TempDir())
	serve := func() *bankrpc.Server {
		s := bankrpc.NewServer()
		bankv1.RegisterBankServer(s, b)
		return s
	}
	frame := func(id string, f uint64, deadline time.Time, m proto.Message) []byte {
		payload, err := proto.Marshal(m)
		require.NoError(t, err)
		method := "/bank.v1.Bank/Open"
		if _, ok := m.(*bankv1.DepositRequest); ok {
			method = "/bank.v1.Bank/Deposit"
		}
		var dl int64
		if !deadline.IsZero() {
			dl = deadline.UnixNano()
		}
		return envelope.AppendRequest(nil, id, method, payload, dl, nil, f)
	}
	outcome := func(s *bankrpc.Server, fr []byte) (uint32, int64) {
		reply, err := s.HandleFrame(ctx, fr)
		require.NoError(t, err)
		res, err := envelope.DecodeResult(reply, 0)
		require.NoError(t, err)
		var dep bankv1.DepositResponse
		require.NoError(t, proto.Unmarshal(res.GetPayload(), &dep))
		return res.GetCode(), dep.GetBalance()
	}
	balance := func() int64 {
		r, err := b.Balance(ctx, &bankv1.BalanceRequest{AccountId: 7})
		require.NoError(t, err)
		return r.GetBalance()
	}

	s := serve()
	code, _ := outcome(s, frame("s1-1", 1, time.Time{}, &bankv1.OpenRequest{AccountId: 7}))
	require.Zero(t, code)
	deposit := func(deadline time.Time) []byte {
		return frame("s1-2", 2, deadline, &bankv1.DepositRequest{AccountId: 7, Amount: 100})
	}
	code, bal := outcome(s, deposit(time.Now().Add(time.Minute)))
	require.Zero(t, code)
	require.Equal(t, int64(100), bal)

	past := time.Now().Add(-time.Second)
	code, bal = outcome(s, deposit(past))
	assert.Zero(t, code, "the same server answers the duplicate with the call's reply, whatever its deadline")
	assert.Equal(t, int64(100), bal)

	restarted := serve()
	code, _ = outcome(restarted, deposit(past))
	assert.Equal(t, uint32(bankrpc.DeadlineExceeded), code, "after a restart the runtime refuses the expired repeat before the bank sees it")
	assert.Equal(t, int64(100), balance(), "applied once: DEADLINE_EXCEEDED does not mean 'not applied'")

	code, bal = outcome(restarted, deposit(time.Now().Add(time.Minute)))
	assert.Zero(t, code, "a repeat with a future deadline learns the outcome")
	assert.Equal(t, int64(100), bal, "the recorded result")
	assert.Equal(t, int64(100), balance(), "still applied once")
}
