"""Fit an estimator in a child process with a time limit.

Training runs user-chosen estimators on data from the field: it can run out of memory,
crash in native code, or take far too long. In a child process none of that can take
the trainer service down: a crash or a timeout becomes :class:`TrainingFailed`
(the job ends ``failed``) and the service carries on with the next rot event.

Each training gets a fresh process started with the ``spawn`` method (a new
interpreter: no copies of the parent's gRPC clients or threads, which do not survive
``fork``). It sends back the fitted estimator as joblib bytes over a pipe. Starting
it costs one to three seconds here (Python plus scikit-learn's import); a warm spare
process would hide that, but on a two-core machine its import competes with the
service's own work, and the 30 s budget per rot event does not need it.

>>> fitted = train_in_child(X, y, "decision-tree", {}, time_limit_s=60)  # doctest: +SKIP
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import time
from typing import Any, Callable

__all__ = ["TrainingFailed", "TrainingTimeout", "TrainingCrashed", "fit_estimator",
           "train_in_child", "DEFAULT_TIME_LIMIT_S"]

_LOGGER = logging.getLogger(__name__)

# A decision tree on 100k rows fits in about a second; five minutes leaves room for
# forests and boosting on wide data while still ending a hung fit the same day.
DEFAULT_TIME_LIMIT_S = 300.0
# After a kill, how long to wait for the child to be reaped.
_REAP_S = 5.0


class TrainingFailed(RuntimeError):
    """Training did not produce a model; the message says why."""


class TrainingTimeout(TrainingFailed):
    pass


class TrainingCrashed(TrainingFailed):
    pass


def fit_estimator(X, y, estimator: str, params: dict) -> Any:
    """The default fit: :func:`rotwatch.estimators.make_estimator` then ``fit``."""
    from rotwatch.estimators import make_estimator
    return make_estimator(estimator, params).fit(X, y)


def _child_main(conn, fit: Callable, X, y, estimator: str, params: dict) -> None:
    import joblib
    try:
        fitted = fit(X, y, estimator, params)
        buffer = io.BytesIO()
        joblib.dump(fitted, buffer)
        conn.send(("ok", buffer.getvalue()))
    except Exception as exc:  # reported to the parent, which fails the job with it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _stop(proc) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(_REAP_S)


def train_in_child(X, y, estimator: str, params: dict, *,
                   time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                   fit: Callable = fit_estimator) -> Any:
    """Fit in a spawned child; the fitted estimator, or :class:`TrainingFailed`.

    ``time_limit_s`` covers the child's start (a second or more to import
    scikit-learn) and the fit. ``fit(X, y, estimator, params)`` must be importable by
    the child (a module-level function); tests pass one that crashes or hangs.
    """
    import joblib

    if time_limit_s <= 0:
        raise ValueError(f"time_limit_s={time_limit_s!r} must be > 0 (seconds)")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, name=f"train-{estimator}",
                       args=(sender, fit, X, y, estimator, dict(params)), daemon=True)
    started = time.monotonic()
    proc.start()
    sender.close()  # the parent's copy: EOF then means the child is gone
    try:
        if not receiver.poll(time_limit_s):
            raise TrainingTimeout(f"training {estimator} on {len(y)} rows took longer "
                                  f"than {time_limit_s:g} s and was stopped; raise the "
                                  "limit with --time-limit or choose a faster estimator")
        try:
            status, payload = receiver.recv()
        except EOFError:
            proc.join(_REAP_S)
            raise TrainingCrashed(f"the training process for {estimator} died with exit "
                                  f"code {proc.exitcode} before returning a model "
                                  "(a negative code is the signal that killed it)") from None
    finally:
        receiver.close()
        _stop(proc)
    if status != "ok":
        raise TrainingFailed(f"training {estimator} failed: {payload}")
    fitted = joblib.load(io.BytesIO(payload))
    _LOGGER.info("step=fit estimator=%s rows=%d seconds=%.2f", estimator, len(y),
                 time.monotonic() - started)
    return fitted
