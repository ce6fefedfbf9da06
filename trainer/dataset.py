"""The training set of a rot event: stored feedback since the change point, labelled.

``Feedback`` entities (written by the pipeline, key name = event id) are read with the
Datastore client for one model since the rot event's change point, optionally with a
share of older rows, deduplicated by event id, ordered by event time, and labelled by
:mod:`trainer.labels`. For datasets too big for one process,
:mod:`trainer.beam_dataset` reads the same rows with a Beam batch pipeline
(``ReadFromDatastore``) and hands them to the same :func:`build_dataset`.

Against real Datastore these queries need composite indexes on ``Feedback``
(``model``, ``event_time`` ascending and descending), listed in the top-level ``index.yaml``:
``gcloud datastore indexes create index.yaml``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rotwatch import kinds
from trainer.labels import infer_labels

__all__ = ["FeedbackRow", "Dataset", "read_feedback", "count_feedback", "dedupe",
           "build_dataset", "row_from_properties", "iso_time"]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FeedbackRow:
    """One stored feedback event, as training needs it."""

    event_id: str
    event_time: dt.datetime
    version: str
    features: tuple[float, ...]
    prediction: Any
    was_correct: bool | None
    label: Any

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["event_time"] = iso_time(self.event_time)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeedbackRow":
        return cls(event_id=data["event_id"],
                   event_time=dt.datetime.fromisoformat(data["event_time"]),
                   version=data["version"], features=tuple(data["features"]),
                   prediction=data["prediction"], was_correct=data["was_correct"],
                   label=data["label"])


def iso_time(value: dt.datetime) -> str:
    """Fixed-width UTC text (microseconds, ``Z``): sorts like the times it names."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def row_from_properties(event_id: str, props: Mapping[str, Any]) -> FeedbackRow:
    """A row from a ``Feedback`` entity's key name and properties."""
    return FeedbackRow(event_id=event_id, event_time=_aware(props["event_time"]),
                       version=props.get("version") or "",
                       features=tuple(float(x) for x in props.get("features") or ()),
                       prediction=props.get("prediction"),
                       was_correct=props.get("was_correct"), label=props.get("label"))


def _query(client, model: str, op: str, when: dt.datetime, order=None, limit=None):
    from google.cloud.datastore.query import PropertyFilter
    query = client.query(kind=kinds.FEEDBACK)
    query.add_filter(filter=PropertyFilter("model", "=", model))
    query.add_filter(filter=PropertyFilter("event_time", op, when))
    if order:
        query.order = order
    return query.fetch(limit=limit)


def read_feedback(client, model: str, since: dt.datetime, *,
                  older_share: float = 0.0) -> list[FeedbackRow]:
    """Feedback for ``model`` with ``event_time >= since``, deduplicated, time-ordered.

    ``older_share`` adds up to that share (of the recent row count) of the newest rows
    from before ``since``: some memory of the old population, if wanted.
    """
    if not 0.0 <= older_share <= 1.0:
        raise ValueError(f"older_share={older_share!r} must be in [0, 1] "
                         "(0.25 adds a quarter as many older rows)")
    recent = [row_from_properties(e.key.name, e)
              for e in _query(client, model, ">=", since)]
    older: list[FeedbackRow] = []
    extra = math.floor(older_share * len(recent))
    if extra:
        older = [row_from_properties(e.key.name, e)
                 for e in _query(client, model, "<", since, order=["-event_time"],
                                 limit=extra)]
    rows = dedupe(recent + older)
    _LOGGER.info("step=read-feedback model=%s since=%s rows=%d older_rows=%d", model,
                 since.isoformat(), len(rows), len(older))
    return rows


def count_feedback(client, model: str, since: dt.datetime, limit: int) -> int:
    """How many feedback rows since ``since``, counting no further than ``limit``."""
    from google.cloud.datastore.query import PropertyFilter
    query = client.query(kind=kinds.FEEDBACK)
    query.add_filter(filter=PropertyFilter("model", "=", model))
    query.add_filter(filter=PropertyFilter("event_time", ">=", since))
    query.keys_only()
    return sum(1 for _ in query.fetch(limit=limit))


def dedupe(rows: Iterable[FeedbackRow]) -> list[FeedbackRow]:
    """One row per event id (the first seen), ordered by (event_time, event_id)."""
    seen: dict[str, FeedbackRow] = {}
    for row in rows:
        seen.setdefault(row.event_id, row)
    return sorted(seen.values(), key=lambda r: (r.event_time, r.event_id))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Labelled rows in time order: ``X``, ``y`` and when each row happened."""

    X: np.ndarray
    y: np.ndarray
    event_times: list[dt.datetime]
    read_rows: int
    excluded: dict[str, int]

    @property
    def rows(self) -> int:
        return int(len(self.y))

    @property
    def classes(self) -> list:
        return sorted(set(self.y.tolist()), key=str)


def _label_array(labels: list) -> np.ndarray:
    if labels and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                      for v in labels):
        return np.asarray(labels, dtype=np.int64)
    return np.asarray(labels, dtype=object)


def build_dataset(rows: Sequence[FeedbackRow], classes: Sequence[Any],
                  n_features: int) -> Dataset:
    """Label ``rows`` (time-ordered, deduplicated) for a model of ``classes``.

    Rows whose feature count differs from ``n_features`` are excluded and counted
    (``wrong-feature-count``), as are rows whose label cannot be inferred.
    """
    rows = [r for r in rows]
    good = [r for r in rows if len(r.features) == n_features]
    result = infer_labels(((r.prediction, r.was_correct, r.label) for r in good), classes)
    excluded = dict(result.excluded)
    if len(good) != len(rows):
        excluded["wrong-feature-count"] = len(rows) - len(good)
    kept = [good[i] for i in result.kept]
    X = np.asarray([r.features for r in kept], dtype=float).reshape(len(kept), n_features)
    return Dataset(X=X, y=_label_array(result.labels),
                   event_times=[r.event_time for r in kept], read_rows=len(rows),
                   excluded=excluded)
