"""Training jobs: one ``TrainingJob`` entity per rot event, claimed under a lease.

The job's key name is the rot event id, and it is created in a transaction, so a
redelivered or duplicated rot event finds the job already there and does no second
job. A worker holds a job with a lease (``lease_owner``, ``lease_expires``) that it
renews between steps; a job whose worker died is taken over once the lease expires.
A worker that only stalled past its lease may still reach the registration step: the
registry registers once per rot event (``created_by="rot:<rot id>"``,
:meth:`rotwatch.registry.Registry.register_version_once`), so it gets the version the
new owner made (or completes the one it left pending), and its own later writes to
the job raise :class:`LeaseLost`.

States (``state``)::

    running ──> promoted            the candidate won the gate and is the default
            ├─> rejected            the candidate lost the gate (both scores recorded),
            │                       or the rotting version is no longer the default
            ├─> failed              training crashed or timed out, or it gave up
            └─> insufficient-data   too few usable rows; retried when more arrive
                        └──> running (again, by a sweep or a redelivery)

Besides the properties listed in :mod:`rotwatch.kinds`, a job keeps ``rot_event``
(the event's JSON, so a sweep can retry it without the Pub/Sub message) and
``detail`` (JSON: excluded rows, gate reason, timings, estimator), both unindexed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any, NamedTuple

from rotwatch import kinds
from rotwatch.events import InvalidEvent, RotEvent
from rotwatch.transactions import run_in_transaction

__all__ = ["Job", "JobStore", "Claim", "LeaseLost", "STATES", "TERMINAL_STATES",
           "RUNNING", "PROMOTED", "REJECTED", "FAILED", "INSUFFICIENT_DATA",
           "MAX_ATTEMPTS"]

_LOGGER = logging.getLogger(__name__)

RUNNING = "running"
PROMOTED = "promoted"
REJECTED = "rejected"
FAILED = "failed"
INSUFFICIENT_DATA = "insufficient-data"
STATES = (RUNNING, PROMOTED, REJECTED, INSUFFICIENT_DATA, FAILED)
TERMINAL_STATES = frozenset({PROMOTED, REJECTED, FAILED})
# A job whose worker died this many times is probably what kills the workers (say,
# a dataset that runs the service out of memory): stop and leave it for a person.
MAX_ATTEMPTS = 5
_UNINDEXED = ("error", "rot_event", "detail")


class LeaseLost(RuntimeError):
    """Another worker took the job over (our lease expired): stop, record nothing."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value):
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _parse_rot(rot_id: str, raw: str | None) -> RotEvent | None:
    if not raw:
        return None
    try:
        return RotEvent.from_json(raw)
    except InvalidEvent as exc:
        # a job with an unreadable event cannot be retried by a sweep; say so once here
        _LOGGER.error("step=read-job rot_id=%s outcome=bad-rot-event reason=%r", rot_id,
                      str(exc))
        return None


@dataclasses.dataclass(frozen=True)
class Job:
    rot_id: str
    model: str
    version: str
    state: str
    lease_owner: str | None
    lease_expires: dt.datetime | None
    attempts: int
    produced_version: str | None
    candidate_accuracy: float | None
    current_accuracy: float | None
    rows: int | None
    error: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    rot_event: RotEvent | None
    detail: dict

    @classmethod
    def from_entity(cls, entity) -> "Job":
        return cls(
            rot_id=entity.key.name, model=entity.get("model"), version=entity.get("version"),
            state=entity.get("state"), lease_owner=entity.get("lease_owner"),
            lease_expires=_aware(entity.get("lease_expires")),
            attempts=int(entity.get("attempts") or 0),
            produced_version=entity.get("produced_version"),
            candidate_accuracy=entity.get("candidate_accuracy"),
            current_accuracy=entity.get("current_accuracy"), rows=entity.get("rows"),
            error=entity.get("error"), created_at=_aware(entity.get("created_at")),
            updated_at=_aware(entity.get("updated_at")),
            rot_event=_parse_rot(entity.key.name, entity.get("rot_event")),
            detail=json.loads(entity.get("detail") or "{}"))


class Claim(NamedTuple):
    """``status``: ``claimed`` (do it), ``done`` (already finished) or ``busy``."""

    status: str
    job: Job


class JobStore:
    """``TrainingJob`` entities through one Datastore client."""

    def __init__(self, client):
        self.client = client

    def _key(self, rot_id: str):
        return self.client.key(kinds.TRAINING_JOB, rot_id)

    def get(self, rot_id: str) -> Job | None:
        entity = self.client.get(self._key(rot_id))
        return None if entity is None else Job.from_entity(entity)

    def claim(self, rot: RotEvent, owner: str, lease_s: float,
              max_attempts: int = MAX_ATTEMPTS) -> Claim:
        """Create the job, or take it over if it is retryable; in one transaction."""
        from google.cloud import datastore
        key = self._key(rot.rot_id)

        def claim() -> Claim:
            now = _now()
            entity = self.client.get(key)
            if entity is None:
                entity = datastore.Entity(key=key, exclude_from_indexes=_UNINDEXED)
                entity.update({
                    "model": rot.model, "version": rot.version, "attempts": 0,
                    "produced_version": None, "candidate_accuracy": None,
                    "current_accuracy": None, "rows": None, "error": None,
                    "created_at": now, "rot_event": rot.to_json().decode("utf-8"),
                    "detail": "{}"})
            else:
                state = entity.get("state")
                if state in TERMINAL_STATES:
                    return Claim("done", Job.from_entity(entity))
                expires = _aware(entity.get("lease_expires"))
                held_by_other = entity.get("lease_owner") != owner
                if state == RUNNING and held_by_other and expires and expires > now:
                    return Claim("busy", Job.from_entity(entity))
                if state == RUNNING and held_by_other and \
                        int(entity.get("attempts") or 0) >= max_attempts:
                    entity.update({"state": FAILED, "updated_at": now, "error": (
                        f"gave up after {entity.get('attempts')} attempts: the worker "
                        "running this job stopped each time before finishing it")})
                    self.client.put(entity)
                    return Claim("done", Job.from_entity(entity))
            entity.update({"state": RUNNING, "lease_owner": owner,
                           "lease_expires": now + dt.timedelta(seconds=lease_s),
                           "attempts": int(entity.get("attempts") or 0) + 1,
                           "updated_at": now})
            self.client.put(entity)
            return Claim("claimed", Job.from_entity(entity))

        return run_in_transaction(self.client, claim, what=f"claim job {rot.rot_id}")

    def _owned(self, rot_id: str, owner: str, change: dict) -> Job:
        key = self._key(rot_id)

        def update() -> Job:
            entity = self.client.get(key)
            if entity is None or entity.get("state") != RUNNING \
                    or entity.get("lease_owner") != owner:
                raise LeaseLost(f"job {rot_id} is no longer held by {owner} (state "
                                f"{None if entity is None else entity.get('state')}, owner "
                                f"{None if entity is None else entity.get('lease_owner')})")
            entity.update(change)
            entity["updated_at"] = _now()
            self.client.put(entity)
            return Job.from_entity(entity)

        return run_in_transaction(self.client, update, what=f"update job {rot_id}")

    def renew(self, rot_id: str, owner: str, lease_s: float) -> Job:
        """Extend our lease; :class:`LeaseLost` if another worker has the job."""
        return self._owned(rot_id, owner, {
            "lease_expires": _now() + dt.timedelta(seconds=lease_s)})

    def finish(self, rot_id: str, owner: str, state: str, *,
               detail: dict | None = None, **fields: Any) -> Job:
        """Record the job's outcome (and release the lease) if we still hold it."""
        if state not in STATES or state == RUNNING:
            raise ValueError(f"state {state!r} is not an outcome; use one of "
                             f"{', '.join(s for s in STATES if s != RUNNING)}")
        allowed = {"produced_version", "candidate_accuracy", "current_accuracy", "rows",
                   "error"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}; allowed: "
                             f"{sorted(allowed)}")
        change = {"state": state, "lease_expires": None, **fields}
        if detail is not None:
            change["detail"] = json.dumps(detail, sort_keys=True, default=str)
        return self._owned(rot_id, owner, change)

    def due(self, retry_after_s: float, now: dt.datetime | None = None) -> list[Job]:
        """Jobs to pick up again: insufficient-data ones not checked for
        ``retry_after_s``, and running ones whose lease expired (their worker died)."""
        from google.cloud.datastore.query import PropertyFilter
        now = now or _now()
        out = []
        for state in (INSUFFICIENT_DATA, RUNNING):
            query = self.client.query(kind=kinds.TRAINING_JOB)
            query.add_filter(filter=PropertyFilter("state", "=", state))
            for entity in query.fetch():
                job = Job.from_entity(entity)
                if state == INSUFFICIENT_DATA:
                    ready = job.updated_at is None or \
                        job.updated_at <= now - dt.timedelta(seconds=retry_after_s)
                else:
                    ready = job.lease_expires is None or job.lease_expires <= now
                if ready and job.rot_event is not None:
                    out.append(job)
        return sorted(out, key=lambda j: (j.created_at or now, j.rot_id))

    def list(self, model: str | None = None, limit: int = 100) -> list[Job]:
        from google.cloud.datastore.query import PropertyFilter
        query = self.client.query(kind=kinds.TRAINING_JOB)
        if model:
            query.add_filter(filter=PropertyFilter("model", "=", model))
        jobs = [Job.from_entity(e) for e in query.fetch()]
        jobs.sort(key=lambda j: j.created_at or _now(), reverse=True)
        return jobs[:limit]
