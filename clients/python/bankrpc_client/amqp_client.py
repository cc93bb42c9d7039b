"""bankrpc over RabbitMQ (docs/protocol-amqp.md), with pika: durable
requests published with confirms, the client's durable result and error
queues and its exclusive status queue, submit now and collect later."""

import os
import time
import urllib.parse

import pika
import pika.exceptions

from . import envelope
from .codes import Code, RpcError, settles
from .session import Session

REQUEST_EXCHANGE = "bankrpc.requests"
CANCEL_EXCHANGE = "bankrpc.cancels"
CONTENT_PROTO = "application/x-protobuf"
HEADER_CODE = "bankrpc-code"
HEADER_DEADLINE = "bankrpc-deadline"
# docs/protocol-amqp.md §3 step 4: results kept for call ids not (or no longer) waited for.
MAX_KEPT = 1024


def service_queue(service):
    return "bankrpc.svc.%s" % service


def client_queues(name):
    prefix = "bankrpc.client.%s" % name
    return prefix + ".results", prefix + ".errors", prefix + ".status"


class AmqpClient:
    """A client of one service under a client name. The result and error
    queues are durable: replies sent while no client runs wait there, so a
    later process with the same client name collects them. One live client
    per name: a second one is refused with FAILED_PRECONDITION (its status
    queue is exclusive). Not safe for use by several threads.

    url: amqp://user:password@host:port/vhost (pika's URL form)."""

    def __init__(self, url, service, client_name=None, session=None, queue_expires_ms=None, user_id=True):
        self.service = service
        self.client_name = client_name or "py-" + os.urandom(8).hex()
        self.session = session or Session()
        self.results_queue, self.errors_queue, self.status_queue = client_queues(self.client_name)
        params = pika.URLParameters(url)
        self._user = params.credentials.username if user_id else None
        self._conn = pika.BlockingConnection(params)
        self._ch = self._conn.channel()
        self._declare(queue_expires_ms)
        self._ch.confirm_delivery()
        self._kept = {}          # call id -> ("result", Result) or ("error", code, text), arrival order
        self._statuses = {}      # call id -> latest Status
        self._ch.basic_consume(self.results_queue, self._on_result)
        self._ch.basic_consume(self.errors_queue, self._on_error)
        self._ch.basic_consume(self.status_queue, self._on_status, auto_ack=True)

    def _declare(self, queue_expires_ms):
        """docs/protocol-amqp.md §1: passive checks of the service's
        topology, then the client's three queues."""
        def check(fn, what):
            try:
                fn()
            except pika.exceptions.ChannelClosedByBroker as e:
                self._ch = self._conn.channel()
                if e.reply_code == 404:
                    raise RpcError(Code.FAILED_PRECONDITION, "%s does not exist: start a server of the service once (%s)" % (what, e.reply_text), local=True)
                if e.reply_code == 405:
                    raise RpcError(Code.FAILED_PRECONDITION, "%s is held by another connection: another live client uses the client name %r" % (what, self.client_name), local=True)
                if e.reply_code == 406:
                    raise RpcError(Code.FAILED_PRECONDITION, "%s exists with other arguments: %s" % (what, e.reply_text), local=True)
                if e.reply_code == 403:
                    raise RpcError(Code.PERMISSION_DENIED, "%s: %s" % (what, e.reply_text), local=True)
                raise RpcError(Code.UNAVAILABLE, "%s: %s" % (what, e.reply_text), local=True)
        for x in (REQUEST_EXCHANGE, CANCEL_EXCHANGE):
            check(lambda: self._ch.exchange_declare(x, exchange_type="direct", durable=True, passive=True), "exchange " + x)
        q = service_queue(self.service)
        check(lambda: self._ch.queue_declare(q, passive=True), "queue " + q)
        args = {"x-expires": int(queue_expires_ms)} if queue_expires_ms else None
        for q in (self.results_queue, self.errors_queue):
            check(lambda: self._ch.queue_declare(q, durable=True, arguments=args), "queue " + q)
        check(lambda: self._ch.queue_declare(self.status_queue, exclusive=True, auto_delete=True), "queue " + self.status_queue)

    def close(self):
        """Close the connection. Calls submitted and not collected stay
        queued; their replies wait in the result queue (nothing is canceled)."""
        if self._conn.is_open:
            self._conn.close()

    # --- consuming --------------------------------------------------------------------

    def _keep(self, call_id, outcome):
        if call_id in self._kept:
            return  # the first outcome kept for a call id wins; later duplicates are dropped
        self._kept[call_id] = outcome
        while len(self._kept) > MAX_KEPT:
            self._kept.pop(next(iter(self._kept)))

    def _on_result(self, ch, method, props, body):
        try:
            res = envelope.Result.FromString(body)
            self._keep(props.correlation_id or res.call_id, ("result", res))
        except Exception:  # an unreadable reply answers nothing
            pass
        ch.basic_ack(method.delivery_tag)

    def _on_error(self, ch, method, props, body):
        code = (props.headers or {}).get(HEADER_CODE, Code.INTERNAL)
        self._keep(props.correlation_id or "", ("error", int(code), body.decode("utf-8", "replace")))
        ch.basic_ack(method.delivery_tag)

    def _on_status(self, ch, method, props, body):
        try:
            st = envelope.Status.FromString(body)
        except Exception:
            return
        self._statuses[st.call_id] = st  # latest wins

    def status(self, call_id):
        """The latest Status received for call_id, or None."""
        self._conn.process_data_events(0)
        return self._statuses.get(call_id)

    # --- calls ------------------------------------------------------------------------

    def submit(self, method, msg, timeout=None, call_id=None, metadata=None, deadline_ns=None, broker_expiration=True):
        """Publish a call and return its call id once the broker confirmed
        it (it is then on disk in the service queue). The result is
        collected later, by this process or by a later one with the same
        client name (collect). broker_expiration=False leaves out the
        expiration property, for tests that want the server, not the broker,
        to meet an expired request."""
        if call_id is None:
            call_id, first = self.session.next()
        else:
            self._conn.process_data_events(0)
            if call_id in self._kept:
                # Its outcome is here already (a reply that waited in the
                # queue, or came after its caller gave up): a repeat takes
                # it without publishing (docs/protocol-amqp.md §3 step 4).
                return call_id
            first = self.session.repeat(call_id)
        if deadline_ns is None:
            deadline_ns = envelope.deadline_after(timeout)
        req = envelope.request(call_id, method, msg.SerializeToString(), deadline_ns, metadata, first)
        self.publish(req.SerializeToString(), call_id, deadline_ns, broker_expiration)
        return call_id

    def publish(self, body, correlation_id, deadline_ns=0, broker_expiration=True):
        """Publish an encoded request body (docs/protocol-amqp.md §2.1)."""
        headers = {}
        expiration = None
        if deadline_ns:
            headers[HEADER_DEADLINE] = deadline_ns // 1_000_000
            if broker_expiration:
                expiration = str(max(1, (deadline_ns - time.time_ns()) // 1_000_000))
        props = pika.BasicProperties(
            delivery_mode=2, correlation_id=correlation_id, reply_to=self.results_queue,
            expiration=expiration, user_id=self._user, headers=headers or None,
            timestamp=int(time.time()), content_type=CONTENT_PROTO, type="bankrpc.wire.v1.Request")
        try:
            self._ch.basic_publish(REQUEST_EXCHANGE, self.service, body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise RpcError(Code.UNAVAILABLE, "no queue for service %r: the broker returned the request" % self.service, correlation_id, local=True)
        except pika.exceptions.NackError:
            raise RpcError(Code.UNAVAILABLE, "the broker refused the request (basic.nack)", correlation_id, local=True)

    def cancel(self, call_id):
        """Tell every replica of the service to cancel call_id
        (docs/protocol-amqp.md §2.6); best-effort, no reply."""
        props = pika.BasicProperties(delivery_mode=1, correlation_id=call_id, user_id=self._user,
                                     timestamp=int(time.time()), content_type=CONTENT_PROTO, type="bankrpc.wire.v1.Request")
        self._ch.basic_publish(CANCEL_EXCHANGE, self.service, envelope.cancel(call_id).SerializeToString(), props)
        self.session.end(call_id, answered=False)

    def collect(self, call_id, response_type=None, timeout=None):
        """The outcome of call_id, from the result and error queues: its
        response (the Result itself when response_type is None), or
        RpcError. Waits up to timeout seconds (None: forever); then
        DEADLINE_EXCEEDED, with the call still pending: collect again."""
        end = None if timeout is None else time.monotonic() + timeout
        while call_id not in self._kept:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise RpcError(Code.DEADLINE_EXCEEDED, "no outcome for call %s within %.1fs" % (call_id, timeout), call_id, local=True)
            self._conn.process_data_events(time_limit=min(0.1, left) if left is not None else 0.1)
        outcome = self._kept.pop(call_id)
        code = outcome[1] if outcome[0] == "error" else outcome[1].code
        self.session.end(call_id, answered=settles(code))
        if outcome[0] == "error":
            raise RpcError(outcome[1], outcome[2], call_id)
        if response_type is None:
            return outcome[1]
        return envelope.outcome(outcome[1], response_type)

    def finished(self):
        """The call ids whose outcome arrived and was not collected yet."""
        self._conn.process_data_events(0)
        return list(self._kept)

    def call(self, method, msg, response_type, timeout=None, grace=0.0, **kw):
        """Submit and collect: the outcome by the deadline (plus grace
        seconds, to wait for the server's own answer), else
        DEADLINE_EXCEEDED (outcome unknown: repeat with the same call id)."""
        call_id = self.submit(method, msg, timeout=timeout, **kw)
        deadline_ns = kw.get("deadline_ns")
        wait = timeout
        if deadline_ns:
            wait = max(0.0, (deadline_ns - time.time_ns()) / 1e9)
        if wait is not None:
            wait += grace
        try:
            return self.collect(call_id, response_type, wait)
        except RpcError as e:
            if e.local:
                self.session.end(call_id, answered=False)
            raise
