"""Datastore writes: entities keyed so that a rewrite overwrites, one key per commit.

* :func:`make_entity` / :func:`feedback_entity` build Beam ``Entity`` objects per the
  property contract in :mod:`rotwatch.kinds` (``Feedback`` keyed by ``event_id``).
* :class:`DedupeKeysInBundle` keeps one entity per key per bundle: Datastore refuses a
  commit holding two mutations of one key, and a redelivered event (or two panes of
  one window) can land in the same bundle. ``WriteToDatastore`` commits within its
  bundle, and with fusion its bundles are this step's bundles.
* :class:`WriteEntities` = dedupe + Beam's ``WriteToDatastore``. Ramp-up throttling
  (about 1 entity/s per assumed worker for the first minutes) protects a cold
  Datastore from a 500-worker job; it is off for local runners (see options).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable, Iterable, Mapping

import apache_beam as beam
from apache_beam.io.gcp.datastore.v1new.datastoreio import WriteToDatastore
from apache_beam.io.gcp.datastore.v1new.types import Entity, Key
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from rotwatch import kinds
from rotwatch.events import FeedbackEvent

__all__ = ["make_entity", "feedback_entity", "entity_key_id", "DedupeKeysInBundle",
           "WriteEntities", "ToFeedbackEntity"]

_LOGGER = logging.getLogger(__name__)


def make_entity(kind: str, name: str, properties: Mapping, project: str,
                namespace: str | None = None, unindexed: Iterable[str] = (),
                parent: tuple = ()) -> Entity:
    """A Beam Datastore entity with a complete key ``parent + (kind, name)``."""
    key = Key(list(parent) + [kind, name], project=project, namespace=namespace)
    entity = Entity(key, exclude_from_indexes=tuple(unindexed))
    entity.set_properties(dict(properties))
    return entity


def feedback_entity(event: FeedbackEvent, project: str, namespace: str | None = None,
                    stored_at: dt.datetime | None = None) -> Entity:
    """``Feedback`` keyed by ``event_id``: a redelivery overwrites, never duplicates."""
    return make_entity(kinds.FEEDBACK, event.event_id, {
        "model": event.model,
        "version": event.version,
        "features": list(event.features),
        "prediction": event.prediction,
        "was_correct": event.was_correct,
        "label": event.label,
        "correct": event.correct,
        "event_time": event.event_time,
        "stored_at": stored_at or dt.datetime.now(dt.timezone.utc),
    }, project, namespace, unindexed=("features",))


def entity_key_id(entity: Entity) -> tuple:
    key = entity.key
    return (key.project, key.namespace, tuple(key.path_elements))


class ToFeedbackEntity(beam.DoFn):
    def __init__(self, project: str, namespace: str | None = None):
        self._project = project
        self._namespace = namespace

    def process(self, event):
        yield feedback_entity(event, self._project, self._namespace)


class DedupeKeysInBundle(beam.DoFn):
    """One element per key per bundle; ``prefer(old, new)`` picks the survivor
    (default: the later one)."""

    def __init__(self, key_fn: Callable = entity_key_id, prefer: Callable | None = None):
        self._key_fn = key_fn
        self._prefer = prefer
        self._dropped = Metrics.counter("rotwatch.store", "duplicate_keys_in_bundle")

    def start_bundle(self):
        self._pending = {}

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        key = self._key_fn(element)
        old = self._pending.get(key)
        if old is not None:
            self._dropped.inc()
            if self._prefer is not None and self._prefer(old[0], element) is old[0]:
                return
        self._pending[key] = (element, timestamp, window)

    def finish_bundle(self):
        pending, self._pending = self._pending, {}
        for element, timestamp, window in pending.values():
            yield WindowedValue(element, timestamp, [window])


class WriteEntities(beam.PTransform):
    """Dedupe keys per bundle, then ``WriteToDatastore``; returns the write's output
    (empty, but its watermark says how far the writes have got)."""

    def __init__(self, project: str, throttle_rampup: bool = True,
                 prefer: Callable | None = None, label: str | None = None):
        super().__init__(label)
        self._project = project
        self._throttle_rampup = throttle_rampup
        self._prefer = prefer

    def expand(self, entities):
        return (entities
                | "DedupeKeys" >> beam.ParDo(DedupeKeysInBundle(prefer=self._prefer))
                | "WriteToDatastore" >> WriteToDatastore(
                    self._project, throttle_rampup=self._throttle_rampup))
