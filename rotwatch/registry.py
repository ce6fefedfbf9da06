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
``pending``, its artifact is written (to a path naming its sha256, see
:mod:`rotwatch.artifacts`), then it becomes ``ready`` in a transaction that sets the
status, artifact URI, sha256 and description together, only if it is still pending;
only ready versions load or become the default.

Once per creator (:meth:`Registry.register_version_once`, what the trainer uses with
``created_by="rot:<rot id>"``, so a rot event handled twice makes one version): the
allocation transaction first looks, with an ancestor query in the same transaction,
for a version of that creator that is ``pending`` or ``ready``.

* ``ready`` — that version is the result (``outcome="exists"``), once its artifact
  passes its sha256 check; one that fails it (altered or missing) is marked
  ``abandoned`` with the reason, in a transaction, and a new number is allocated.
* ``pending`` — an earlier attempt allocated it and stopped (or is still writing):
  this attempt writes its own artifact and completes that same version
  (``outcome="completed"``). If two attempts race, the first to mark it ready wins;
  the other gets the winner's record (``outcome="exists"``) and deletes its own,
  never-referenced file. A worker that died leaves at most an unreferenced file.
* none — a new number, as above (``outcome="registered"``).

A person's registration (``rotwatch model train``) always makes a new version.

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
    "UpdateNotPublished", "DefaultChanged", "Registration", "describe", "STATUS_PENDING",
    "STATUS_READY", "STATUS_ABANDONED", "OUTCOME_REGISTERED", "OUTCOME_COMPLETED",
    "OUTCOME_EXISTS",
]

_LOGGER = logging.getLogger(__name__)

# pending: number allocated, artifact being written (if its writer stopped, the same
# creator's next once-per-creator registration completes it)
STATUS_PENDING = "pending"
STATUS_READY = "ready"          # artifact written and verified: loadable, promotable
# abandoned: never to be used — its artifact write failed (a person's registration),
# or its artifact was found altered or missing (``status_reason`` says which); the
# number stays used
STATUS_ABANDONED = "abandoned"
# What register_version_once did (Registration.outcome)
OUTCOME_REGISTERED = "registered"   # a new version, with this call's artifact
OUTCOME_COMPLETED = "completed"     # the creator's pending version, with this artifact
OUTCOME_EXISTS = "exists"           # the creator's ready version; this artifact unused
# Rounds of register_version_once: each extra round follows a version of the creator
# becoming unusable (abandoned) meanwhile; more than a few means something is wrong.
MAX_REGISTER_ROUNDS = 5
# status_reason is unindexed text; keep it to a readable length
MAX_REASON_CHARS = 1500
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
    status_reason: str = ""       # why it is abandoned (empty otherwise)

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
            created_by=entity.get("created_by") or "",
            status_reason=entity.get("status_reason") or "")


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


class Registration(NamedTuple):
    """What :meth:`Registry.register_version_once` did.

    ``outcome`` is :data:`OUTCOME_REGISTERED`, :data:`OUTCOME_COMPLETED` or
    :data:`OUTCOME_EXISTS`; ``abandoned`` names the creator's versions found unusable
    (artifact altered or missing) and marked abandoned on the way.
    """

    record: VersionRecord
    outcome: str
    abandoned: tuple = ()


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
        """Versions one creator made, any status (see also register_version_once)."""
        return sorted((VersionRecord.from_entity(e)
                       for e in self._creator_query(model, created_by).fetch()),
                      key=lambda v: v.number)

    def _creator_query(self, model: str, created_by: str):
        # Ancestor + equality: served by built-in indexes, allowed in a transaction.
        query = self.client.query(kind=kinds.MODEL_VERSION, ancestor=self._model_key(model))
        query.add_filter(filter=_property_filter("created_by", "=", created_by))
        return query

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

        Every call makes a new version (a person's registration); for "one version
        per creator, however often asked" use :meth:`register_version_once`.

        ``X_reference`` are the training inputs: the reference feature statistics for
        drift are computed from them (:func:`rotwatch.stats.reference_statistics`).
        ``baseline_accuracy`` is what the pipeline compares live accuracy against: the
        holdout accuracy.
        """
        data, properties = self._prepare(
            model, fitted, estimator=estimator, X_reference=X_reference,
            baseline_accuracy=baseline_accuracy, created_by=created_by, params=params,
            metrics=metrics, train_start=train_start, train_end=train_end,
            train_rows=train_rows, parent_version=parent_version)
        allocated, _ = self._allocate(model, properties)
        record, won = self._write_and_complete(model, allocated.version, data, properties,
                                               abandon_if_unwritten=True)
        if not won:
            raise RegistryError(f"{model} {record.version} became {record.status!r} "
                                "while this registration was writing it; register again")
        self._log_registered(record, OUTCOME_REGISTERED)
        return record

    def register_version_once(
            self, model: str, fitted, *, estimator: str, X_reference,
            baseline_accuracy: float, created_by: str, params: dict | None = None,
            metrics: dict | None = None, train_start: dt.datetime | None = None,
            train_end: dt.datetime | None = None, train_rows: int | None = None,
            parent_version: str | None = None) -> Registration:
        """Register ``fitted`` unless ``created_by`` already has a usable version.

        Same arguments as :meth:`register_version`. However many times and however
        concurrently it is called with one ``created_by`` (a trainer retrying a rot
        event, a stalled trainer and the one that took its job over), one version
        results: see the module docstring for the protocol. Returns a
        :class:`Registration`; its ``record`` is ready and its artifact matched its
        sha256 when checked. Raises :class:`RegistryError` if the creator's version is
        unusable but is the model's default (it is not abandoned then: roll back
        first), and :class:`~rotwatch.artifacts.ArtifactError` if this call's
        artifact could not be written (the version stays pending, for the creator's
        next attempt to complete).
        """
        data, properties = self._prepare(
            model, fitted, estimator=estimator, X_reference=X_reference,
            baseline_accuracy=baseline_accuracy, created_by=created_by, params=params,
            metrics=metrics, train_start=train_start, train_end=train_end,
            train_rows=train_rows, parent_version=parent_version)
        abandoned: list[str] = []
        for _ in range(MAX_REGISTER_ROUNDS):
            found, allocated = self._allocate(model, properties, once_per_creator=True)
            if found.status == STATUS_READY:
                problem = self._unusable(found)
                if problem is None:
                    self._log_registered(found, OUTCOME_EXISTS)
                    return Registration(found, OUTCOME_EXISTS, tuple(abandoned))
                self._abandon(model, found.version, problem, expect_status=STATUS_READY,
                              expect_sha256=found.sha256)
                abandoned.append(found.version)
                continue
            # a failed write leaves it pending: the creator's next attempt completes it
            record, won = self._write_and_complete(model, found.version, data, properties,
                                                   abandon_if_unwritten=False)
            if won:
                outcome = OUTCOME_REGISTERED if allocated else OUTCOME_COMPLETED
                self._log_registered(record, outcome)
                return Registration(record, outcome, tuple(abandoned))
            if record.status == STATUS_READY:   # another attempt completed it first
                self._log_registered(record, OUTCOME_EXISTS)
                return Registration(record, OUTCOME_EXISTS, tuple(abandoned))
            # abandoned while this attempt wrote: the next round allocates anew
        raise RegistryError(
            f"{model}: {MAX_REGISTER_ROUNDS} versions by {created_by} became unusable "
            f"while registering (abandoned: {', '.join(abandoned) or 'by others'}); "
            f"see rotwatch model list --model {model}")

    def _prepare(self, model: str, fitted, *, estimator: str, X_reference,
                 baseline_accuracy: float, created_by: str, params: dict | None,
                 metrics: dict | None, train_start: dt.datetime | None,
                 train_end: dt.datetime | None, train_rows: int | None,
                 parent_version: str | None) -> tuple[bytes, dict]:
        """Validate, serialise: the artifact's bytes and the version's properties
        (all but the number, status and creation time)."""
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
        properties = {
            "artifact_uri": "", "sha256": artifacts.sha256_hex(data),
            "estimator": estimator,
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
        return data, properties

    def _log_registered(self, record: VersionRecord, outcome: str) -> None:
        _LOGGER.info("step=register model=%s version=%s outcome=%s estimator=%s rows=%s "
                     "baseline_accuracy=%s created_by=%s sha256=%s", record.model,
                     record.version, outcome, record.estimator, record.train_rows,
                     record.baseline_accuracy, record.created_by, record.sha256[:12])

    def _latest_number(self, model: str) -> int:
        query = self.client.query(kind=kinds.MODEL_VERSION, ancestor=self._model_key(model))
        query.keys_only()
        return max((kinds.version_number(e.key.name) for e in query.fetch()), default=0)

    def _allocate(self, model: str, properties: dict, *,
                  once_per_creator: bool = False) -> tuple[VersionRecord, bool]:
        """A new pending version, in a transaction: ``(record, True)``. With
        ``once_per_creator``, the same transaction first looks for a pending or ready
        version of ``properties["created_by"]`` and returns it instead:
        ``(record, False)``."""
        from google.cloud import datastore

        # A hint from a query; the transaction below checks each candidate key, and
        # rewriting the Model entity makes concurrent allocations conflict (so of two
        # once-per-creator allocations, the one that retries finds the other's).
        start = self._latest_number(model) + 1
        unindexed = ("params", "metrics", "reference_stats")
        created_by = properties["created_by"]

        def allocate() -> tuple[VersionRecord, bool]:
            now = _now()
            model_key = self._model_key(model)
            model_entity = self.client.get(model_key)
            if once_per_creator:
                # an ancestor query inside the transaction: it reads what is committed
                # now, and the Model entity read above is rewritten by any allocation
                found = _pick(self._creator_query(model, created_by).fetch())
                if found is not None:
                    return VersionRecord.from_entity(found), False
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
            return VersionRecord.from_entity(entity), True

        record, allocated = run_in_transaction(self.client, allocate,
                                               what=f"allocate {model} version")
        _LOGGER.info("step=allocate-version model=%s version=%s outcome=%s created_by=%s",
                     model, record.version,
                     "allocated" if allocated else f"found-{record.status}", created_by)
        return record, allocated

    def _write_and_complete(self, model: str, version: str, data: bytes,
                            properties: dict, *, abandon_if_unwritten: bool
                            ) -> tuple[VersionRecord, bool]:
        """Write this attempt's artifact to its own path, then mark ``version`` ready
        with it if the version is still pending: ``(record, won)``. A loser gets the
        version as it is now and deletes its own file (nothing refers to it). If the
        write fails, the version is abandoned (``abandon_if_unwritten``: nobody else
        would complete it) or left pending, and the ArtifactError raised."""
        uri = artifacts.artifact_uri(self.settings.model_root, model, version,
                                     properties["sha256"])
        try:
            artifacts.write_artifact(uri, data)
        except artifacts.ArtifactError as exc:
            if abandon_if_unwritten:
                self._abandon(model, version, f"its artifact could not be written: {exc}",
                              expect_status=STATUS_PENDING)
            raise
        key = self._version_key(model, version)

        def complete() -> tuple[VersionRecord, bool]:
            entity = self.client.get(key)
            if entity is None:
                raise VersionNotFound(f"{model} {version} disappeared while its "
                                      "artifact was written")
            if (entity.get("status") or STATUS_READY) != STATUS_PENDING:
                return VersionRecord.from_entity(entity), False
            # status, artifact and the description of that artifact, together
            entity.update(properties)
            entity.update({"artifact_uri": uri, "status": STATUS_READY})
            self.client.put(entity)
            return VersionRecord.from_entity(entity), True

        record, won = run_in_transaction(self.client, complete,
                                         what=f"mark {model} {version} ready")
        if not won:
            _LOGGER.info("step=complete-version model=%s version=%s outcome=lost "
                         "status=%s", model, version, record.status)
            if record.artifact_uri != uri:
                artifacts.delete_artifact(uri)
        return record, won

    def _unusable(self, record: VersionRecord) -> str | None:
        """Why a ready version's artifact cannot be used (altered, missing), or None."""
        try:
            artifacts.read_artifact(record.artifact_uri, record.sha256)
        except (artifacts.ArtifactIntegrityError, artifacts.ArtifactNotFound) as exc:
            return f"artifact unusable: {exc}"
        return None

    def _abandon(self, model: str, version: str, reason: str, *, expect_status: str,
                 expect_sha256: str | None = None) -> VersionRecord:
        """Mark ``version`` abandoned with ``reason``, in a transaction, if it still
        has ``expect_status`` (and ``expect_sha256``); else leave it as it is now.
        Never the model's default: that raises :class:`RegistryError`."""
        key = self._version_key(model, version)
        model_key = self._model_key(model)
        reason = reason[:MAX_REASON_CHARS]

        def abandon() -> tuple[VersionRecord, bool]:
            entity = self.client.get(key)
            if entity is None:
                raise VersionNotFound(f"model {model!r} has no version {version!r}")
            if (entity.get("status") or STATUS_READY) != expect_status or \
                    (expect_sha256 is not None and entity.get("sha256") != expect_sha256):
                return VersionRecord.from_entity(entity), False
            model_entity = self.client.get(model_key)
            if model_entity is not None and model_entity.get("default_version") == version:
                raise RegistryError(
                    f"{model} {version} is unusable ({reason}), but it is the default, so "
                    "it is not abandoned: restore its file, or roll back first "
                    f"(rotwatch model set-default --model {model} --version ...)")
            entity.exclude_from_indexes.add("status_reason")
            entity.update({"status": STATUS_ABANDONED, "status_reason": reason})
            self.client.put(entity)
            return VersionRecord.from_entity(entity), True

        record, changed = run_in_transaction(self.client, abandon,
                                             what=f"abandon {model} {version}")
        if changed:
            _LOGGER.warning("step=abandon-version model=%s version=%s created_by=%s "
                            "reason=%r", model, version, record.created_by, reason)
        else:
            _LOGGER.info("step=abandon-version model=%s version=%s outcome=unchanged "
                         "status=%s", model, version, record.status)
        return record

    # -- the default pointer -----------------------------------------------------------
    def set_default(self, model: str, version: str, *, changed_by: str,
                    reason: str = "", if_current: str | None = None) -> ModelUpdate | None:
        """Point ``model``'s default at ``version``, record who/why, publish it.

        Returns the :class:`ModelUpdate`, or ``None`` if ``version`` already was the
        default (nothing recorded or published; ``if_current`` is then not checked, so
        a retried promotion is a no-op, not a conflict). With ``if_current``, the change is
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
            if previous == version:
                # Already done (e.g. a retry of a job that promoted, then stopped):
                # nothing to change, whatever ``if_current`` expected before.
                return None
            if if_current is not None and previous != if_current:
                raise DefaultChanged(f"default of {model} is {previous!r}, not "
                                     f"{if_current!r} any more; not changing it")
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


def _pick(entities):
    """Of one creator's versions, the one a once-per-creator registration uses: the
    newest ready one, else the newest pending one, else None (abandoned ones never)."""
    best = None
    for entity in entities:
        status = entity.get("status") or STATUS_READY
        if status not in (STATUS_READY, STATUS_PENDING):
            continue
        rank = (status == STATUS_READY, kinds.version_number(entity.key.name))
        if best is None or rank > best[0]:
            best = (rank, entity)
    return None if best is None else best[1]


def _property_filter(name: str, op: str, value: Any):
    from google.cloud.datastore.query import PropertyFilter
    return PropertyFilter(name, op, value)


def describe(record: VersionRecord) -> Sequence[tuple[str, str]]:
    """(field, text) pairs of a version, for tables and logs."""
    def t(value):
        return "" if value is None else value.isoformat(timespec="seconds")
    return (
        ("version", record.version), ("status", record.status),
        ("status_reason", record.status_reason),
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
