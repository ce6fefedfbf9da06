"""Rot decisions per model version: three rules, each with its own cooldown.

* ``accuracy`` (windowed rule, :class:`WindowRules`): the Wilson upper bound of each of
  the last ``consecutive`` windows (adjacent, one period apart, each with at least
  ``min_n`` events) is below ``baseline - tolerance``
  (:func:`rotwatch.stats.accuracy_rot`). ``decided_at`` is the newest window's end.
* ``input-drift`` (:class:`WindowRules`): at least one feature's PSI against the
  version's reference statistics is over the threshold (and over sampling noise) in
  each of the last ``drift_consecutive`` windows; needs no labels.
* ``error-rate-change`` (:class:`ErrorMonitor`): a sequential detector
  (:mod:`pipelines.detector`) over the version's stream of errors in arrival order,
  for low delay; ``decided_at`` is the event time of the event that tipped it and
  ``change_point`` the event time where the detector dates the change.

Cooldown (per version and kind): after a rot event the version is silent for that
kind until its state changes — for the window rules, a window that is *healthy*
again (enough events and bound not below the limit / no drifted feature) re-arms
it; the detector re-arms itself, as it restarts from the change it found — **and**
at least ``cooldown_s`` of event time has passed since the last event of that kind
(a guard against flapping around the limit). Too few events never re-arm.

Everything here is pure; the DoFns at the bottom only read state, call and yield.
Rot ids are deterministic (:attr:`RotEvent.rot_id`), so a replay decides the same id
for the windowed kinds and storage/publication stay idempotent.
"""
from __future__ import annotations

import array
import dataclasses
import datetime as dt
import logging
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from rotwatch import stats
from rotwatch.events import DriftedFeature, RotEvent, format_time, from_millis, to_millis

__all__ = ["Alarm", "WindowRules", "ErrorMonitor", "DecideWindowRot",
           "DetectErrorRateChange", "DecideRot", "RuleSettings"]

_LOGGER = logging.getLogger(__name__)

# Event times kept per version to date the detector's change point; a change found
# further back than this is dated at the oldest time kept (and says so).
CHANGE_POINT_HISTORY = 4096


@dataclasses.dataclass(frozen=True)
class RuleSettings:
    """The thresholds of the three rules (a view of PipelineConfig)."""

    window_period_s: int = 60
    window_size_s: int = 300
    min_n: int = 50
    tolerance: float = 0.05
    consecutive: int = 3
    drift_consecutive: int = 2
    cooldown_s: int = 3600
    detector_warmup: int | None = None
    detector_delta: float | None = None       # None: the detector's own default
    detector_threshold: float | None = None
    detector_min_error: float | None = None   # floor of the baseline error it tests

    @classmethod
    def from_config(cls, config) -> "RuleSettings":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Alarm:
    """One version's alarm for one kind: armed, and when it last went off."""

    armed: bool = True
    last_ms: int | None = None

    def may_fire(self, at_ms: int, cooldown_s: int) -> bool:
        return self.armed and (self.last_ms is None
                               or at_ms - self.last_ms >= cooldown_s * 1000)

    def fire(self, at_ms: int) -> None:
        self.armed = False
        self.last_ms = at_ms

    def rearm(self) -> None:
        self.armed = True


@dataclasses.dataclass(frozen=True)
class _Window:
    start_ms: int
    end_ms: int
    n: int
    accuracy: float | None
    upper: float
    baseline: float | None
    drift: tuple
    drift_rows: int


class WindowRules:
    """The accuracy and input-drift rules over one version's window panes."""

    def __init__(self):
        self.windows: dict[int, _Window] = {}   # by end in ms; the latest pane wins
        self.accuracy_alarm = Alarm()
        self.drift_alarm = Alarm()

    def _run(self, newest_end: int, length: int, period_ms: int) -> list[_Window] | None:
        run = [self.windows.get(newest_end - i * period_ms) for i in range(length)]
        return None if any(w is None for w in run) else run[::-1]

    def update(self, s, rules: RuleSettings) -> list[RotEvent]:
        """Take one :class:`~pipelines.metrics.WindowStats` pane; return rot events."""
        period_ms = rules.window_period_s * 1000
        keep = max(rules.consecutive, rules.drift_consecutive) + 1
        w = _Window(to_millis(s.window_start), to_millis(s.window_end), s.n, s.accuracy,
                    s.upper, s.baseline_accuracy, tuple(s.drift), s.drift_rows)
        newest = max(self.windows, default=w.end_ms)
        if w.end_ms <= newest - keep * period_ms:
            return []  # a late pane of a window the rules no longer look at
        self.windows[w.end_ms] = w
        newest = max(newest, w.end_ms)
        for end in [e for e in self.windows if e <= newest - keep * period_ms]:
            del self.windows[end]
        latest = self.windows[newest]
        return [e for e in (self._accuracy(s, latest, rules, period_ms),
                            self._drift(s, latest, rules, period_ms)) if e is not None]

    def _accuracy(self, s, latest: _Window, rules: RuleSettings, period_ms: int):
        if latest.baseline is None:
            return None
        limit = latest.baseline - rules.tolerance
        if latest.n >= rules.min_n and latest.upper >= limit:
            self.accuracy_alarm.rearm()
            return None
        run = self._run(latest.end_ms, rules.consecutive, period_ms)
        if run is None or not stats.accuracy_rot(
                [x.upper for x in run], [x.n for x in run], latest.baseline,
                rules.tolerance, rules.min_n, rules.consecutive):
            return None
        if not self.accuracy_alarm.may_fire(latest.end_ms, rules.cooldown_s):
            return None
        self.accuracy_alarm.fire(latest.end_ms)
        # The decline is dated at the newest slice of the first bad window of the run:
        # the window before it was not (yet) clearly bad.
        first_bad = run[0]
        while True:
            earlier = self.windows.get(first_bad.end_ms - period_ms)
            if (earlier is None or earlier.n < rules.min_n or earlier.upper >= limit):
                break
            first_bad = earlier
        return RotEvent(
            model=s.model, version=s.version, kind="accuracy",
            decided_at=from_millis(latest.end_ms), window_start=from_millis(latest.start_ms),
            window_end=from_millis(latest.end_ms), n=latest.n, accuracy=latest.accuracy,
            baseline_accuracy=latest.baseline, bound=latest.upper,
            change_point=from_millis(first_bad.end_ms - period_ms),
            detail=(f"upper bound of accuracy below {limit:.4f} (baseline "
                    f"{latest.baseline:.4f} - tolerance {rules.tolerance}) in "
                    f"{rules.consecutive} consecutive windows: "
                    + ", ".join(f"{x.upper:.4f} (n={x.n})" for x in run)))

    def _drift(self, s, latest: _Window, rules: RuleSettings, period_ms: int):
        if latest.drift_rows == 0:
            return None  # no reference statistics or too few rows: no verdict
        if not latest.drift:
            self.drift_alarm.rearm()
            return None
        run = self._run(latest.end_ms, rules.drift_consecutive, period_ms)
        if run is None or not all(x.drift for x in run):
            return None
        if not self.drift_alarm.may_fire(latest.end_ms, rules.cooldown_s):
            return None
        self.drift_alarm.fire(latest.end_ms)
        return RotEvent(
            model=s.model, version=s.version, kind="input-drift",
            decided_at=from_millis(latest.end_ms), window_start=from_millis(latest.start_ms),
            window_end=from_millis(latest.end_ms), n=latest.n, accuracy=latest.accuracy,
            baseline_accuracy=latest.baseline,
            change_point=from_millis(run[0].end_ms - period_ms),
            drifted_features=tuple(DriftedFeature(i, psi) for i, psi in latest.drift),
            detail=(f"PSI over threshold in {rules.drift_consecutive} consecutive "
                    f"windows; newest window tested {latest.drift_rows} rows"))


def _make_detector(baseline_accuracy: float | None, warmup: int | None,
                   delta: float | None = None, threshold: float | None = None,
                   min_error: float | None = None):
    from pipelines.detector import ErrorRateDetector
    kwargs = {}
    if baseline_accuracy is not None:
        # A small holdout cannot show an error below ~3/rows (a perfect 60-row holdout
        # says "under 5%"): min_error keeps such a baseline from making every error
        # look like a rise.
        kwargs["baseline_error"] = max(1.0 - baseline_accuracy, min_error or 0.0)
    for name, value in (("warmup", warmup), ("delta", delta), ("threshold", threshold)):
        if value is not None:
            kwargs[name] = value
    return ErrorRateDetector(**kwargs)


class ErrorMonitor:
    """One version's sequential detector plus what dates its change point.

    ``updates`` counts events fed since the detector last (re)started; the ring keeps
    the event time and error of the last :data:`CHANGE_POINT_HISTORY` of them.
    """

    def __init__(self, baseline_accuracy: float | None = None, warmup: int | None = None,
                 delta: float | None = None, threshold: float | None = None,
                 min_error: float | None = None):
        self.detector = _make_detector(baseline_accuracy, warmup, delta, threshold,
                                       min_error)
        self.baseline_accuracy = baseline_accuracy
        self.updates = 0
        self.times = array.array("q", bytes(8 * CHANGE_POINT_HISTORY))
        self.errors = bytearray(CHANGE_POINT_HISTORY)
        self.alarm = Alarm()

    # Pickled as the detector's own JSON-ready state, so the stored monitor does not
    # depend on the detector class's private layout.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["detector"] = self.detector.to_state()
        return state

    def __setstate__(self, state):
        from pipelines.detector import ErrorRateDetector
        state = dict(state)
        state["detector"] = ErrorRateDetector.from_state(state["detector"])
        self.__dict__.update(state)

    def _slot(self, update_no: int) -> int:
        return (update_no - 1) % CHANGE_POINT_HISTORY

    def observe(self, model: str, version: str, correct: bool, event_time: dt.datetime,
                rules: RuleSettings) -> RotEvent | None:
        at_ms = to_millis(event_time)
        if self.detector.drift_detected:
            self.updates = 0  # the detector restarts from the change on this update
        self.updates += 1
        slot = self._slot(self.updates)
        self.times[slot] = at_ms
        self.errors[slot] = 0 if correct else 1
        self.detector.update(0 if correct else 1)
        if not self.detector.drift_detected:
            return None
        if not self.alarm.may_fire(at_ms, rules.cooldown_s):
            return None
        self.alarm.fire(at_ms)
        self.alarm.rearm()  # a new detection is a new change: only the cooldown holds
        return self._event(model, version, at_ms)

    def _event(self, model: str, version: str, at_ms: int) -> RotEvent:
        # change_point = updates seen before the change: the decline starts at the next.
        first = int(self.detector.change_point or 0) + 1
        oldest = max(1, self.updates - CHANGE_POINT_HISTORY + 1)
        note = ""
        if first < oldest:
            note = f"; change point older than the {CHANGE_POINT_HISTORY} events kept"
            first = oldest
        first = min(first, self.updates)
        since = [self.errors[self._slot(k)] for k in range(first, self.updates + 1)]
        accuracy = 1.0 - sum(since) / len(since)
        change_ms = self.times[self._slot(first)]
        return RotEvent(
            model=model, version=version, kind="error-rate-change",
            decided_at=from_millis(at_ms), n=len(since), accuracy=accuracy,
            baseline_accuracy=self.baseline_accuracy,
            change_point=from_millis(change_ms),
            detail=(f"error rate changed after event {first} of {self.updates} since the "
                    f"detector's last start (at {format_time(from_millis(change_ms))}); "
                    f"accuracy since then {accuracy:.4f} over {len(since)} events{note}"))


class DecideWindowRot(beam.DoFn):
    """((model, version), WindowStats) -> RotEvent (accuracy, input-drift)."""

    RULES = ReadModifyWriteStateSpec("rules", PickleCoder())

    def __init__(self, rules: RuleSettings):
        self._rules = rules
        self._events = Metrics.counter("rotwatch.rot", "window_rot_events")

    def process(self, element, state=beam.DoFn.StateParam(RULES)):
        _, s = element
        rules = state.read() or WindowRules()
        events = rules.update(s, self._rules)
        state.write(rules)
        for event in events:
            self._events.inc()
            _LOGGER.info("rot decided rot_id=%s kind=%s", event.rot_id, event.kind)
            yield event


class DetectErrorRateChange(beam.DoFn):
    """((model, version), [FeedbackEvent, ...]) -> RotEvent (error-rate-change).

    Takes a bundle's events of one version at once (as the dedupe step passes them
    on): one state read and write per bundle instead of per event. It observes them
    in event time order (then by id): the order within a bundle is the runner's,
    event time is the stream's."""

    MONITOR = ReadModifyWriteStateSpec("monitor", PickleCoder())

    def __init__(self, catalog, rules: RuleSettings):
        self._catalog = catalog
        self._rules = rules
        self._events = Metrics.counter("rotwatch.rot", "detector_rot_events")

    def process(self, element, state=beam.DoFn.StateParam(MONITOR)):
        (model, version), events = element
        monitor = state.read()
        if monitor is None:
            info = self._catalog.get(model, version)
            monitor = ErrorMonitor(getattr(info, "baseline_accuracy", None),
                                   self._rules.detector_warmup, self._rules.detector_delta,
                                   self._rules.detector_threshold,
                                   self._rules.detector_min_error)
        for event in sorted(events, key=lambda e: (e.event_time, e.event_id)):
            rot = monitor.observe(model, version, event.correct, event.event_time,
                                  self._rules)
            if rot is not None:
                self._events.inc()
                _LOGGER.info("rot decided rot_id=%s kind=%s", rot.rot_id, rot.kind)
                yield rot
        state.write(monitor)


class DecideRot(beam.PTransform):
    """(window stats, unique events as ``((model, version), [events...])``) -> rot
    events of all three kinds."""

    def __init__(self, config, catalog, label: str | None = None):
        super().__init__(label)
        self._rules = RuleSettings.from_config(config)
        self._catalog = catalog

    def expand(self, inputs):
        window_stats, events = inputs
        # State lives per key *and window*: both inputs move to the global window so a
        # version's rules see all of its windows, and its detector every event.
        by_window = (window_stats
                     | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
                     | "KeyStats" >> beam.Map(lambda s: ((s.model, s.version), s))
                     .with_output_types(Tuple[Tuple[str, str], Any])
                     | "DecideWindowRot" >> beam.ParDo(DecideWindowRot(self._rules)))
        # events come per version and bundle, in the global window (the detector's
        # state spans all time)
        by_detector = events | "DetectErrorRateChange" >> beam.ParDo(
            DetectErrorRateChange(self._catalog, self._rules))
        return (by_window, by_detector) | "MergeRotEvents" >> beam.Flatten()
