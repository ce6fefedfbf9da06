"""The events every role exchanges, typed, with one parse/serialise pair each.

* :class:`FeedbackEvent` — an app's verdict on one prediction (topic ``feedback``).
* :class:`RotEvent` — the pipeline's decision that a model version rots (``model-rot``).
* :class:`ModelUpdate` — a change of a model's default version (``model-updates``).

All are JSON on the wire with a ``schema_version``. Parsing raises
:class:`InvalidEvent`, which names the field and says what a valid value looks like;
the pipeline turns it into a dead-letter reason.

>>> e = FeedbackEvent.create(model="zombies", version="v1", features=[1.0, 2.0],
...                          prediction=1, was_correct=True)
>>> FeedbackEvent.from_json(e.to_json()) == e
True
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from typing import Any, Mapping, Sequence

__all__ = [
    "InvalidEvent", "FeedbackEvent", "RotEvent", "ModelUpdate", "DriftedFeature",
    "ROT_KINDS", "SCHEMA_VERSION", "MAX_FEEDBACK_BYTES", "MAX_FEATURES",
    "parse_time", "format_time", "to_millis", "from_millis", "truncate_millis",
    "validate_model_name", "validate_version",
]

SCHEMA_VERSION = 1
# A feedback event is a few hundred bytes; 64 KiB leaves room for wide feature
# vectors while keeping a Datastore entity (1 MiB limit) and a Pub/Sub message small.
MAX_FEEDBACK_BYTES = 64 * 1024
# Features are stored unindexed in one entity; 2,000 doubles stay well inside 64 KiB.
MAX_FEATURES = 2000
# event_id and model travel as Pub/Sub attributes (values <= 1024 bytes) and
# Datastore key names (<= 1500 bytes): keep them short and printable.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_MODEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")
_VERSION_RE = re.compile(r"^v[1-9][0-9]{0,8}$")
ROT_KINDS = ("accuracy", "error-rate-change", "input-drift")


class InvalidEvent(ValueError):
    """An event that cannot be accepted; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


# -- time ----------------------------------------------------------------------------
def parse_time(value: Any, field: str = "event_time") -> dt.datetime:
    """An aware UTC datetime from RFC 3339 text (``2026-12-03T10:00:00Z``)."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(field, f"{value!r} is not an RFC 3339 time; "
                                      "use e.g. '2026-12-03T10:00:00.000Z'") from None
    else:
        raise InvalidEvent(field, f"expected an RFC 3339 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        raise InvalidEvent(field, f"{value!r} has no time zone; add 'Z' for UTC")
    return truncate_millis(parsed.astimezone(dt.timezone.utc))


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def to_millis(value: dt.datetime) -> int:
    return (value - _EPOCH) // dt.timedelta(milliseconds=1)


def truncate_millis(value: dt.datetime) -> dt.datetime:
    """The wire carries milliseconds; events keep no finer time than they can send."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def from_millis(millis: int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000.0, tz=dt.timezone.utc)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- field checks --------------------------------------------------------------------
def _require(data: Mapping, field: str) -> Any:
    if field not in data or data[field] is None:
        raise InvalidEvent(field, "is missing")
    return data[field]


def _string(data: Mapping, field: str, pattern: re.Pattern, example: str) -> str:
    value = _require(data, field)
    if not isinstance(value, str):
        raise InvalidEvent(field, f"expected a string like {example!r}, "
                                  f"got {type(value).__name__}")
    if not pattern.match(value):
        raise InvalidEvent(field, f"{value[:80]!r} is not valid; expected something "
                                  f"like {example!r} (pattern {pattern.pattern})")
    return value


def validate_model_name(value: Any, field: str = "model") -> str:
    return _string({field: value}, field, _MODEL_RE, "zombies")


def validate_version(value: Any, field: str = "version") -> str:
    return _string({field: value}, field, _VERSION_RE, "v1")


def _label(value: Any, field: str) -> int | str:
    # bool is an int in Python; a class label of True is almost surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidEvent(field, f"expected an integer or string class label, "
                                  f"got {type(value).__name__} {value!r}")
    if isinstance(value, str) and not 0 < len(value) <= 256:
        raise InvalidEvent(field, "a string label must be 1..256 characters")
    return value


def _features(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise InvalidEvent("features", f"expected a list of numbers, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_FEATURES:
        raise InvalidEvent("features", f"expected 1..{MAX_FEATURES} numbers, got {len(value)}")
    out = []
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InvalidEvent(f"features[{i}]", f"expected a number, got {type(x).__name__} "
                                                 f"{str(x)[:40]!r}")
        x = float(x)
        if not math.isfinite(x):
            raise InvalidEvent(f"features[{i}]", f"{x} is not a finite number")
        out.append(x)
    return tuple(out)


# -- feedback ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FeedbackEvent:
    """One prediction's feedback. ``was_correct`` and/or ``label`` must be given."""

    event_id: str
    model: str
    version: str
    features: tuple[float, ...]
    prediction: int | str
    event_time: dt.datetime
    was_correct: bool | None = None
    label: int | str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        # Re-validate through the one parser so a hand-built event obeys the same rules.
        FeedbackEvent._check(self.to_dict())

    @classmethod
    def create(cls, *, model: str, version: str, features: Sequence[float],
               prediction: int | str, was_correct: bool | None = None,
               label: int | str | None = None, event_id: str | None = None,
               event_time: dt.datetime | None = None) -> "FeedbackEvent":
        """A new event with a fresh ``event_id`` and ``event_time`` = now (UTC)."""
        return cls(event_id=event_id or uuid.uuid4().hex, model=model, version=version,
                   features=tuple(float(x) for x in features), prediction=prediction,
                   event_time=truncate_millis((event_time or _now()).astimezone(dt.timezone.utc)),
                   was_correct=was_correct, label=label)

    @staticmethod
    def _check(data: Mapping) -> dict:
        if not isinstance(data, Mapping):
            raise InvalidEvent("<event>", f"expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema_version", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise InvalidEvent("schema_version", f"{schema!r} is not supported; "
                                                 f"this rotwatch reads version {SCHEMA_VERSION}")
        was_correct = data.get("was_correct")
        if was_correct is not None and not isinstance(was_correct, bool):
            raise InvalidEvent("was_correct", f"expected true or false, got {was_correct!r}")
        label = data.get("label")
        if was_correct is None and label is None:
            raise InvalidEvent("was_correct", "give was_correct (true/false) and/or label")
        return {
            "event_id": _string(data, "event_id", _ID_RE, "3f2b9c0e8d7a4b1c"),
            "model": _string(data, "model", _MODEL_RE, "zombies"),
            "version": _string(data, "version", _VERSION_RE, "v1"),
            "features": _features(_require(data, "features")),
            "prediction": _label(_require(data, "prediction"), "prediction"),
            "event_time": parse_time(_require(data, "event_time")),
            "was_correct": was_correct,
            "label": None if label is None else _label(label, "label"),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeedbackEvent":
        # _check has validated and normalised every field: build the event without
        # __post_init__ running the same checks again (~45% of the pipeline's parse).
        event = object.__new__(cls)
        for name, value in cls._check(data).items():
            object.__setattr__(event, name, value)
        object.__setattr__(event, "schema_version", SCHEMA_VERSION)
        return event

    @classmethod
    def from_json(cls, payload: bytes | str) -> "FeedbackEvent":
        """Parse wire bytes; :class:`InvalidEvent` names what is wrong."""
        if isinstance(payload, (bytes, bytearray)):
            if len(payload) > MAX_FEEDBACK_BYTES:
                raise InvalidEvent("<payload>", f"{len(payload)} bytes is over the "
                                                f"{MAX_FEEDBACK_BYTES}-byte limit")
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidEvent("<payload>", f"not UTF-8 text ({exc.reason} at byte "
                                                f"{exc.start})") from None
        elif len(payload) > MAX_FEEDBACK_BYTES:
            raise InvalidEvent("<payload>", f"over the {MAX_FEEDBACK_BYTES}-byte limit")
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise InvalidEvent("<payload>", f"not JSON: {exc.msg} at line {exc.lineno} "
                                            f"column {exc.colno}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        out = {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "model": self.model,
            "version": self.version,
            "features": list(self.features),
            "prediction": self.prediction,
            "event_time": format_time(self.event_time)
            if isinstance(self.event_time, dt.datetime) else self.event_time,
        }
        if self.was_correct is not None:
            out["was_correct"] = self.was_correct
        if self.label is not None:
            out["label"] = self.label
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: ``event_ts`` is milliseconds since the epoch (Beam's
        ``timestamp_attribute`` reads it as the element's event time)."""
        return {"event_id": self.event_id, "event_ts": str(to_millis(self.event_time)),
                "model": self.model, "version": self.version}

    @property
    def correct(self) -> bool:
        """Whether the prediction was right: ``was_correct`` if given, else label match."""
        if self.was_correct is not None:
            return self.was_correct
        return self.label == self.prediction


# -- rot -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DriftedFeature:
    index: int
    score: float
    method: str = "psi"


@dataclasses.dataclass(frozen=True)
class RotEvent:
    """Evidence that a model version rots; ``rot_id`` is deterministic.

    ``kind`` is ``accuracy`` (windowed rule), ``error-rate-change`` (sequential
    detector) or ``input-drift`` (feature distributions, no labels needed).
    ``decided_at`` is the event time that decided it (window end or detection time).
    """

    model: str
    version: str
    kind: str
    decided_at: dt.datetime
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    n: int = 0
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    bound: float | None = None
    change_point: dt.datetime | None = None
    drifted_features: tuple[DriftedFeature, ...] = ()
    detail: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        validate_model_name(self.model)
        validate_version(self.version)
        if self.kind not in ROT_KINDS:
            raise InvalidEvent("kind", f"{self.kind!r} is not one of {', '.join(ROT_KINDS)}")

    @property
    def rot_id(self) -> str:
        """Same model, version, kind and deciding time → same id (a valid key name)."""
        return f"{self.model}.{self.version}.{self.kind}.{to_millis(self.decided_at)}"

    def to_dict(self) -> dict:
        def t(value):
            return None if value is None else format_time(value)
        return {
            "schema_version": self.schema_version, "rot_id": self.rot_id,
            "model": self.model, "version": self.version, "kind": self.kind,
            "decided_at": t(self.decided_at), "window_start": t(self.window_start),
            "window_end": t(self.window_end), "n": self.n, "accuracy": self.accuracy,
            "baseline_accuracy": self.baseline_accuracy, "bound": self.bound,
            "change_point": t(self.change_point),
            "drifted_features": [dataclasses.asdict(f) for f in self.drifted_features],
            "detail": self.detail,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping) -> "RotEvent":
        if not isinstance(data, Mapping):
            raise InvalidEvent("<event>", "expected a JSON object")

        def t(field):
            value = data.get(field)
            return None if value is None else parse_time(value, field)
        try:
            drifted = tuple(DriftedFeature(int(f["index"]), float(f["score"]),
                                           str(f.get("method", "psi")))
                            for f in data.get("drifted_features") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEvent("drifted_features", f"bad entry: {exc}") from None
        event = cls(model=_require(data, "model"), version=_require(data, "version"),
                    kind=_require(data, "kind"), decided_at=parse_time(
                        _require(data, "decided_at"), "decided_at"),
                    window_start=t("window_start"), window_end=t("window_end"),
                    n=int(data.get("n") or 0), accuracy=data.get("accuracy"),
                    baseline_accuracy=data.get("baseline_accuracy"),
                    bound=data.get("bound"), change_point=t("change_point"),
                    drifted_features=drifted, detail=str(data.get("detail") or ""))
        claimed = data.get("rot_id")
        if claimed is not None and claimed != event.rot_id:
            raise InvalidEvent("rot_id", f"{claimed!r} does not match the event's "
                                         f"fields (expected {event.rot_id!r})")
        return event

    @classmethod
    def from_json(cls, payload: bytes | str) -> "RotEvent":
        try:
            return cls.from_dict(json.loads(payload))
        except json.JSONDecodeError as exc:
            raise InvalidEvent("<payload>", f"not JSON: {exc.msg}") from None

    def attributes(self) -> dict[str, str]:
        return {"rot_id": self.rot_id, "model": self.model, "version": self.version,
                "kind": self.kind}


# -- default version changes ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelUpdate:
    """A model's default version changed (published on ``model-updates``)."""

    model: str
    default_version: str
    previous_version: str | None
    changed_by: str
    reason: str
    changed_at: dt.datetime

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["changed_at"] = format_time(self.changed_at)
        data["schema_version"] = SCHEMA_VERSION
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, payload: bytes | str) -> "ModelUpdate":
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise InvalidEvent("<payload>", f"not JSON: {exc.msg}") from None
        return cls(model=validate_model_name(_require(data, "model")),
                   default_version=validate_version(_require(data, "default_version"),
                                                    "default_version"),
                   previous_version=data.get("previous_version"),
                   changed_by=str(data.get("changed_by") or ""),
                   reason=str(data.get("reason") or ""),
                   changed_at=parse_time(_require(data, "changed_at"), "changed_at"))

    def attributes(self) -> dict[str, str]:
        return {"model": self.model, "default_version": self.default_version}
