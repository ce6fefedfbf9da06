"""Remove duplicate deliveries by ``event_id`` before anything is counted.

Pub/Sub delivers at least once and publishers retry, so one event can arrive twice.
Storage is idempotent (``Feedback`` is keyed by ``event_id``), counting is not: this
stateful step lets only the first delivery of an id through.

State is keyed by ``(event-time bucket, shard of the id)`` rather than by the id
itself: a duplicate carries the same body, hence the same event time, so it lands on
the same key; and a runner keeps a handful of keys per minute instead of one per
event (the bundle-based DirectRunner never forgets a key it has seen). Each key
holds a bag of 64-bit id hashes (a collision needs ~4 billion ids in one key) and an
event-time timer that clears it once the watermark is ``ttl_s`` past the bucket.
Events reach the stateful step grouped per key and bundle (:class:`GroupInBundle`), so
it runs once per key and bundle; the first deliveries leave it grouped per version.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, List, Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.bundling import GroupInBundle
from rotwatch.events import to_millis

__all__ = ["DedupeByEventId", "dedupe_key", "id_hash", "BUCKET_S", "SHARDS"]

_LOGGER = logging.getLogger(__name__)

# One key per minute of event time and shard: small bags, few keys, cheap expiry.
BUCKET_S = 60
# Spreads one minute of a busy stream over workers; 16 keeps bags ~1/16 of a minute.
SHARDS = 16


def id_hash(event_id: str) -> int:
    """A stable signed 64-bit hash (Python's ``hash`` differs per process)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8)
                          .digest(), "big", signed=True)


def dedupe_key(event) -> tuple[int, int]:
    """``(bucket start in ms, shard)`` of an event."""
    bucket_ms = BUCKET_S * 1000
    return (to_millis(event.event_time) // bucket_ms * bucket_ms,
            id_hash(event.event_id) % SHARDS)


class _FirstDeliveryFn(beam.DoFn):
    """``(dedupe key, [events...])`` (a bundle's events of one key) -> per bundle,
    ``((model, version), [first deliveries...])`` in the global window, stamped with
    the earliest event time among them."""

    SEEN = BagStateSpec("seen", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: int):
        self._ttl_ms = int(ttl_s * 1000)
        self._duplicates = Metrics.counter("rotwatch.dedupe", "duplicates")
        self._expired = Metrics.counter("rotwatch.dedupe", "buckets_expired")

    def start_bundle(self):
        # Ids seen per key, read once per bundle: reading the bag per group would
        # make a bundle quadratic in the bag's size.
        self._seen = {}
        self._firsts = {}   # (model, version) -> first deliveries in this bundle

    def process(self, element, seen=beam.DoFn.StateParam(SEEN),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        key, events = element
        ids = self._seen.get(key)
        if ids is None:
            ids = self._seen[key] = set(seen.read())
            expiry.set(Timestamp(micros=(key[0] + BUCKET_S * 1000 + self._ttl_ms) * 1000))
        for event in events:
            h = id_hash(event.event_id)
            if h in ids:
                self._duplicates.inc()
                continue
            ids.add(h)
            seen.add(h)
            self._firsts.setdefault((event.model, event.version), []).append(event)

    def finish_bundle(self):
        firsts, self._firsts = self._firsts, {}
        for version_key, events in firsts.items():
            earliest = min(to_millis(e.event_time) for e in events)
            yield WindowedValue((version_key, events), Timestamp(micros=earliest * 1000),
                                [GlobalWindow()])

    @on_timer(EXPIRY)
    def expire(self, key=beam.DoFn.KeyParam, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()
        self._seen.pop(key, None)
        self._expired.inc()


class DedupeByEventId(beam.PTransform):
    """FeedbackEvents in; the first delivery of each ``event_id`` (within ``ttl_s`` of
    event time past its minute) out, a bundle's per version together:
    ``((model, version), [events...])`` in the global window. Every step after it
    works per version (windows, detector), so each runs once per version and bundle
    instead of once per event."""

    def __init__(self, ttl_s: int, label: str | None = None):
        super().__init__(label)
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s} must be > 0 seconds")
        self._ttl_s = ttl_s

    def expand(self, events):
        return (events
                # keyed and grouped per bundle in one step: the stateful step then
                # runs once per key and bundle, not once per event
                | "GroupByBucket" >> beam.ParDo(GroupInBundle(key_fn=dedupe_key))
                .with_output_types(Tuple[Tuple[int, int], List[Any]])
                | "KeepFirstDelivery" >> beam.ParDo(_FirstDeliveryFn(self._ttl_s))
                .with_output_types(Tuple[Tuple[str, str], List[Any]]))
