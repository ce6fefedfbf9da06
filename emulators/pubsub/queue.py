"""One subscription's messages: what is ready, what is leased, what is retained.

Not thread-safe on its own: :class:`~emulators.pubsub.state.PubSubState` calls it
under its lock. Every operation is O(1) or O(log n) per message:

- ``log`` — every unacked message in publish order (an OrderedDict of
  :class:`Entry`, keyed by the message's sequence number), with its delivery
  bookkeeping.
- ``acked`` — acknowledged messages, kept only when the subscription retains acked
  messages, in a compact :class:`~emulators.pubsub.retained.MessageLog`: an ack drops
  the entry's bookkeeping and keeps what a seek needs (sequence number, publish time,
  the serialized message shared with the topic's other subscriptions). Retention
  prunes both ``log`` and ``acked``; a seek rebuilds both from what they hold.
- ``ready`` — a FIFO of entries waiting to be delivered (stale entries are skipped).
- ``leases`` — a heap of ``(deadline, seq, lease)``; an item is live only while the
  entry still holds that lease with that deadline, so a changed deadline just pushes
  a new item and expiry is found lazily at the top of the heap.

An ack id is ``"<generation>-<seq>-<lease>"``: a seek starts a new generation, which
makes every earlier ack id stale (Pub/Sub does not promise to honour them either).
"""
from __future__ import annotations

import heapq
import itertools
import logging
from collections import OrderedDict, deque

from emulators.pubsub.retained import MessageLog

__all__ = ["Entry", "Lessee", "SubscriptionQueue", "READY", "LEASED", "ACKED", "GONE"]

_LOGGER = logging.getLogger(__name__)

READY, LEASED, ACKED, GONE = "ready", "leased", "acked", "gone"

# Shared by every queue so that a recreated subscription never accepts old ack ids.
_GENERATIONS = itertools.count(1)

# Rebuild the lease heap when stale items outnumber live leases by this factor: lease
# extensions (the client's modacks) push a new item each time.
_HEAP_SLACK = 4
_HEAP_MIN_REBUILD = 10_000


class Entry:
    """One unacked message in one subscription (its bytes are shared by all)."""

    __slots__ = ("seq", "wire", "publish_us", "state", "attempts", "lease",
                 "deadline_us", "lessee")

    def __init__(self, seq: int, wire: bytes, publish_us: int):
        self.seq = seq
        self.wire = wire                # the serialized PubsubMessage
        self.publish_us = publish_us
        self.state = READY
        self.attempts = 0               # deliveries so far (Pub/Sub's delivery_attempt)
        self.lease = 0                  # number of the current or last lease
        self.deadline_us = 0
        self.lessee: Lessee | None = None

    @property
    def size(self) -> int:
        return len(self.wire)


class Lessee:
    """Flow control of one streaming pull: how much it holds, how much it may hold.

    A limit of 0 means no limit. As in Pub/Sub, one message is always allowed even if
    it alone is larger than the byte limit.
    """

    __slots__ = ("max_messages", "max_bytes", "messages", "bytes")

    def __init__(self, max_messages: int = 0, max_bytes: int = 0):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.messages = 0
        self.bytes = 0

    def room(self, size: int) -> bool:
        if self.max_messages and self.messages >= self.max_messages:
            return False
        if self.max_bytes and self.messages and self.bytes + size > self.max_bytes:
            return False
        return True


def _detach(entry: Entry) -> None:
    lessee = entry.lessee
    if lessee is not None:
        lessee.messages -= 1
        lessee.bytes -= entry.size
        entry.lessee = None


class SubscriptionQueue:
    """Delivery state of one subscription. Times are integer microseconds."""

    def __init__(self, retain_acked: bool = False, max_attempts: int = 0):
        self.retain_acked = retain_acked
        self.max_attempts = max_attempts     # 0: no dead-letter policy
        self.generation = next(_GENERATIONS)
        self.log: OrderedDict[int, Entry] = OrderedDict()
        self.acked = MessageLog()
        self.ready: deque[Entry] = deque()
        self.leases: list[tuple[int, int, int]] = []
        self.leased = 0

    @property
    def unacked(self) -> int:
        return len(self.log)

    # -- arrival --------------------------------------------------------------------
    def add(self, seq: int, wire: bytes, publish_us: int) -> None:
        entry = Entry(seq, wire, publish_us)
        self.log[seq] = entry
        self.ready.append(entry)

    # -- delivery -------------------------------------------------------------------
    def take(self, max_messages: int, max_bytes: int, deadline_us: int,
             lessee: Lessee | None = None, overhead: int = 0) -> list[Entry]:
        """Lease up to ``max_messages`` ready entries whose sizes, ``overhead`` added
        to each, sum to at most ``max_bytes`` (but at least one if any is ready)."""
        taken: list[Entry] = []
        total = 0
        ready = self.ready
        while ready and len(taken) < max_messages:
            entry = ready[0]
            if entry.state is not READY:
                ready.popleft()
                continue
            cost = len(entry.wire) + overhead
            if taken and total + cost > max_bytes:
                break
            if lessee is not None and not lessee.room(len(entry.wire)):
                break
            ready.popleft()
            total += cost
            entry.state = LEASED
            entry.attempts += 1
            entry.lease += 1
            entry.deadline_us = deadline_us
            heapq.heappush(self.leases, (deadline_us, entry.seq, entry.lease))
            if lessee is not None:
                entry.lessee = lessee
                lessee.messages += 1
                lessee.bytes += entry.size
            self.leased += 1
            taken.append(entry)
        return taken

    def ack_id(self, entry: Entry) -> str:
        return f"{self.generation}-{entry.seq}-{entry.lease}"

    def _lookup(self, ack_id: str) -> Entry | None:
        """The entry an ack id still speaks for, or None if it is stale."""
        try:
            generation, seq, lease = (int(part) for part in ack_id.split("-"))
        except ValueError:
            raise ValueError(ack_id) from None
        if generation != self.generation:
            return None
        entry = self.log.get(seq)
        if entry is None or entry.lease != lease or entry.state not in (READY, LEASED):
            return None
        return entry

    def ack(self, ack_id: str) -> bool:
        """Acknowledge; a late ack still counts until the message is leased again."""
        entry = self._lookup(ack_id)
        if entry is None:
            return False
        if entry.state is LEASED:
            self.leased -= 1
        _detach(entry)
        entry.state = ACKED
        del self.log[entry.seq]
        if self.retain_acked:
            self.acked.append(entry.seq, entry.publish_us, entry.wire)
        return True

    def modify(self, ack_id: str, deadline_us: int | None) -> Entry | None:
        """Extend a lease, or end it (``None``: nack). Returns a dead-lettered entry."""
        entry = self._lookup(ack_id)
        if entry is None or entry.state is not LEASED:
            return None
        if deadline_us is None:
            return self._release(entry)
        entry.deadline_us = deadline_us
        heapq.heappush(self.leases, (deadline_us, entry.seq, entry.lease))
        return None

    def expire(self, now_us: int) -> list[Entry]:
        """Release leases whose deadline passed; returns the entries to dead-letter."""
        dead: list[Entry] = []
        leases = self.leases
        while leases and leases[0][0] <= now_us:
            item = heapq.heappop(leases)
            if self._live(item):
                entry = self.log[item[1]]
                if self._release(entry) is not None:
                    dead.append(entry)
        if len(leases) > _HEAP_MIN_REBUILD and len(leases) > _HEAP_SLACK * self.leased:
            self._rebuild_heap()
        return dead

    def next_deadline_us(self) -> int | None:
        return self.leases[0][0] if self.leases else None

    def _release(self, entry: Entry) -> Entry | None:
        self.leased -= 1
        _detach(entry)
        if self.max_attempts and entry.attempts >= self.max_attempts:
            entry.state = GONE
            del self.log[entry.seq]
            return entry
        entry.state = READY
        self.ready.append(entry)
        return None

    def requeue(self, entry: Entry) -> None:
        """Put back an entry that could not be dead-lettered."""
        entry.state = READY
        self.log[entry.seq] = entry
        self.ready.append(entry)

    def _live(self, item: tuple[int, int, int]) -> bool:
        deadline_us, seq, lease = item
        entry = self.log.get(seq)
        return (entry is not None and entry.state is LEASED and entry.lease == lease
                and entry.deadline_us == deadline_us)

    def _rebuild_heap(self) -> None:
        """Drop stale heap items (cost paid for by the pushes that made them)."""
        self.leases = [item for item in self.leases if self._live(item)]
        heapq.heapify(self.leases)

    # -- retention, seek, snapshots --------------------------------------------------
    def prune(self, cutoff_us: int) -> None:
        """Drop messages published before ``cutoff_us`` (retention ran out)."""
        log = self.log
        while log:
            seq = next(iter(log))
            entry = log[seq]
            if entry.publish_us >= cutoff_us:
                break
            del log[seq]
            if entry.state is LEASED:
                self.leased -= 1
            _detach(entry)
            entry.state = GONE
        self.acked.prune(cutoff_us)

    def forget_acked(self) -> None:
        """Drop retained acked messages (retain_acked_messages was turned off)."""
        self.acked.clear()

    def unacked_messages(self) -> list[tuple[int, int, bytes]]:
        """``(seq, publish_us, wire)`` of every unacked message, in order."""
        return [(e.seq, e.publish_us, e.wire) for e in self.log.values()]

    def seek_time(self, time_us: int, cutoff_us: int) -> None:
        """Messages published before ``time_us`` become acked, later ones unacked
        (only messages still retained, i.e. published at or after ``cutoff_us``)."""
        self._reset(self._retained(cutoff_us), lambda seq, publish_us: publish_us >= time_us)

    def seek_snapshot(self, messages, cutoff_us: int) -> None:
        """Unacked = the snapshot's ``(seq, publish_us, wire)`` messages; other
        retained messages become acked."""
        merged = self._retained(cutoff_us)
        wanted = set()
        for seq, publish_us, wire in messages:
            wanted.add(seq)
            if seq not in merged:
                merged[seq] = (publish_us, wire, None)
        self._reset(merged, lambda seq, publish_us: seq in wanted)

    def _retained(self, cutoff_us: int) -> dict:
        """``{seq: (publish_us, wire, entry or None)}`` of every message kept."""
        merged = {seq: (publish_us, wire, None)
                  for seq, publish_us, wire in self.acked.items(cutoff_us)}
        for entry in self.log.values():
            if entry.publish_us >= cutoff_us:
                merged[entry.seq] = (entry.publish_us, entry.wire, entry)
        return merged

    def _reset(self, merged: dict, unacked) -> None:
        """Rebuild from ``merged``: ``unacked(seq, publish_us)`` says which are."""
        for entry in self.log.values():
            _detach(entry)
            entry.state = GONE            # stale in the old ready deque and heap
        self.generation = next(_GENERATIONS)
        self.ready.clear()
        self.leases.clear()
        self.leased = 0
        self.log = OrderedDict()
        self.acked = MessageLog()
        for seq in sorted(merged):
            publish_us, wire, entry = merged[seq]
            if unacked(seq, publish_us):
                if entry is None:
                    entry = Entry(seq, wire, publish_us)
                entry.state = READY
                entry.lessee = None
                self.ready.append(entry)
                self.log[seq] = entry
            elif self.retain_acked:
                self.acked.append(seq, publish_us, wire)

    def drop_all(self) -> None:
        """Forget everything (the subscription was detached or deleted)."""
        for entry in self.log.values():
            _detach(entry)
            entry.state = GONE
        self.log.clear()
        self.acked.clear()
        self.ready.clear()
        self.leases.clear()
        self.leased = 0
