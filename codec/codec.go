// Package codec encodes messages and the bankrpc envelope.
//
// A Codec turns the typed request and response messages into payload bytes;
// the envelope functions wrap a payload into the wire-level Request, Result
// and Status messages of package bankrpc.wire.v1 and enforce a size limit
// before decoding anything. PROTOCOL.md at the repository root specifies the
// envelope.
package codec

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Codec encodes and decodes payload messages. Implementations are safe for
// concurrent use.
type Codec interface {
	// Name identifies the encoding, e.g. "proto".
	Name() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// Appender is an optional ability of a Codec, found by type assertion: it
// encodes v by appending to dst, so that the runtime can write a payload
// straight into the envelope around it instead of into a fresh slice that is
// then copied (connect-go's marshalAppender). The bytes are those Marshal
// would return.
type Appender interface {
	MarshalAppend(dst []byte, v any) ([]byte, error)
}

// Proto is the protobuf binary codec, the default and the only one every
// bankrpc peer must speak.
type Proto struct{}

// Name returns "proto".
func (Proto) Name() string { return "proto" }

// Marshal encodes v, which must be a proto.Message.
func (Proto) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("codec: cannot marshal %T: not a proto.Message", v)
	}
	return proto.Marshal(m)
}

// MarshalAppend appends the encoding of v, which must be a proto.Message, to
// dst. It implements Appender.
func (Proto) MarshalAppend(dst []byte, v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return dst, fmt.Errorf("codec: cannot marshal %T: not a proto.Message", v)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

var _ Appender = Proto{}

// Unmarshal decodes data into v, which must be a proto.Message.
func (Proto) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T: not a proto.Message", v)
	}
	return proto.Unmarshal(data, m)
}
