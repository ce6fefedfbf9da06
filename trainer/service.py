"""The trainer service: rot event in, a better model version out (or a reason why not).

For each rot event from ``model-rot`` (streaming pull, one job at a time):

1. **claim** — the ``TrainingJob`` keyed by the rot id, in a transaction
   (:mod:`trainer.jobs`): a duplicate or redelivered event does no second job.
2. **current** — the model's default version; if it is no longer the rotting
   version, the job ends ``rejected`` (superseded). Its artifact is sha256-checked.
3. **dataset** — feedback since the change point, deduplicated, labels inferred
   (:mod:`trainer.dataset`, :mod:`trainer.labels`). Too few rows:
   ``insufficient-data``, retried by the sweep once more feedback has arrived.
4. **train** — in a child process with a time limit (:mod:`trainer.train`): a crash
   or hang ends the job ``failed``, never the service.
5. **gate** — candidate and current scored on the newest rows (:mod:`trainer.gate`):
   ``rejected`` with both scores unless the candidate wins by the margin.
6. **promote** — register vN+1 once per rot event (``created_by="rot:<rot id>"``,
   :meth:`~rotwatch.registry.Registry.register_version_once`: a retry or a stalled
   worker gets the version an earlier attempt made), set it as default (which
   publishes ``model-updates``), record everything on the job.

The Pub/Sub message is acked only after the outcome is committed to Datastore; if
handling raises, it is nacked and redelivered (after the subscription's
``max_delivery_attempts`` it goes to ``model-rot-deadletter``). An event whose job
another live worker holds is acked too: the job stores the event, and every
``sweep_interval_s`` the service retries ``insufficient-data`` jobs and takes over
jobs whose worker died (lease expired), from that stored event.

    rotwatch trainer run                   # against the emulators or --project
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from rotwatch.artifacts import ArtifactError
from rotwatch.config import Settings
from rotwatch.estimators import DEFAULT_ESTIMATOR, ESTIMATORS, holdout_metrics
from rotwatch.events import InvalidEvent, RotEvent
from rotwatch.registry import DefaultChanged, Registry, RegistryError, UpdateNotPublished
from trainer.config import DATASET_SOURCES, TrainerConfig
from trainer.dataset import Dataset, build_dataset, count_feedback, read_feedback
from trainer.gate import decide, holdout_split
from trainer.jobs import FAILED, INSUFFICIENT_DATA, PROMOTED, REJECTED, JobStore, LeaseLost
from trainer.train import TrainingFailed, fit_estimator, train_in_child

__all__ = ["TrainerConfig", "TrainerService", "JobOutcome", "ServiceError",
           "DATASET_SOURCES"]

_LOGGER = logging.getLogger(__name__)

# Before nacking an event whose handling hit an infrastructure error (Datastore or
# storage unreachable): a redelivery a moment later has a chance, one at once does not.
NACK_BACKOFF_S = 5.0
SETUP_COMMAND = "rotwatch setup"


class ServiceError(RuntimeError):
    """The service cannot run as configured (the message says how to fix it)."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """What happened to one rot event; ``state`` is the job's state afterwards."""

    rot_id: str
    state: str
    produced_version: str | None = None
    candidate_accuracy: float | None = None
    current_accuracy: float | None = None
    rows: int | None = None
    error: str | None = None
    seconds: float = 0.0
    handled_here: bool = True     # False: a duplicate, or another worker has it

    @classmethod
    def from_job(cls, job, seconds: float, handled_here: bool) -> "JobOutcome":
        return cls(rot_id=job.rot_id, state=job.state,
                   produced_version=job.produced_version,
                   candidate_accuracy=job.candidate_accuracy,
                   current_accuracy=job.current_accuracy, rows=job.rows, error=job.error,
                   seconds=seconds, handled_here=handled_here)


def _since(rot: RotEvent, lookback_s: float) -> dt.datetime:
    return rot.change_point or rot.window_start or \
        rot.decided_at - dt.timedelta(seconds=lookback_s)


class TrainerService:
    """Handles rot events; :meth:`run` subscribes, :meth:`handle` does one event.

    ``fit`` is the function the training child runs (tests pass one that crashes).
    """

    def __init__(self, settings: Settings, config: TrainerConfig | None = None, *,
                 client=None, registry: Registry | None = None, subscriber=None,
                 owner: str | None = None, fit: Callable = fit_estimator):
        self.settings = settings
        self.config = config or TrainerConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.fit = fit
        self._client = client
        self._registry = registry
        self._subscriber = subscriber
        self._jobs: JobStore | None = None
        # one job at a time, whether it came from a message or from the sweep
        self._one_job = threading.Lock()

    # -- clients, made on first use (after any fork) -----------------------------------
    @property
    def client(self):
        if self._client is None:
            from google.cloud import datastore
            self._client = datastore.Client(project=self.settings.project,
                                            namespace=self.settings.namespace)
        return self._client

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.settings, client=self.client)
        return self._registry

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.client)
        return self._jobs

    # -- one rot event -----------------------------------------------------------------
    def handle(self, rot: RotEvent) -> JobOutcome:
        """Claim and run the job of ``rot``; returns once its outcome is committed.

        Raises only on infrastructure errors (Datastore unreachable...); the job then
        keeps its lease and is retried by a redelivery or, after expiry, a sweep.
        """
        with self._one_job:
            return self._handle(rot)

    def _handle(self, rot: RotEvent) -> JobOutcome:
        started = time.monotonic()
        claim = self.jobs.claim(rot, self.owner, self.config.lease_s)
        if claim.status != "claimed":
            _LOGGER.info("step=claim rot_id=%s outcome=%s state=%s owner=%s", rot.rot_id,
                         "duplicate" if claim.status == "done" else "held-elsewhere",
                         claim.job.state, claim.job.lease_owner)
            return JobOutcome.from_job(claim.job, time.monotonic() - started, False)
        _LOGGER.info("step=claim rot_id=%s outcome=claimed model=%s version=%s kind=%s "
                     "attempt=%d", rot.rot_id, rot.model, rot.version, rot.kind,
                     claim.job.attempts)
        try:
            job = self._run(rot, started)
        except LeaseLost as exc:
            _LOGGER.warning("step=lease rot_id=%s outcome=lost detail=%s", rot.rot_id, exc)
            job = self.jobs.get(rot.rot_id)
            return JobOutcome.from_job(job, time.monotonic() - started, False)
        except ValueError as exc:
            # bad data or settings (say, reference statistics too big for an entity):
            # a retry would fail the same way, so the job ends here, with the reason
            _LOGGER.exception("step=job rot_id=%s outcome=error", rot.rot_id)
            job = self.jobs.finish(rot.rot_id, self.owner, FAILED,
                                   error=f"{type(exc).__name__}: {exc}")
        outcome = JobOutcome.from_job(job, time.monotonic() - started, True)
        _LOGGER.info("step=done rot_id=%s state=%s produced_version=%s rows=%s "
                     "candidate_accuracy=%s current_accuracy=%s seconds=%.2f",
                     rot.rot_id, job.state, job.produced_version, job.rows,
                     _fmt(job.candidate_accuracy), _fmt(job.current_accuracy),
                     outcome.seconds)
        return outcome

    def _finish(self, rot: RotEvent, state: str, detail: dict, **fields):
        if fields.get("error"):
            _LOGGER.info("step=outcome rot_id=%s state=%s reason=%r", rot.rot_id, state,
                         fields["error"])
        return self.jobs.finish(rot.rot_id, self.owner, state, detail=detail, **fields)

    def _renew(self, rot: RotEvent) -> None:
        self.jobs.renew(rot.rot_id, self.owner, self.config.lease_s)

    def _run(self, rot: RotEvent, started: float):
        """Steps 2-6 of the module docstring; each step may end the job early."""
        detail: dict = {"kind": rot.kind, "owner": self.owner, "timings_s": {}}
        try:
            current = self._current(rot)
            dataset = self._dataset(rot, current, detail)
            self._renew(rot)
            cut = holdout_split(dataset.rows, self.config.holdout_share)
            candidate, estimator = self._train(rot, current, dataset, cut, detail)
            self._renew(rot)
            gate = self._gate(rot, current, candidate, dataset, cut, detail)
            self._renew(rot)
            version = self._promote(rot, current, candidate, estimator, dataset, cut,
                                    gate, detail)
        except _JobEnds as end:
            return self._finish(rot, end.state, detail, **end.fields)
        detail["timings_s"]["total"] = round(time.monotonic() - started, 3)
        return self._finish(rot, PROMOTED, detail, produced_version=version,
                            error=detail.get("publish_error"),
                            **_scores(gate, dataset))

    def _current(self, rot: RotEvent):
        """The default version, which must still be the rotting one, loaded."""
        try:
            current_version = self.registry.default_version(rot.model)
        except RegistryError as exc:
            raise _JobEnds(FAILED, error=str(exc)) from None
        if current_version != rot.version:
            raise _JobEnds(REJECTED, error=(
                f"superseded: {rot.version} is no longer the default of {rot.model} "
                f"({current_version} is); its rot needs no new version"))
        try:
            current = self.registry.load_model(rot.model, current_version)
        except (RegistryError, ArtifactError) as exc:
            raise _JobEnds(FAILED, error=f"cannot load the current default "
                                         f"{current_version}: {exc}") from None
        _LOGGER.info("step=current rot_id=%s model=%s version=%s estimator=%s "
                     "baseline_accuracy=%s", rot.rot_id, rot.model, current_version,
                     current.info.estimator, _fmt(current.info.baseline_accuracy))
        return current

    def _dataset(self, rot: RotEvent, current, detail: dict) -> Dataset:
        """Feedback since the change point, labelled; too little ends the job."""
        t0 = time.monotonic()
        since = _since(rot, self.config.lookback_s)
        rows = self._read(rot.model, since)
        dataset = build_dataset(rows, current.info.classes, current.info.n_features)
        seconds = detail["timings_s"]["read"] = round(time.monotonic() - t0, 3)
        detail.update(since=since.isoformat(), read_rows=dataset.read_rows,
                      excluded=dataset.excluded)
        _LOGGER.info("step=dataset rot_id=%s since=%s read_rows=%d usable_rows=%d "
                     "excluded=%s seconds=%.2f", rot.rot_id, since.isoformat(),
                     dataset.read_rows, dataset.rows, dataset.excluded or 0, seconds)
        short = self._shortage(dataset)
        if short:
            raise _JobEnds(INSUFFICIENT_DATA, rows=dataset.rows, error=short)
        return dataset

    def _train(self, rot: RotEvent, current, dataset: Dataset, cut: int, detail: dict):
        """Fit the candidate on the rows before the holdout, in a child process."""
        y_train = dataset.y[:cut]
        if len(set(y_train.tolist())) < 2:
            raise _JobEnds(INSUFFICIENT_DATA, rows=dataset.rows, error=(
                f"the {cut} training rows (before the newest {dataset.rows - cut}) all "
                f"have the label {y_train[0]!r}; will retry when more feedback arrives"))
        estimator = self.config.estimator or current.info.estimator
        if estimator not in ESTIMATORS:
            estimator = DEFAULT_ESTIMATOR
        params = current.info.params if estimator == current.info.estimator else {}
        detail["estimator"] = estimator
        t0 = time.monotonic()
        try:
            candidate = train_in_child(dataset.X[:cut], y_train, estimator, params,
                                       time_limit_s=self.config.time_limit_s, fit=self.fit)
        except TrainingFailed as exc:
            detail["timings_s"]["train"] = round(time.monotonic() - t0, 3)
            raise _JobEnds(FAILED, rows=dataset.rows, error=str(exc)) from None
        seconds = detail["timings_s"]["train"] = round(time.monotonic() - t0, 3)
        _LOGGER.info("step=train rot_id=%s estimator=%s train_rows=%d seconds=%.2f",
                     rot.rot_id, estimator, cut, seconds)
        return candidate, estimator

    def _gate(self, rot: RotEvent, current, candidate, dataset: Dataset, cut: int,
              detail: dict):
        """Score candidate and current on the same newest rows; a loss ends the job."""
        t0 = time.monotonic()
        X_hold, y_hold = dataset.X[cut:], dataset.y[cut:]
        cand_metrics = holdout_metrics(candidate, X_hold, y_hold)
        cur_metrics = holdout_metrics(current.estimator, X_hold, y_hold)
        gate = decide(cand_metrics["accuracy"], cur_metrics["accuracy"], self.config.margin)
        detail["timings_s"]["gate"] = round(time.monotonic() - t0, 3)
        detail.update(holdout_rows=len(y_hold), margin=self.config.margin,
                      gate=gate.reason, candidate_metrics=cand_metrics,
                      current_metrics={**cur_metrics, "version": current.info.version})
        _LOGGER.info("step=gate rot_id=%s holdout_rows=%d candidate_accuracy=%.4f "
                     "current_accuracy=%.4f margin=%g promote=%s", rot.rot_id,
                     len(y_hold), gate.candidate_accuracy, gate.current_accuracy,
                     self.config.margin, gate.promote)
        if not gate.promote:
            raise _JobEnds(REJECTED, error=gate.reason, **_scores(gate, dataset))
        return gate

    def _promote(self, rot: RotEvent, current, candidate, estimator: str,
                 dataset: Dataset, cut: int, gate, detail: dict) -> str:
        """Register the candidate (once per rot event) and make it the default.

        The registry makes the "once" atomic (:meth:`Registry.register_version_once`
        with ``created_by="rot:<rot id>"``): an earlier attempt's ready version is
        reused if its file is intact (this candidate is then not used), its pending
        one is completed, and one whose file was altered is abandoned and replaced —
        whether that attempt stopped, or stalled past its lease and is still running.
        """
        t0 = time.monotonic()
        created_by = f"rot:{rot.rot_id}"
        try:
            registration = self.registry.register_version_once(
                rot.model, candidate, estimator=estimator, X_reference=dataset.X[:cut],
                baseline_accuracy=gate.candidate_accuracy, created_by=created_by,
                metrics={"holdout": detail["candidate_metrics"],
                         "current_on_holdout": detail["current_metrics"],
                         "holdout_start": dataset.event_times[cut].isoformat(),
                         "holdout_end": dataset.event_times[-1].isoformat(),
                         "excluded_rows": dataset.excluded, "margin": self.config.margin},
                train_start=dataset.event_times[0], train_end=dataset.event_times[cut - 1],
                train_rows=cut, parent_version=current.info.version)
        except RegistryError as exc:
            # e.g. the rot event's earlier version is altered and already the default
            raise _JobEnds(FAILED, error=f"cannot register the candidate: {exc}",
                           **_scores(gate, dataset)) from None
        version = registration.record.version
        detail["registration"] = registration.outcome
        if registration.abandoned:
            detail["abandoned_versions"] = list(registration.abandoned)
        _LOGGER.info("step=register rot_id=%s outcome=%s version=%s abandoned=%s",
                     rot.rot_id, registration.outcome, version,
                     ",".join(registration.abandoned) or "-")
        detail["published"] = self.registry.publish
        try:
            self.registry.set_default(
                rot.model, version, changed_by=created_by, if_current=rot.version,
                reason=f"rot {rot.kind} of {rot.version}: {gate.reason}")
        except DefaultChanged as exc:
            # registered but not promoted: a person (or the worker that took this job
            # over while this one stalled) changed the default meanwhile
            raise _JobEnds(REJECTED, error=f"superseded: {exc}", produced_version=version,
                           **_scores(gate, dataset)) from None
        except UpdateNotPublished as exc:
            detail["published"] = False
            detail["publish_error"] = str(exc)
            _LOGGER.error("step=publish rot_id=%s outcome=failed error=%s", rot.rot_id, exc)
        detail["timings_s"]["promote"] = round(time.monotonic() - t0, 3)
        return version

    def _read(self, model: str, since: dt.datetime):
        if self.config.dataset_source == "beam":
            from trainer.beam_dataset import read_feedback_with_beam
            return read_feedback_with_beam(self.settings, model, since)
        return read_feedback(self.client, model, since,
                             older_share=self.config.older_share)

    def _shortage(self, dataset: Dataset) -> str | None:
        need = self.config.min_rows
        if dataset.rows < need:
            return (f"{dataset.rows} usable feedback rows, {need} needed ({need - dataset.rows}"
                    f" more); excluded: {dataset.excluded or 'none'}; will retry when more "
                    "feedback arrives")
        if len(dataset.classes) < 2:
            return (f"all {dataset.rows} usable rows have the label {dataset.classes[0]!r}; "
                    "a classifier needs at least 2 classes; will retry when more arrive")
        return None

    # -- the sweep: retries without a Pub/Sub message ----------------------------------
    def sweep(self) -> list[JobOutcome]:
        """Retry due ``insufficient-data`` jobs and take over expired leases."""
        outcomes = []
        for job in self.jobs.due(self.config.retry_insufficient_s):
            rot = job.rot_event
            if job.state == INSUFFICIENT_DATA:
                have = count_feedback(self.client, rot.model,
                                      _since(rot, self.config.lookback_s),
                                      limit=self.config.min_rows)
                if have < self.config.min_rows:
                    _LOGGER.debug("step=sweep rot_id=%s outcome=still-short rows=%d",
                                  rot.rot_id, have)
                    continue
            _LOGGER.info("step=sweep rot_id=%s state=%s outcome=retry", rot.rot_id,
                         job.state)
            outcomes.append(self.handle(rot))
        return outcomes

    # -- the subscriber ----------------------------------------------------------------
    def _on_message(self, message) -> None:
        try:
            rot = RotEvent.from_json(message.data)
        except InvalidEvent as exc:
            # nack: after max_delivery_attempts the subscription's dead-letter policy
            # parks it on model-rot-deadletter with its payload
            _LOGGER.error("step=parse message_id=%s outcome=invalid reason=%r "
                          "delivery_attempt=%s", message.message_id, str(exc),
                          message.delivery_attempt)
            message.nack()
            return
        try:
            self.handle(rot)
        except Exception:  # noqa: BLE001 - nacked: redelivered, then dead-lettered
            _LOGGER.exception("step=handle rot_id=%s outcome=error action=nack "
                              "delivery_attempt=%s", rot.rot_id, message.delivery_attempt)
            time.sleep(NACK_BACKOFF_S)
            message.nack()
            return
        message.ack()  # the outcome is committed; the event is done

    def _sweep_logged(self) -> None:
        from google.api_core import exceptions as gexc
        from rotwatch.transactions import TransactionFailed
        try:
            self.sweep()
        except (gexc.GoogleAPICallError, gexc.RetryError, TransactionFailed) as exc:
            _LOGGER.error("step=sweep outcome=error error=%r (retrying in %gs)", exc,
                          self.config.sweep_interval_s)

    def run(self, stop: threading.Event | None = None) -> None:
        """Subscribe to the trainer subscription until ``stop`` is set."""
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
        import concurrent.futures

        stop = stop or threading.Event()
        # Beam's file systems (artifact I/O) take seconds to import: pay it now, not
        # in the first rot event's latency.
        from rotwatch.artifacts import warm_up
        warm_up()
        subscriber = self._subscriber or pubsub_v1.SubscriberClient()
        name = self.settings.subscription("trainer")
        try:
            subscriber.get_subscription(subscription=name)
        except gexc.NotFound:
            raise ServiceError(f"subscription {name} does not exist; create the topics "
                               f"and subscriptions with: {SETUP_COMMAND}") from None
        flow = pubsub_v1.types.FlowControl(
            max_messages=1,  # one job at a time: training needs the whole machine
            # keep extending a message's deadline for as long as one job may last
            max_lease_duration=int(self.config.lease_s))
        scheduler = ThreadScheduler(
            executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
        future = subscriber.subscribe(name, callback=self._on_message,
                                      flow_control=flow, scheduler=scheduler)
        _LOGGER.info("step=start subscription=%s owner=%s min_rows=%d margin=%g "
                     "outcome=listening", name, self.owner, self.config.min_rows,
                     self.config.margin)
        try:
            while not stop.is_set():
                if future.done():
                    future.result()  # raises what stopped the stream
                    raise ServiceError(f"the subscription stream on {name} ended")
                self._sweep_logged()
                stop.wait(self.config.sweep_interval_s)
        finally:
            future.cancel()
            try:
                future.result(timeout=10)
            except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError,
                    gexc.GoogleAPICallError):
                pass  # cancelled as asked
            if self._subscriber is None:
                subscriber.close()
            _LOGGER.info("step=stop subscription=%s owner=%s", name, self.owner)


class _JobEnds(Exception):
    """A step decided the job's outcome early (not an error: control flow)."""

    def __init__(self, state: str, **fields):
        super().__init__(state)
        self.state = state
        self.fields = fields


def _scores(gate, dataset: Dataset) -> dict:
    return {"candidate_accuracy": gate.candidate_accuracy,
            "current_accuracy": gate.current_accuracy, "rows": dataset.rows}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
