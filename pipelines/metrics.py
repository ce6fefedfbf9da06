"""Windowed accuracy and input drift per model version.

:class:`WindowedAccuracy` puts each (deduplicated) event into event-time sliding
windows per ``(model, version)``, counts ``n`` and ``correct`` and keeps a fixed-size
sample of the feature rows; panes fire when the watermark passes the window's end and
again for late feedback within the allowed lateness, each carrying the window's full
count so far (:class:`AccumulatePanes`). :class:`ScoreWindow` adds the Wilson
interval and the per-feature PSI against the version's reference statistics, giving
one :class:`WindowStats` per pane. :func:`window_metric_entity` stores a pane as a
``WindowMetric`` entity keyed by model/version/window, so a later pane overwrites an
earlier one. The counting starts in :class:`CountInWindows`, one step that assigns each
event its sliding windows and adds it to its bundle's partial counts.

:class:`SplitTooLate` (local runners; in :class:`CountInWindows`) takes out, before
windowing, feedback whose
every window has expired — its last window's end plus the allowed lateness is behind
the clock, which is the watermark there — so it is reported instead of being dropped
silently by the windowing: a late report per event on ``feedback-deadletter``
(``rotwatch_stage=late``, ``rotwatch_field=event_time``, a reason naming the window
that closed and the command that counts it), the counter ``too_late_for_windows``
and a warning per bundle. The event is valid and already stored as ``Feedback``
(the report is not a refusal: stored + refused = published still holds);
``rotwatch pipeline recompute`` counts it in its windows. Dataflow reports such drops
itself (its dropped-due-to-lateness metric).

The sample is a bottom-k sketch (the ``k`` rows with the smallest id hashes): uniform,
exactly mergeable, and the same whatever the arrival order, so an accumulating late
pane and a replay after a restart score the same rows.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import json
import logging
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from rotwatch import kinds, stats
from rotwatch.events import format_time, from_millis, to_millis
from pipelines.bundling import CombineInBundle, KeepAssignedWindows, MergeAccumulators
from pipelines.dedupe import id_hash
from pipelines.parse import DeadLetter
from pipelines.store import make_entity

__all__ = ["WindowCounts", "WindowStats", "AccuracyCombineFn", "ScoreWindow",
           "AccumulatePanes", "WindowedAccuracy", "score_window", "window_metric_entity",
           "prefer_fuller", "make_trigger", "SplitTooLate", "TOO_LATE", "STAGE_LATE",
           "last_window_end_ms", "late_report", "CountInWindows"]

_LOGGER = logging.getLogger(__name__)

_PANES = {PaneInfoTiming.EARLY: "early", PaneInfoTiming.ON_TIME: "on_time",
          PaneInfoTiming.LATE: "late"}
TOO_LATE = "too_late"   # the tagged output of SplitTooLate: late reports
STAGE_LATE = "late"     # rotwatch_stage of a late report on feedback-deadletter


def last_window_end_ms(event_ms: int, size_s: int, period_s: int) -> int:
    """End of the last sliding window (size, period) that holds ``event_ms``."""
    period_ms = period_s * 1000
    return event_ms - event_ms % period_ms + size_s * 1000


def late_report(event, now: dt.datetime, size_s: int, period_s: int,
                allowed_lateness_s: int) -> DeadLetter:
    """The report that ``event`` is too late for any window (it is stored, not
    refused): its JSON and attributes, ``rotwatch_stage=late`` and a reason naming
    when its last window closed and the command that counts it in its windows."""
    last_end_ms = last_window_end_ms(to_millis(event.event_time), size_s, period_s)
    first_start = from_millis(last_end_ms - (2 * size_s - period_s) * 1000)
    last_end = from_millis(last_end_ms)
    closed = last_end + dt.timedelta(seconds=allowed_lateness_s)
    return DeadLetter(
        payload=event.to_json(), attributes=event.attributes(), stage=STAGE_LATE,
        field="event_time", failed_at=now,
        reason=(f"too late for any window: event_time {format_time(event.event_time)} "
                f"arrived {(now - event.event_time).total_seconds():.0f} s after it; its "
                f"last window closed for good at {format_time(closed)} (allowed "
                f"lateness {allowed_lateness_s} s). Stored as Feedback "
                f"{event.event_id}, not in the streaming window metrics; to count it: "
                f"rotwatch pipeline recompute --start {format_time(first_start)} --end "
                f"{format_time(last_end)} --model {event.model} --window_size_s {size_s}"
                f" --window_period_s {period_s} --write_metrics true"))


class SplitTooLate(beam.DoFn):
    """Events -> main | ``too_late``: a :func:`late_report` for each event whose every
    window expired by the clock. :class:`CountInWindows` does the same in its own
    step (:meth:`expired`, :meth:`report`; :meth:`finish_bundle` for the warning)."""

    def __init__(self, size_s: int, period_s: int, allowed_lateness_s: int, clock=None):
        self._size_s, self._period_s = size_s, period_s
        self._lateness_s = allowed_lateness_s
        self._clock = clock
        self._late = Metrics.counter("rotwatch.metrics", "too_late_for_windows")

    def start_bundle(self):
        self._late_in_bundle = []

    def now(self) -> dt.datetime:
        return self._clock() if self._clock else dt.datetime.now(dt.timezone.utc)

    def expired(self, event_ms: int, now_ms: int) -> bool:
        """Whether every window of an event at ``event_ms`` has expired at ``now_ms``."""
        return now_ms > (last_window_end_ms(event_ms, self._size_s, self._period_s)
                         + self._lateness_s * 1000)

    def report(self, event, now: dt.datetime) -> DeadLetter:
        """The late report for an :meth:`expired` ``event``, counted and logged."""
        self._late.inc()
        self._late_in_bundle.append(event.event_time)
        return late_report(event, now, self._size_s, self._period_s, self._lateness_s)

    def process(self, event):
        now = self.now()
        if self.expired(to_millis(event.event_time), to_millis(now)):
            yield beam.pvalue.TaggedOutput(TOO_LATE, self.report(event, now))
        else:
            yield event

    def finish_bundle(self):
        if self._late_in_bundle:
            _LOGGER.warning(
                "feedback too late for any window count=%d oldest=%s allowed_lateness=%ss"
                ": stored as Feedback, reported on the dead-letter topic with "
                "rotwatch_stage=late, not in the window metrics (rotwatch pipeline "
                "recompute counts it)", len(self._late_in_bundle),
                format_time(min(self._late_in_bundle)), self._lateness_s)
            self._late_in_bundle = []


@dataclasses.dataclass(frozen=True)
class WindowCounts:
    n: int
    correct: int
    rows: tuple = ()   # sampled feature rows


@dataclasses.dataclass(frozen=True)
class WindowStats:
    """One pane of one version's window, scored."""

    model: str
    version: str
    window_start: dt.datetime
    window_end: dt.datetime
    n: int
    correct: int
    accuracy: float | None
    lower: float
    upper: float
    pane: str = "on_time"
    pane_index: int = 0
    baseline_accuracy: float | None = None
    drift: tuple = ()           # ((feature index, psi), ...) over the threshold
    drift_rows: int = 0         # rows the drift test saw (0: not tested)


class AccuracyCombineFn(beam.CombineFn):
    """Events -> :class:`WindowCounts` with a bottom-``sample_size`` row sample."""

    def __init__(self, sample_size: int = 1000):
        if sample_size < 0:
            raise ValueError(f"sample_size={sample_size} must be >= 0")
        self._k = sample_size

    def create_accumulator(self):
        return [0, 0, []]  # n, correct, max-heap of (-hash, features)

    def _offer(self, heap, h, row):
        if len(heap) < self._k:
            heapq.heappush(heap, (-h, row))
        elif self._k and h < -heap[0][0]:
            heapq.heapreplace(heap, (-h, row))

    def add_input(self, acc, event):
        acc[0] += 1
        acc[1] += 1 if event.correct else 0
        self._offer(acc[2], id_hash(event.event_id), tuple(event.features))
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for n, correct, heap in accumulators:
            out[0] += n
            out[1] += correct
            for neg_h, row in heap:
                self._offer(out[2], -neg_h, row)
        return out

    def extract_output(self, acc):
        rows = tuple(row for _, row in sorted(acc[2], reverse=True))
        return WindowCounts(acc[0], acc[1], rows)


class CountInWindows(CombineInBundle):
    """``((model, version), [events...])`` -> ``((model, version), partial counts)``
    per sliding window and bundle, in one step: ``WindowInto(SlidingWindows)`` and
    :class:`CombineInBundle` as one (the bundle-based DirectRunner costs ~10 µs per
    element and step, and a sliding WindowInto copies each event into every window).
    With ``late`` (a :class:`SplitTooLate`) events whose every window expired become
    late reports on ``too_late`` instead of being counted (windowing would drop
    them)."""

    def __init__(self, combine_fn: beam.CombineFn, size_s: int, period_s: int,
                 late: SplitTooLate | None = None):
        super().__init__(combine_fn)
        self._size_ms, self._period_ms = size_s * 1000, period_s * 1000
        self._late_fn = late

    def start_bundle(self):
        super().start_bundle()
        self._windows = {}   # start ms -> IntervalWindow, made once per bundle
        if self._late_fn is not None:
            self._late_fn.start_bundle()

    def _window(self, start_ms: int) -> window.IntervalWindow:
        found = self._windows.get(start_ms)
        if found is None:
            found = self._windows[start_ms] = window.IntervalWindow(
                Timestamp(micros=start_ms * 1000),
                Timestamp(micros=(start_ms + self._size_ms) * 1000))
        return found

    def process(self, element):
        key, events = element
        late = self._late_fn
        if late is not None:   # one clock reading per version and bundle
            now = late.now()
            now_ms = to_millis(now)
        size_ms, period_ms = self._size_ms, self._period_ms
        for event in events:
            event_ms = to_millis(event.event_time)
            if late is not None and late.expired(event_ms, now_ms):
                yield beam.pvalue.TaggedOutput(TOO_LATE, late.report(event, now))
                continue
            timestamp = Timestamp(micros=event_ms * 1000)
            # SlidingWindows.assign in whole ms (events carry ms): every start
            # s = k * period with s <= event < s + size
            last_start = event_ms - event_ms % period_ms
            for start_ms in range(last_start, event_ms - size_ms, -period_ms):
                self._add_to((key, self._window(start_ms)), event, timestamp)

    def finish_bundle(self):
        if self._late_fn is not None:
            self._late_fn.finish_bundle()
        yield from super().finish_bundle()


def score_window(model: str, version: str, start: dt.datetime, end: dt.datetime,
                 counts: WindowCounts, info, z: float = 1.96, drift_threshold: float = 0.2,
                 drift_min_n: int = 100, pane: str = "on_time",
                 pane_index: int = 0) -> WindowStats:
    """Wilson interval and drift for one window's counts (pure)."""
    lower, upper = stats.wilson_interval(counts.correct, counts.n, z)
    drift, drift_rows = (), 0
    reference = getattr(info, "reference_stats", None)
    if reference and len(counts.rows) >= drift_min_n:
        try:
            drift = tuple((int(i), float(psi)) for i, psi in stats.feature_drift(
                reference, counts.rows, threshold=drift_threshold, min_n=drift_min_n))
            drift_rows = len(counts.rows)
        except ValueError as exc:
            _LOGGER.warning("drift not scored model=%s version=%s reason=%s",
                            model, version, exc)
    return WindowStats(
        model=model, version=version, window_start=start, window_end=end, n=counts.n,
        correct=counts.correct, accuracy=counts.correct / counts.n if counts.n else None,
        lower=lower, upper=upper, pane=pane, pane_index=pane_index,
        baseline_accuracy=getattr(info, "baseline_accuracy", None), drift=drift,
        drift_rows=drift_rows)


class ScoreWindow(beam.DoFn):
    """((model, version), WindowCounts) + window + pane -> WindowStats.

    Empty panes (n = 0) are skipped and counted; so are windows that start before
    ``replay_from`` (only partly replayed after a restart: their stored value stays)."""

    def __init__(self, catalog, z=1.96, drift_threshold=0.2, drift_min_n=100,
                 replay_from: dt.datetime | None = None):
        self._catalog = catalog
        self._z = z
        self._drift_threshold = drift_threshold
        self._drift_min_n = drift_min_n
        self._replay_from_ms = None if replay_from is None else to_millis(replay_from)
        self._empty = Metrics.counter("rotwatch.metrics", "empty_panes")
        self._partial = Metrics.counter("rotwatch.metrics", "replayed_partial_windows")
        self._panes = Metrics.counter("rotwatch.metrics", "window_panes")

    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        (model, version), counts = element
        timing = _PANES.get(pane.timing, "on_time") if pane else "on_time"
        if counts.n == 0:
            self._empty.inc()
            return
        start_ms = w.start.micros // 1000
        if self._replay_from_ms is not None and start_ms < self._replay_from_ms:
            self._partial.inc()
            return
        self._panes.inc()
        yield score_window(
            model, version, from_millis(start_ms), from_millis(w.end.micros // 1000),
            counts, self._catalog.get(model, version), self._z, self._drift_threshold,
            self._drift_min_n, pane=timing, pane_index=pane.index if pane else 0)


class AccumulatePanes(beam.DoFn):
    """(key, accumulator of one discarding pane) -> (key, the window's counts so far).

    The running accumulator is window-scoped state; a timer at the window's expiry
    (end + allowed lateness, after which no pane can come) clears it."""

    RUNNING = ReadModifyWriteStateSpec("running", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, combine_fn: beam.CombineFn, allowed_lateness_s: int):
        self._fn = combine_fn
        self._lateness = Duration(seconds=allowed_lateness_s)

    def process(self, element, w=beam.DoFn.WindowParam,
                running=beam.DoFn.StateParam(RUNNING),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        key, partial = element
        so_far = running.read()
        so_far = partial if so_far is None else self._fn.merge_accumulators(
            [so_far, partial])
        running.write(so_far)
        expiry.set(w.max_timestamp() + self._lateness)
        yield key, self._fn.extract_output(so_far)

    @on_timer(EXPIRY)
    def expire(self, running=beam.DoFn.StateParam(RUNNING)):
        running.clear()


def make_trigger(early_firing_s: int = 0, late_firing_s: int = 5):
    """On time at the watermark; optional early panes; late panes for late data.

    Late firings matter most on the DirectRunner, whose watermark is the wall clock:
    in a burst most feedback arrives after its window "closed" and would be dropped
    with the default trigger. A processing-time delay gathers the late arrivals of a
    few seconds into one pane instead of firing a pane per element."""
    early = (trigger.AfterProcessingTime(int(early_firing_s)) if early_firing_s > 0
             else None)
    late = (trigger.AfterProcessingTime(int(late_firing_s)) if late_firing_s > 0
            else trigger.AfterCount(1))
    return trigger.AfterWatermark(early=early, late=late)


class WindowedAccuracy(beam.PTransform):
    """``((model, version), [events...])`` (from :class:`~pipelines.dedupe.DedupeByEventId`)
    -> ``(WindowStats, late reports)``: stats per (model, version) and sliding
    event-time window; with ``report_too_late``, a late report for each
    event too late for any window (else that collection stays empty)."""

    def __init__(self, config, catalog, report_too_late: bool = False,
                 label: str | None = None):
        super().__init__(label)
        self._config = config
        self._catalog = catalog
        self._report_too_late = report_too_late

    def expand(self, events):
        c = self._config
        combine = AccuracyCombineFn(c.drift_sample)
        late = (SplitTooLate(c.window_size_s, c.window_period_s, c.allowed_lateness_s)
                if self._report_too_late else None)
        # One partial count per (model, version), window and bundle into the shuffle
        # (the DirectRunner would otherwise trigger-process every event): the step
        # assigns the events' sliding windows and splits off the too-late ones itself.
        counted = (events
                   | "CountInWindows" >> beam.ParDo(CountInWindows(
                       combine, c.window_size_s, c.window_period_s, late))
                   .with_output_types(Tuple[Tuple[str, str], Any])
                   .with_outputs(TOO_LATE, main="counts"))
        stats = (counted.counts
                 # Panes must be accumulating (each WindowMetric a pane writes replaces
                 # the earlier one whole), but the window buffers discard: Beam's
                 # Python DirectRunner never frees a window's buffered elements while
                 # its trigger has not finished (and a late-firing trigger never
                 # finishes), so ACCUMULATING mode grows without bound there.
                 # AccumulatePanes adds each pane to the window's running count in
                 # window-scoped state that a timer frees when the window expires;
                 # same panes on every runner.
                 | "WindowByVersion" >> beam.WindowInto(
                     KeepAssignedWindows(window.SlidingWindows(c.window_size_s,
                                                               c.window_period_s)),
                     trigger=make_trigger(c.early_firing_s, c.late_firing_s),
                     accumulation_mode=trigger.AccumulationMode.DISCARDING,
                     allowed_lateness=Duration(seconds=c.allowed_lateness_s))
                 .with_output_types(Tuple[Tuple[str, str], Any])
                 | "CountPane" >> beam.CombinePerKey(
                     MergeAccumulators(combine, extract=False))
                 .with_output_types(Tuple[Tuple[str, str], Any])
                 | "AccumulatePanes" >> beam.ParDo(AccumulatePanes(combine,
                                                                   c.allowed_lateness_s))
                 | "ScoreWindow" >> beam.ParDo(ScoreWindow(
                     self._catalog, c.z, c.drift_threshold, c.drift_min_n,
                     c.replay_from)))
        return stats, counted[TOO_LATE]


def window_metric_entity(s: WindowStats, project: str, namespace: str | None = None,
                         updated_at: dt.datetime | None = None):
    name = kinds.window_metric_name(s.model, s.version, s.window_start, s.window_end)
    drift = {"rows": s.drift_rows,
             "features": [{"index": i, "psi": psi, "method": "psi"} for i, psi in s.drift]}
    return make_entity(kinds.WINDOW_METRIC, name, {
        "model": s.model, "version": s.version, "window_start": s.window_start,
        "window_end": s.window_end, "n": s.n, "correct": s.correct, "accuracy": s.accuracy,
        "lower": s.lower, "upper": s.upper, "drift": json.dumps(drift), "pane": s.pane,
        "updated_at": updated_at or dt.datetime.now(dt.timezone.utc),
    }, project, namespace, unindexed=("drift",))


def prefer_fuller(old, new):
    """Two panes of one window in a bundle: keep the one with more events (panes
    accumulate), the later one on a tie."""
    old_n = old.properties.get("n", -1) if hasattr(old, "properties") else -1
    new_n = new.properties.get("n", -1) if hasattr(new, "properties") else -1
    return old if old_n > new_n else new
