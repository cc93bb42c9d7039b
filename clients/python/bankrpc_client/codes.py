"""Status codes of the bankrpc protocol (PROTOCOL.md §2.3): gRPC's canonical
names and numbers, and what each one tells a client about whether the call
was applied (PROTOCOL.md §2.8)."""

import enum


class Code(enum.IntEnum):
    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# PROTOCOL.md §2.8: the codes after which the call was certainly not applied
# (refused before or by the handler, which changed nothing). ABORTED is among
# them: not applied now, but an earlier delivery may have been, so the caller
# checks the state and decides, under a NEW call id.
NOT_APPLIED = frozenset({
    Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS,
    Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION, Code.ABORTED,
    Code.OUT_OF_RANGE, Code.UNIMPLEMENTED, Code.UNAUTHENTICATED,
})

# PROTOCOL.md §2.8: outcome unknown. Repeating the same request under the
# same call id is safe and tells the outcome (the recorded reply, or a run).
OUTCOME_UNKNOWN = frozenset({
    Code.CANCELED, Code.UNKNOWN, Code.DEADLINE_EXCEEDED,
    Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS,
})


def name(code):
    """The canonical name of a code number, or the number for an unknown one
    (PROTOCOL.md §2.3: a code outside the table is passed on as it is)."""
    try:
        return Code(code).name
    except ValueError:
        return str(code)


class RpcError(Exception):
    """A call that did not succeed: the code, the server's (or the client's)
    reason, the call id, and the result's log lines and details."""

    def __init__(self, code, reason, call_id="", log=(), details=(), local=False):
        super().__init__("%s: %s" % (name(code), reason))
        self.code = int(code)
        self.reason = reason
        self.call_id = call_id
        self.log = list(log)
        self.details = list(details)
        # local: the client decided (no answer, deadline passed here), the
        # server did not say it.
        self.local = local

    @property
    def applied_unknown(self):
        """True when the call may have been applied: repeat it with the same
        call id to learn its outcome (PROTOCOL.md §2.8)."""
        return self.code not in NOT_APPLIED


# PROTOCOL.md C2: a result with one of these codes invites a repeat under the
# same call id (section 2.8), so it does not settle the call's sequence: the
# session keeps it unanswered in first_unanswered until a repeat gets
# another result.
RETRY_SAME_ID = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELED})


def settles(code):
    """Whether a result with code, received from the server, settles its
    call's sequence in the session (PROTOCOL.md C2)."""
    return code not in RETRY_SAME_ID
