package bankrpc

import "github.com/bankrpc/bankrpc/codec"

// payloadHint is the room set aside for a payload in a new frame: a frame
// is made once, with the payload written into it (codec.Appender), and a
// payload larger than this grows it once more.
const payloadHint = 64

// appendPayload appends the encoding of v to dst: in place when cd is a
// codec.Appender, else by copying what Marshal returns.
func appendPayload(cd codec.Codec, dst []byte, v any) ([]byte, error) {
	if a, ok := cd.(codec.Appender); ok {
		return a.MarshalAppend(dst, v)
	}
	p, err := cd.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, p...), nil
}
