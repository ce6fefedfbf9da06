"""Datastore kinds and key names: the contract between the roles (DESIGN.md).

Every role reads and writes these kinds through the names below, so a property
renamed here is renamed everywhere. Keys come from event ids, so a redelivered event
overwrites its own entity and never makes a second one.

=================  ===========================================  =========================
kind               key name                                     written by
=================  ===========================================  =========================
``Feedback``       ``event_id``                                 pipeline
``Model``          model name                                   registry
``ModelVersion``   ``vN``, child of ``Model``                   registry (trainer, CLI)
``DefaultChange``  ``<ms>-<version>``, child of ``Model``       registry (history)
``WindowMetric``   :func:`window_metric_name`                   pipeline
``RotEvent``       :attr:`rotwatch.events.RotEvent.rot_id`      pipeline
``TrainingJob``    rot event id                                 trainer
``PipelineCheckpoint``  subscription id                         pipeline (restart safety)
=================  ===========================================  =========================

Property names (all kinds store times as aware UTC datetimes):

* ``Feedback``: model, version, features (list of floats, unindexed), prediction,
  was_correct (bool or None), label (or None), correct (bool: the verdict the pipeline
  counted), event_time, stored_at.
* ``Model``: default_version, created_at, updated_at.
* ``DefaultChange``: version (the new default), previous_version (None for the first
  default), changed_by, reason (unindexed), changed_at — as in
  :class:`rotwatch.events.ModelUpdate`.
* ``ModelVersion``: version, number (int), artifact_uri, sha256, estimator, params
  (unindexed JSON text), n_features, classes (list), baseline_accuracy, metrics
  (unindexed JSON text; ``holdout_accuracy`` among them), reference_stats (unindexed JSON text, see
  :func:`rotwatch.stats.reference_statistics`), train_start, train_end, train_rows,
  parent_version, created_at, created_by, status (``pending`` while its artifact is
  written, then ``ready``; ``abandoned`` if the write failed or its artifact was later
  found altered or missing, with the reason in status_reason (unindexed) — only
  ``ready`` loads). The artifact is
  ``<root>/<model>/<version>/<sha256>/model.joblib`` (:mod:`rotwatch.artifacts`). A
  trainer has at most one pending-or-ready version per ``created_by="rot:<rot id>"``
  (:meth:`rotwatch.registry.Registry.register_version_once`).
* ``WindowMetric``: model, version, window_start, window_end, n, correct, accuracy,
  lower, upper, drift (unindexed JSON text), pane (``early``/``on_time``/``late``),
  updated_at.
* ``RotEvent``: model, version, kind, decided_at, evidence (unindexed JSON text of
  :meth:`RotEvent.to_dict`), published_at.
* ``TrainingJob``: model, version (the rotting one), state (``running``, ``promoted``,
  ``rejected``, ``insufficient-data``, ``failed``), lease_owner, lease_expires,
  attempts, produced_version, candidate_accuracy, current_accuracy, rows, error
  (unindexed), rot_event (unindexed JSON of the event, so a sweep can retry without
  the message), detail (unindexed JSON: exclusions, gate reason, step timings),
  created_at, updated_at.
* ``PipelineCheckpoint``: subscription, stored_through (the event time up to which
  everything is durably stored), updated_at. A first start also makes the Pub/Sub
  snapshot ``<subscription>-start`` so a crash before the first checkpoint replays.
"""
from __future__ import annotations

import datetime as dt

__all__ = [
    "FEEDBACK", "MODEL", "MODEL_VERSION", "DEFAULT_CHANGE", "WINDOW_METRIC",
    "ROT_EVENT", "TRAINING_JOB", "PIPELINE_CHECKPOINT", "window_metric_name",
    "version_number", "version_name",
]

FEEDBACK = "Feedback"
MODEL = "Model"
MODEL_VERSION = "ModelVersion"
DEFAULT_CHANGE = "DefaultChange"
WINDOW_METRIC = "WindowMetric"
ROT_EVENT = "RotEvent"
TRAINING_JOB = "TrainingJob"
PIPELINE_CHECKPOINT = "PipelineCheckpoint"


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def window_metric_name(model: str, version: str, start: dt.datetime,
                       end: dt.datetime) -> str:
    """One entity per model, version and window: a later pane overwrites it."""
    return f"{model}.{version}.{_ms(start)}.{_ms(end)}"


def version_number(version: str) -> int:
    """``"v12"`` → 12."""
    if not (isinstance(version, str) and version[:1] == "v" and version[1:].isdigit()):
        raise ValueError(f"{version!r} is not a version name like 'v1'")
    return int(version[1:])


def version_name(number: int) -> str:
    if number < 1:
        raise ValueError(f"version numbers start at 1, got {number}")
    return f"v{number}"
