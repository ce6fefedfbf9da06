"""Feedback streams with known answers: valid events, duplicates, poison, late ones.

Valid events are the article's zombies (population A rows, ``zombies`` v1 as
``publishers.gateway.testing.register_zombies`` registers it) with a seeded verdict.
Every poison message carries a ``fault_id`` attribute, so its dead letter can be
matched to it whatever the pipeline did to the body.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np

from rotwatch.events import FeedbackEvent

__all__ = ["POISON_KINDS", "Poison", "make_events", "make_poison", "publish_all",
           "EXPECTED_DEADLETTER"]

# The seven kinds of poison of the issue, in the order they are cycled through.
POISON_KINDS = ("bad-json", "wrong-types", "nan", "wrong-feature-count",
                "unknown-version", "oversize", "binary-garbage")
# (rotwatch_stage, rotwatch_field) the pipeline must give each kind (pipelines/parse.py).
EXPECTED_DEADLETTER = {
    "bad-json": ("schema", "<payload>"),
    "wrong-types": ("schema", "features[1]"),
    "nan": ("schema", "features[0]"),
    "wrong-feature-count": ("registry", "features"),
    "unknown-version": ("registry", "version"),
    "oversize": ("schema", "<payload>"),
    "binary-garbage": ("schema", "<payload>"),
}
# Over the pipeline's 64 KiB event limit, far under Pub/Sub's 10 MB message limit.
OVERSIZE_BYTES = 100_000


@dataclasses.dataclass(frozen=True)
class Poison:
    fault_id: str
    kind: str
    data: bytes
    attributes: dict


def make_events(n: int, now: dt.datetime, rng: np.random.Generator, *,
                spread_s: float = 30.0, ago_s: tuple[float, float] | None = None,
                accuracy: float = 0.85, model: str = "zombies", version: str = "v1",
                prefix: str = "e") -> list[FeedbackEvent]:
    """``n`` events with event times in the last ``spread_s`` seconds, or between
    ``ago_s = (low, high)`` seconds before ``now``."""
    from publishers.simulator import population
    X, _ = population("A")
    low, high = ago_s if ago_s else (0.0, spread_s)
    events = []
    for i in range(n):
        row = X[int(rng.integers(len(X)))]
        events.append(FeedbackEvent.create(
            model=model, version=version, features=[float(x) for x in row],
            prediction=int(rng.integers(2)), was_correct=bool(rng.random() < accuracy),
            event_id=f"{prefix}{i:06d}-{int(rng.integers(1 << 30)):08x}",
            event_time=now - dt.timedelta(seconds=float(rng.uniform(low, high)))))
    return events


def make_poison(n: int, now: dt.datetime, rng: np.random.Generator,
                model: str = "zombies") -> list[Poison]:
    """``n`` poison messages, cycling through :data:`POISON_KINDS`."""
    out = []
    for i in range(n):
        kind = POISON_KINDS[i % len(POISON_KINDS)]
        good = make_events(1, now, rng, model=model, prefix=f"poison-{i}-")[0]
        body = good.to_dict()
        attributes = dict(good.attributes())
        if kind == "bad-json":
            data = json.dumps(body).encode()[:-7] + b"}}{"
        elif kind == "wrong-types":
            body["features"] = [body["features"][0], "3.4", None, "x"]
            data = json.dumps(body).encode()
        elif kind == "nan":
            body["features"][0] = float("nan")     # json.dumps writes it as NaN
            data = json.dumps(body).encode()
        elif kind == "wrong-feature-count":
            body["features"] = body["features"] + [1.0, 2.0]
            data = json.dumps(body).encode()
        elif kind == "unknown-version":
            body["version"] = "v9"
            attributes["version"] = "v9"
            data = json.dumps(body).encode()
        elif kind == "oversize":
            body["note"] = "z" * OVERSIZE_BYTES
            data = json.dumps(body).encode()
        else:  # binary garbage: not UTF-8 text
            data = b"\xff\xfe\x00" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
            attributes = {}
        attributes.update(fault_id=f"poison-{i}", fault_kind=kind)
        out.append(Poison(f"poison-{i}", kind, data, attributes))
    return out


def publish_all(publisher, topic: str, messages, timeout: float = 60.0) -> int:
    """Publish ``(data, attributes)`` pairs and wait for every one; how many."""
    futures = [publisher.publish(topic, data, **attributes)
               for data, attributes in messages]
    for future in futures:
        future.result(timeout=timeout)
    return len(futures)
