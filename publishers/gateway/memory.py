"""What the gateway predicted, by ``prediction_id``, so feedback can name just the id.

A thumbs-up/down app keeps the ``prediction_id`` from a predict response and later
sends only ``{"prediction_id": ..., "was_correct": false}``; the gateway fills in the
model, version, features and prediction it remembers here. Memory is bounded by
count, by bytes and by age; the oldest entries go first. It lives in the process:
behind a load balancer with several replicas, send complete events instead (or use
session affinity), since another replica does not know the id.

>>> memory = PredictionMemory(capacity=2, ttl_s=60)
>>> pid = memory.remember("zombies", "v1", (1.0, 2.0), 1)
>>> memory.recall(pid).prediction
1
"""
from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from typing import Callable, Sequence

import numpy as np

__all__ = ["PredictionMemory", "Remembered", "DEFAULT_CAPACITY", "DEFAULT_MAX_BYTES",
           "DEFAULT_TTL_S"]

# 100k predictions is an hour at ~28 requests/s: the article's apps, with room.
DEFAULT_CAPACITY = 100_000
# Wide feature vectors would make 100k entries large (2,000 features are 16 KB each):
# 64 MiB bounds the memory beside the models within a 512 MiB Cloud Run instance.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Feedback arrives seconds to minutes after a prediction; an hour covers slow users.
DEFAULT_TTL_S = 3600.0
# What an entry costs besides its feature bytes: the id string, the record, the
# dict slot (measured with sys.getsizeof, rounded up).
ENTRY_OVERHEAD_BYTES = 300


@dataclasses.dataclass(frozen=True, slots=True)
class Remembered:
    model: str
    version: str
    packed: bytes              # the features as float64 bytes (compact)
    prediction: int | str | float
    at: float                  # clock() when remembered

    @property
    def features(self) -> tuple[float, ...]:
        return tuple(np.frombuffer(self.packed, dtype=np.float64).tolist())


class PredictionMemory:
    """A bounded FIFO of predictions with a time to live; thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl_s: float = DEFAULT_TTL_S,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be at least 1")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s} must be positive")
        if max_bytes < ENTRY_OVERHEAD_BYTES:
            raise ValueError(f"max_bytes={max_bytes} is too small for one entry")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: collections.OrderedDict[str, Remembered] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Estimated memory held (feature bytes plus a fixed overhead per entry)."""
        return self._bytes

    def remember(self, model: str, version: str, features: Sequence[float],
                 prediction) -> str:
        """Store one prediction; returns its new ``prediction_id``."""
        return self.remember_many(model, version, np.asarray([features], dtype=np.float64),
                                  [prediction])[0]

    def remember_many(self, model: str, version: str, X: np.ndarray,
                      predictions: Sequence) -> list[str]:
        """Store the rows of ``X`` (float64) and their predictions; one id per row."""
        now = self._clock()
        # 128 random bits as 32 hex digits, like uuid4().hex without building UUIDs;
        # a valid event_id, so feedback by id can reuse it.
        ids = [os.urandom(16).hex() for _ in predictions]
        rows = [X[i].tobytes() for i in range(len(ids))]
        with self._lock:
            entries = self._entries
            for pid, packed, prediction in zip(ids, rows, predictions):
                entries[pid] = Remembered(model, version, packed, prediction, now)
                self._bytes += len(packed) + ENTRY_OVERHEAD_BYTES
            self._evict(now)
        return ids

    def recall(self, prediction_id: str) -> Remembered | None:
        """The prediction, or None if the id is unknown, evicted or older than the TTL."""
        with self._lock:
            entry = self._entries.get(prediction_id)
        if entry is None or self._clock() - entry.at > self.ttl_s:
            return None
        return entry

    def _evict(self, now: float) -> None:
        entries = self._entries
        horizon = now - self.ttl_s
        while entries:
            oldest = next(iter(entries.values()))
            if (len(entries) <= self.capacity and self._bytes <= self.max_bytes
                    and oldest.at >= horizon):
                break
            _, dropped = entries.popitem(last=False)
            self._bytes -= len(dropped.packed) + ENTRY_OVERHEAD_BYTES
