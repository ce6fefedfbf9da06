"""Handing messages out: Pull, Acknowledge, ModifyAckDeadline and streaming pulls.

Expired leases are found lazily, whenever a subscription is pulled from (a waiting
streaming pull wakes up at the next lease deadline), so no background thread is
needed. A message whose lease ends (nack or expiry) after its last allowed delivery
attempt is forwarded to the dead-letter topic at that moment.

Response size. A Pull or StreamingPull response is kept under ``MAX_RESPONSE_BYTES``,
just under gRPC's default 4 MiB receive limit, and a message that would push a
response over it waits for the next one. Why: with ``PUBSUB_EMULATOR_HOST`` set, the
official client builds ``grpc.insecure_channel(host)`` with that default limit
(against Google its transport sets -1, no limit), and Beam's DirectRunner reads with
exactly that client, ``Pull(max_messages=10)``. Pub/Sub accepts messages up to 10 MB,
so if a 5 MB message shared a response with others, the client would reject the
whole response (RESOURCE_EXHAUSTED) and every message in it would sit out its ack
deadline, again and again. Capped, a message over the limit is delivered alone: a
client with the limit fails on it alone (it is redelivered after its deadline and,
under a dead-letter policy, dead-lettered after its last attempt), and a client
without the limit takes it.
"""
from __future__ import annotations

import logging
import time

import grpc

from emulators.pubsub import limits, names
from emulators.pubsub.errors import ApiError, failed_precondition, invalid, not_found
from emulators.pubsub.queue import Lessee
from emulators.pubsub.state import PubSubState, now_us
from emulators.pubsub.wire import PER_MESSAGE_OVERHEAD

__all__ = ["Delivery", "Stream", "MAX_RESPONSE_BYTES", "GRPC_DEFAULT_RECEIVE_BYTES",
           "STREAM_BATCH"]

_LOGGER = logging.getLogger(__name__)

# gRPC's default max_receive_message_length, which the official client keeps when it
# talks to an emulator.
GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024
# An encoded response is at most this big unless it holds a single message that is
# bigger on its own (16 KiB of headroom for the response's own fields and framing;
# each message is counted with PER_MESSAGE_OVERHEAD for its ack id and tags).
MAX_RESPONSE_BYTES = GRPC_DEFAULT_RECEIVE_BYTES - 16 * 1024
# Messages per streaming-pull response; the client's own flow control caps it too.
STREAM_BATCH = 1000
# A waiter never sleeps past a lease deadline by more than this (it rounds up).
_DEADLINE_SLACK_S = 0.001


class Stream:
    """One open StreamingPull: its subscription, lease length and flow control."""

    __slots__ = ("record", "lessee", "ack_deadline_us", "closed", "error")

    def __init__(self, record, ack_deadline_s: int, max_messages: int, max_bytes: int):
        self.record = record
        self.lessee = Lessee(max_messages, max_bytes)
        self.ack_deadline_us = ack_deadline_s * 1_000_000
        self.closed = False
        self.error = None        # an ApiError found while reading the client's requests


def check_stream_deadline(seconds: int) -> None:
    if not limits.MIN_ACK_DEADLINE_S <= seconds <= limits.MAX_ACK_DEADLINE_S:
        raise invalid(f"Invalid stream_ack_deadline_seconds={seconds}: it must be "
                      f"between {limits.MIN_ACK_DEADLINE_S} and "
                      f"{limits.MAX_ACK_DEADLINE_S}.")


class Delivery:
    """Pull-side operations over a :class:`PubSubState` (sharing its lock)."""

    def __init__(self, state: PubSubState):
        self._state = state
        self._lock = state.lock

    # -- helpers (lock held) --------------------------------------------------------
    def _record_locked(self, name: str):
        record = self._state.sub_locked(name)
        if record.resource.detached:
            raise failed_precondition(f"Subscription {name!r} is detached: it delivers "
                                      "no messages. Create a new subscription.")
        return record

    def _take_locked(self, record, max_messages: int, lease_us: int, lessee=None):
        """Lease ready messages: ``[(ack_id, message bytes, delivery_attempt), ...]``."""
        now = now_us()
        queue = record.queue
        queue.prune(now - record.retention_us)
        dead = queue.expire(now)
        if dead:
            self._state.dead_letter_locked(record, dead)
        entries = queue.take(max_messages, MAX_RESPONSE_BYTES, now + lease_us, lessee,
                             PER_MESSAGE_OVERHEAD)
        if not entries:
            return entries
        counted = bool(queue.max_attempts)  # delivery_attempt is set only with a DLQ
        ack_id = queue.ack_id
        return [(ack_id(e), e.wire, e.attempts if counted else 0) for e in entries]

    def _wait_locked(self, record, remaining_s: float) -> None:
        """Wait for news on the subscription, but not past its next lease deadline."""
        next_deadline = record.queue.next_deadline_us()
        if next_deadline is not None:
            until_deadline = (next_deadline - now_us()) / 1e6 + _DEADLINE_SLACK_S
            remaining_s = min(remaining_s, max(until_deadline, _DEADLINE_SLACK_S))
        record.cond.wait(remaining_s)

    def _ack_locked(self, record, ack_ids) -> int:
        queue = record.queue
        acked = 0
        bad = []
        for ack_id in ack_ids:
            try:
                acked += queue.ack(ack_id)
            except ValueError:
                bad.append(ack_id)
        if acked:
            record.cond.notify_all()   # frees flow control of streaming pulls
        if bad:
            raise invalid(f"Invalid ack id(s) {bad[:3]!r}: pass ack ids exactly as "
                          "received from Pull or StreamingPull.")
        return acked

    def _modify_locked(self, record, ack_ids, seconds: int) -> None:
        limits.check_modify_deadline(seconds)
        queue = record.queue
        deadline_us = None if seconds == 0 else now_us() + seconds * 1_000_000
        dead = []
        bad = []
        for ack_id in ack_ids:
            try:
                entry = queue.modify(ack_id, deadline_us)
            except ValueError:
                bad.append(ack_id)
                continue
            if entry is not None:
                dead.append(entry)
        if dead:
            self._state.dead_letter_locked(record, dead)
        record.cond.notify_all()
        if bad:
            raise invalid(f"Invalid ack id(s) {bad[:3]!r}: pass ack ids exactly as "
                          "received from Pull or StreamingPull.")

    # -- unary ----------------------------------------------------------------------
    def pull(self, subscription: str, max_messages: int, wait_s: float):
        """Up to ``max_messages``, waiting at most ``wait_s`` when none is ready."""
        names.subscription_name(subscription)
        if max_messages <= 0:
            raise invalid(f"Invalid max_messages={max_messages}: it must be positive.")
        give_up = time.monotonic() + wait_s
        with self._lock:
            record = self._record_locked(subscription)
            while True:
                taken = self._take_locked(record, max_messages, record.ack_deadline_us)
                remaining = give_up - time.monotonic()
                if taken or remaining <= 0 or self._state.closing:
                    return taken
                self._wait_locked(record, remaining)
                if record.deleted:
                    raise not_found("Subscription", subscription)

    def acknowledge(self, subscription: str, ack_ids) -> int:
        names.subscription_name(subscription)
        with self._lock:
            return self._ack_locked(self._state.sub_locked(subscription), ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids, seconds: int) -> None:
        names.subscription_name(subscription)
        with self._lock:
            self._modify_locked(self._state.sub_locked(subscription), ack_ids, seconds)

    # -- streaming ------------------------------------------------------------------
    def open_stream(self, subscription: str, ack_deadline_s: int, max_messages: int,
                    max_bytes: int) -> Stream:
        names.subscription_name(subscription)
        check_stream_deadline(ack_deadline_s)
        if max_messages < 0 or max_bytes < 0:
            raise invalid(f"Invalid flow control max_outstanding_messages={max_messages}"
                          f", max_outstanding_bytes={max_bytes}: use 0 (no limit) or more.")
        with self._lock:
            record = self._record_locked(subscription)
            return Stream(record, ack_deadline_s, max_messages, max_bytes)

    def stream_wait(self, stream: Stream, wait_s: float):
        """Messages for the stream; ``[]`` after ``wait_s`` with none; None at its end.

        Raises the error the stream ends with (a bad request, a deleted subscription,
        UNAVAILABLE when the emulator stops).
        """
        give_up = time.monotonic() + wait_s
        record = stream.record
        with self._lock:
            while True:
                if stream.error is not None:
                    raise stream.error
                if self._state.closing:
                    # What a real server says when it goes away: clients reconnect.
                    raise ApiError(grpc.StatusCode.UNAVAILABLE,
                                   "The Pub/Sub emulator is stopping.")
                if stream.closed:
                    return None
                if record.deleted:
                    raise not_found("Subscription", record.name)
                if record.resource.detached:
                    raise failed_precondition(f"Subscription {record.name!r} was "
                                              "detached.")
                taken = self._take_locked(record, STREAM_BATCH, stream.ack_deadline_us,
                                          stream.lessee)
                remaining = give_up - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                self._wait_locked(record, remaining)

    def stream_request(self, stream: Stream, request) -> None:
        """Apply a later StreamingPullRequest: acks, deadline changes, stream deadline."""
        if len(request.modify_deadline_ack_ids) != len(request.modify_deadline_seconds):
            raise invalid("modify_deadline_ack_ids and modify_deadline_seconds must have "
                          f"the same length (got {len(request.modify_deadline_ack_ids)} "
                          f"and {len(request.modify_deadline_seconds)}).")
        if request.stream_ack_deadline_seconds:
            check_stream_deadline(request.stream_ack_deadline_seconds)
        with self._lock:
            record = stream.record
            if request.ack_ids:
                self._ack_locked(record, request.ack_ids)
            by_seconds: dict[int, list[str]] = {}
            for ack_id, seconds in zip(request.modify_deadline_ack_ids,
                                       request.modify_deadline_seconds):
                by_seconds.setdefault(seconds, []).append(ack_id)
            for seconds, ack_ids in by_seconds.items():
                self._modify_locked(record, ack_ids, seconds)
            if request.stream_ack_deadline_seconds:
                stream.ack_deadline_us = request.stream_ack_deadline_seconds * 1_000_000

    def close_stream(self, stream: Stream, error=None) -> None:
        with self._lock:
            if error is not None and stream.error is None:
                stream.error = error
            stream.closed = True
            stream.record.cond.notify_all()
