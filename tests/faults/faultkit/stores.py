"""Read back what the stack stored and published, and what it should have.

Everything goes through the official clients, as a user would look: Datastore
queries for ``Feedback`` and ``WindowMetric``, Pub/Sub pulls for dead letters.
:func:`true_window_counts` is the reference the pipeline's windows are compared with.
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Iterable

from rotwatch import kinds
from rotwatch.events import to_millis

__all__ = ["wait_until", "wait_for_all", "feedback_ids", "window_metrics", "pull_all",
           "true_window_counts", "window_starts", "compare_windows", "put_entities"]

# Datastore takes at most 500 mutations per commit.
PUT_BATCH = 500


def wait_until(condition: Callable, timeout: float, every: float = 0.5):
    """Call ``condition`` until it returns something true or ``timeout`` passes; its
    last value."""
    give_up = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= give_up:
            return value
        time.sleep(every)


def wait_for_all(read: Callable[[], set], want: set, timeout: float,
                 quiet_s: float = 8.0, every: float = 0.5) -> set:
    """Read until ``want`` is all there, ``timeout`` passes, or nothing new came for
    ``quiet_s`` (what is lost stays lost: no need to wait the whole timeout)."""
    give_up = time.monotonic() + timeout
    last, last_change = None, time.monotonic()
    while True:
        got = read()
        if got >= want or time.monotonic() >= give_up:
            return got
        if last is None or len(got) != len(last):
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return got
        time.sleep(every)


def _model_filter(query, model: str | None):
    if model is not None:
        from google.cloud.datastore.query import PropertyFilter
        query.add_filter(filter=PropertyFilter("model", "=", model))
    return query


def feedback_ids(client, model: str | None = None) -> set[str]:
    """Key names (event ids) of the stored ``Feedback`` entities."""
    query = _model_filter(client.query(kind=kinds.FEEDBACK), model)
    query.keys_only()
    return {e.key.name for e in query.fetch()}


def window_metrics(client, model: str | None = None,
                   version: str | None = None) -> dict[int, tuple[int, int]]:
    """``{window start in ms: (n, correct)}`` of the stored ``WindowMetric`` entities."""
    query = _model_filter(client.query(kind=kinds.WINDOW_METRIC), model)
    out = {}
    for m in query.fetch():
        if version is not None and m.get("version") != version:
            continue
        out[to_millis(_aware(m["window_start"]))] = (int(m["n"]), int(m["correct"]))
    return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def put_entities(client, entities: list) -> None:
    for i in range(0, len(entities), PUT_BATCH):
        client.put_multi(entities[i:i + PUT_BATCH])


def pull_all(subscriber, subscription: str, timeout: float = 2.0, batch: int = 500,
             ack: bool = True) -> list:
    """Every message waiting on ``subscription`` (acked unless ``ack=False``)."""
    from google.api_core import exceptions as gexc
    out = []
    while True:
        try:
            response = subscriber.pull(subscription=subscription, max_messages=batch,
                                       timeout=timeout)
        except gexc.DeadlineExceeded:
            return out
        received = list(response.received_messages)
        if not received:
            return out
        out.extend(m.message for m in received)
        if ack:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in received])


def window_starts(event_time: dt.datetime, size_s: int, period_s: int) -> list[int]:
    """Starts (ms) of the sliding windows an event time falls in."""
    ms = to_millis(event_time)
    period = period_s * 1000
    last = ms // period * period
    return [start for start in range(last - size_s * 1000 + period, last + 1, period)
            if start <= ms < start + size_s * 1000]


def true_window_counts(events: Iterable, size_s: int,
                       period_s: int) -> dict[int, tuple[int, int]]:
    """``{window start ms: (n, correct)}`` of unique ``events`` (by ``event_id``)."""
    counts: dict[int, tuple[int, int]] = {}
    seen = set()
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        for start in window_starts(e.event_time, size_s, period_s):
            n, c = counts.get(start, (0, 0))
            counts[start] = (n + 1, c + int(e.correct))
    return counts


def compare_windows(stored: dict, truth: dict) -> dict[str, list]:
    """Windows counted too much, too little, missing, or not expected at all."""
    over, under, missing = [], [], []
    for start, (n, c) in truth.items():
        got = stored.get(start)
        if got is None:
            missing.append(start)
        elif got[0] > n or got[1] > c:
            over.append((start, got, (n, c)))
        elif got != (n, c):
            under.append((start, got, (n, c)))
    extra = sorted(set(stored) - set(truth))
    return {"over": over, "under": under, "missing": missing, "extra": extra}
