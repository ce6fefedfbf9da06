"""Publish rot events to ``model-rot`` and record them as ``RotEvent`` entities.

Each rot event is published first and stored second (with ``published_at``), so a
stored ``RotEvent`` means "published". Before publishing, :class:`PublishRotEvent`
looks for a stored event of the same id — or of the same version and kind within
the cooldown — and skips it: after a restart the rules start from empty state and a
replay can decide again what was already announced. Retries stay idempotent: the id
is deterministic, the entity is keyed by it, and consumers (the trainer keys its
``TrainingJob`` by the rot id) see at most a repeat of the same id.

Beam's ``WriteToPubSub`` has no way to say "stored only after published", so this
step publishes with the official client (one shared per process) and waits for the
message id; rot events are rare, so waiting costs nothing.
"""
from __future__ import annotations

import datetime as dt
import json
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from rotwatch import kinds
from rotwatch.events import RotEvent
from pipelines.store import make_entity

__all__ = ["rot_event_entity", "already_published", "PublishRotEvent",
           "PUBLISH_TIMEOUT_S"]

_LOGGER = logging.getLogger(__name__)

# A rot event publish that takes longer fails the bundle, which is retried: a
# minute rides out a Pub/Sub hiccup without stalling the rules for long.
PUBLISH_TIMEOUT_S = 60.0


def rot_event_entity(event: RotEvent, project: str, namespace: str | None = None,
                     published_at: dt.datetime | None = None):
    return make_entity(kinds.ROT_EVENT, event.rot_id, {
        "model": event.model, "version": event.version, "kind": event.kind,
        "decided_at": event.decided_at, "evidence": json.dumps(event.to_dict()),
        "published_at": published_at,
    }, project, namespace, unindexed=("evidence",))


def already_published(client, event: RotEvent, cooldown_s: int) -> str | None:
    """The id of a stored, published event that makes ``event`` a repeat, if any."""
    key = client.key(kinds.ROT_EVENT, event.rot_id)
    stored = client.get(key)
    if stored is not None and stored.get("published_at") is not None:
        return event.rot_id
    query = client.query(kind=kinds.ROT_EVENT)
    from google.cloud.datastore.query import PropertyFilter
    for name, value in (("model", event.model), ("version", event.version),
                        ("kind", event.kind)):
        query.add_filter(filter=PropertyFilter(name, "=", value))
    for other in query.fetch(limit=100):
        decided = other.get("decided_at")
        if other.get("published_at") is None or decided is None:
            continue
        if abs((decided - event.decided_at).total_seconds()) < cooldown_s:
            return other.key.name
    return None


class PublishRotEvent(beam.DoFn):
    """RotEvent -> published on ``topic`` -> ``RotEvent`` entity (for WriteToDatastore)."""

    def __init__(self, topic: str, project: str, namespace: str | None = None,
                 cooldown_s: int = 3600):
        self._topic = topic
        self._project = project
        self._namespace = namespace
        self._cooldown_s = cooldown_s
        self._published = Metrics.counter("rotwatch.publish", "rot_published")
        self._repeats = Metrics.counter("rotwatch.publish", "rot_repeats_skipped")

    def setup(self):
        from pipelines.clients import datastore_client, publisher_client
        self._publisher = publisher_client()
        self._datastore = datastore_client(self._project, self._namespace)

    def process(self, event):
        repeat_of = already_published(self._datastore, event, self._cooldown_s)
        if repeat_of is not None:
            self._repeats.inc()
            _LOGGER.info("rot event not repeated rot_id=%s stored=%s", event.rot_id,
                         repeat_of)
            return
        message_id = self._publisher.publish(
            self._topic, event.to_json(), **event.attributes()).result(PUBLISH_TIMEOUT_S)
        self._published.inc()
        _LOGGER.info("rot event published rot_id=%s kind=%s message_id=%s",
                     event.rot_id, event.kind, message_id)
        yield rot_event_entity(event, self._project, self._namespace,
                               published_at=dt.datetime.now(dt.timezone.utc))
