package envelope

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The hot path encodes and decodes the Request and Result envelopes by hand
// with protowire: the bytes are exactly what proto.Marshal of the
// bankrpc.wire.v1 messages would produce (up to field order, which protobuf
// leaves free), but a call costs no reflection and no copies of the payload.
// codec's tests check both directions against the generated messages.

// Field numbers of bankrpc.wire.v1.Request and Result (envelope.proto).
const (
	reqCallID          protowire.Number = 1
	reqMethod          protowire.Number = 2
	reqPayload         protowire.Number = 3
	reqDeadline        protowire.Number = 4
	reqMetadata        protowire.Number = 5
	reqCancel          protowire.Number = 6
	reqFirstUnanswered protowire.Number = 7
	reqAcceptStatus    protowire.Number = 8

	resCallID  protowire.Number = 1
	resCode    protowire.Number = 2
	resReason  protowire.Number = 3
	resPayload protowire.Number = 4
	resLog     protowire.Number = 5
	resDetails protowire.Number = 6
	resMethod  protowire.Number = 7

	mapKey   protowire.Number = 1
	mapValue protowire.Number = 2
)

// RequestView is a decoded request envelope. Its byte slices alias the frame
// it was decoded from.
type RequestView struct {
	CallID           []byte
	Method           []byte
	Payload          []byte
	DeadlineUnixNano int64
	// Metadata holds the metadata entries as key, value, key, value, ... in
	// the order of the frame; nil when the request has none.
	Metadata []string
	// Cancel is set on a cancel message (Request.cancel).
	Cancel bool
	// FirstUnanswered is Request.first_unanswered; 0 when absent.
	FirstUnanswered uint64
	// AcceptStatus is Request.accept_status.
	AcceptStatus bool
}

// ResultView is a decoded result envelope. Its byte slices alias the frame it
// was decoded from.
type ResultView struct {
	CallID  []byte
	Code    uint32
	Reason  []byte
	Payload []byte
	// Log is nil when the result has none.
	Log []string
	// Details are the encoded google.protobuf.Any details, aliasing the
	// frame; nil when the result has none.
	Details [][]byte
	// Method is Result.method; empty when the server did not set it.
	Method []byte
}

// AppendRequest appends the encoding of a request envelope to dst; md holds
// the metadata, one entry per value, keys in sorted order for a
// deterministic frame.
func AppendRequest(dst []byte, callID, method string, payload []byte, deadlineUnixNano int64, md map[string][]string, firstUnanswered uint64) []byte {
	dst, _ = AppendRequestFunc(dst, callID, method, func(b []byte) ([]byte, error) { return append(b, payload...), nil }, deadlineUnixNano, md, firstUnanswered)
	return dst
}

// AppendRequestFunc is AppendRequest with the payload appended in place by
// payload (a codec's MarshalAppend), so that it is written once, into the
// frame. When payload fails, its error is returned and the frame is not
// to be used.
func AppendRequestFunc(dst []byte, callID, method string, payload func([]byte) ([]byte, error), deadlineUnixNano int64, md map[string][]string, firstUnanswered uint64) ([]byte, error) {
	dst = appendString(dst, reqCallID, callID)
	dst = appendString(dst, reqMethod, method)
	dst, err := appendBytesFunc(dst, reqPayload, payload)
	if err != nil {
		return dst, err
	}
	if deadlineUnixNano != 0 {
		dst = protowire.AppendTag(dst, reqDeadline, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(deadlineUnixNano))
	}
	if firstUnanswered != 0 {
		dst = protowire.AppendTag(dst, reqFirstUnanswered, protowire.VarintType)
		dst = protowire.AppendVarint(dst, firstUnanswered)
	}
	if len(md) > 0 {
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range md[k] {
				dst = appendEntry(dst, k, v)
			}
		}
	}
	return dst, nil
}

// appendBytesFunc appends a bytes field whose value fn appends, as
// protowire.AppendBytes would encode it: the length, a varint, is written
// before the value, so one byte is set aside for it and the value moved
// when its length needs more. An empty value is left out, as proto3 does.
func appendBytesFunc(dst []byte, num protowire.Number, fn func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(dst)
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	at := len(dst)
	dst = append(dst, 0)
	dst, err := fn(dst)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - at - 1
	if n == 0 {
		return dst[:start], nil
	}
	if k := protowire.SizeVarint(uint64(n)); k > 1 {
		var pad [binary.MaxVarintLen64]byte
		dst = append(dst, pad[:k-1]...)
		copy(dst[at+k:], dst[at+1:at+1+n])
	}
	protowire.AppendVarint(dst[:at], uint64(n))
	return dst, nil
}

// AppendAcceptStatus appends Request.accept_status = true to dst, the
// encoding of a request envelope (protobuf fields may come in any order).
func AppendAcceptStatus(dst []byte) []byte {
	dst = protowire.AppendTag(dst, reqAcceptStatus, protowire.VarintType)
	return protowire.AppendVarint(dst, 1)
}

// AppendCancel appends the encoding of a cancel message for callID to dst.
func AppendCancel(dst []byte, callID string) []byte {
	dst = appendString(dst, reqCallID, callID)
	dst = protowire.AppendTag(dst, reqCancel, protowire.VarintType)
	return protowire.AppendVarint(dst, 1)
}

func appendEntry(dst []byte, k, v string) []byte {
	dst = protowire.AppendTag(dst, reqMetadata, protowire.BytesType)
	n := len(protowire.AppendTag(nil, mapKey, protowire.BytesType))*2 + protowire.SizeBytes(len(k)) + protowire.SizeBytes(len(v))
	dst = protowire.AppendVarint(dst, uint64(n))
	dst = protowire.AppendTag(dst, mapKey, protowire.BytesType)
	dst = protowire.AppendString(dst, k)
	dst = protowire.AppendTag(dst, mapValue, protowire.BytesType)
	return protowire.AppendString(dst, v)
}

// AppendResult appends the encoding of a result envelope to dst.
func AppendResult(dst []byte, callID []byte, code uint32, reason string, payload []byte, log []string, details [][]byte) []byte {
	dst, _ = AppendResultFunc(dst, callID, code, reason, func(b []byte) ([]byte, error) { return append(b, payload...), nil }, log, details)
	return dst
}

// AppendResultFunc is AppendResult with the payload appended in place by
// payload (a codec's MarshalAppend), so that it is written once, into the
// frame. When payload fails, its error is returned and the frame is not
// to be used.
func AppendResultFunc(dst []byte, callID []byte, code uint32, reason string, payload func([]byte) ([]byte, error), log []string, details [][]byte) ([]byte, error) {
	if len(callID) > 0 {
		dst = protowire.AppendTag(dst, resCallID, protowire.BytesType)
		dst = protowire.AppendBytes(dst, callID)
	}
	if code != 0 {
		dst = protowire.AppendTag(dst, resCode, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(code))
	}
	dst = appendString(dst, resReason, reason)
	dst, err := appendBytesFunc(dst, resPayload, payload)
	if err != nil {
		return dst, err
	}
	for _, l := range log {
		dst = protowire.AppendTag(dst, resLog, protowire.BytesType)
		dst = protowire.AppendString(dst, l)
	}
	for _, d := range details {
		dst = protowire.AppendTag(dst, resDetails, protowire.BytesType)
		dst = protowire.AppendBytes(dst, d)
	}
	return dst, nil
}

// AppendResultMethod appends Result.method to dst, the encoding of a result
// envelope; nothing when method is empty.
func AppendResultMethod(dst []byte, method string) []byte {
	return appendString(dst, resMethod, method)
}

func appendString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

// DecodeRequestView decodes and validates a request envelope into r, as
// DecodeRequest does. On a malformed frame r still holds the call id when it
// could be read.
func DecodeRequestView(frame []byte, limit int, r *RequestView) error {
	*r = RequestView{}
	if err := checkSize(frame, limit); err != nil {
		return err
	}
	err := walk(frame, func(num protowire.Number, typ protowire.Type, b []byte, v uint64) error {
		switch {
		case num == reqCallID && typ == protowire.BytesType:
			r.CallID = b
			return validUTF8("call_id", b)
		case num == reqMethod && typ == protowire.BytesType:
			r.Method = b
			return validUTF8("method", b)
		case num == reqPayload && typ == protowire.BytesType:
			r.Payload = b
		case num == reqDeadline && typ == protowire.VarintType:
			r.DeadlineUnixNano = int64(v)
		case num == reqMetadata && typ == protowire.BytesType:
			k, val, err := decodeMapEntry(b)
			if err != nil {
				return err
			}
			r.Metadata = append(r.Metadata, k, val)
		case num == reqCancel && typ == protowire.VarintType:
			r.Cancel = v != 0
		case num == reqFirstUnanswered && typ == protowire.VarintType:
			r.FirstUnanswered = v
		case num == reqAcceptStatus && typ == protowire.VarintType:
			r.AcceptStatus = v != 0
		}
		return nil
	})
	if err != nil {
		r.CallID = nil
		return fmt.Errorf("%w: request of %d bytes: %v", ErrMalformed, len(frame), err)
	}
	if len(r.CallID) == 0 {
		return fmt.Errorf("%w: request has no call id", ErrMalformed)
	}
	if r.Cancel {
		return nil
	}
	if !ValidMethod(string(r.Method)) {
		return fmt.Errorf("%w: request method %q is not of the form /package.Service/Method", ErrMalformed, r.Method)
	}
	return nil
}

// DecodeResultView decodes a result envelope into r, as DecodeResult does.
func DecodeResultView(frame []byte, limit int, r *ResultView) error {
	*r = ResultView{}
	if err := checkSize(frame, limit); err != nil {
		return err
	}
	err := walk(frame, func(num protowire.Number, typ protowire.Type, b []byte, v uint64) error {
		switch {
		case num == resCallID && typ == protowire.BytesType:
			r.CallID = b
			return validUTF8("call_id", b)
		case num == resCode && typ == protowire.VarintType:
			r.Code = uint32(v)
		case num == resReason && typ == protowire.BytesType:
			r.Reason = b
			return validUTF8("reason", b)
		case num == resPayload && typ == protowire.BytesType:
			r.Payload = b
		case num == resLog && typ == protowire.BytesType:
			r.Log = append(r.Log, string(b))
			return validUTF8("log line", b)
		case num == resDetails && typ == protowire.BytesType:
			r.Details = append(r.Details, b)
			return validAny(b)
		case num == resMethod && typ == protowire.BytesType:
			r.Method = b
			return validUTF8("method", b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: result of %d bytes: %v", ErrMalformed, len(frame), err)
	}
	if len(r.CallID) == 0 && r.Code == 0 {
		return fmt.Errorf("%w: OK result has no call id", ErrMalformed)
	}
	return nil
}

// walk calls fn for every field of a protobuf message: b for length-delimited
// fields, v for varints. Other wire types are skipped. As in protobuf, a known
// field number with an unexpected wire type is an unknown field, not an error.
func walk(msg []byte, fn func(num protowire.Number, typ protowire.Type, b []byte, v uint64) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("field number %d is out of range", num)
		}
		msg = msg[n:]
		var b []byte
		var v uint64
		switch typ {
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(msg)
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(msg)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if err := fn(num, typ, b, v); err != nil {
			return err
		}
	}
	return nil
}

func decodeMapEntry(b []byte) (key, value string, err error) {
	err = walk(b, func(num protowire.Number, typ protowire.Type, f []byte, _ uint64) error {
		switch {
		case num == mapKey && typ == protowire.BytesType:
			key = string(f)
			return validUTF8("metadata key", f)
		case num == mapValue && typ == protowire.BytesType:
			value = string(f)
			return validUTF8("metadata value", f)
		}
		return nil
	})
	return key, value, err
}

// validAny checks an encoded google.protobuf.Any as proto.Unmarshal does:
// a well-formed message whose type_url is UTF-8.
func validAny(b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, f []byte, _ uint64) error {
		if num == 1 && typ == protowire.BytesType {
			return validUTF8("detail type_url", f)
		}
		return nil
	})
}

func validUTF8(field string, b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	return nil
}
