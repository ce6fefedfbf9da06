"""What is stored about one model, read back into a :class:`Report`, and a text table.

:func:`load_report` reads the Datastore kinds of :mod:`rotwatch.kinds` for one model
over an optional event-time range ``[since, until)``:

* ``WindowMetric`` rows per version (windowed accuracy and its Wilson bounds) for
  the windows that lie entirely inside the range,
* ``RotEvent`` entities (the evidence of each rot decision),
* ``ModelVersion`` entities (holdout / baseline accuracy, lineage),
* ``DefaultChange`` history (promotions),
* a bounded, newest-first sample of ``Feedback`` (features and the counted verdict),
* ``TrainingJob`` entities.

:func:`summary_table` turns a report into a readable text table (one row per version),
and :meth:`Report.to_dict` into the JSON written by ``rotwatch report``.

Queries and indexes: every query filters on ``model`` by equality. Feedback (newest
first) and WindowMetric (by window end, with the time range) also filter and sort on a
time property, which Cloud Datastore serves only with the composite indexes in
:data:`REQUIRED_INDEXES` (``gcloud datastore indexes create index.yaml``). The other
kinds are few per model: they are read with equality / ancestor queries (built-in
indexes) and filtered by time here.

    rotwatch report --out .rotwatch/report [--model zombies] [--since 2026-12-03T10:00:00Z]
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
from typing import Any, Iterable, Mapping, Sequence

from rotwatch import kinds
from rotwatch.config import DEFAULT_PROJECT, Settings
from rotwatch.events import RotEvent, format_time, parse_time

__all__ = [
    "Report", "WindowRow", "VersionInfo", "RotRecord", "DefaultChangeRecord",
    "TrainingJobRecord", "FeedbackSample", "VersionSummary", "ReportError",
    "load_report", "resolve_model", "summary_table", "make_client",
    "MAX_FEEDBACK_ROWS", "MAX_WINDOW_ROWS", "REQUIRED_INDEXES",
]

_LOGGER = logging.getLogger(__name__)

# Enough rows to draw a dense input scatter and count a demo's feedback exactly,
# small enough (~20k x 4 floats) to hold and plot in a second or two.
MAX_FEEDBACK_ROWS = 20_000
# 5 s windows for a few days of one version; beyond that pass --since / --until.
MAX_WINDOW_ROWS = 100_000
# Ancestor/equality reads of the small kinds: a model has a handful of versions,
# a few rot events and jobs per rot; this bound only guards against a runaway loop.
MAX_SMALL_ROWS = 10_000
# One Datastore RPC may take this long before the report gives up (seconds): enough
# for a 20k-row page stream from the cloud, short enough to fail visibly if the
# emulator is gone.
RPC_TIMEOUT_S = 60.0

# The composite indexes the report's two ranged queries need in Cloud Datastore
# (index.yaml syntax). The local emulator needs none.
REQUIRED_INDEXES = """\
indexes:
- kind: Feedback
  properties:
  - name: model
  - name: event_time
    direction: desc
- kind: WindowMetric
  properties:
  - name: model
  - name: window_end
"""

# A local emulator accepts a connection at once; two seconds covers a busy machine.
EMULATOR_CONNECT_TIMEOUT_S = 2.0

_MIN_TIME = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class ReportError(RuntimeError):
    """Nothing (or not enough) is stored to report on; the message says what to run."""


# -- records --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WindowRow:
    """One ``WindowMetric``: a version's accuracy in one event-time window."""

    version: str
    window_start: dt.datetime
    window_end: dt.datetime
    n: int
    correct: int
    accuracy: float | None
    lower: float | None
    upper: float | None
    pane: str | None = None
    drift: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One ``ModelVersion``: what the registry knows of it."""

    version: str
    number: int
    baseline_accuracy: float | None
    holdout_accuracy: float | None
    created_at: dt.datetime | None
    created_by: str | None
    parent_version: str | None
    train_rows: int | None
    status: str | None
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RotRecord:
    """One stored ``RotEvent``; ``event`` is the parsed evidence (None if unreadable)."""

    rot_id: str
    version: str
    kind: str
    decided_at: dt.datetime
    published_at: dt.datetime | None
    event: RotEvent | None

    @property
    def accuracy(self) -> float | None:
        return self.event.accuracy if self.event else None

    @property
    def change_point(self) -> dt.datetime | None:
        return self.event.change_point if self.event else None


@dataclasses.dataclass(frozen=True)
class DefaultChangeRecord:
    """One ``DefaultChange``: the model's default became ``default_version``."""

    changed_at: dt.datetime
    default_version: str
    previous_version: str | None
    changed_by: str | None
    reason: str | None


@dataclasses.dataclass(frozen=True)
class TrainingJobRecord:
    job_id: str
    version: str | None
    state: str | None
    produced_version: str | None
    candidate_accuracy: float | None
    current_accuracy: float | None
    rows: int | None
    attempts: int | None
    error: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class FeedbackSample:
    """The newest stored ``Feedback`` rows (at most ``limit``), oldest first here."""

    versions: tuple[str, ...]
    features: tuple[tuple[float, ...], ...]
    correct: tuple[bool, ...]
    times: tuple[dt.datetime, ...]
    limit: int

    @property
    def truncated(self) -> bool:
        """True when the cap was hit: older rows exist that are not in the sample."""
        return len(self.times) >= self.limit

    def __len__(self) -> int:
        return len(self.times)


@dataclasses.dataclass(frozen=True)
class VersionSummary:
    """One line of :func:`summary_table`."""

    version: str
    is_default: bool
    holdout_accuracy: float | None
    baseline_accuracy: float | None
    feedback_n: int
    feedback_accuracy: float | None
    windows: int
    window_accuracy_min: float | None
    window_accuracy_mean: float | None
    window_accuracy_last: float | None
    rot_events: int
    promoted_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything stored for one model in ``[since, until)``; see :func:`load_report`."""

    model: str
    project: str
    namespace: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    generated_at: dt.datetime
    default_version: str | None
    versions: tuple[VersionInfo, ...]
    windows: tuple[WindowRow, ...]
    rot_events: tuple[RotRecord, ...]
    default_changes: tuple[DefaultChangeRecord, ...]
    training_jobs: tuple[TrainingJobRecord, ...]
    feedback: FeedbackSample

    @property
    def version_names(self) -> list[str]:
        """Every version seen in any kind, in version-number order."""
        names = {v.version for v in self.versions}
        names.update(w.version for w in self.windows)
        names.update(r.version for r in self.rot_events)
        names.update(self.feedback.versions)
        names.update(c.default_version for c in self.default_changes)
        return sorted(names, key=_version_sort_key)

    def windows_by_version(self) -> dict[str, list[WindowRow]]:
        out: dict[str, list[WindowRow]] = {}
        for row in self.windows:
            out.setdefault(row.version, []).append(row)
        for rows in out.values():
            rows.sort(key=lambda r: (r.window_end, r.window_start))
        return dict(sorted(out.items(), key=lambda kv: _version_sort_key(kv[0])))

    def promotions(self) -> list[DefaultChangeRecord]:
        """Changes of the default to a version that is not the first default."""
        changes = sorted(self.default_changes, key=lambda c: c.changed_at)
        return [c for c in changes if c.previous_version is not None]

    def version_summaries(self) -> list[VersionSummary]:
        by_version = self.windows_by_version()
        infos = {v.version: v for v in self.versions}
        fb_n: dict[str, int] = {}
        fb_ok: dict[str, int] = {}
        for version, ok in zip(self.feedback.versions, self.feedback.correct):
            fb_n[version] = fb_n.get(version, 0) + 1
            fb_ok[version] = fb_ok.get(version, 0) + int(ok)
        out = []
        for name in self.version_names:
            info = infos.get(name)
            rows = [r for r in by_version.get(name, []) if r.accuracy is not None]
            accs = [r.accuracy for r in rows]
            promoted = [c.changed_at for c in self.default_changes
                        if c.default_version == name]
            out.append(VersionSummary(
                version=name,
                is_default=name == self.default_version,
                holdout_accuracy=info.holdout_accuracy if info else None,
                baseline_accuracy=info.baseline_accuracy if info else None,
                feedback_n=fb_n.get(name, 0),
                feedback_accuracy=(fb_ok[name] / fb_n[name]) if fb_n.get(name) else None,
                windows=len(rows),
                window_accuracy_min=min(accs) if accs else None,
                window_accuracy_mean=sum(accs) / len(accs) if accs else None,
                window_accuracy_last=accs[-1] if accs else None,
                rot_events=sum(1 for r in self.rot_events if r.version == name),
                promoted_at=min(promoted) if promoted else None,
            ))
        return out

    def to_dict(self) -> dict:
        """JSON-ready: times as RFC 3339 text; the feedback sample as counts only."""
        def t(value):
            return None if value is None else format_time(value)

        def rounded(value):
            return None if value is None else round(float(value), 6)
        return {
            "model": self.model,
            "project": self.project,
            "namespace": self.namespace,
            "since": t(self.since),
            "until": t(self.until),
            "generated_at": t(self.generated_at),
            "default_version": self.default_version,
            "summary": [
                {"version": s.version, "is_default": s.is_default,
                 "holdout_accuracy": rounded(s.holdout_accuracy),
                 "baseline_accuracy": rounded(s.baseline_accuracy),
                 "feedback_n": s.feedback_n,
                 "feedback_accuracy": rounded(s.feedback_accuracy),
                 "windows": s.windows,
                 "window_accuracy_min": rounded(s.window_accuracy_min),
                 "window_accuracy_mean": rounded(s.window_accuracy_mean),
                 "window_accuracy_last": rounded(s.window_accuracy_last),
                 "rot_events": s.rot_events, "promoted_at": t(s.promoted_at)}
                for s in self.version_summaries()
            ],
            "versions": [
                {"version": v.version, "number": v.number,
                 "holdout_accuracy": rounded(v.holdout_accuracy),
                 "baseline_accuracy": rounded(v.baseline_accuracy),
                 "created_at": t(v.created_at), "created_by": v.created_by,
                 "parent_version": v.parent_version, "train_rows": v.train_rows,
                 "status": v.status, "metrics": dict(v.metrics)}
                for v in self.versions
            ],
            "windows": [
                {"version": w.version, "window_start": t(w.window_start),
                 "window_end": t(w.window_end), "n": w.n, "correct": w.correct,
                 "accuracy": rounded(w.accuracy), "lower": rounded(w.lower),
                 "upper": rounded(w.upper), "pane": w.pane}
                for w in self.windows
            ],
            "rot_events": [
                r.event.to_dict() if r.event else
                {"rot_id": r.rot_id, "version": r.version, "kind": r.kind,
                 "decided_at": t(r.decided_at)}
                for r in self.rot_events
            ],
            "default_changes": [
                {"changed_at": t(c.changed_at), "default_version": c.default_version,
                 "previous_version": c.previous_version, "changed_by": c.changed_by,
                 "reason": c.reason}
                for c in self.default_changes
            ],
            "training_jobs": [
                {"job_id": j.job_id, "version": j.version, "state": j.state,
                 "produced_version": j.produced_version,
                 "candidate_accuracy": rounded(j.candidate_accuracy),
                 "current_accuracy": rounded(j.current_accuracy), "rows": j.rows,
                 "attempts": j.attempts, "error": j.error,
                 "created_at": t(j.created_at), "updated_at": t(j.updated_at)}
                for j in self.training_jobs
            ],
            "feedback_sample": {
                "rows": len(self.feedback), "limit": self.feedback.limit,
                "truncated": self.feedback.truncated,
                "first_event_time": t(self.feedback.times[0]) if self.feedback.times else None,
                "last_event_time": t(self.feedback.times[-1]) if self.feedback.times else None,
            },
        }


# -- reading --------------------------------------------------------------------------
def _check_emulator(host: str) -> None:
    """Fail in seconds, not after a minute of client retries, if the emulator is down."""
    import socket
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection((name.strip("[]") or "localhost", int(port)),
                                      timeout=EMULATOR_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ReportError(
            f"the Datastore emulator at DATASTORE_EMULATOR_HOST={host} does not answer "
            f"({exc}): start it with `rotwatch up` (or `rotwatch emulators start`), or "
            "unset the variable to read Google Cloud") from None


def make_client(settings: Settings):
    """A Datastore client for ``settings`` (the emulator if DATASTORE_EMULATOR_HOST)."""
    from google.auth import exceptions as auth_exceptions
    from google.cloud import datastore
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    if host:
        _check_emulator(host)
    elif settings.project == DEFAULT_PROJECT:
        # The local stack's project exists only in the emulator: say so instead of
        # searching for cloud credentials.
        raise ReportError(
            f"project {settings.project!r} is the local stack's, but "
            "DATASTORE_EMULATOR_HOST is not set: start `rotwatch up` and export the "
            "variables it prints, or give --project for a Google Cloud project")
    try:
        return datastore.Client(project=settings.project, namespace=settings.namespace)
    except auth_exceptions.DefaultCredentialsError:
        raise ReportError(
            f"no Datastore to read for project {settings.project!r}: start the local "
            "stack (`rotwatch up`, or `rotwatch emulators start` and export "
            "DATASTORE_EMULATOR_HOST) or, for Google Cloud, run "
            "`gcloud auth application-default login`") from None


def _where(settings_or_client) -> str:
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    project = getattr(settings_or_client, "project", "?")
    return (f"project {project!r} (Datastore emulator at {host})" if host
            else f"project {project!r}")


def _fetch(query, limit: int | None, what: str, client):
    """Run a query, turning transport and index failures into a :class:`ReportError`."""
    from google.api_core import exceptions as gexc
    try:
        return list(query.fetch(limit=limit, timeout=RPC_TIMEOUT_S))
    except gexc.FailedPrecondition as exc:
        raise ReportError(
            f"Datastore refused the {what} query ({exc.message}): it needs a composite "
            "index; put rotwatch.report.REQUIRED_INDEXES in index.yaml and run "
            "`gcloud datastore indexes create index.yaml`") from None
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as exc:
        raise ReportError(
            f"cannot read {what} from {_where(client)}: {exc}; is the stack running "
            "(`rotwatch up` or `rotwatch emulators start`)?") from None


def _filter(query, prop: str, op: str, value) -> None:
    from google.cloud.datastore.query import PropertyFilter
    query.add_filter(filter=PropertyFilter(prop, op, value))


def resolve_model(client, model: str | None = None) -> str:
    """``model`` if it is stored; with None, the one stored model (else an error)."""
    key_query = client.query(kind=kinds.MODEL)
    key_query.keys_only()
    names = sorted(e.key.name for e in _fetch(key_query, 1000, "Model", client)
                   if e.key.name)
    if model is not None:
        if model in names:
            return model
        known = ", ".join(names) if names else "none"
        hint = ("" if names else " — run `rotwatch demo` or `rotwatch model train` first")
        raise ReportError(f"model {model!r} is not stored in {_where(client)} "
                          f"(stored models: {known}){hint}")
    if not names:
        raise ReportError(
            f"no models are stored in {_where(client)}: run `rotwatch demo` (or "
            "`rotwatch up`, then `rotwatch model train` and `rotwatch simulate`) first")
    if len(names) > 1:
        raise ReportError(f"{len(names)} models are stored ({', '.join(names)}): "
                          "choose one with --model NAME")
    return names[0]


def _as_time(value, field: str) -> dt.datetime | None:
    if value is None:
        return None
    return parse_time(value, field)


def _opt_float(value) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _opt_int(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json(value, what: str) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        _LOGGER.warning("unreadable JSON in %s; ignoring it: %.80r", what, value)
        return {}
    return out if isinstance(out, dict) else {"value": out}


def _version_sort_key(version: str):
    try:
        return (0, kinds.version_number(version), version)
    except ValueError:
        return (1, 0, str(version))


def _in_range(value: dt.datetime | None, since, until) -> bool:
    if value is None:
        return since is None and until is None
    return (since is None or value >= since) and (until is None or value < until)


def _read_windows(client, model, since, until) -> list[WindowRow]:
    query = client.query(kind=kinds.WINDOW_METRIC)
    _filter(query, "model", "=", model)
    # A window belongs to [since, until) when all of it lies inside: the query
    # narrows on window_end (one inequality property, as Datastore requires) and the
    # start is checked below.
    if since is not None:
        _filter(query, "window_end", ">", since)
    if until is not None:
        _filter(query, "window_end", "<=", until)
    query.order = ["window_end"]
    entities = _fetch(query, MAX_WINDOW_ROWS, "WindowMetric", client)
    if len(entities) >= MAX_WINDOW_ROWS:
        _LOGGER.warning("window rows capped at limit=%d model=%s: narrow the range with "
                        "--since/--until", MAX_WINDOW_ROWS, model)
    rows = []
    for e in entities:
        start, end = e.get("window_start"), e.get("window_end")
        if start is None or end is None or not e.get("version"):
            _LOGGER.warning("skipping WindowMetric without version/window key=%s", e.key)
            continue
        if since is not None and _as_time(start, "window_start") < since:
            continue
        n = _opt_int(e.get("n")) or 0
        correct = _opt_int(e.get("correct")) or 0
        accuracy = _opt_float(e.get("accuracy"))
        if accuracy is None and n > 0:
            accuracy = correct / n
        if n == 0:
            accuracy = None  # an empty pane says nothing about accuracy
        lower, upper = _opt_float(e.get("lower")), _opt_float(e.get("upper"))
        if (lower is None or upper is None) and n > 0:
            from rotwatch.stats import wilson_interval
            lower, upper = wilson_interval(min(correct, n), n)
        rows.append(WindowRow(
            version=e["version"], window_start=_as_time(start, "window_start"),
            window_end=_as_time(end, "window_end"), n=n, correct=correct,
            accuracy=accuracy, lower=lower, upper=upper, pane=e.get("pane"),
            drift=_json(e.get("drift"), "WindowMetric.drift") or None))
    return rows


def _read_versions(client, model_key) -> list[VersionInfo]:
    query = client.query(kind=kinds.MODEL_VERSION, ancestor=model_key)
    out = []
    for e in _fetch(query, MAX_SMALL_ROWS, "ModelVersion", client):
        name = e.get("version") or e.key.name
        metrics = _json(e.get("metrics"), "ModelVersion.metrics")
        baseline = _opt_float(e.get("baseline_accuracy"))
        holdout = _opt_float(metrics.get("holdout_accuracy", metrics.get("accuracy")))
        number = _opt_int(e.get("number"))
        if number is None:
            number = _version_sort_key(name)[1]
        out.append(VersionInfo(
            version=name, number=number, baseline_accuracy=baseline,
            holdout_accuracy=holdout if holdout is not None else baseline,
            created_at=_as_time(e.get("created_at"), "created_at"),
            created_by=e.get("created_by"), parent_version=e.get("parent_version"),
            train_rows=_opt_int(e.get("train_rows")), status=e.get("status"),
            metrics=metrics))
    out.sort(key=lambda v: _version_sort_key(v.version))
    return out


def _default_change_time(entity) -> dt.datetime | None:
    for prop in ("changed_at", "created_at", "updated_at"):
        if entity.get(prop) is not None:
            return _as_time(entity.get(prop), prop)
    # The key name is "<ms>-<version>" (rotwatch.kinds): the time is in the key.
    head = str(entity.key.name or "").split("-", 1)[0]
    return dt.datetime.fromtimestamp(int(head) / 1000.0, tz=dt.timezone.utc) \
        if head.isdigit() else None


def _read_default_changes(client, model_key, since, until) -> list[DefaultChangeRecord]:
    query = client.query(kind=kinds.DEFAULT_CHANGE, ancestor=model_key)
    out = []
    for e in _fetch(query, MAX_SMALL_ROWS, "DefaultChange", client):
        when = _default_change_time(e)
        name = str(e.key.name or "")
        version = (e.get("default_version") or e.get("version")
                   or (name.split("-", 1)[1] if "-" in name else None))
        if when is None or not version:
            _LOGGER.warning("skipping DefaultChange without time/version key=%s", e.key)
            continue
        if not _in_range(when, since, until):
            continue
        out.append(DefaultChangeRecord(
            changed_at=when, default_version=version,
            previous_version=e.get("previous_version"),
            changed_by=e.get("changed_by"), reason=e.get("reason")))
    out.sort(key=lambda c: c.changed_at)
    return out


def _read_rot_events(client, model, since, until) -> list[RotRecord]:
    query = client.query(kind=kinds.ROT_EVENT)
    _filter(query, "model", "=", model)
    out = []
    for e in _fetch(query, MAX_SMALL_ROWS, "RotEvent", client):
        decided = _as_time(e.get("decided_at"), "decided_at")
        if decided is None or not _in_range(decided, since, until):
            continue
        event = None
        evidence = e.get("evidence")
        if evidence:
            try:
                event = RotEvent.from_dict(_json(evidence, "RotEvent.evidence"))
            except ValueError as exc:
                _LOGGER.warning("unreadable RotEvent evidence key=%s: %s", e.key, exc)
        out.append(RotRecord(
            rot_id=str(e.key.name), version=e.get("version") or "?",
            kind=e.get("kind") or (event.kind if event else "?"), decided_at=decided,
            published_at=_as_time(e.get("published_at"), "published_at"), event=event))
    out.sort(key=lambda r: r.decided_at)
    return out


def _read_training_jobs(client, model, since, until) -> list[TrainingJobRecord]:
    query = client.query(kind=kinds.TRAINING_JOB)
    _filter(query, "model", "=", model)
    out = []
    for e in _fetch(query, MAX_SMALL_ROWS, "TrainingJob", client):
        created = _as_time(e.get("created_at"), "created_at")
        if (since is not None or until is not None) and not _in_range(created, since, until):
            continue
        out.append(TrainingJobRecord(
            job_id=str(e.key.name or e.key.id), version=e.get("version"),
            state=e.get("state"), produced_version=e.get("produced_version"),
            candidate_accuracy=_opt_float(e.get("candidate_accuracy")),
            current_accuracy=_opt_float(e.get("current_accuracy")),
            rows=_opt_int(e.get("rows")), attempts=_opt_int(e.get("attempts")),
            error=e.get("error"), created_at=created,
            updated_at=_as_time(e.get("updated_at"), "updated_at")))
    out.sort(key=lambda j: j.created_at or _MIN_TIME)
    return out


def _read_feedback(client, model, since, until, limit: int) -> FeedbackSample:
    query = client.query(kind=kinds.FEEDBACK)
    _filter(query, "model", "=", model)
    if since is not None:
        _filter(query, "event_time", ">=", since)
    if until is not None:
        _filter(query, "event_time", "<", until)
    query.order = ["-event_time"]
    rows = []
    for e in _fetch(query, limit, "Feedback", client):
        when = e.get("event_time")
        features = e.get("features")
        if when is None or not features:
            continue
        correct = e.get("correct")
        if correct is None:  # older rows: derive the verdict the way FeedbackEvent does
            was = e.get("was_correct")
            correct = was if was is not None else e.get("label") == e.get("prediction")
        rows.append((_as_time(when, "event_time"), e.get("version") or "?",
                     tuple(float(x) for x in features), bool(correct)))
    rows.reverse()  # newest-first from the query; oldest-first for plots and reading
    return FeedbackSample(versions=tuple(r[1] for r in rows),
                          features=tuple(r[2] for r in rows),
                          correct=tuple(r[3] for r in rows),
                          times=tuple(r[0] for r in rows), limit=limit)


def load_report(model: str | None = None, *, since: dt.datetime | str | None = None,
                until: dt.datetime | str | None = None, settings: Settings | None = None,
                client=None, max_feedback: int = MAX_FEEDBACK_ROWS) -> Report:
    """Read everything stored for ``model`` with event times in ``[since, until)``.

    ``model=None`` picks the only stored model. ``client`` defaults to one made from
    ``settings`` (itself from the environment). Raises :class:`ReportError` when the
    model is missing or nothing at all is stored for it, naming what to run first.
    """
    settings = settings or Settings.from_env()
    since = _as_time(since, "since")
    until = _as_time(until, "until")
    if since is not None and until is not None and not since < until:
        raise ReportError(f"--since {format_time(since)} is not before --until "
                          f"{format_time(until)}: the range is [since, until)")
    if not isinstance(max_feedback, int) or max_feedback < 1:
        raise ValueError(f"max_feedback={max_feedback!r} must be a positive int, "
                         f"e.g. {MAX_FEEDBACK_ROWS}")
    client = client or make_client(settings)
    model = resolve_model(client, model)
    model_key = client.key(kinds.MODEL, model)
    model_entity = client.get(model_key, timeout=RPC_TIMEOUT_S)
    report = Report(
        model=model, project=client.project, namespace=client.namespace,
        since=since, until=until,
        generated_at=dt.datetime.now(dt.timezone.utc),
        default_version=(model_entity or {}).get("default_version"),
        versions=tuple(_read_versions(client, model_key)),
        windows=tuple(_read_windows(client, model, since, until)),
        rot_events=tuple(_read_rot_events(client, model, since, until)),
        default_changes=tuple(_read_default_changes(client, model_key, since, until)),
        training_jobs=tuple(_read_training_jobs(client, model, since, until)),
        feedback=_read_feedback(client, model, since, until, max_feedback),
    )
    _LOGGER.info("report model=%s versions=%d windows=%d rot_events=%d feedback=%d",
                 model, len(report.versions), len(report.windows),
                 len(report.rot_events), len(report.feedback))
    if not report.windows and not len(report.feedback):
        span = _range_text(since, until)
        raise ReportError(
            f"model {model!r} has no feedback and no window metrics stored{span}: run "
            "the stack (`rotwatch up`) and send traffic (`rotwatch simulate`), or "
            "`rotwatch demo`" + (", or widen --since/--until" if span else ""))
    return report


def _range_text(since, until) -> str:
    if since is None and until is None:
        return ""
    return (f" in [{format_time(since) if since else '-inf'}, "
            f"{format_time(until) if until else '+inf'})")


# -- the table --------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _clock(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _format_rows(header: Sequence[str], rows: Iterable[Sequence[str]],
                 right: Sequence[bool]) -> list[str]:
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()
    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def summary_table(report: Report) -> str:
    """A readable text table: one row per version, then rot events and promotions.

    Columns: feedback rows stored (``>=`` when the sample was capped), accuracy of
    that feedback, holdout accuracy from the registry, windowed accuracy
    min/mean/last, rot events and the time the version became the default.
    """
    capped = ">=" if report.feedback.truncated else ""
    header = ["version", "feedback", "fb acc", "holdout", "windows", "win min",
              "win mean", "win last", "rot", "default since"]
    rows = []
    for s in report.version_summaries():
        rows.append([
            s.version + (" *" if s.is_default else ""),
            f"{capped}{s.feedback_n}", _pct(s.feedback_accuracy),
            _pct(s.holdout_accuracy), str(s.windows), _pct(s.window_accuracy_min),
            _pct(s.window_accuracy_mean), _pct(s.window_accuracy_last),
            str(s.rot_events), _clock(s.promoted_at)])
    lines = [f"model {report.model} (project {report.project}"
             + (f", namespace {report.namespace}" if report.namespace else "")
             + f"){_range_text(report.since, report.until)}; "
             f"default version: {report.default_version or '-'} (*)", ""]
    lines += _format_rows(header, rows, [False] + [True] * 8 + [False])
    if report.rot_events:
        lines += ["", "rot events:"]
        lines += ["  " + _clock(r.decided_at) + f"  {r.version}  {r.kind}"
                  + (f"  accuracy {r.accuracy:.3f}" if r.accuracy is not None else "")
                  + (f"  change point {_clock(r.change_point)}" if r.change_point else "")
                  for r in report.rot_events]
    if report.training_jobs:
        lines += ["", "training jobs:"]
        lines += ["  " + _clock(j.created_at) + f"  {j.version or '?'} -> "
                  f"{j.produced_version or '-'}  {j.state or '?'}"
                  + (f"  candidate {j.candidate_accuracy:.3f}"
                     if j.candidate_accuracy is not None else "")
                  + (f" vs current {j.current_accuracy:.3f}"
                     if j.current_accuracy is not None else "")
                  + (f"  error: {j.error}" if j.error else "")
                  for j in report.training_jobs]
    if report.default_changes:
        lines += ["", "default changes:"]
        lines += ["  " + _clock(c.changed_at) + f"  {c.previous_version or '(none)'} -> "
                  f"{c.default_version}"
                  + (f"  by {c.changed_by}" if c.changed_by else "")
                  + (f"  ({c.reason})" if c.reason else "")
                  for c in report.default_changes]
    if report.feedback.truncated:
        lines += ["", f"feedback: newest {report.feedback.limit} rows only; narrow "
                      "--since/--until for exact counts"]
    return "\n".join(lines)
