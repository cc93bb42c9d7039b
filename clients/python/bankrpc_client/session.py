"""Call ids of the session form and first_unanswered (PROTOCOL.md §2.1)."""

import os
import threading

# How many calls whose outcome stayed unknown a session keeps pending, as the
# Go client does: a repeat of one of them can still be answered from the
# server's record.
MAX_UNKNOWN = 1024


class Session:
    """One client session: call ids "<session>-<seq>", a random 16-hex-digit
    session and sequence numbers from 1, and the lowest sequence number whose
    reply the client still lacks. Safe for use by several threads."""

    def __init__(self, session_id=None):
        self.id = session_id or os.urandom(8).hex()
        self._lock = threading.Lock()
        self._last = 0
        self._pending = set()
        self._unknown = []

    def next(self):
        """A new call: its call id and the first_unanswered to send with it.
        The new sequence counts as pending at once, so that no request can
        claim a first unanswered above a call about to be sent."""
        with self._lock:
            self._last += 1
            self._pending.add(self._last)
            return "%s-%d" % (self.id, self._last), min(self._pending)

    def repeat(self, call_id):
        """The first_unanswered for a repeat of call_id: a call of this
        session is pending again until answered; any other call id gets 0
        (not said: PROTOCOL.md §2.1)."""
        seq = self.seq_of(call_id)
        if seq is None:
            return 0
        with self._lock:
            self._pending.add(seq)
            return min(self._pending)

    def seq_of(self, call_id):
        head, _, tail = call_id.rpartition("-")
        if head != self.id or not tail.isdigit() or int(tail) == 0:
            return None
        return int(tail)

    def end(self, call_id, answered):
        """Settle a call: answered (a result came from the server that
        settles it: codes.settles, PROTOCOL.md C2) removes it from the
        pending set; otherwise (no result, or UNAVAILABLE, DEADLINE_EXCEEDED
        or CANCELED, which invite a repeat under the same call id) it stays
        pending among the latest MAX_UNKNOWN unknown outcomes."""
        seq = self.seq_of(call_id)
        if seq is None:
            return
        with self._lock:
            if seq not in self._pending:
                return
            if not answered:
                self._unknown.append(seq)
                if len(self._unknown) <= MAX_UNKNOWN:
                    return
                seq = self._unknown.pop(0)
            elif seq in self._unknown:
                self._unknown.remove(seq)
            self._pending.discard(seq)

    def first_unanswered(self):
        with self._lock:
            return min(self._pending) if self._pending else self._last + 1
