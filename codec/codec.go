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

// Unmarshal decodes data into v, which must be a proto.Message.
func (Proto) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T: not a proto.Message", v)
	}
	return proto.Unmarshal(data, m)
}
