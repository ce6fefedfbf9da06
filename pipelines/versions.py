"""What the pipeline knows about each model version, read from the registry.

Parsing needs a version's feature count (and whether it exists at all); the rot rules
need its baseline accuracy and reference feature statistics. All of it lives in the
registry's ``ModelVersion`` entities (:mod:`rotwatch.kinds`), which the trainer adds
while the pipeline runs. :class:`RegistryCatalog` reads them through
:class:`rotwatch.registry.Registry` and caches each for ``ttl_s``: a new version is
watched without a restart, and a version the cache has not seen yet is looked up
again at most every ``miss_retry_s`` (so feedback for a just-promoted version is not
dead-lettered for a whole TTL).

The cache is per process, not per DoFn instance: Beam's bundle-based DirectRunner
rebuilds DoFns for every bundle, and a per-instance cache would hit Datastore per
bundle. A catalog pickles as its settings only.

Tests and batch jobs use :class:`StaticCatalog`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Iterable

__all__ = ["VersionInfo", "StaticCatalog", "RegistryCatalog"]

_LOGGER = logging.getLogger(__name__)

# A version registered a moment ago must not be dead-lettered for long: look up a
# miss again after this many seconds (a miss is one cheap key lookup).
MISS_RETRY_S = 5.0
_CACHES: dict = {}
_CACHES_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """The parts of a ``ModelVersion`` the pipeline uses."""

    model: str
    version: str
    n_features: int
    baseline_accuracy: float | None = None
    reference_stats: dict | None = None

    @classmethod
    def from_record(cls, record) -> "VersionInfo":
        """From a :class:`rotwatch.registry.VersionRecord`."""
        return cls(model=record.model, version=record.version,
                   n_features=int(record.n_features or 0),
                   baseline_accuracy=record.baseline_accuracy,
                   reference_stats=record.reference_stats)


class StaticCatalog:
    """A fixed set of versions (tests, batch recomputes)."""

    def __init__(self, versions: Iterable[VersionInfo] = ()):
        self._versions = {(v.model, v.version): v for v in versions}

    def get(self, model: str, version: str) -> VersionInfo | None:
        return self._versions.get((model, version))

    def __repr__(self):
        return f"StaticCatalog({sorted(self._versions)})"


class RegistryCatalog:
    """Registry lookups cached per process for ``ttl_s`` seconds.

    Only ``ready`` versions count; a lookup that fails (Datastore down) serves the
    last known value if there is one and otherwise raises, so the bundle is retried
    instead of valid feedback being dead-lettered.
    """

    def __init__(self, project: str, namespace: str | None = None, ttl_s: float = 60.0,
                 miss_retry_s: float = MISS_RETRY_S):
        if ttl_s <= 0 or miss_retry_s <= 0:
            raise ValueError(f"ttl_s={ttl_s} and miss_retry_s={miss_retry_s} must be > 0")
        self.project = project
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.miss_retry_s = miss_retry_s

    def _cache(self) -> dict:
        key = (self.project, self.namespace)
        with _CACHES_LOCK:
            return _CACHES.setdefault(key, {})

    def _fetch(self, model: str, version: str) -> VersionInfo | None:
        from rotwatch.config import Settings
        from rotwatch.registry import STATUS_READY, Registry, RegistryError
        from pipelines.clients import datastore_client
        registry = Registry(Settings(project=self.project, namespace=self.namespace),
                            client=datastore_client(self.project, self.namespace),
                            publish=False)
        try:
            record = registry.get_version(model, version)
        except (RegistryError, ValueError):
            return None
        if record.status != STATUS_READY:
            return None
        return VersionInfo.from_record(record)

    def get(self, model: str, version: str) -> VersionInfo | None:
        cache = self._cache()
        now = time.monotonic()
        entry = cache.get((model, version))
        if entry is not None and entry[0] > now:
            return entry[1]
        try:
            info = self._fetch(model, version)
        except Exception as exc:  # an RPC failure, not a verdict on the event
            if entry is not None and entry[1] is not None:
                _LOGGER.warning("registry lookup failed, serving cached model=%s "
                                "version=%s error=%s", model, version, exc)
                return entry[1]
            raise
        cache[(model, version)] = (now + (self.ttl_s if info else self.miss_retry_s), info)
        if info is not None and (entry is None or entry[1] != info):
            _LOGGER.info("version loaded model=%s version=%s n_features=%d baseline=%s",
                         model, version, info.n_features, info.baseline_accuracy)
        return info

    def __repr__(self):
        return (f"RegistryCatalog(project={self.project!r}, namespace={self.namespace!r}, "
                f"ttl_s={self.ttl_s})")
