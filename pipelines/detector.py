"""A sequential detector for a rise in a model's error rate (rot kind ``error-rate-change``).

The pipeline feeds it one value per feedback event, ``x = 1`` if the prediction was
wrong and ``0`` if it was right, and asks after each update whether the error rate
has gone up. It is a one-sided Bernoulli CUSUM (Page's test): it adds up the
log-likelihood ratio of "error rate ``p0 + delta``" against "error rate ``p0``" and
alarms when the sum passes ``threshold``; the estimated change point is the last
time the sum was zero, i.e. where the run of bad news began.

``p0`` is the version's baseline error. Pass it (``1 - baseline accuracy`` from
training) or let the detector learn it: it then watches ``warmup`` events first and
keeps refining the estimate with every event up to the last zero of the sum, so the
data of a decline never pulls the baseline up. The estimate is used with a margin of
``margin`` standard errors above it, which keeps a noisy early estimate from causing
false alarms and fades as evidence grows.

The contract is River's (``river.base.DriftDetector``): settings are the public
``__init__`` arguments, running state is underscored, :meth:`update` then
:attr:`drift_detected`, and the detector resets itself on the update after a
detection. It is pure Python, pickles, and round-trips through a small JSON-ready
dict (:meth:`to_state` / :meth:`from_state`) so it can live in a Beam stateful DoFn.

After a detection it starts over on the new level, learning it even if
``baseline_error`` was given: the next alarm needs a further rise, so a rotten
version alarms once rather than every few dozen events.

``bench/detectors.py`` compares it with River's ADWIN, DDM, EDDM, HDDM_A, HDDM_W,
PageHinkley and KSWIN on the same 60 streams (error-rate steps and ramps, and
decision trees meeting a concept change), all with default settings and no known
baseline. Measured: 58/60 changes found within 500 events, 0.11 false alarms per
10,000 events, median delay 76 events; the best River detector overall, ADWIN,
52/60, 0.30 and 103 (on the 52 changes both find, rotwatch is first every time).
EDDM finds 60/60, but with 24 false alarms per 10,000 events, which alone would land
in 42 of the 60 acceptance windows. The defaults are one setting for every stream,
checked on 16 further seeds of the same streams (175/192 found) and on stationary
streams (``--stationary``: one false alarm per 117,000-333,000 events with a learnt
baseline). A lower threshold finds more small rises (threshold 6 with delta 0.06:
183/192) at 2-4 times the false alarms on stationary streams, so it is not the
default; ``--detector_threshold`` and ``--detector_delta`` set it per pipeline.

Try it::

    .venv/bin/python -m doctest -v pipelines/detector.py
"""
from __future__ import annotations

import logging
import math
from typing import Mapping

__all__ = ["ErrorRateDetector", "STATE_VERSION"]

_LOGGER = logging.getLogger(__name__)

# Bumped when the to_state() layout changes; from_state() refuses other versions.
STATE_VERSION = 1
# The smallest baseline error used. A model that made no mistakes in training (or in
# the warm-up) would otherwise make every single error look like overwhelming
# evidence; with 1% and the default delta, about four errors close together alarm.
MIN_BASELINE_ERROR = 0.01
# The largest baseline error: a stream that is (nearly) all errors cannot rise, and
# the rise tested is capped at half the room left above the baseline.
_MAX_BASELINE_ERROR = 1.0 - 1e-6

_STATE_KEYS = ("delta", "threshold", "warmup", "margin", "baseline_error", "n", "errors",
               "ref_n", "ref_errors", "s", "zero_at", "drift_detected", "change_point",
               "relearn")


class ErrorRateDetector:
    """One-sided Bernoulli CUSUM on an error stream, with a self-learnt baseline.

    Parameters
    ----------
    delta : float
        The rise of the error rate the test is tuned to (``p1 = p0 + delta``): the
        alarm is fastest for a rise of about this size and still comes for other
        sizes. 0.1 means "ten points of accuracy lost".
    threshold : float
        Alarm level of the log-likelihood-ratio sum. Higher means fewer false alarms
        and later detection. With a known baseline, 8.0 gives on average one false
        alarm per roughly 80,000-220,000 events of a stationary stream (measured on
        2,000,000-event streams for baseline errors 0.02-0.3: ``bench/detectors.py
        --stationary 2000000``); with a learnt baseline, fewer still.
    warmup : int
        Events used only to learn the baseline before the test starts (ignored when
        ``baseline_error`` is given).
    margin : float
        Standard errors added to the learnt baseline (ignored when ``baseline_error``
        is given).
    baseline_error : float or None
        The version's known error rate (``1 - baseline accuracy``), or ``None`` to
        learn it from the stream.

    Attributes
    ----------
    drift_detected : bool
        True right after the update that detected a rise.
    change_point : int or None
        After a detection, the number of updates (since start or reset) before the
        first event of the rise: ``n - change_point`` events are the bad run.
    n : int
        Updates since start or the last reset.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> stream = [int(rng.random() < 0.1) for _ in range(1000)]      # error 10%
    >>> stream += [int(rng.random() < 0.3) for _ in range(1000)]     # then 30%
    >>> detector = ErrorRateDetector()
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"rise detected at event {i}, began at {detector.change_point}")
    ...         break
    rise detected at event 1031, began at 991
    """

    def __init__(self, delta: float = 0.1, threshold: float = 8.0, warmup: int = 300,
                 margin: float = 2.0, baseline_error: float | None = None):
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta={delta!r} must be in (0, 1): the rise of the error "
                             "rate to detect, e.g. 0.1")
        if not threshold > 0:
            raise ValueError(f"threshold={threshold!r} must be > 0, e.g. 8.0")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup={warmup!r} must be an integer >= 0, e.g. 300")
        if not margin >= 0:
            raise ValueError(f"margin={margin!r} must be >= 0 standard errors, e.g. 2.0")
        if baseline_error is not None and not 0.0 <= baseline_error <= 1.0:
            raise ValueError(f"baseline_error={baseline_error!r} must be in [0, 1]: pass "
                             "1 - baseline accuracy, or None to learn it")
        self.delta = delta
        self.threshold = threshold
        self.warmup = warmup
        self.margin = margin
        self.baseline_error = baseline_error
        self._reset()

    def _reset(self) -> None:
        self._n = 0               # updates since start / reset
        self._errors = 0          # errors among them
        self._ref_n = 0           # updates up to the last zero of the sum ...
        self._ref_errors = 0      # ... and their errors: the baseline sample
        self._s = 0.0             # the CUSUM sum
        self._zero_at = 0         # n at the last zero of the sum
        self._drift_detected = False
        self._change_point = None
        self._relearn = False     # after a detection: learn the new level, even if
        #                           baseline_error was given (see update)

    # -- read-only views ------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self._n

    @property
    def drift_detected(self) -> bool:
        return self._drift_detected

    @property
    def change_point(self) -> int | None:
        return self._change_point

    @property
    def warming_up(self) -> bool:
        """True while the baseline is still being learnt (no alarm possible)."""
        return self._learning() and self._n < self.warmup

    def _learning(self) -> bool:
        return self.baseline_error is None or self._relearn

    def baseline(self) -> float:
        """The error rate the test currently compares against (``p0``)."""
        if not self._learning():
            p0 = self.baseline_error
        else:
            # Jeffreys-smoothed estimate, moved up by `margin` standard errors.
            n = self._ref_n + 1.0
            p = (self._ref_errors + 0.5) / n
            p0 = p + self.margin * math.sqrt(p * (1.0 - p) / n)
        return min(max(p0, MIN_BASELINE_ERROR), _MAX_BASELINE_ERROR)

    # -- the test -----------------------------------------------------------------------
    def update(self, x) -> None:
        """Read one event: ``1``/``True`` for a wrong prediction, ``0``/``False`` for a
        right one."""
        if x is True or x == 1:
            x = 1
        elif x is False or x == 0:
            x = 0
        else:
            raise ValueError(f"x={x!r} must be 1 (wrong prediction) or 0 (right)")
        if self._drift_detected:
            # Start over on the level reached: the next alarm needs a further rise.
            # A known baseline describes the version before the rise, so it is not
            # used again (a rotten version would otherwise alarm every few dozen
            # events); _reset() by hand restores it.
            self._reset()
            self._relearn = True
        if self.warming_up:
            self._n += 1
            self._errors += x
            self._ref_n, self._ref_errors = self._n, self._errors
            self._zero_at = self._n
            return
        p0 = self.baseline()
        p1 = p0 + min(self.delta, (1.0 - p0) / 2.0)
        step = math.log(p1 / p0) if x else math.log((1.0 - p1) / (1.0 - p0))
        self._n += 1
        self._errors += x
        self._s = max(0.0, self._s + step)
        if self._s == 0.0:
            # No evidence of a rise: everything so far describes the baseline.
            self._zero_at = self._n
            self._ref_n, self._ref_errors = self._n, self._errors
        elif self._s > self.threshold:
            self._drift_detected = True
            self._change_point = self._zero_at
            _LOGGER.debug("error rate rise n=%d change_point=%d baseline=%.4f",
                          self._n, self._change_point, p0)

    # -- state for Beam -------------------------------------------------------------------
    def to_state(self) -> dict:
        """Settings and running state as a small JSON-ready dict."""
        return {"version": STATE_VERSION, "delta": self.delta, "threshold": self.threshold,
                "warmup": self.warmup, "margin": self.margin,
                "baseline_error": self.baseline_error, "n": self._n,
                "errors": self._errors, "ref_n": self._ref_n,
                "ref_errors": self._ref_errors, "s": self._s, "zero_at": self._zero_at,
                "drift_detected": self._drift_detected,
                "change_point": self._change_point, "relearn": self._relearn}

    @classmethod
    def from_state(cls, state: Mapping) -> "ErrorRateDetector":
        """The detector :meth:`to_state` described; it continues exactly where that
        one stood."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be the dict from to_state(), got "
                             f"{type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}; start a new detector for this stream")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)}; pass the dict from "
                             "to_state() unchanged")
        detector = cls(delta=state["delta"], threshold=state["threshold"],
                       warmup=state["warmup"], margin=state["margin"],
                       baseline_error=state["baseline_error"])
        detector._n = int(state["n"])
        detector._errors = int(state["errors"])
        detector._ref_n = int(state["ref_n"])
        detector._ref_errors = int(state["ref_errors"])
        detector._s = float(state["s"])
        detector._zero_at = int(state["zero_at"])
        detector._drift_detected = bool(state["drift_detected"])
        cp = state["change_point"]
        detector._change_point = None if cp is None else int(cp)
        detector._relearn = bool(state["relearn"])
        return detector

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(delta={self.delta}, threshold={self.threshold}, "
                f"warmup={self.warmup}, margin={self.margin}, "
                f"baseline_error={self.baseline_error})")
