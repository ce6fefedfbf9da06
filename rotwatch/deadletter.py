"""Read and replay dead letters: what rotwatch refused, why, and a way back in.

Two dead-letter topics hold what could not be handled, each with an inspection
subscription that keeps it until someone reads it (:data:`rotwatch.config.SUBSCRIPTIONS`):

* ``feedback-deadletter`` (``--of feedback``): feedback the pipeline refused — the
  original payload and attributes plus ``rotwatch_stage`` / ``rotwatch_field`` /
  ``rotwatch_reason`` — and late reports (``rotwatch_stage=late``: a valid event,
  stored, too late for the streaming windows); and anything the ``feedback-pipeline``
  subscription's dead-letter policy gave up on (Pub/Sub's
  ``CloudPubSubDeadLetterSource*`` attributes, no rotwatch reason).
* ``model-rot-deadletter`` (``--of rot``): rot events the trainer failed to handle
  after the subscription's last delivery attempt.

:func:`read_letters` pulls up to ``limit`` of them; unless they are to be consumed,
their leases are released at once (``ModifyAckDeadline`` 0), so reading is
non-destructive. :func:`replay` republishes chosen letters to the topic they came
from, with the original attributes only, and acknowledges each letter after its
publish is confirmed — a crash in between repeats a publish, which the keyed writes
downstream absorb. Late reports are never replayed: their events are stored already
(``rotwatch pipeline recompute`` counts them in their windows).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Callable, Iterable, Sequence

from rotwatch.config import Settings

__all__ = ["Letter", "SOURCES", "read_letters", "release", "acknowledge", "replay",
           "original_attributes", "subscription_and_topic", "STAGE_LATE",
           "STAGE_DELIVERY"]

_LOGGER = logging.getLogger(__name__)

# --of NAME -> (dead-letter subscription role, topic role a replay publishes to)
SOURCES = {"feedback": ("deadletter", "feedback"), "rot": ("rot-deadletter", "rot")}
STAGE_LATE = "late"            # pipelines: a late report, not a refusal
STAGE_DELIVERY = "delivery"    # forwarded by a subscription's dead-letter policy
# Attributes that describe the dead-lettering, not the original message.
_ADDED_PREFIXES = ("rotwatch_", "CloudPubSubDeadLetterSource")
PULL_BATCH = 500               # per Pull; Pub/Sub allows 1,000
PULL_TIMEOUT_S = 5.0
MAX_LIMIT = 100_000            # a bound on one command's work


@dataclasses.dataclass(frozen=True)
class Letter:
    """One dead letter as pulled (``ack_id`` releases or acknowledges it)."""

    ack_id: str
    message_id: str
    published: dt.datetime | None
    data: bytes
    attributes: dict

    @property
    def stage(self) -> str:
        if "rotwatch_stage" in self.attributes:
            return self.attributes["rotwatch_stage"]
        if "CloudPubSubDeadLetterSourceDeliveryCount" in self.attributes:
            return STAGE_DELIVERY
        return "unknown"

    @property
    def field(self) -> str:
        return self.attributes.get("rotwatch_field", "")

    @property
    def reason(self) -> str:
        if "rotwatch_reason" in self.attributes:
            return self.attributes["rotwatch_reason"]
        count = self.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
        if count:
            source = self.attributes.get("CloudPubSubDeadLetterSourceSubscription", "?")
            return (f"not acknowledged after {count} deliveries from subscription "
                    f"{source} (its dead-letter policy forwarded it)")
        return "no reason recorded"

    def to_dict(self) -> dict:
        return {"message_id": self.message_id,
                "published": self.published.isoformat() if self.published else None,
                "stage": self.stage, "field": self.field, "reason": self.reason,
                "attributes": self.attributes,
                "data": self.data.decode("utf-8", errors="replace")}


def original_attributes(attributes: dict) -> dict:
    """The message's own attributes, without those the dead-lettering added."""
    return {k: v for k, v in attributes.items() if not k.startswith(_ADDED_PREFIXES)}


def _letter(received) -> Letter:
    message = received.message
    published = message.publish_time if message.publish_time else None
    if published is not None and published.tzinfo is None:
        published = published.replace(tzinfo=dt.timezone.utc)
    return Letter(ack_id=received.ack_id, message_id=message.message_id,
                  published=published, data=bytes(message.data),
                  attributes=dict(message.attributes))


def read_letters(subscriber, subscription: str, limit: int) -> list[Letter]:
    """Pull up to ``limit`` letters, leased to this caller (release or ack them)."""
    from google.api_core import exceptions as gexc
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit={limit} must be in 1..{MAX_LIMIT:,}")
    letters: list[Letter] = []
    while len(letters) < limit:
        try:
            response = subscriber.pull(subscription=subscription, timeout=PULL_TIMEOUT_S,
                                       max_messages=min(PULL_BATCH, limit - len(letters)))
        except gexc.DeadlineExceeded:
            break
        if not response.received_messages:
            break
        letters.extend(_letter(r) for r in response.received_messages)
    return letters


def _chunks(items: Sequence, size: int = 1000) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def release(subscriber, subscription: str, letters: Sequence[Letter]) -> None:
    """Hand the letters back at once: the next reader sees them again."""
    for chunk in _chunks([l.ack_id for l in letters]):
        subscriber.modify_ack_deadline(subscription=subscription, ack_ids=list(chunk),
                                       ack_deadline_seconds=0)


def acknowledge(subscriber, subscription: str, letters: Sequence[Letter]) -> None:
    for chunk in _chunks([l.ack_id for l in letters]):
        subscriber.acknowledge(subscription=subscription, ack_ids=list(chunk))


def replay(letters: Sequence[Letter], publish: Callable[[bytes, dict], object],
           subscriber, subscription: str, timeout_s: float = 60.0) -> dict:
    """Republish each letter's data with :func:`original_attributes`; acknowledge the
    ones whose publish succeeded. Late reports are skipped (and released).
    ``publish(data, attributes)`` returns a future. Returns the counts."""
    chosen = [l for l in letters if l.stage != STAGE_LATE]
    skipped = [l for l in letters if l.stage == STAGE_LATE]
    futures = [(l, publish(l.data, original_attributes(l.attributes))) for l in chosen]
    done, failed = [], []
    for letter, future in futures:
        try:
            future.result(timeout=timeout_s)
            done.append(letter)
        except Exception as exc:  # noqa: BLE001 - reported per letter, kept for later
            _LOGGER.error("replay failed message_id=%s error=%s", letter.message_id, exc)
            failed.append(letter)
    acknowledge(subscriber, subscription, done)
    release(subscriber, subscription, failed + skipped)
    _LOGGER.info("replayed=%d failed=%d skipped_late=%d subscription=%s", len(done),
                 len(failed), len(skipped), subscription)
    return {"replayed": len(done), "failed": len(failed), "skipped_late": len(skipped)}


def subscription_and_topic(settings: Settings, of: str) -> tuple[str, str]:
    if of not in SOURCES:
        raise ValueError(f"--of {of!r}: choose one of {', '.join(SOURCES)}")
    sub_role, topic_role = SOURCES[of]
    return settings.subscription(sub_role), settings.topic(topic_role)
