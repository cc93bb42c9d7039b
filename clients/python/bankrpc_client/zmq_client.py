"""bankrpc over ZeroMQ (docs/protocol-zmq.md): a REQ client (one call at a
time, Lazy Pirate resends) and a DEALER client (calls in flight matched by a
correlation frame, resent when the connection comes back, cancels)."""

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import envelope
from .codes import Code, RpcError, settles
from .session import Session

# docs/protocol-zmq.md §5: what the Go client sets.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000


def _remaining(deadline_ns):
    """Seconds until deadline_ns (None for no deadline)."""
    if not deadline_ns:
        return None
    return (deadline_ns - time.time_ns()) / 1e9


class ReqClient:
    """One call at a time over a REQ socket. A call without an answer within
    attempt_timeout is resent, under the same call id, on a new socket (the
    ZeroMQ guide's Lazy Pirate, docs/protocol-zmq.md §3.1), at most retries
    times. Not safe for use by several threads."""

    def __init__(self, endpoint, session=None, attempt_timeout=10.0, retries=3, context=None):
        self.endpoint = endpoint
        self.session = session or Session()
        self.attempt_timeout = attempt_timeout
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock = None
        self._open()

    def _open(self):
        self._sock = self._ctx.socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.endpoint)

    def close(self):
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def call(self, method, msg, response_type, timeout=None, call_id=None, metadata=None, deadline_ns=None, grace=0.0):
        """Call method with msg and return its response, or raise RpcError.
        call_id: None for a new call; the id of an earlier call to repeat it
        (PROTOCOL.md §2.1). deadline_ns overrides timeout (absolute Unix
        nanoseconds, as on the wire). grace: seconds to keep waiting after
        the deadline for the server's own answer (its DEADLINE_EXCEEDED
        says that the request did not run)."""
        if call_id is None:
            call_id, first = self.session.next()
        else:
            first = self.session.repeat(call_id)
        if deadline_ns is None:
            deadline_ns = envelope.deadline_after(timeout)
        frame = envelope.request(call_id, method, msg.SerializeToString(), deadline_ns, metadata, first).SerializeToString()
        try:
            result = self.exchange(frame, deadline_ns, grace)
        except RpcError:
            self.session.end(call_id, answered=False)
            raise
        self.session.end(call_id, answered=settles(result.code))
        if result.call_id not in ("", call_id):
            raise RpcError(Code.INTERNAL, "result for call %r, expected %r" % (result.call_id, call_id), call_id, local=True)
        return envelope.outcome(result, response_type)

    def exchange(self, frame, deadline_ns=0, grace=0.0):
        """Send one encoded request frame and return the Result, resending it
        on a fresh socket after each attempt_timeout without an answer."""
        left = _remaining(deadline_ns)
        give_up = None if left is None else time.monotonic() + max(left, 0) + grace
        for attempt in range(self.retries + 1):
            if attempt:
                self.close()  # a REQ socket that got no reply cannot send again
                self._open()
            self._sock.send(frame)
            wait = self.attempt_timeout
            if give_up is not None:
                wait = min(wait, max(give_up - time.monotonic(), 0))
            if self._sock.poll(int(wait * 1000)):
                return envelope.Result.FromString(self._sock.recv())
            if give_up is not None and time.monotonic() >= give_up:
                self.close()
                self._open()
                raise RpcError(Code.DEADLINE_EXCEEDED, "no reply from %s before the deadline" % self.endpoint, local=True)
        self.close()
        self._open()
        raise RpcError(Code.UNAVAILABLE, "no reply from %s after %d attempts of %.1fs" % (self.endpoint, self.retries + 1, self.attempt_timeout), local=True)


class _Call:
    __slots__ = ("call_id", "frame", "give_up", "written_on", "result", "started")

    def __init__(self, call_id, frame, deadline_ns, grace):
        self.call_id, self.frame = call_id, frame
        left = _remaining(deadline_ns)
        # When the caller stops waiting: at the deadline, plus grace.
        self.give_up = None if left is None else time.monotonic() + max(left, 0) + grace
        self.written_on = None  # the connection number it was written on
        self.result = None
        self.started = time.monotonic()


class DealerClient:
    """Calls over a DEALER socket, several in flight at once, each matched by
    its correlation frame (the call id). A call is written once per
    connection and resent, with the same call id, when a new connection's
    handshake completes; it is never resent on a timer
    (docs/protocol-zmq.md §3.1). A call with no connection for dead_after
    seconds fails with UNAVAILABLE. Not safe for use by several threads."""

    def __init__(self, endpoint, session=None, dead_after=5.0, context=None):
        self.endpoint = endpoint
        self.session = session or Session()
        self.dead_after = dead_after
        ctx = context or zmq.Context.instance()
        self._sock = ctx.socket(zmq.DEALER)
        for opt, val in ((zmq.LINGER, 0), (zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS),
                         (zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS), (zmq.HANDSHAKE_IVL, HEARTBEAT_TIMEOUT_MS),
                         (zmq.RECONNECT_IVL, RECONNECT_IVL_MS), (zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)):
            self._sock.setsockopt(opt, val)
        self._mon = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self._conn = 0          # number of the current connection, 0 = none yet
        self._up = False
        self._down_since = time.monotonic()
        self._calls = {}        # call id -> _Call, in flight
        self._sock.connect(endpoint)

    def close(self):
        self._sock.disable_monitor()
        self._mon.close(linger=0)
        self._sock.close(linger=0)

    def start(self, method, msg, timeout=None, call_id=None, metadata=None, deadline_ns=None, grace=0.0):
        """Send a call and return its call id; wait() gives its outcome.
        Arguments as ReqClient.call's."""
        if call_id is None:
            call_id, first = self.session.next()
        else:
            first = self.session.repeat(call_id)
        if deadline_ns is None:
            deadline_ns = envelope.deadline_after(timeout)
        frame = envelope.request(call_id, method, msg.SerializeToString(), deadline_ns, metadata, first).SerializeToString()
        return self.start_frame(call_id, frame, deadline_ns, grace)

    def start_frame(self, correlation, frame, deadline_ns=0, grace=0.0):
        """Send an encoded frame under a correlation id (the call id for a
        well-formed request) and return the correlation id."""
        c = _Call(correlation, frame, deadline_ns, grace)
        self._calls[correlation] = c
        self._pump(0)
        self._write_pending()
        return correlation

    def cancel(self, call_id):
        """Stop waiting for call_id and tell the server (PROTOCOL.md §2.5)."""
        c = self._calls.pop(call_id, None)
        if c is not None and self._up and c.written_on == self._conn:
            self._sock.send_multipart([call_id.encode(), envelope.cancel(call_id).SerializeToString()], zmq.NOBLOCK)
        self.session.end(call_id, answered=False)

    def call(self, method, msg, response_type, **kw):
        return self.wait(self.start(method, msg, **kw), response_type)

    def wait(self, call_id, response_type=None):
        """The outcome of call_id: its response (or the Result itself when
        response_type is None), or RpcError."""
        c = self._calls[call_id]
        while c.result is None:
            left = None if c.give_up is None else c.give_up - time.monotonic()
            if left is not None and left <= 0:
                return self._fail(c, Code.DEADLINE_EXCEEDED if self._up else Code.UNAVAILABLE, "the deadline passed with no reply from %s" % self.endpoint)
            if not self._up and time.monotonic() - max(self._down_since, c.started) >= self.dead_after:
                return self._fail(c, Code.UNAVAILABLE, "no connection to %s for %.1fs (server down?)" % (self.endpoint, self.dead_after))
            step = 0.1 if left is None else min(0.1, left)
            self._pump(step)
            self._write_pending()
        del self._calls[call_id]
        self.session.end(call_id, answered=settles(c.result.code))
        if response_type is None:
            return c.result
        return envelope.outcome(c.result, response_type)

    def _fail(self, c, code, reason):
        del self._calls[c.call_id]
        self.session.end(c.call_id, answered=False)
        raise RpcError(code, reason, c.call_id, local=True)

    def _write_pending(self):
        if not self._up:
            return
        for c in self._calls.values():
            if c.result is None and c.written_on != self._conn:
                self._sock.send_multipart([c.call_id.encode(), c.frame])
                c.written_on = self._conn

    def _pump(self, timeout):
        """Handle the monitor's events and the replies that arrive within
        timeout seconds."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        events = dict(poller.poll(int(timeout * 1000)))
        while self._mon.poll(0):
            ev = recv_monitor_message(self._mon)["event"]
            if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._conn += 1
                self._up = True
            elif ev == zmq.EVENT_DISCONNECTED and self._up:
                self._up = False
                self._down_since = time.monotonic()
        if self._sock in events:
            while self._sock.poll(0):
                frames = self._sock.recv_multipart()
                if len(frames) != 2:
                    continue
                c = self._calls.get(frames[0].decode("utf-8", "replace"))
                if c is None or c.result is not None:
                    continue  # the answer to a copy sent on an earlier connection: dropped
                c.result = envelope.Result.FromString(frames[1])
