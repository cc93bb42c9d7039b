"""The Python client against the Go bank, over ZeroMQ (REQ and DEALER) and
RabbitMQ. Run by clients/python/python_test.go (make test), which starts the
bank and generates the message classes; each test names the PROTOCOL.md
section whose client rule it exercises.

Environment: BANKRPC_ZMQ_ENDPOINT; BANKRPC_AMQP_URL with
BANKRPC_AMQP_SERVICE (served) and BANKRPC_AMQP_IDLE_SERVICE (declared, not
served until the collect phase); BANKRPC_PHASE=submit|collect with
BANKRPC_STATE, a file the submit phase writes for the collect phase."""

import contextlib
import io
import json
import os
import random
import time
import unittest

import pika
import zmq

from bank.v1 import bank_pb2
from bankrpc.test.v1 import test_pb2
from bankrpc.wire.v1 import envelope_pb2
from bankrpc_client import AmqpClient, Code, DealerClient, ReqClient, RpcError, Session
from bankrpc_client.codes import settles

BANK = "/bank.v1.Bank/"
ZMQ = os.environ.get("BANKRPC_ZMQ_ENDPOINT")
AMQP = os.environ.get("BANKRPC_AMQP_URL")
SERVICE = os.environ.get("BANKRPC_AMQP_SERVICE")
IDLE = os.environ.get("BANKRPC_AMQP_IDLE_SERVICE")
PHASE = os.environ.get("BANKRPC_PHASE", "")
T = 10.0  # seconds: every call here is bounded
# The test clients' queues go away a minute after their last consumer.
EXPIRES = 60_000


def account():
    return random.randrange(1000, 2**31 - 1)


class BankCalls:
    """The bank's protocol, over any of the clients: open an account before
    anything else (bank.v1 Open; NOT_FOUND otherwise)."""

    def __init__(self, client):
        self.c = client

    def call(self, method, msg, resp, **kw):
        kw.setdefault("timeout", T)
        return self.c.call(BANK + method, msg, resp, **kw)

    def open(self, acct):
        return self.call("Open", bank_pb2.OpenRequest(account_id=acct), bank_pb2.OpenResponse)

    def deposit(self, acct, amount, **kw):
        return self.call("Deposit", bank_pb2.DepositRequest(account_id=acct, amount=amount), bank_pb2.DepositResponse, **kw).balance

    def withdraw(self, acct, amount, **kw):
        return self.call("Withdraw", bank_pb2.WithdrawRequest(account_id=acct, amount=amount), bank_pb2.WithdrawResponse, **kw).balance

    def transfer(self, acct, to, amount, **kw):
        return self.call("Transfer", bank_pb2.TransferRequest(account_id=acct, to_account_id=to, amount=amount), bank_pb2.TransferResponse, **kw).balance

    def balance(self, acct):
        return self.call("Balance", bank_pb2.BalanceRequest(account_id=acct), bank_pb2.BalanceResponse).balance


class Scenario:
    """The bank's story, run by each transport's test case. make_client()
    returns a client with call(method, msg, response_type, timeout=...,
    call_id=..., deadline_ns=...)."""

    def client(self):
        c = self.make_client()
        self.addCleanup(c.close)
        return BankCalls(c)

    def test_deposit_refused_withdrawal_transfer_balances(self):
        """PROTOCOL.md §2.3, §2.8 (C8): codes; a refusal is not applied."""
        b = self.client()
        a1, a2 = account(), account()
        self.assertTrue(b.open(a1).created)
        b.open(a2)
        self.assertEqual(b.deposit(a1, 100), 100)
        with self.assertRaises(RpcError) as e:
            b.withdraw(a1, 500)
        self.assertEqual(e.exception.code, Code.FAILED_PRECONDITION)
        self.assertIn("insufficient funds", e.exception.reason)
        self.assertFalse(e.exception.applied_unknown, "FAILED_PRECONDITION is 'not applied'")
        self.assertEqual(b.transfer(a1, a2, 30), 70)
        self.assertEqual(b.balance(a1), 70)
        self.assertEqual(b.balance(a2), 30)

    def test_bank_account_must_be_opened_first(self):
        """PROTOCOL.md §4.1 (the bank): Open before anything else."""
        b = self.client()
        with self.assertRaises(RpcError) as e:
            b.deposit(account(), 5)
        self.assertEqual(e.exception.code, Code.NOT_FOUND)

    def test_repeat_with_same_call_id_applied_once(self):
        """PROTOCOL.md §2.1 (C1, C5): a repeat under the same call id is answered with
        the recorded result, never applied twice."""
        b = self.client()
        a = account()
        b.open(a)
        call_id, _ = b.c.session.next()
        self.assertEqual(b.deposit(a, 40, call_id=call_id), 40)
        self.assertEqual(b.deposit(a, 40, call_id=call_id), 40, "the recorded reply")
        self.assertEqual(b.balance(a), 40, "applied once")

    def test_call_id_reused_for_another_request(self):
        """PROTOCOL.md §2.1 (C1): the same call id with another payload is
        INVALID_ARGUMENT, nothing applied."""
        b = self.client()
        a = account()
        b.open(a)
        call_id, _ = b.c.session.next()
        b.deposit(a, 10, call_id=call_id)
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 11, call_id=call_id)
        self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT)
        self.assertEqual(b.balance(a), 10)

    def test_expired_deadline_not_applied(self):
        """PROTOCOL.md §2.2 (C6): a request whose deadline has passed is answered
        DEADLINE_EXCEEDED by the server and not run."""
        b = self.client()
        a = account()
        b.open(a)
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 7, **self.expired(time.time_ns() - 1_000_000_000))
        self.assertEqual(e.exception.code, Code.DEADLINE_EXCEEDED)
        self.assertFalse(e.exception.local, "the server said it: %s" % e.exception)
        self.assertTrue(e.exception.applied_unknown, "DEADLINE_EXCEEDED: outcome unknown")
        self.assertEqual(b.balance(a), 0, "not applied")

    def test_negative_deadline_is_passed(self):
        """PROTOCOL.md §2.2 (C6): a negative deadline is a time before 1970:
        passed."""
        b = self.client()
        a = account()
        b.open(a)
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 7, **self.expired(-5))
        self.assertEqual(e.exception.code, Code.DEADLINE_EXCEEDED)
        self.assertFalse(e.exception.local, "the server said it: %s" % e.exception)
        self.assertEqual(b.balance(a), 0)

    def test_mutating_call_needs_session_call_id(self):
        """PROTOCOL.md §4.2 (the bank): a mutating call whose call id is not
        of the session form is refused with INVALID_ARGUMENT."""
        b = self.client()
        a = account()
        b.open(a)
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 5, call_id="not a session id")
        self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT)
        self.assertEqual(b.balance(a), 0)

    def test_unknown_session_without_first_unanswered_is_aborted(self):
        """PROTOCOL.md §2.1 (C2), §2.8: a session the bank does not know is accepted
        only with first_unanswered == seq; else ABORTED, not applied, and a
        new call id is the way out."""
        b = self.client()
        a = account()
        b.open(a)
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 5, call_id="%016x-3" % random.getrandbits(64))  # first_unanswered 0: not said
        self.assertEqual(e.exception.code, Code.ABORTED)
        self.assertFalse(e.exception.applied_unknown, "ABORTED: not applied now")
        self.assertEqual(b.deposit(a, 5), 5, "a new call id goes through")

    def test_unknown_method(self):
        """PROTOCOL.md §2.3: UNIMPLEMENTED for a method the server lacks."""
        c = self.client().c
        with self.assertRaises(RpcError) as e:
            c.call("/bank.v1.Bank/Steal", bank_pb2.BalanceRequest(account_id=1), bank_pb2.BalanceResponse, timeout=T)
        self.assertEqual(e.exception.code, Code.UNIMPLEMENTED)

    def test_bad_method_refused_before_sending(self):
        """PROTOCOL.md §1.1: the grammar of method, checked by the client."""
        c = self.client().c
        with self.assertRaises(RpcError) as e:
            c.call("bank.v1.Bank/Deposit", bank_pb2.DepositRequest(), bank_pb2.DepositResponse, timeout=T)
        self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT)
        self.assertTrue(e.exception.local)


TEST = "/bankrpc.test.v1.TestService/"


class AnyService:
    """Another service than the bank (bankrpc.test.v1.TestService, served by
    the Go test): the client is not the bank's only."""

    def test_echo_carries_call_id_deadline_and_metadata(self):
        """PROTOCOL.md §1.1, §2.2, §2.6: the handler sees the call id, the
        absolute deadline and every metadata value, in order."""
        c = self.make_client()
        self.addCleanup(c.close)
        deadline = time.time_ns() + 20_000_000_000
        cid, _ = c.session.next()
        r = c.call(TEST + "Echo", test_pb2.EchoRequest(tag="hi", payload=b"\x00\xff"), test_pb2.EchoResponse,
                   call_id=cid, deadline_ns=deadline, metadata={"trace-id": "abc", "k": ["1", "2"]})
        self.assertEqual((r.tag, r.payload, r.call_id, r.deadline_unix_nano), ("hi", b"\x00\xff", cid, deadline))
        self.assertEqual(list(r.metadata), ["k=1", "k=2", "trace-id=abc"])

    def test_bad_metadata_key_refused_before_sending(self):
        """PROTOCOL.md §2.6: keys lower-case 0-9 a-z - _ ., not bankrpc-."""
        c = self.make_client()
        self.addCleanup(c.close)
        for key in ("Trace", "bankrpc-x", ""):
            with self.assertRaises(RpcError) as e:
                c.call(TEST + "Echo", test_pb2.EchoRequest(), test_pb2.EchoResponse, timeout=T, metadata={key: "v"})
            self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT)
            self.assertTrue(e.exception.local)

    def test_handler_error_keeps_its_code(self):
        """PROTOCOL.md §2.3: a handler's code and reason reach the caller."""
        c = self.make_client()
        self.addCleanup(c.close)
        with self.assertRaises(RpcError) as e:
            c.call(TEST + "Fail", test_pb2.FailRequest(code=Code.FAILED_PRECONDITION, message="no"), test_pb2.FailResponse, timeout=T)
        self.assertEqual((e.exception.code, e.exception.reason), (Code.FAILED_PRECONDITION, "no"))

    def test_panic_is_internal_and_outcome_unknown(self):
        """PROTOCOL.md §2.3, §2.8: a panicking handler is INTERNAL, outcome unknown."""
        c = self.make_client()
        self.addCleanup(c.close)
        with self.assertRaises(RpcError) as e:
            c.call(TEST + "Panic", test_pb2.PanicRequest(message="boom"), test_pb2.PanicResponse, timeout=T)
        self.assertEqual(e.exception.code, Code.INTERNAL)
        self.assertTrue(e.exception.applied_unknown)
        self.assertNotIn("boom", e.exception.reason, "the panic's value stays in the server's log")


@unittest.skipIf(PHASE, "the %s phase runs its own test only" % PHASE)
@unittest.skipUnless(ZMQ, "BANKRPC_ZMQ_ENDPOINT not set")
class ZmqDealer(Scenario, AnyService, unittest.TestCase):
    def make_client(self):
        return DealerClient(ZMQ)

    def expired(self, deadline_ns):
        return {"deadline_ns": deadline_ns, "grace": T}

    def test_garbage_answered_with_empty_call_id(self):
        """PROTOCOL.md §1.4, docs/protocol-zmq.md §4: an unreadable request
        gets a Result INVALID_ARGUMENT with an empty call id, matched by the
        correlation frame."""
        c = self.make_client()
        self.addCleanup(c.close)
        res = c.wait(c.start_frame("junk-1", b"\xff\xfe not an envelope"))
        self.assertEqual(res.code, Code.INVALID_ARGUMENT)
        self.assertEqual(res.call_id, "")
        bad = envelope_pb2.Request(call_id="bad-method-1", method="nope").SerializeToString()
        res = c.wait(c.start_frame("junk-2", bad))
        self.assertEqual(res.code, Code.INVALID_ARGUMENT, "a readable envelope with a bad method: a Result too")
        self.assertEqual(res.call_id, "bad-method-1")
        self.assertEqual(BankCalls(c).open(account()).balance, 0, "the server goes on")

    def test_calls_in_flight_at_once(self):
        """docs/protocol-zmq.md §2.2: replies matched by correlation frame."""
        b = self.client()
        accts = [account() for _ in range(5)]
        for a in accts:
            b.open(a)
        ids = [b.c.start(BANK + "Deposit", bank_pb2.DepositRequest(account_id=a, amount=i + 1), timeout=T) for i, a in enumerate(accts)]
        for i, cid in enumerate(reversed(ids)):
            self.assertEqual(b.c.wait(cid, bank_pb2.DepositResponse).balance, len(ids) - i)

    def test_cancel_before_the_call(self):
        """PROTOCOL.md §2.5 (C7): a cancel that comes before its call makes the
        server answer that call CANCELED without running it."""
        b = self.client()
        a = account()
        b.open(a)
        call_id, _ = b.c.session.next()
        b.c.start_frame("warmup", b"")  # nothing: just make sure the connection is up
        b.c._pump(0.2)
        b.c._calls.pop("warmup", None)
        b.c._sock.send_multipart([call_id.encode(), envelope_pb2.Request(call_id=call_id, cancel=True).SerializeToString()])
        with self.assertRaises(RpcError) as e:
            b.deposit(a, 9, call_id=call_id)
        self.assertEqual(e.exception.code, Code.CANCELED)
        self.assertEqual(b.balance(a), 0)

    def test_cancel_reaches_the_handler(self):
        """PROTOCOL.md §2.5 (C7): a cancel on the same socket ends the call
        on the server: the handler's run ends early (or, had the cancel come
        before the run started, the call is answered CANCELED); nothing
        answers the cancel itself."""
        c = self.make_client()
        self.addCleanup(c.close)
        cid = c.start(TEST + "Sleep", test_pb2.SleepRequest(nanos=60_000_000_000), timeout=60)
        end = time.monotonic() + T
        while c._calls[cid].written_on is None:  # cancels go only for calls written on this connection
            self.assertLess(time.monotonic(), end, "the call was never written")
            c._pump(0.01)
            c._write_pending()
        c._pump(0.2)
        c._sock.send_multipart([cid.encode(), envelope_pb2.Request(call_id=cid, cancel=True).SerializeToString()])
        c._calls[cid].give_up = time.monotonic() + T  # wait T more, far less than the 60 s sleep
        res = c.wait(cid)
        if res.code == Code.CANCELED:
            return  # the cancel came before the run: answered without running
        self.assertEqual(res.code, 0, res.reason)
        self.assertTrue(test_pb2.SleepResponse.FromString(res.payload).interrupted)

    def pump_until(self, c, srv):
        """Let c run until srv has a message to read, for at most T seconds."""
        end = time.monotonic() + T
        while not srv.poll(10):
            self.assertLess(time.monotonic(), end, "the client sent nothing")
            c._pump(0.01)
            c._write_pending()

    def test_resend_on_reconnection(self):
        """docs/protocol-zmq.md §3.1: a DEALER client resends a call in flight,
        same call id and frame, when a connection comes back, and never on a
        timer. A stand-in server takes the request, dies unanswered, comes
        back on the same endpoint and answers the resend."""
        ctx = zmq.Context.instance()
        srv = ctx.socket(zmq.ROUTER)
        srv.setsockopt(zmq.LINGER, 0)
        port = srv.bind_to_random_port("tcp://127.0.0.1")
        c = DealerClient("tcp://127.0.0.1:%d" % port, dead_after=T)
        self.addCleanup(c.close)
        call_id = c.start(BANK + "Balance", bank_pb2.BalanceRequest(account_id=1), timeout=T)
        self.pump_until(c, srv)
        first = srv.recv_multipart()
        self.assertEqual(first[1], call_id.encode())
        c._pump(0.5)
        self.assertFalse(srv.poll(0), "no resend while the connection stays up")
        srv.close(linger=0)  # the server dies with the call unanswered
        srv = ctx.socket(zmq.ROUTER)
        srv.setsockopt(zmq.LINGER, 0)
        self.addCleanup(srv.close, 0)
        for _ in range(100):  # libzmq releases the port in its I/O thread, a moment after close
            try:
                srv.bind("tcp://127.0.0.1:%d" % port)
                break
            except zmq.ZMQError:
                time.sleep(0.02)
        self.pump_until(c, srv)
        again = srv.recv_multipart()
        self.assertEqual(again[1:], first[1:], "the same correlation frame and request")
        req = envelope_pb2.Request.FromString(again[2])
        res = envelope_pb2.Result(call_id=req.call_id, payload=bank_pb2.BalanceResponse(balance=42).SerializeToString())
        srv.send_multipart([again[0], again[1], res.SerializeToString()])
        self.assertEqual(c.wait(call_id, bank_pb2.BalanceResponse).balance, 42)

    def test_no_server_is_unavailable(self):
        """PROTOCOL.md §2.3, §3 (ZeroMQ): no server reached for the dead window is
        UNAVAILABLE (docs/protocol-zmq.md §3.2)."""
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.ROUTER)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        s.close(linger=0)
        c = DealerClient("tcp://127.0.0.1:%d" % port, dead_after=0.5)
        self.addCleanup(c.close)
        with self.assertRaises(RpcError) as e:
            BankCalls(c).balance(1)
        self.assertEqual(e.exception.code, Code.UNAVAILABLE)


@unittest.skipIf(PHASE, "the %s phase runs its own test only" % PHASE)
@unittest.skipUnless(ZMQ, "BANKRPC_ZMQ_ENDPOINT not set")
class ZmqReq(Scenario, unittest.TestCase):
    def make_client(self):
        return ReqClient(ZMQ, attempt_timeout=T)

    def expired(self, deadline_ns):
        return {"deadline_ns": deadline_ns, "grace": T}

    def test_garbage_answered(self):
        """docs/protocol-zmq.md §4 with a REQ socket: one frame in, one out."""
        c = self.make_client()
        self.addCleanup(c.close)
        res = c.exchange(b"\xff\xfe not an envelope")
        self.assertEqual(res.code, Code.INVALID_ARGUMENT)
        self.assertEqual(res.call_id, "")

    def test_lazy_pirate_resend_same_call_id(self):
        """docs/protocol-zmq.md §3.1: a REQ client resends on a new socket
        under the same call id; the bank applies the call once."""
        b = BankCalls(ReqClient(ZMQ, attempt_timeout=T))
        self.addCleanup(b.c.close)
        a = account()
        b.open(a)
        call_id, first = b.c.session.next()
        frame = envelope_pb2.Request(call_id=call_id, method=BANK + "Deposit", first_unanswered=first,
                                     payload=bank_pb2.DepositRequest(account_id=a, amount=3).SerializeToString()).SerializeToString()
        b.c._sock.send(frame)  # the first copy: its reply is never read
        b.c.close()
        b.c._open()
        res = b.c.exchange(frame)
        self.assertEqual(res.code, 0)
        self.assertEqual(bank_pb2.DepositResponse.FromString(res.payload).balance, 3)
        self.assertEqual(b.balance(a), 3)


def python_block(path, after):
    """The first ```python block of path after the line that starts with after."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "..", path)).read()
    text = text[text.index(after):]
    start = text.index("```python\n") + len("```python\n")
    return text[start:text.index("```", start)]


@unittest.skipIf(PHASE, "the %s phase runs its own test only" % PHASE)
class SessionRules(unittest.TestCase):
    """PROTOCOL.md C2, without a server: which results settle a sequence."""

    def test_retryable_results_keep_the_sequence_pending(self):
        """UNAVAILABLE, DEADLINE_EXCEEDED and CANCELED invite a repeat under
        the same call id, so the sequence stays the first unanswered; any
        other result settles it (Go: TestRetryableResultsKeepTheSequencePending)."""
        for code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELED):
            s = Session()
            first, _ = s.next()
            s.end(first, answered=settles(code))
            _, f = s.next()
            self.assertEqual(f, 1, "after %s, sequence 1 is still unanswered" % code.name)
            self.assertEqual(s.repeat(first), 1)
            s.end(first, answered=settles(Code.OK))
            self.assertEqual(s.first_unanswered(), 2, "the repeat's OK settles sequence 1")
        for code in (Code.OK, Code.FAILED_PRECONDITION, Code.ABORTED, Code.INTERNAL, Code.UNKNOWN):
            s = Session()
            first, _ = s.next()
            s.end(first, answered=settles(code))
            _, f = s.next()
            self.assertEqual(f, 2, "a result with %s settles sequence 1" % code.name)


@unittest.skipIf(PHASE, "the %s phase runs its own test only" % PHASE)
@unittest.skipUnless(ZMQ, "BANKRPC_ZMQ_ENDPOINT not set")
class DocExamples(unittest.TestCase):
    """The examples of the documents work on a fresh account, as written
    (only the endpoint and the account id are changed)."""

    def run_example(self, code):
        a = account()
        code = code.replace("tcp://127.0.0.1:4040", ZMQ).replace("account_id=7", "account_id=%d" % a)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "example", "exec"), {})
        return out.getvalue().split()

    def test_protocol_zmq_req_example(self):
        """docs/protocol-zmq.md §2.3: the REQ example (Open, then Deposit)."""
        self.assertEqual(self.run_example(python_block("docs/protocol-zmq.md", "A minimal Python client")), ["100"])

    def test_protocol_first_session_example(self):
        """PROTOCOL.md §4.4: the first session, step by step."""
        self.assertEqual(self.run_example(python_block("PROTOCOL.md", "### 4.4")), ["100"])


@unittest.skipIf(PHASE, "the %s phase runs its own test only" % PHASE)
@unittest.skipUnless(AMQP and SERVICE, "BANKRPC_AMQP_URL and BANKRPC_AMQP_SERVICE not set")
class Amqp(Scenario, AnyService, unittest.TestCase):
    def make_client(self):
        return AmqpClient(AMQP, SERVICE, queue_expires_ms=EXPIRES)

    def expired(self, deadline_ns):
        # Without the expiration property the broker keeps it, so that the
        # server meets it (with it, the broker may drop it: docs/protocol-amqp.md §5).
        return {"deadline_ns": deadline_ns, "grace": T, "broker_expiration": False}

    def raw(self):
        conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        self.addCleanup(conn.close)
        return conn.channel()

    def test_garbage_answered_on_the_error_queue(self):
        """PROTOCOL.md §1.4, docs/protocol-amqp.md §2.3: an unreadable
        envelope, or a readable one without a call id or with a bad method,
        is answered on the error queue as text with its bankrpc-code."""
        c = self.make_client()
        self.addCleanup(c.close)
        for i, body in enumerate([b"\xff\xfe not an envelope",
                                  envelope_pb2.Request(method=BANK + "Open").SerializeToString(),
                                  envelope_pb2.Request(call_id="x", method="nope").SerializeToString()]):
            c.publish(body, "garbage-%d" % i)
            with self.assertRaises(RpcError) as e:
                c.collect("garbage-%d" % i, timeout=T)
            self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT, e.exception)
        self.assertEqual(BankCalls(c).open(account()).balance, 0, "the server goes on")

    def test_cancel_reaches_the_handler(self):
        """PROTOCOL.md §2.5 (C7), docs/protocol-amqp.md §2.6: a cancel
        through bankrpc.cancels ends the handler's run; the run's result is
        the reply to the request, in the result queue."""
        c = self.make_client()
        self.addCleanup(c.close)
        cid = c.submit(TEST + "Sleep", test_pb2.SleepRequest(nanos=60_000_000_000), timeout=60)
        time.sleep(0.5)  # usually taken by the server by now
        c.cancel(cid)
        try:
            self.assertTrue(c.collect(cid, test_pb2.SleepResponse, timeout=T).interrupted)
        except RpcError as e:  # the cancel came before the run: answered without running
            self.assertEqual(e.code, Code.CANCELED, e)

    def test_progress_statuses(self):
        """PROTOCOL.md §1.3, docs/protocol-amqp.md §2.4: statuses reach the
        client's status queue, best-effort, latest wins."""
        c = self.make_client()
        self.addCleanup(c.close)
        cid = c.submit(TEST + "Progress", test_pb2.ProgressRequest(steps=3), timeout=T)
        self.assertEqual(c.collect(cid, test_pb2.ProgressResponse, timeout=T).sent, 3)
        end = time.monotonic() + T
        while (c.status(cid) is None or c.status(cid).reason != "step 3") and time.monotonic() < end:
            time.sleep(0.01)
        self.assertEqual(c.status(cid).reason, "step 3")

    def test_second_client_with_the_same_name_refused(self):
        """docs/protocol-amqp.md §1: one live client per client name; a
        second gets FAILED_PRECONDITION."""
        c = self.make_client()
        self.addCleanup(c.close)
        with self.assertRaises(RpcError) as e:
            AmqpClient(AMQP, SERVICE, client_name=c.client_name, queue_expires_ms=EXPIRES)
        self.assertEqual(e.exception.code, Code.FAILED_PRECONDITION)

    def test_unknown_service_refused(self):
        """docs/protocol-amqp.md §1: the client checks that the service's
        queue exists (FAILED_PRECONDITION: start a server once)."""
        with self.assertRaises(RpcError) as e:
            AmqpClient(AMQP, "no-such-service-%x" % random.getrandbits(32))
        self.assertEqual(e.exception.code, Code.FAILED_PRECONDITION)

    def test_submit_then_collect_in_order_of_choice(self):
        """docs/protocol-amqp.md §3: submit several, collect in any order."""
        c = self.make_client()
        self.addCleanup(c.close)
        b = BankCalls(c)
        a = account()
        b.open(a)
        ids = [c.submit(BANK + "Deposit", bank_pb2.DepositRequest(account_id=a, amount=1), timeout=T)]
        ids.append(c.submit(BANK + "Balance", bank_pb2.BalanceRequest(account_id=a), timeout=T))
        self.assertGreaterEqual(c.collect(ids[1], bank_pb2.BalanceResponse, timeout=T).balance, 0)
        self.assertEqual(c.collect(ids[0], bank_pb2.DepositResponse, timeout=T).balance, 1)


@unittest.skipUnless(AMQP and IDLE and PHASE == "submit", "run by the submit phase")
class AmqpSubmitWhileNoServer(unittest.TestCase):
    def test_submit(self):
        """docs/protocol-amqp.md §3 step 7: submit while no server runs; the
        requests wait in the durable service queue."""
        name = "py-%x" % random.getrandbits(48)
        a = account()
        opener = AmqpClient(AMQP, SERVICE, queue_expires_ms=EXPIRES)  # the same bank, served under another service name
        BankCalls(opener).open(a)
        opener.close()
        c = AmqpClient(AMQP, IDLE, client_name=name, queue_expires_ms=EXPIRES)
        # One mutating call: the first of its session (first_unanswered ==
        # seq), so no ordering between calls of a new session is needed
        # (PROTOCOL.md §2.1); a Balance changes nothing and may run first.
        dep = c.submit(BANK + "Deposit", bank_pb2.DepositRequest(account_id=a, amount=25), timeout=120)
        bal = c.submit(BANK + "Balance", bank_pb2.BalanceRequest(account_id=a), timeout=120)
        c.close()
        with open(os.environ["BANKRPC_STATE"], "w") as f:
            json.dump({"name": name, "account": a, "deposit": dep, "balance": bal}, f)


@unittest.skipUnless(AMQP and IDLE and PHASE == "collect", "run by the collect phase")
class AmqpCollectLater(unittest.TestCase):
    def test_collect(self):
        """docs/protocol-amqp.md §3 step 7: a later process with the same
        client name collects the results from the durable result queue."""
        with open(os.environ["BANKRPC_STATE"]) as f:
            st = json.load(f)
        c = AmqpClient(AMQP, IDLE, client_name=st["name"], queue_expires_ms=EXPIRES)
        self.addCleanup(c.close)
        self.assertEqual(c.collect(st["deposit"], bank_pb2.DepositResponse, timeout=30).balance, 25)
        self.assertIn(c.collect(st["balance"], bank_pb2.BalanceResponse, timeout=30).balance, (0, 25))
        self.assertEqual(BankCalls(c).balance(st["account"]), 25)


if __name__ == "__main__":
    unittest.main()
