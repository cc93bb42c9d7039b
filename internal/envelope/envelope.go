package envelope

import (
	"errors"
	"fmt"
	"strings"

	wirev1 "github.com/bankrpc/bankrpc/gen/bankrpc/wire/v1"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxFrameSize is the default limit on an encoded envelope: 4 MiB, as
// gRPC's default receive limit.
const DefaultMaxFrameSize = 4 << 20

// FrameTooLargeError reports a frame over the size limit. It is returned
// before anything is decoded.
type FrameTooLargeError struct {
	Size, Limit int
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// ErrMalformed is wrapped by every error that reports a frame that is not a
// valid envelope.
var ErrMalformed = errors.New("malformed envelope")

func checkSize(frame []byte, limit int) error {
	if limit > 0 && len(frame) > limit {
		return &FrameTooLargeError{Size: len(frame), Limit: limit}
	}
	return nil
}

// EncodeRequest encodes a request envelope.
func EncodeRequest(r *wirev1.Request) ([]byte, error) {
	return proto.Marshal(r)
}

// DecodeRequest decodes and validates a request envelope: at most limit bytes
// (no limit when limit <= 0), a non-empty call id and a method of the form
// "/package.Service/Method". The error wraps ErrMalformed or is a
// *FrameTooLargeError. On a malformed frame the returned request is still
// non-nil and carries whatever call id could be read, so that an error reply
// can be correlated.
func DecodeRequest(frame []byte, limit int) (*wirev1.Request, error) {
	r := &wirev1.Request{}
	if err := checkSize(frame, limit); err != nil {
		return r, err
	}
	if err := proto.Unmarshal(frame, r); err != nil {
		r.Reset()
		return r, fmt.Errorf("%w: request of %d bytes: %v", ErrMalformed, len(frame), err)
	}
	if r.GetCallId() == "" {
		return r, fmt.Errorf("%w: request has no call id", ErrMalformed)
	}
	if !ValidMethod(r.GetMethod()) {
		return r, fmt.Errorf("%w: request method %q is not of the form /package.Service/Method", ErrMalformed, r.GetMethod())
	}
	return r, nil
}

// ValidMethod reports whether m has the form "/package.Service/Method".
func ValidMethod(m string) bool {
	if len(m) < 4 || m[0] != '/' {
		return false
	}
	svc, meth, ok := strings.Cut(m[1:], "/")
	return ok && svc != "" && meth != "" && !strings.Contains(meth, "/")
}

// EncodeResult encodes a result envelope.
func EncodeResult(r *wirev1.Result) ([]byte, error) {
	return proto.Marshal(r)
}

// DecodeResult decodes a result envelope of at most limit bytes.
func DecodeResult(frame []byte, limit int) (*wirev1.Result, error) {
	r := &wirev1.Result{}
	if err := checkSize(frame, limit); err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(frame, r); err != nil {
		return nil, fmt.Errorf("%w: result of %d bytes: %v", ErrMalformed, len(frame), err)
	}
	// A result without a call id answers a request that could not be decoded;
	// it can only report an error.
	if r.GetCallId() == "" && r.GetCode() == 0 {
		return nil, fmt.Errorf("%w: OK result has no call id", ErrMalformed)
	}
	return r, nil
}

// EncodeStatus encodes a status envelope.
func EncodeStatus(s *wirev1.Status) ([]byte, error) {
	return proto.Marshal(s)
}

// DecodeStatus decodes a status envelope of at most limit bytes.
func DecodeStatus(frame []byte, limit int) (*wirev1.Status, error) {
	s := &wirev1.Status{}
	if err := checkSize(frame, limit); err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(frame, s); err != nil {
		return nil, fmt.Errorf("%w: status of %d bytes: %v", ErrMalformed, len(frame), err)
	}
	if s.GetCallId() == "" {
		return nil, fmt.Errorf("%w: status has no call id", ErrMalformed)
	}
	return s, nil
}
