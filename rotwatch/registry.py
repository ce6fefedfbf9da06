"""The model registry: models, their versions v1..vN, and the default pointer.

Everything lives in Datastore (kinds in :mod:`rotwatch.kinds`), artifacts under the
model root (:mod:`rotwatch.artifacts`):

* ``Model`` (key: model name) — ``default_version``, ``created_at``, ``updated_at``.
* ``ModelVersion`` (key ``vN``, child of its ``Model``) — what was trained, on what,
  how well, by whom; the artifact's URI and sha256; the baseline accuracy and
  reference feature statistics the pipeline compares live traffic against.
* ``DefaultChange`` (key ``<ms>-<version>``, child of its ``Model``) — the history of
  the default pointer: version, previous_version, changed_by, reason, changed_at.

Version numbers are allocated in a transaction that also rewrites the ``Model``
entity, so two trainers registering at once conflict, and the loser retries with
the next number: two registrations never share a number. A version is written as
``pending``, its artifact is written, then it becomes ``ready``; only ready versions
load or become the default.

Every change of a default version publishes a :class:`~rotwatch.events.ModelUpdate`
to ``model-updates`` (pass ``publish=False`` to skip, or your own ``publisher``).

>>> registry = Registry(Settings.from_env())                        # doctest: +SKIP
>>> v = registry.register_version("zombies", fitted, estimator="decision-tree",
...         X_reference=X, baseline_accuracy=0.91, created_by="person:ana")
>>> registry.set_default("zombies", v.version, changed_by="person:ana", reason="v1")
>>> loaded = registry.load_model("zombies")          # default version, sha256 checked
>>> loaded.estimator.predict(X[:3]), loaded.info.version
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any, NamedTuple, Sequence

from rotwatch import artifacts, kinds
from rotwatch.config import Settings
from rotwatch.events import ModelUpdate, to_millis, validate_model_name, validate_version
from rotwatch.transactions import run_in_transaction

__all__ = [
    "Registry", "ModelRecord", "VersionRecord", "DefaultChangeRecord", "LoadedModel",
    "RegistryError", "ModelNotFound", "VersionNotFound", "VersionNotReady",
    "UpdateNotPublished", "DefaultChanged", "describe", "STATUS_PENDING", "STATUS_READY", "STATUS_ABANDONED",
]

_LOGGER = logging.getLogger(__name__)

STATUS_PENDING = "pending"      # number allocated, artifact being written
STATUS_READY = "ready"          # artifact written and verified: loadable, promotable
STATUS_ABANDONED = "abandoned"  # the artifact write failed; the number stays used
# Datastore's limit for one unindexed property is 1,048,487 bytes and an entity's is
# 1 MiB; leave room for the other properties of the version.
MAX_JSON_BYTES = 900_000
# How long to wait for Pub/Sub to confirm a model-updates message; the default is
# already changed in Datastore, so this only bounds how long a caller waits to hear
# that the notification failed.
PUBLISH_TIMEOUT_S = 30.0
# Who set a default is free text ("trainer:<rot id>", "person:ana"); keep it short.
MAX_ACTOR_CHARS = 200
SETUP_COMMAND = "rotwatch setup"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked."""


class ModelNotFound(RegistryError, LookupError):
    pass


class VersionNotFound(RegistryError, LookupError):
    pass


class VersionNotReady(RegistryError):
    pass


class DefaultChanged(RegistryError):
    """The default moved while a conditional change was being made."""


class UpdateNotPublished(RegistryError):
    """The default changed in Datastore, but ``model-updates`` was not told."""

    def __init__(self, update: ModelUpdate, message: str):
        self.update = update
        super().__init__(message)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _dumps(value: Any, what: str) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text.encode("utf-8")) > MAX_JSON_BYTES:
        raise ValueError(f"{what} is {len(text)} bytes of JSON, over the {MAX_JSON_BYTES}"
                         "-byte budget of a Datastore property; use fewer features or "
                         "fewer reference bins")
    return text


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _plain(value: Any) -> Any:
    """numpy scalars -> Python (Datastore stores int/str/float, not numpy types)."""
    return value.item() if hasattr(value, "item") else value


def _actor(value: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must name who or what did it, e.g. 'person:ana' "
                         f"or 'trainer:<rot id>', got {value!r}")
    if len(value) > MAX_ACTOR_CHARS:
        raise ValueError(f"{field} is {len(value)} characters; keep it under "
                         f"{MAX_ACTOR_CHARS}")
    return value


# -- records ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelRecord:
    name: str
    default_version: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None

    @classmethod
    def from_entity(cls, entity) -> "ModelRecord":
        return cls(name=entity.key.name, default_version=entity.get("default_version"),
                   created_at=_aware(entity.get("created_at")),
                   updated_at=_aware(entity.get("updated_at")))


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """One ``ModelVersion`` entity, parsed (JSON properties decoded)."""

    model: str
    version: str
    number: int
    status: str
    artifact_uri: str
    sha256: str
    estimator: str
    params: dict = dataclasses.field(repr=False)
    n_features: int
    classes: list
    baseline_accuracy: float | None
    metrics: dict = dataclasses.field(repr=False)
    reference_stats: dict | None = dataclasses.field(repr=False)
    train_start: dt.datetime | None
    train_end: dt.datetime | None
    train_rows: int
    parent_version: str | None
    created_at: dt.datetime
    created_by: str

    @classmethod
    def from_entity(cls, entity) -> "VersionRecord":
        return cls(
            model=entity.key.parent.name, version=entity.get("version") or entity.key.name,
            number=int(entity.get("number") or kinds.version_number(entity.key.name)),
            status=entity.get("status") or STATUS_READY,
            artifact_uri=entity.get("artifact_uri") or "", sha256=entity.get("sha256") or "",
            estimator=entity.get("estimator") or "", params=_loads(entity.get("params")) or {},
            n_features=int(entity.get("n_features") or 0),
            classes=list(entity.get("classes") or []),
            baseline_accuracy=entity.get("baseline_accuracy"),
            metrics=_loads(entity.get("metrics")) or {},
            reference_stats=_loads(entity.get("reference_stats")),
            train_start=_aware(entity.get("train_start")),
            train_end=_aware(entity.get("train_end")),
            train_rows=int(entity.get("train_rows") or 0),
            parent_version=entity.get("parent_version"),
            created_at=_aware(entity.get("created_at")),
            created_by=entity.get("created_by") or "")


@dataclasses.dataclass(frozen=True)
class DefaultChangeRecord:
    model: str
    version: str
    previous_version: str | None
    changed_by: str
    reason: str
    changed_at: dt.datetime

    @classmethod
    def from_entity(cls, entity) -> "DefaultChangeRecord":
        return cls(model=entity.key.parent.name, version=entity["version"],
                   previous_version=entity.get("previous_version"),
                   changed_by=entity.get("changed_by") or "",
                   reason=entity.get("reason") or "",
                   changed_at=_aware(entity["changed_at"]))


class LoadedModel(NamedTuple):
    """A verified, unpickled estimator and the version record it came from."""

    estimator: Any
    info: VersionRecord


# -- the registry ----------------------------------------------------------------------
class Registry:
    """Models, versions and default pointers in Datastore; artifacts under a root.

    Parameters
    ----------
    settings : Settings
        Project, namespace and model root.
    client : google.cloud.datastore.Client, optional
        Made on first use from ``settings`` if not given.
    publisher : google.cloud.pubsub_v1.PublisherClient, optional
        For ``model-updates``; made on first use if not given.
    publish : bool
        ``False`` skips publishing default changes (the change is still recorded).
    """

    def __init__(self, settings: Settings, client=None, publisher=None,
                 publish: bool = True):
        self.settings = settings
        self.publish = publish
        self._client = client
        self._publisher = publisher

    # clients are made on first use, never at construction or import
    @property
    def client(self):
        if self._client is None:
            from google.cloud import datastore
            self._client = datastore.Client(project=self.settings.project,
                                            namespace=self.settings.namespace)
        return self._client

    @property
    def publisher(self):
        if self._publisher is None:
            from google.cloud import pubsub_v1
            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    def _model_key(self, model: str):
        return self.client.key(kinds.MODEL, validate_model_name(model))

    def _version_key(self, model: str, version: str):
        return self.client.key(kinds.MODEL, validate_model_name(model),
                               kinds.MODEL_VERSION, validate_version(version))

    # -- reading -----------------------------------------------------------------------
    def get_model(self, model: str) -> ModelRecord:
        entity = self.client.get(self._model_key(model))
        if entity is None:
            raise ModelNotFound(f"model {model!r} is not registered; register a first "
                                f"version with: rotwatch model train --model {model} "
                                "--data FILE --label COLUMN --set-default")
        return ModelRecord.from_entity(entity)

    def list_models(self) -> list[ModelRecord]:
        query = self.client.query(kind=kinds.MODEL)
        return sorted((ModelRecord.from_entity(e) for e in query.fetch()),
                      key=lambda m: m.name)

    def get_version(self, model: str, version: str | None = None) -> VersionRecord:
        """One version; ``None`` means the model's default version."""
        if version is None:
            version = self.default_version(model)
        entity = self.client.get(self._version_key(model, version))
        if entity is None:
            raise VersionNotFound(f"model {model!r} has no version {version!r}; list "
                                  f"them with: rotwatch model list --model {model}")
        return VersionRecord.from_entity(entity)

    def default_version(self, model: str) -> str:
        record = self.get_model(model)
        if not record.default_version:
            raise VersionNotFound(f"model {model!r} has no default version yet; set one "
                                  f"with: rotwatch model set-default --model {model} "
                                  "--version v1")
        return record.default_version

    def list_versions(self, model: str) -> list[VersionRecord]:
        # Ancestor query, sorted here: sorting in Datastore would need a composite index.
        query = self.client.query(kind=kinds.MODEL_VERSION, ancestor=self._model_key(model))
        return sorted((VersionRecord.from_entity(e) for e in query.fetch()),
                      key=lambda v: v.number)

    def find_versions(self, model: str, created_by: str) -> list[VersionRecord]:
        """Versions one creator made (the trainer asks this for idempotency)."""
        query = self.client.query(kind=kinds.MODEL_VERSION, ancestor=self._model_key(model))
        query.add_filter(filter=_property_filter("created_by", "=", created_by))
        return sorted((VersionRecord.from_entity(e) for e in query.fetch()),
                      key=lambda v: v.number)

    def history(self, model: str) -> list[DefaultChangeRecord]:
        """Changes of the default pointer, oldest first."""
        query = self.client.query(kind=kinds.DEFAULT_CHANGE, ancestor=self._model_key(model))
        return sorted((DefaultChangeRecord.from_entity(e) for e in query.fetch()),
                      key=lambda c: (c.changed_at, c.version))

    def load_model(self, model: str, version: str | None = None) -> LoadedModel:
        """The estimator of ``version`` (default: the default version), sha256-checked.

        Raises :class:`~rotwatch.artifacts.ArtifactIntegrityError` if the file does not
        match the registry; nothing is unpickled then, so the caller keeps what it had.
        """
        info = self.get_version(model, version)
        if info.status != STATUS_READY:
            raise VersionNotReady(f"{model} {info.version} is {info.status!r}, not ready: "
                                  "its artifact was never completely written")
        estimator = artifacts.load_estimator(info.artifact_uri, info.sha256)
        _LOGGER.info("step=load-model model=%s version=%s sha256=%s", model,
                     info.version, info.sha256[:12])
        return LoadedModel(estimator, info)

    # -- registering -------------------------------------------------------------------
    def register_version(
            self, model: str, fitted, *, estimator: str, X_reference,
            baseline_accuracy: float, created_by: str, params: dict | None = None,
            metrics: dict | None = None, train_start: dt.datetime | None = None,
            train_end: dt.datetime | None = None, train_rows: int | None = None,
            parent_version: str | None = None) -> VersionRecord:
        """Allocate the next version number, write the artifact, mark it ready.

        ``X_reference`` are the training inputs: the reference feature statistics for
        drift are computed from them (:func:`rotwatch.stats.reference_statistics`).
        ``baseline_accuracy`` is what the pipeline compares live accuracy against: the
        holdout accuracy.
        """
        from rotwatch.estimators import recorded_params
        from rotwatch.stats import reference_statistics

        validate_model_name(model)
        _actor(created_by, "created_by")
        if not 0.0 <= float(baseline_accuracy) <= 1.0:
            raise ValueError(f"baseline_accuracy={baseline_accuracy!r} must be in [0, 1]")
        n_features = int(getattr(fitted, "n_features_in_", 0))
        classes = [_plain(c) for c in getattr(fitted, "classes_", [])]
        if n_features < 1 or len(classes) < 2:
            raise ValueError("register a fitted classifier (it needs n_features_in_ and "
                             f"at least 2 classes_), got {type(fitted).__name__}")
        reference = reference_statistics(X_reference)
        if len(reference["features"]) != n_features:
            raise ValueError(f"X_reference has {len(reference['features'])} features but "
                             f"the estimator was fitted on {n_features}")
        data = artifacts.serialize(fitted)
        sha256 = artifacts.sha256_hex(data)
        properties = {
            "artifact_uri": "", "sha256": sha256, "estimator": estimator,
            "params": _dumps(params if params is not None else recorded_params(fitted),
                             "params"),
            "n_features": n_features, "classes": classes,
            "baseline_accuracy": float(baseline_accuracy),
            "metrics": _dumps(metrics or {}, "metrics"),
            "reference_stats": _dumps(reference, "reference_stats"),
            "train_start": train_start, "train_end": train_end,
            "train_rows": int(train_rows if train_rows is not None else reference["n"]),
            "parent_version": parent_version, "created_by": created_by,
        }
        version = self._allocate(model, properties)
        uri = artifacts.artifact_uri(self.settings.model_root, model, version)
        try:
            artifacts.write_artifact(uri, data)
        except artifacts.ArtifactError:
            self._set_status(model, version, STATUS_ABANDONED)
            raise
        record = self._set_status(model, version, STATUS_READY, artifact_uri=uri)
        _LOGGER.info("step=register model=%s version=%s estimator=%s rows=%s "
                     "baseline_accuracy=%.4f created_by=%s", model, version, estimator,
                     properties["train_rows"], baseline_accuracy, created_by)
        return record

    def _latest_number(self, model: str) -> int:
        query = self.client.query(kind=kinds.MODEL_VERSION, ancestor=self._model_key(model))
        query.keys_only()
        return max((kinds.version_number(e.key.name) for e in query.fetch()), default=0)

    def _allocate(self, model: str, properties: dict) -> str:
        from google.cloud import datastore

        # A hint from a query; the transaction below checks each candidate key, and
        # rewriting the Model entity makes concurrent allocations conflict.
        start = self._latest_number(model) + 1
        unindexed = ("params", "metrics", "reference_stats")

        def allocate() -> str:
            now = _now()
            model_key = self._model_key(model)
            model_entity = self.client.get(model_key)
            if model_entity is None:
                model_entity = datastore.Entity(key=model_key)
                model_entity.update({"default_version": None, "created_at": now})
            number = start
            while self.client.get(self._version_key(model, kinds.version_name(number))):
                number += 1
            version = kinds.version_name(number)
            entity = datastore.Entity(key=self._version_key(model, version),
                                      exclude_from_indexes=unindexed)
            entity.update(properties)
            entity.update({"version": version, "number": number, "status": STATUS_PENDING,
                           "created_at": now})
            model_entity["updated_at"] = now
            self.client.put_multi([model_entity, entity])
            return version

        version = run_in_transaction(self.client, allocate, what=f"allocate {model} version")
        _LOGGER.info("step=allocate-version model=%s version=%s", model, version)
        return version

    def _set_status(self, model: str, version: str, status: str, **extra) -> VersionRecord:
        key = self._version_key(model, version)

        def update():
            entity = self.client.get(key)
            entity.update({"status": status, **extra})
            self.client.put(entity)
            return entity

        return VersionRecord.from_entity(
            run_in_transaction(self.client, update, what=f"mark {model} {version}"))

    # -- the default pointer -----------------------------------------------------------
    def set_default(self, model: str, version: str, *, changed_by: str,
                    reason: str = "", if_current: str | None = None) -> ModelUpdate | None:
        """Point ``model``'s default at ``version``, record who/why, publish it.

        Returns the :class:`ModelUpdate`, or ``None`` if ``version`` already was the
        default (nothing recorded or published). With ``if_current``, the change is
        made only if the default is still that version (else :class:`DefaultChanged`):
        the trainer promotes over the version it evaluated, never over a rollback
        a person made meanwhile. Raises :class:`UpdateNotPublished` if the change was
        recorded but ``model-updates`` could not be told, and
        :class:`~rotwatch.artifacts.ArtifactIntegrityError` (nothing changed) if the
        version's artifact no longer matches its recorded sha256.
        """
        from google.cloud import datastore

        _actor(changed_by, "changed_by")
        validate_version(version)
        model_key = self._model_key(model)
        version_key = self._version_key(model, version)
        # Never point the default at a file that is not the one registered: verify its
        # bytes (no unpickling) first; ArtifactIntegrityError leaves the default as it is.
        candidate = self.client.get(version_key)
        if candidate is not None and candidate.get("artifact_uri"):
            artifacts.read_artifact(candidate["artifact_uri"], candidate.get("sha256"))

        def change() -> ModelUpdate | None:
            entity = self.client.get(model_key)
            if entity is None:
                raise ModelNotFound(f"model {model!r} is not registered; see "
                                    "rotwatch model list")
            target = self.client.get(version_key)
            if target is None:
                raise VersionNotFound(f"model {model!r} has no version {version!r}; list "
                                      f"them with: rotwatch model list --model {model}")
            if (target.get("status") or STATUS_READY) != STATUS_READY:
                raise VersionNotReady(f"{model} {version} is {target.get('status')!r}; "
                                      "only a ready version can be the default")
            previous = entity.get("default_version")
            if if_current is not None and previous != if_current:
                raise DefaultChanged(f"default of {model} is {previous!r}, not "
                                     f"{if_current!r} any more; not changing it")
            if previous == version:
                return None
            now = _now()
            entity.update({"default_version": version, "updated_at": now})
            change_key = self.client.key(kinds.DEFAULT_CHANGE,
                                         f"{to_millis(now)}-{version}", parent=model_key)
            record = datastore.Entity(key=change_key, exclude_from_indexes=("reason",))
            record.update({"version": version, "previous_version": previous,
                           "changed_by": changed_by, "reason": reason, "changed_at": now})
            self.client.put_multi([entity, record])
            return ModelUpdate(model=model, default_version=version,
                               previous_version=previous, changed_by=changed_by,
                               reason=reason, changed_at=now)

        update = run_in_transaction(self.client, change, what=f"set default of {model}")
        if update is None:
            _LOGGER.info("step=set-default model=%s version=%s outcome=unchanged",
                         model, version)
            return None
        _LOGGER.info("step=set-default model=%s version=%s previous=%s changed_by=%s "
                     "reason=%r", model, version, update.previous_version, changed_by,
                     reason)
        if self.publish:
            self._publish(update)
        return update

    def _publish(self, update: ModelUpdate) -> None:
        from google.api_core import exceptions as gexc

        topic = self.settings.topic("updates")
        try:
            future = self.publisher.publish(topic, update.to_json(), **update.attributes())
            message_id = future.result(timeout=PUBLISH_TIMEOUT_S)
        except gexc.NotFound as exc:
            raise UpdateNotPublished(update, (
                f"default of {update.model} is now {update.default_version}, but topic "
                f"{topic} does not exist, so the change was not published; create the "
                f"topics with: {SETUP_COMMAND}")) from exc
        except (gexc.GoogleAPICallError, TimeoutError) as exc:
            raise UpdateNotPublished(update, (
                f"default of {update.model} is now {update.default_version}, but "
                f"publishing to {topic} failed: {exc}")) from exc
        _LOGGER.info("step=publish-update model=%s version=%s topic=%s message_id=%s",
                     update.model, update.default_version, topic, message_id)


def _property_filter(name: str, op: str, value: Any):
    from google.cloud.datastore.query import PropertyFilter
    return PropertyFilter(name, op, value)


def describe(record: VersionRecord) -> Sequence[tuple[str, str]]:
    """(field, text) pairs of a version, for tables and logs."""
    def t(value):
        return "" if value is None else value.isoformat(timespec="seconds")
    return (
        ("version", record.version), ("status", record.status),
        ("estimator", record.estimator),
        ("params", json.dumps(record.params, sort_keys=True)),
        ("n_features", str(record.n_features)),
        ("classes", ", ".join(map(str, record.classes))),
        ("baseline_accuracy", "" if record.baseline_accuracy is None
         else f"{record.baseline_accuracy:.4f}"),
        ("metrics", json.dumps(record.metrics, sort_keys=True)),
        ("train_window", f"{t(record.train_start)} .. {t(record.train_end)}"
         if record.train_start or record.train_end else ""),
        ("train_rows", str(record.train_rows)),
        ("parent_version", record.parent_version or ""),
        ("created_at", t(record.created_at)), ("created_by", record.created_by),
        ("artifact_uri", record.artifact_uri), ("sha256", record.sha256),
    )
