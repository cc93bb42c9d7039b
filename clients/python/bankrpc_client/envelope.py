"""The envelope (PROTOCOL.md §1): building requests and reading results.

The message classes come from `protoc --python_out` run on
proto/bankrpc/wire/v1/envelope.proto; the directory it wrote must be on
sys.path, so that `bankrpc.wire.v1.envelope_pb2` imports."""

import re
import time

import google.protobuf  # noqa: F401 -- the generated modules' runtime: python3-protobuf, 3.21 as Debian 12's protoc

from bankrpc.wire.v1 import envelope_pb2  # generated: see the package README

from .codes import Code, RpcError

Request = envelope_pb2.Request
Result = envelope_pb2.Result
Status = envelope_pb2.Status

# PROTOCOL.md §1.1: "/" service "/" method, each part non-empty, the method
# part without "/".
_METHOD = re.compile(r"^/[^/]+/[^/]+$")

# PROTOCOL.md §2.6: metadata keys.
_KEY = re.compile(r"^[0-9a-z_.-]+$")
MAX_METADATA = 8 << 10


def valid_method(method):
    return bool(_METHOD.match(method))


def deadline_after(timeout):
    """The absolute deadline, in Unix nanoseconds, timeout seconds from now;
    0 (none) for None."""
    if timeout is None:
        return 0
    return time.time_ns() + int(timeout * 1e9)


def request(call_id, method, payload, deadline_ns=0, metadata=None, first_unanswered=0):
    """A Request envelope, checked as a server would (PROTOCOL.md §1.1,
    §2.6), so that a mistake is reported here, not by the server."""
    if not call_id:
        raise RpcError(Code.INVALID_ARGUMENT, "a call id must not be empty", local=True)
    if not valid_method(method):
        raise RpcError(Code.INVALID_ARGUMENT, "method %r is not of the form /package.Service/Method" % method, local=True)
    req = Request(call_id=call_id, method=method, payload=payload,
                  deadline_unix_nano=deadline_ns, first_unanswered=first_unanswered)
    size = 0
    for key, values in sorted((metadata or {}).items()):
        if isinstance(values, str):
            values = [values]
        if not _KEY.match(key) or key.startswith("bankrpc-"):
            raise RpcError(Code.INVALID_ARGUMENT, "metadata key %r: lower-case 0-9 a-z - _ . and not bankrpc-" % key, local=True)
        for v in values:
            req.metadata.add(key=key, value=v)
            size += len(key.encode()) + len(v.encode()) + 32
    if size > MAX_METADATA:
        raise RpcError(Code.RESOURCE_EXHAUSTED, "metadata of %d bytes over the limit of %d" % (size, MAX_METADATA), local=True)
    return req


def cancel(call_id):
    """A cancel of call_id (PROTOCOL.md §2.5)."""
    return Request(call_id=call_id, cancel=True)


def outcome(result, response_type):
    """The response message of a Result, or RpcError for a failed one."""
    if result.code != 0:
        raise RpcError(result.code, result.reason, result.call_id, result.log, result.details)
    resp = response_type()
    resp.ParseFromString(result.payload)
    return resp
