"""A compact log of messages kept only for replay: acknowledged messages a subscription
retains, and the messages a snapshot holds.

A seek needs three things of each: its sequence number (the order), its publish time
(seek-to-time, retention) and the serialized ``PubsubMessage``. They live in two
``array('q')`` and a list, so each message costs 24 bytes here plus its bytes object,
which is the one copy shared by every subscription and snapshot of the topic. (A
protobuf object per message kept its whole publish request's arena alive: about
3 KB for a 300-byte message published alone.)

Appends come in acknowledgement order, which is nearly but not exactly publish order,
so :meth:`MessageLog.prune` drops the expired prefix and may leave a few expired
stragglers behind newer messages until they reach the front; :meth:`MessageLog.items`
takes a cutoff so that a seek never replays them.
"""
from __future__ import annotations

from array import array
from typing import Iterator

__all__ = ["MessageLog"]

# Compact the arrays once this many pruned slots sit at their front (and they are at
# least half of the arrays), so pruning costs O(1) amortized per message.
_COMPACT_MIN = 1024


class MessageLog:
    """``(seq, publish_us, wire)`` triples in append order."""

    __slots__ = ("_seqs", "_times", "_wires", "_start")

    def __init__(self, items=()):
        self._seqs = array("q")
        self._times = array("q")
        self._wires: list[bytes | None] = []
        self._start = 0
        for seq, publish_us, wire in items:
            self.append(seq, publish_us, wire)

    def __len__(self) -> int:
        return len(self._wires) - self._start

    def append(self, seq: int, publish_us: int, wire: bytes) -> None:
        self._seqs.append(seq)
        self._times.append(publish_us)
        self._wires.append(wire)

    def items(self, cutoff_us: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """Every kept message, in append order (published at or after ``cutoff_us``)."""
        seqs, times, wires = self._seqs, self._times, self._wires
        for i in range(self._start, len(wires)):
            if cutoff_us is None or times[i] >= cutoff_us:
                yield seqs[i], times[i], wires[i]

    def prune(self, cutoff_us: int) -> None:
        """Drop the front messages published before ``cutoff_us``."""
        times, wires = self._times, self._wires
        start, end = self._start, len(wires)
        while start < end and times[start] < cutoff_us:
            wires[start] = None          # free the message now
            start += 1
        self._start = start
        if start >= _COMPACT_MIN and start * 2 >= end:
            del self._seqs[:start], self._times[:start], self._wires[:start]
            self._start = 0

    def clear(self) -> None:
        self._seqs = array("q")
        self._times = array("q")
        self._wires = []
        self._start = 0
