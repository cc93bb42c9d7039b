package bankrpc

import (
	"context"
)

// ReportProgress sends msg, encoded with the server's codec, as the data of
// a Status message for the call being handled: best-effort, the latest wins,
// never persisted. Generated Report<Method>Progress functions call it for
// methods whose proto names a progress message (bankrpc.options.v1.method);
// a client reads it with the matching On<Method>Progress call option. It
// returns an Unimplemented error when the call's transport carries no
// statuses (a ZeroMQ REQ client, or a caller that did not ask for them);
// handlers usually ignore its error.
func ReportProgress(ctx context.Context, msg any) error {
	ci, ok := ctx.Value(callInfoKey{}).(*callInfo)
	if !ok || ci.status == nil {
		return Errorf(Unimplemented, "bankrpc: this call's transport carries no progress messages")
	}
	data, err := ci.codec.Marshal(msg)
	if err != nil {
		return Errorf(Internal, "bankrpc: encode %s progress: %w", ci.method, err)
	}
	return SendStatus(ctx, Status{Data: data})
}

// ProgressOption asks for a call's typed progress messages; see OnProgress.
// OnProgress receives, for each Status with data, a function that decodes
// the data into a message.
type ProgressOption struct {
	OnProgress func(unmarshal func(any) error)
}

func (o ProgressOption) applyCall(c *callOptions) { c.onProgress = o.OnProgress }

// OnProgress asks for the call's progress messages, decoded as M (a
// generated protobuf message type, passed as *M): generated
// On<Method>Progress options call it. fn is called from a backend goroutine,
// in order, and must not block; progress is best-effort: a client may miss
// some, never the result. Statuses whose data does not decode as M are
// dropped. It works for calls made with Invoke and for submitted calls while
// this process waits for them (see Conn.Submit); backends without statuses
// never call fn, nor ZeroMQ REQ clients.
func OnProgress[M any, PM interface{ *M }](fn func(PM)) CallOption {
	return ProgressOption{OnProgress: func(unmarshal func(any) error) {
		m := PM(new(M))
		if unmarshal(m) == nil {
			fn(m)
		}
	}}
}
