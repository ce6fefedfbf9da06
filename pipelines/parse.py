"""Parse and validate feedback messages; everything invalid becomes a dead letter.

:func:`check_message` is the pure rule book: a message is valid if its body is a
:class:`~rotwatch.events.FeedbackEvent`, its attributes agree with the body, its
event time is not in the future, and the registry knows its model version with that
many features. It raises :class:`Rejected` naming the stage and the field.

:class:`ParseFeedback` only unpacks, calls and yields: valid events on the main output
stamped with their event time, :class:`DeadLetter` s on ``deadletter``. A dead letter
keeps the **original payload** as its data and carries the reason in attributes
(within Pub/Sub's limits), so it can be inspected and republished as it was.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Mapping

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from rotwatch.events import FeedbackEvent, InvalidEvent, format_time, to_millis

__all__ = ["Rejected", "DeadLetter", "check_message", "ParseFeedback", "DEADLETTER",
           "STAGE_SCHEMA", "STAGE_ATTRIBUTES", "STAGE_REGISTRY", "fit_attributes",
           "MAX_DEADLETTER_DATA_BYTES"]

_LOGGER = logging.getLogger(__name__)

DEADLETTER = "deadletter"  # the tagged output of ParseFeedback
STAGE_SCHEMA = "schema"          # body is not a valid FeedbackEvent
STAGE_ATTRIBUTES = "attributes"  # attributes contradict the body
STAGE_REGISTRY = "registry"      # unknown model/version, wrong feature count
# Pub/Sub limits (DESIGN.md): at most 100 attributes, values <= 1024 bytes.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_BYTES = 1024
# Attributes rotwatch adds to a dead letter; the original ones are kept beside them.
DL_PREFIX = "rotwatch_"
# A Pub/Sub message is at most 10 MB with its attributes (100 x (256 + 1024) bytes at
# most): a dead letter keeps up to 9 MB of the payload, so even a maximal message
# can be dead-lettered instead of failing its publish forever.
MAX_DEADLETTER_DATA_BYTES = 9_000_000


class Rejected(ValueError):
    """Why a message cannot be accepted: ``stage``, ``field`` and ``reason``."""

    def __init__(self, stage: str, field: str, reason: str):
        self.stage, self.field, self.reason = stage, field, reason
        super().__init__(f"{stage}: {field}: {reason}")


def _truncate(text: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    raw = str(text).encode("utf-8")
    if len(raw) <= limit:
        return str(text)
    return raw[:limit - 3].decode("utf-8", errors="ignore") + "..."


def fit_attributes(original: Mapping[str, str] | None, added: Mapping[str, str]) -> dict:
    """``added`` plus as many ``original`` attributes as Pub/Sub allows, values cut to
    1024 bytes; rotwatch's own keys win a clash."""
    out = {k: _truncate(v) for k, v in added.items()}
    for key, value in (original or {}).items():
        if len(out) >= MAX_ATTRIBUTES:
            break
        if key not in out and len(str(key).encode("utf-8")) <= 256:
            out[key] = _truncate(value)
    return out


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """An invalid message: its original bytes and attributes, and why."""

    payload: bytes
    attributes: dict
    stage: str
    field: str
    reason: str
    failed_at: dt.datetime | None = None

    def to_message(self) -> PubsubMessage:
        added = {f"{DL_PREFIX}stage": self.stage, f"{DL_PREFIX}field": self.field,
                 f"{DL_PREFIX}reason": self.reason}
        if self.failed_at is not None:
            added[f"{DL_PREFIX}failed_at"] = format_time(self.failed_at)
        data = self.payload or b""
        if len(data) > MAX_DEADLETTER_DATA_BYTES:
            added[f"{DL_PREFIX}truncated_from_bytes"] = str(len(data))
            data = data[:MAX_DEADLETTER_DATA_BYTES]
        return PubsubMessage(data, fit_attributes(self.attributes, added))


def check_message(data: bytes, attributes: Mapping[str, str] | None, catalog,
                  now: dt.datetime, max_future_s: float = 600) -> FeedbackEvent:
    """The event in a message, or :class:`Rejected` saying what is wrong."""
    try:
        event = FeedbackEvent.from_json(data if data is not None else b"")
    except InvalidEvent as exc:
        raise Rejected(STAGE_SCHEMA, exc.field, exc.reason) from None
    attributes = attributes or {}
    for name, value in (("event_id", event.event_id), ("model", event.model),
                        ("version", event.version)):
        if name in attributes and attributes[name] != value:
            raise Rejected(STAGE_ATTRIBUTES, name,
                           f"attribute {attributes[name][:80]!r} differs from the body's "
                           f"{value!r}; publish with FeedbackEvent.attributes()")
    event_ms = str(to_millis(event.event_time))
    if "event_ts" in attributes and attributes["event_ts"] != event_ms:
        raise Rejected(STAGE_ATTRIBUTES, "event_ts",
                       f"attribute {attributes['event_ts'][:40]!r} is not the body's "
                       f"event_time in ms ({event_ms})")
    if (event.event_time - now).total_seconds() > max_future_s:
        raise Rejected(STAGE_SCHEMA, "event_time",
                       f"{format_time(event.event_time)} is more than {max_future_s:g} s "
                       f"ahead of the pipeline's clock ({format_time(now)})")
    info = catalog.get(event.model, event.version)
    if info is None:
        raise Rejected(STAGE_REGISTRY, "version",
                       f"model {event.model!r} has no ready version {event.version!r} in "
                       "the registry; register it first (rotwatch model train)")
    if info.n_features and len(event.features) != info.n_features:
        raise Rejected(STAGE_REGISTRY, "features",
                       f"{len(event.features)} features, but {event.model} "
                       f"{event.version} takes {info.n_features}")
    return event


class ParseFeedback(beam.DoFn):
    """PubsubMessage -> FeedbackEvent (main, event-time stamped) | DeadLetter."""

    def __init__(self, catalog, max_future_s: float = 600, clock=None):
        self._catalog = catalog
        self._max_future_s = max_future_s
        self._clock = clock
        self._valid = Metrics.counter("rotwatch.parse", "feedback_valid")
        self._invalid = Metrics.counter("rotwatch.parse", "feedback_invalid")

    def _now(self) -> dt.datetime:
        return self._clock() if self._clock else dt.datetime.now(dt.timezone.utc)

    def process(self, message):
        data = getattr(message, "data", message)
        attributes = dict(getattr(message, "attributes", None) or {})
        now = self._now()
        try:
            event = check_message(data, attributes, self._catalog, now, self._max_future_s)
        except Rejected as exc:
            self._invalid.inc()
            Metrics.counter("rotwatch.parse", f"deadletter_{exc.stage}").inc()
            _LOGGER.debug("feedback rejected stage=%s field=%s reason=%s event_id=%s",
                          exc.stage, exc.field, exc.reason, attributes.get("event_id"))
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                payload=data if isinstance(data, bytes) else str(data).encode("utf-8"),
                attributes=attributes, stage=exc.stage, field=exc.field,
                reason=exc.reason, failed_at=now))
            return
        self._valid.inc()
        yield beam.window.TimestampedValue(
            event, Timestamp(micros=to_millis(event.event_time) * 1000))
