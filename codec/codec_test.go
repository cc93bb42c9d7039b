package codec_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bankrpc/bankrpc/codec"
)

func TestProtoMarshalAppendAppendsWhatMarshalReturns(t *testing.T) {
	msg := wrapperspb.String("withdraw 500 from account 7")
	want, err := codec.Proto{}.Marshal(msg)
	require.NoError(t, err)

	got, err := codec.Proto{}.MarshalAppend([]byte("head"), msg)
	require.NoError(t, err)
	assert.Equal(t, append([]byte("head"), want...), got)

	back := &wrapperspb.StringValue{}
	require.NoError(t, codec.Proto{}.Unmarshal(got[len("head"):], back))
	assert.Equal(t, msg.GetValue(), back.GetValue())
}

func TestProtoMarshalAppendRefusesANonProtoValue(t *testing.T) {
	got, err := codec.Proto{}.MarshalAppend([]byte("head"), struct{}{})
	require.ErrorContains(t, err, "cannot marshal struct {}: not a proto.Message")
	assert.Equal(t, []byte("head"), got, "dst is returned unchanged")
}
