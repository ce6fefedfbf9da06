"""The gateway's model cache: loaded versions, and which one is each model's default.

Versions are loaded through the registry (:meth:`rotwatch.registry.Registry.load_model`),
which refuses an artifact whose sha256 does not match what was registered; nothing
is unpickled then. A refused version is remembered for a short while (re-hashing a
large file on every request would be a denial of service), and the version that was
serving keeps serving.

The default pointer changes in two ways: a ``model-updates`` message
(:meth:`ModelCache.refresh_default`, called by the update listener) or a request for
a model this process has not seen yet (read from the registry on the spot). On an
update the new default is loaded *before* the pointer moves, so no request ever waits
for a load or sees a half-loaded model.

The request path asks :meth:`ModelCache.cached` first (a dict lookup, no I/O) and only
on a miss calls the blocking :meth:`ModelCache.resolve` in a worker thread.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from rotwatch.events import InvalidEvent, validate_model_name, validate_version

__all__ = ["ModelCache", "LoadedVersion", "ModelUnavailable", "MAX_LOADED_VERSIONS",
           "REFUSAL_TTL_S"]

_LOGGER = logging.getLogger(__name__)

# Versions kept in memory besides each model's default: a tree is kilobytes, a forest
# can be hundreds of MB; 16 covers pinned traffic to recent versions of a few models.
MAX_LOADED_VERSIONS = 16
# How long a refused version (bad sha256, missing file) stays refused before the
# registry and the file are consulted again: long enough to shed a flood of requests,
# short enough that a restored file is served again quickly.
REFUSAL_TTL_S = 30.0
# Concurrent loads of different versions rarely collide on 16 locks.
_LOAD_LOCKS = 16


class ModelUnavailable(Exception):
    """A model or version that cannot be served; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """A verified estimator ready to predict."""

    model: str
    version: str
    estimator: Any
    n_features: int
    classes: tuple
    info: Any = None  # the registry's VersionRecord
    fast_tree: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self):
        object.__setattr__(self, "fast_tree", _is_plain_tree(self.estimator))

    def predict(self, X: np.ndarray) -> list:
        """Class labels for rows of ``X`` (float64, shape ``(n, n_features)``, finite —
        the request schema checked that), as JSON values.

        A single decision tree is asked with ``check_input=False``: scikit-learn's
        input checks (dtype, finiteness, shape, data-frame probing) cost ~5x the tree
        walk for one row, and the gateway has already made each of those checks. A
        value too large for the tree's float32 raises ``ValueError``.
        """
        if self.fast_tree:
            with np.errstate(over="raise"):
                try:
                    X32 = np.ascontiguousarray(X, dtype=np.float32)
                except FloatingPointError:
                    raise ValueError("a feature value is too large for the model's "
                                     f"float32 inputs (|x| < {_FLOAT32_MAX:.3g})") from None
            return self.estimator.predict(X32, check_input=False).tolist()
        with np.errstate(over="ignore", invalid="ignore"):  # the estimator checks
            return self.estimator.predict(X).tolist()


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_plain_tree(estimator) -> bool:
    """A fitted single-output scikit-learn decision-tree classifier."""
    try:
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return (type(estimator) is DecisionTreeClassifier
            and getattr(estimator, "n_outputs_", 0) == 1)


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``zombies`` / ``zombies/versions/v2`` / ``[projects/<p>/]models/zombies[...]``.

    Raises :class:`ModelUnavailable` (400) naming the expected forms.
    """
    parts = spec.split("/")
    if len(parts) >= 2 and parts[0] == "projects":
        parts = parts[2:]
    if parts and parts[0] == "models":
        parts = parts[1:]
    if len(parts) == 1:
        model, version = parts[0], None
    elif len(parts) == 3 and parts[1] == "versions":
        model, version = parts[0], parts[2]
    else:
        raise ModelUnavailable(400, f"model {spec[:80]!r} is not a model name; use "
                                    "'zombies' (the default version) or "
                                    "'zombies/versions/v2' (a pinned version)")
    check_names(model, version)
    return model, version


def check_names(model: str, version: str | None) -> None:
    try:
        validate_model_name(model)
        if version is not None:
            validate_version(version)
    except InvalidEvent as exc:
        raise ModelUnavailable(400, str(exc)) from None


class ModelCache:
    """Loaded versions and default pointers, shared by all requests of a process.

    Parameters
    ----------
    registry : rotwatch.registry.Registry
        Where versions and defaults are read.
    max_versions, refusal_ttl_s :
        See :data:`MAX_LOADED_VERSIONS` and :data:`REFUSAL_TTL_S`.
    """

    def __init__(self, registry, *, max_versions: int = MAX_LOADED_VERSIONS,
                 refusal_ttl_s: float = REFUSAL_TTL_S,
                 clock: Callable[[], float] = time.monotonic):
        if max_versions < 1:
            raise ValueError(f"max_versions={max_versions} must be at least 1")
        self.registry = registry
        self.max_versions = max_versions
        self.refusal_ttl_s = refusal_ttl_s
        self._clock = clock
        self._defaults: dict[str, LoadedVersion] = {}
        self._versions: collections.OrderedDict[tuple[str, str], LoadedVersion] = \
            collections.OrderedDict()
        self._refused: dict[tuple[str, str], tuple[float, ModelUnavailable]] = {}
        self._lock = threading.Lock()
        # Loads of one version wait for each other; a fixed set of locks, picked by
        # the version's hash, keeps memory bounded however many names are asked for.
        self._load_locks = [threading.Lock() for _ in range(_LOAD_LOCKS)]
        self.loads = 0      # versions loaded from artifacts
        self.refusals = 0   # loads refused (integrity, missing or unready artifacts)

    # -- the request path -------------------------------------------------------------
    def cached(self, model: str, version: str | None = None) -> LoadedVersion | None:
        """What is in memory for the request, or None (then call :meth:`resolve`)."""
        if version is None:
            return self._defaults.get(model)
        loaded = self._versions.get((model, version))
        if loaded is None:
            current = self._defaults.get(model)
            if current is not None and current.version == version:
                return current
        return loaded

    def resolve(self, model: str, version: str | None = None) -> LoadedVersion:
        """The version to serve, loading it (and the default pointer) if needed.

        Blocking (Datastore and artifact reads). Raises :class:`ModelUnavailable`.
        """
        check_names(model, version)
        loaded = self.cached(model, version)
        if loaded is not None:
            return loaded
        if version is None:
            return self.refresh_default(model)
        return self._load(model, version)

    def serving(self) -> dict[str, str]:
        """``{model: default version served}`` for what this process has loaded."""
        return {m: v.version for m, v in self._defaults.items()}

    def loaded_versions(self, model: str) -> list[str]:
        with self._lock:
            names = {v for (m, v) in self._versions if m == model}
        if model in self._defaults:
            names.add(self._defaults[model].version)
        return sorted(names, key=lambda v: int(v[1:]))

    # -- default pointer --------------------------------------------------------------
    def refresh_default(self, model: str) -> LoadedVersion:
        """Read ``model``'s default from the registry, load it, then point at it.

        If the new default cannot be loaded (bad sha256, missing artifact), the
        version already serving keeps serving and :class:`ModelUnavailable` is raised.
        """
        check_names(model, None)
        version = self._registry_call(lambda: self.registry.default_version(model))
        loaded = self._load(model, version)
        with self._lock:
            previous = self._defaults.get(model)
            self._defaults[model] = loaded
        if previous is None or previous.version != loaded.version:
            _LOGGER.info("step=serve-default model=%s version=%s previous=%s", model,
                         loaded.version, previous.version if previous else None)
        return loaded

    def refresh_all(self) -> dict[str, str]:
        """Refresh the default of every model this process serves; returns them."""
        for model in list(self._defaults):
            try:
                self.refresh_default(model)
            except ModelUnavailable as exc:
                _LOGGER.warning("step=refresh-default model=%s outcome=kept reason=%s",
                                model, exc.message)
        return self.serving()

    def preload(self) -> dict[str, str]:
        """Load the default version of every registered model (at start-up)."""
        records = self._registry_call(self.registry.list_models)
        for record in records:
            if not record.default_version:
                continue
            try:
                self.refresh_default(record.name)
            except ModelUnavailable as exc:
                _LOGGER.error("step=preload model=%s outcome=refused reason=%s",
                              record.name, exc.message)
        return self.serving()

    # -- loading ----------------------------------------------------------------------
    def _load(self, model: str, version: str) -> LoadedVersion:
        key = (model, version)
        # One load per version, however many requests wait for it.
        with self._load_locks[hash(key) % _LOAD_LOCKS]:
            with self._lock:
                loaded = self._versions.get(key)
                if loaded is not None:
                    self._versions.move_to_end(key)
                    return loaded
                refused = self._refused.get(key)
            if refused is not None:
                until, error = refused
                if self._clock() < until:
                    raise error
            try:
                loaded = self._load_from_registry(model, version)
            except ModelUnavailable as error:
                if error.status == 409:
                    with self._lock:
                        self._refused[key] = (self._clock() + self.refusal_ttl_s, error)
                    self.refusals += 1
                raise
            with self._lock:
                self._refused.pop(key, None)
                self._versions[key] = loaded
                self._versions.move_to_end(key)
                while len(self._versions) > self.max_versions:
                    self._versions.popitem(last=False)
            self.loads += 1
            return loaded

    def _load_from_registry(self, model: str, version: str) -> LoadedVersion:
        from rotwatch import artifacts, registry

        def load():
            return self.registry.load_model(model, version)

        try:
            result = self._registry_call(load)
        except ModelUnavailable:
            raise
        except artifacts.ArtifactIntegrityError as exc:
            _LOGGER.error("step=load model=%s version=%s outcome=refused reason=%s",
                          model, version, exc)
            raise ModelUnavailable(409, f"{model} {version} is refused: {exc}") from None
        except (artifacts.ArtifactError, registry.VersionNotReady) as exc:
            _LOGGER.error("step=load model=%s version=%s outcome=unavailable reason=%s",
                          model, version, exc)
            raise ModelUnavailable(409, f"{model} {version} cannot be loaded: {exc}") \
                from None
        estimator, info = result
        n_features = int(getattr(estimator, "n_features_in_", 0) or info.n_features)
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            classes = info.classes
        return LoadedVersion(model=model, version=info.version, estimator=estimator,
                             n_features=n_features,
                             classes=tuple(getattr(c, "item", lambda c=c: c)() for c in classes),
                             info=info)

    def _registry_call(self, call):
        """Run a registry read, turning its errors into :class:`ModelUnavailable`."""
        from google.api_core import exceptions as gexc

        from rotwatch import registry

        try:
            return call()
        except (registry.ModelNotFound, registry.VersionNotFound) as exc:
            raise ModelUnavailable(404, str(exc)) from None
        except InvalidEvent as exc:
            raise ModelUnavailable(400, str(exc)) from None
        except gexc.GoogleAPICallError as exc:
            _LOGGER.error("step=registry-read outcome=failed error=%s", exc)
            raise ModelUnavailable(503, f"the model registry (Datastore) did not answer: "
                                        f"{exc.message}; retry shortly") from None
