package bankrpc

import (
	"context"
	"fmt"
	"strings"
)

// MD is call metadata, as grpc-go's metadata.MD: keys are lower-case, each
// key may have several values. Keys are made of 0-9 a-z - _ . and those
// starting with ReservedMetadataPrefix belong to bankrpc. On the wire they
// travel in the request envelope (PROTOCOL.md 1).
type MD map[string][]string

// ReservedMetadataPrefix starts the metadata keys that bankrpc itself may
// define; a client refuses a call that sets one.
const ReservedMetadataPrefix = "bankrpc-"

// DefaultMaxMetadataSize is the default limit on a call's metadata; see
// WithMaxMetadataSize.
const DefaultMaxMetadataSize = 8 << 10

// Pairs returns an MD of the key, value pairs kv; keys are lower-cased. It
// panics when kv has an odd length.
func Pairs(kv ...string) MD {
	if len(kv)%2 == 1 {
		panic(fmt.Sprintf("bankrpc: Pairs got an odd number of strings (%d)", len(kv)))
	}
	md := make(MD, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		md.Append(kv[i], kv[i+1])
	}
	return md
}

// Get returns the values of key, which is matched case-insensitively.
func (md MD) Get(key string) []string { return md[strings.ToLower(key)] }

// Set replaces the values of key.
func (md MD) Set(key string, vals ...string) {
	if len(vals) == 0 {
		return
	}
	md[strings.ToLower(key)] = vals
}

// Append adds values to key.
func (md MD) Append(key string, vals ...string) {
	if len(vals) == 0 {
		return
	}
	k := strings.ToLower(key)
	md[k] = append(md[k], vals...)
}

// Delete removes key.
func (md MD) Delete(key string) { delete(md, strings.ToLower(key)) }

// Len returns the number of keys.
func (md MD) Len() int { return len(md) }

// Copy returns a deep copy of md.
func (md MD) Copy() MD {
	out := make(MD, len(md))
	for k, v := range md {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Join returns the union of mds: the values of a key in all of them, in order.
func Join(mds ...MD) MD {
	out := MD{}
	for _, md := range mds {
		for k, v := range md {
			out.Append(k, v...)
		}
	}
	return out
}

type outgoingKey struct{}

// outgoing is the client's metadata on a ctx: a base MD plus pairs appended
// later, merged only when the call is made (as grpc-go does).
type outgoing struct {
	md    MD
	added [][]string
}

// NewOutgoingContext returns a copy of ctx whose calls carry md, replacing
// any metadata ctx had.
func NewOutgoingContext(ctx context.Context, md MD) context.Context {
	return context.WithValue(ctx, outgoingKey{}, outgoing{md: md})
}

// AppendToOutgoingContext returns a copy of ctx whose calls carry the key,
// value pairs kv besides the metadata ctx had. It panics when kv has an odd
// length.
func AppendToOutgoingContext(ctx context.Context, kv ...string) context.Context {
	if len(kv)%2 == 1 {
		panic(fmt.Sprintf("bankrpc: AppendToOutgoingContext got an odd number of strings (%d)", len(kv)))
	}
	o, _ := ctx.Value(outgoingKey{}).(outgoing)
	added := make([][]string, len(o.added), len(o.added)+1)
	copy(added, o.added)
	return context.WithValue(ctx, outgoingKey{}, outgoing{md: o.md, added: append(added, kv)})
}

// FromOutgoingContext returns a copy of the metadata calls made with ctx
// carry, and whether there is any.
func FromOutgoingContext(ctx context.Context) (MD, bool) {
	o, ok := ctx.Value(outgoingKey{}).(outgoing)
	if !ok {
		return nil, false
	}
	md := MD{}
	for k, v := range o.md {
		md.Append(k, v...)
	}
	for _, kv := range o.added {
		for i := 0; i < len(kv); i += 2 {
			md.Append(kv[i], kv[i+1])
		}
	}
	return md, true
}

type incomingKey struct{}

// NewIncomingContext returns a copy of ctx carrying md as the caller's
// metadata, for tests of handlers and interceptors.
func NewIncomingContext(ctx context.Context, md MD) context.Context {
	return context.WithValue(ctx, incomingKey{}, md)
}

// FromIncomingContext returns a copy of the caller's metadata in a handler's
// ctx, and whether there is any.
func FromIncomingContext(ctx context.Context) (MD, bool) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		if len(ci.md) == 0 {
			return nil, false
		}
		md := make(MD, len(ci.md)/2)
		for i := 0; i < len(ci.md); i += 2 {
			md.Append(ci.md[i], ci.md[i+1])
		}
		return md, true
	}
	md, ok := ctx.Value(incomingKey{}).(MD)
	if !ok {
		return nil, false
	}
	return md.Copy(), true
}

// checkMetadata validates md for sending or after receiving: key syntax, the
// reserved prefix (when reservedOK is false) and the size limit.
func checkMetadata(md MD, limit int, reservedOK bool) error {
	size := 0
	for k, vs := range md {
		if err := validKey(k); err != nil {
			return err
		}
		if !reservedOK && strings.HasPrefix(k, ReservedMetadataPrefix) {
			return Errorf(InvalidArgument, "bankrpc: metadata key %q uses the reserved prefix %q", k, ReservedMetadataPrefix)
		}
		for _, v := range vs {
			size += len(k) + len(v) + 32
		}
	}
	if limit > 0 && size > limit {
		return Errorf(ResourceExhausted, "bankrpc: metadata of %d bytes exceeds the limit of %d bytes", size, limit)
	}
	return nil
}

// checkPairs is checkMetadata for the key, value pairs of a request.
func checkPairs(kv []string, limit int) error {
	size := 0
	for i := 0; i < len(kv); i += 2 {
		if err := validKey(kv[i]); err != nil {
			return err
		}
		size += len(kv[i]) + len(kv[i+1]) + 32
	}
	if limit > 0 && size > limit {
		return Errorf(ResourceExhausted, "bankrpc: metadata of %d bytes exceeds the limit of %d bytes", size, limit)
	}
	return nil
}

func validKey(k string) error {
	if k == "" {
		return Errorf(InvalidArgument, "bankrpc: empty metadata key")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return Errorf(InvalidArgument, "bankrpc: metadata key %q has a character outside 0-9 a-z - _ .", k)
		}
	}
	return nil
}
