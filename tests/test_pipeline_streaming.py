"""The pipeline's transforms under streaming: TestStream on the bundle-based
DirectRunner (no emulators), plus DoFns called directly.

``build_pipeline(..., write=False)`` gives the named collections without sinks; each
test feeds Pub/Sub-shaped messages with a controlled watermark and processing time
and asserts on one collection with ``assert_that``.
"""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from pipelines.checkpoint import ProbeEventTime
from pipelines.feedback_pipeline import build_pipeline
from pipelines.metrics import (ScoreWindow, WindowCounts, prefer_fuller, score_window,
                               window_metric_entity)
from pipelines.options import PipelineConfig
from pipelines.parse import DEADLETTER, ParseFeedback
from pipelines.store import DedupeKeysInBundle, entity_key_id
from pipelines.versions import StaticCatalog, VersionInfo
from rotwatch import stats
from rotwatch.events import FeedbackEvent, to_millis

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FEATURES = [0.1, -0.2, 0.3, 0.0]
CATALOG = StaticCatalog([VersionInfo("zombies", "v1", 4, 0.9)])


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def secs(t: dt.datetime) -> float:
    return (t - T0).total_seconds()


def event(i, t, ok=True, features=FEATURES, version="v1") -> FeedbackEvent:
    return FeedbackEvent.create(model="zombies", version=version, features=features,
                                prediction=1, was_correct=ok, event_id=f"e{i}",
                                event_time=at(t))


def message(e: FeedbackEvent) -> TimestampedValue:
    return TimestampedValue(PubsubMessage(e.to_json(), e.attributes()),
                            to_millis(e.event_time) / 1000)


def wm(t: float) -> float:
    return to_millis(at(t)) / 1000


def streaming_pipeline() -> test_pipeline.TestPipeline:
    options = PipelineOptions([])   # [] : not pytest's sys.argv
    options.view_as(StandardOptions).streaming = True
    return test_pipeline.TestPipeline(runner="BundleBasedDirectRunner", options=options)


def config(**overrides) -> PipelineConfig:
    # late_firing_s=0: a late pane per late element. The processing-time late trigger
    # cannot be driven by TestStream on this runner (its timer is compared with event
    # time to label the pane, and the test clock never lets the job finish); the
    # emulator test runs it against the wall clock.
    # report_too_late=False: these streams are in 2026-01 and the check uses the wall
    # clock (the local runners' watermark), not the TestStream's watermark.
    values = dict(window_size_s=10, window_period_s=10, allowed_lateness_s=30,
                  late_firing_s=0, min_n=5, consecutive=2, cooldown_s=10_000,
                  drift_min_n=50, drift_sample=200, report_too_late=False)
    values.update(overrides)
    return PipelineConfig(**values)


def pane_summary(s):
    return (secs(s.window_start), secs(s.window_end), s.n, s.correct, s.pane)


# -- windows and lateness ------------------------------------------------------------
def test_window_counts_with_a_late_pane_and_data_beyond_lateness_dropped():
    stream = (test_stream.TestStream()
              .advance_watermark_to(wm(0))
              .add_elements([message(event(i, 1 + i * 0.5, ok=i < 8)) for i in range(10)])
              .advance_watermark_to(wm(10))                    # on-time pane: 10 events
              .add_elements([message(event(10, 5.0))])         # late, within lateness
              .advance_watermark_to(wm(45))                    # past end + lateness
              .add_elements([message(event(11, 6.0))])         # too late: dropped
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=CATALOG, write=False,
                             config=config())
        assert_that(out["window_stats"] | beam.Map(pane_summary), equal_to([
            (0, 10, 10, 8, "on_time"), (0, 10, 11, 9, "late")]))


def test_sliding_windows_count_an_event_in_every_window_it_falls_in():
    stream = (test_stream.TestStream().advance_watermark_to(wm(0))
              .add_elements([message(event(1, 7.0))])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=CATALOG, write=False,
                             config=config(window_size_s=10, window_period_s=5))
        assert_that(out["window_stats"] | beam.Map(pane_summary), equal_to([
            (0, 10, 1, 1, "on_time"), (5, 15, 1, 1, "on_time")]))


def test_feedback_too_late_for_every_window_is_reported_not_dropped():
    now = dt.datetime.now(dt.timezone.utc)
    old = FeedbackEvent.create(model="zombies", version="v1", features=FEATURES,
                               prediction=1, was_correct=True, event_id="old",
                               event_time=now - dt.timedelta(hours=2))
    fresh = FeedbackEvent.create(model="zombies", version="v1", features=FEATURES,
                                 prediction=1, was_correct=True, event_id="fresh",
                                 event_time=now)
    stream = (test_stream.TestStream()
              .advance_watermark_to(to_millis(now) / 1000 - 10)
              .add_elements([message(old), message(fresh)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=CATALOG, write=False,
                             config=config(report_too_late=True))
        assert_that(out["too_late"] | beam.Map(
            lambda d: (d.stage, d.attributes["event_id"])), equal_to([("late", "old")]),
            label="Reported")
        assert_that(out["window_stats"] | "N" >> beam.Map(lambda s: s.n),
                    equal_to([1]), label="OnlyFreshCounted")


# -- duplicates ----------------------------------------------------------------------
def test_duplicate_deliveries_are_counted_once():
    events = [event(i, 1 + i) for i in range(5)]
    stream = (test_stream.TestStream().advance_watermark_to(wm(0))
              .add_elements([message(e) for e in events] + [message(events[0])] * 2)
              .advance_watermark_to(wm(8))
              .add_elements([message(events[3]), message(events[4])])   # redelivered
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=CATALOG, write=False,
                             config=config())
        assert_that(out["events"] | "Parsed" >> beam.Map(lambda e: e.event_id),
                    equal_to([e.event_id for e in events] + ["e0", "e0", "e3", "e4"]),
                    label="AllDeliveriesParsed")
        # first deliveries come per version and bundle: ((model, version), [events])
        assert_that(out["unique_events"]
                    | beam.FlatMap(lambda kv: [(kv[0], e.event_id) for e in kv[1]]),
                    equal_to([(("zombies", "v1"), e.event_id) for e in events]),
                    label="UniqueIds")
        assert_that(out["window_stats"] | "Summ" >> beam.Map(pane_summary),
                    equal_to([(0, 10, 5, 5, "on_time")]), label="CountedOnce")


# -- dead letters --------------------------------------------------------------------
def test_every_invalid_message_goes_to_the_dead_letters_with_its_payload():
    good = event(1, 1.0)
    bad = {
        b"{broken": ("schema", "<payload>"),
        event(2, 1.0, version="v9").to_json(): ("registry", "version"),
        event(3, 1.0, features=[1.0, 2.0]).to_json(): ("registry", "features"),
        good.to_json().replace(b"0.1,", b"NaN,"): ("schema", "features[0]"),
    }
    messages = [message(good)] + [TimestampedValue(PubsubMessage(data, {"x": "1"}), wm(1))
                                  for data in bad]
    messages.append(TimestampedValue(
        PubsubMessage(event(4, 1.0).to_json(), {"event_ts": "not-a-time"}), wm(1)))
    stream = (test_stream.TestStream().advance_watermark_to(wm(0)).add_elements(messages)
              .advance_watermark_to_infinity())
    expected = [(data, stage, field) for data, (stage, field) in bad.items()]
    expected.append((event(4, 1.0).to_json(), "attributes", "event_ts"))
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=CATALOG, write=False,
                             config=config())
        letters = out["deadletters"] | beam.Map(lambda d: d.to_message())
        assert_that(letters | beam.Map(lambda m: (m.data, m.attributes["rotwatch_stage"],
                                                  m.attributes["rotwatch_field"])),
                    equal_to(expected), label="DeadLetters")
        assert_that(out["events"] | "Ids" >> beam.Map(lambda e: e.event_id),
                    equal_to(["e1"]), label="ValidOnly")


# -- rot rules end to end ------------------------------------------------------------
def _rotting_stream(seed=7, rate=10, good_s=60, bad_s=60, bad_accuracy=0.4, shift=3.0,
                    n_per_window_check=None):
    """``rate`` events/s: ``good_s`` seconds at 95% accuracy from the reference
    distribution, then ``bad_s`` seconds at ``bad_accuracy`` with feature 2 shifted."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range((good_s + bad_s) * rate):
        t = i / rate
        bad = t >= good_s
        x = rng.normal(size=4)
        if bad:
            x[2] += shift
        ok = bool(rng.random() < (bad_accuracy if bad else 0.95))
        events.append(event(i, t, ok=ok, features=x.tolist()))
    stream = test_stream.TestStream().advance_watermark_to(wm(0))
    for second in range(0, good_s + bad_s, 5):       # 5 s of events, then the watermark
        chunk = [e for e in events if second <= secs(e.event_time) < second + 5]
        stream = stream.add_elements([message(e) for e in chunk]).advance_watermark_to(
            wm(second + 5))
    return events, stream.advance_watermark_to_infinity()


def _drift_catalog(baseline=0.9):
    rng = np.random.default_rng(0)
    reference = stats.reference_statistics(rng.normal(size=(5000, 4)))
    return StaticCatalog([VersionInfo("zombies", "v1", 4, baseline, reference)])


def _expected_accuracy_rot(events, cfg, baseline):
    """The first window end where the pure rule holds on the generated events."""
    ends = range(cfg.window_size_s, 10_000, cfg.window_period_s)
    uppers, ns = [], []
    for end in ends:
        inside = [e for e in events if end - cfg.window_size_s <= secs(e.event_time) < end]
        if not inside:
            break
        correct = sum(e.correct for e in inside)
        uppers.append(stats.wilson_interval(correct, len(inside))[1])
        ns.append(len(inside))
        if stats.accuracy_rot(uppers, ns, baseline, cfg.tolerance, cfg.min_n,
                              cfg.consecutive):
            return end
    return None


def test_abrupt_change_gives_one_event_of_each_kind_at_the_expected_times():
    cfg = config(window_size_s=20, window_period_s=10, min_n=50, consecutive=2)
    events, stream = _rotting_stream()
    expected_end = _expected_accuracy_rot(events, cfg, 0.9)
    assert expected_end is not None and expected_end > 60
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=_drift_catalog(),
                             write=False, config=cfg)
        rot = out["rot_events"]
        assert_that(rot | "Kinds" >> beam.Map(lambda r: r.kind), equal_to(
            ["accuracy", "input-drift", "error-rate-change"]), label="OneOfEachKind")
        assert_that(rot | "Filter" >> beam.Filter(lambda r: r.kind == "accuracy")
                    | "When" >> beam.Map(lambda r: (secs(r.decided_at), r.n)),
                    equal_to([(expected_end, 200)]), label="AccuracyDecidedAt")
        assert_that(rot | "Drift" >> beam.Filter(lambda r: r.kind == "input-drift")
                    | "Which" >> beam.Map(lambda r: ([f.index for f in r.drifted_features],
                                                     secs(r.decided_at))),
                    equal_to([([2], 80)]), label="DriftOnFeature2")
        # The detector sees events in arrival order after dedupe (shuffled within a
        # bundle): its change point lies in the bad stretch, detection soon after.
        assert_that(rot | "Seq" >> beam.Filter(lambda r: r.kind == "error-rate-change")
                    | "Ok" >> beam.Map(lambda r: 55 <= secs(r.change_point) <= 65
                                       and 60 <= secs(r.decided_at) <= 70),
                    equal_to([True]), label="DetectorInTheBadStretch")


def test_no_accuracy_rot_when_windows_have_too_few_events():
    cfg = config(window_size_s=20, window_period_s=10, min_n=50, consecutive=2)
    _, stream = _rotting_stream(rate=2, shift=0.0)    # 40 events per window < min_n
    with streaming_pipeline() as p:
        out = build_pipeline(p, p.options, source=stream, catalog=_drift_catalog(),
                             write=False, config=cfg)
        assert_that(out["rot_events"] | beam.Filter(lambda r: r.kind == "accuracy"),
                    equal_to([]))


# -- DoFns called directly -----------------------------------------------------------
def test_parse_feedback_stamps_event_time_and_tags_dead_letters():
    fn = ParseFeedback(CATALOG, clock=lambda: at(0))
    e = event(1, -3.0)
    [out] = list(fn.process(PubsubMessage(e.to_json(), e.attributes())))
    assert out.value == e and out.timestamp == Timestamp(micros=to_millis(at(-3)) * 1000)
    [tagged] = list(fn.process(PubsubMessage(b"[]", {"event_id": "zz"})))
    assert tagged.tag == DEADLETTER
    assert (tagged.value.payload, tagged.value.stage, tagged.value.attributes) == (
        b"[]", "schema", {"event_id": "zz"})


def test_dedupe_keys_in_bundle_keeps_the_fuller_pane():
    fn = DedupeKeysInBundle(key_fn=entity_key_id, prefer=prefer_fuller)
    small = window_metric_entity(score_window("zombies", "v1", at(0), at(10),
                                              WindowCounts(5, 5), None), "local-project")
    big = window_metric_entity(score_window("zombies", "v1", at(0), at(10),
                                            WindowCounts(9, 5), None), "local-project")
    other = window_metric_entity(score_window("zombies", "v1", at(10), at(20),
                                              WindowCounts(1, 1), None), "local-project")
    fn.start_bundle()
    for entity in (big, other, small):
        assert not fn.process(entity, Timestamp(0), GlobalWindow())   # held to the end
    out = [wv.value for wv in fn.finish_bundle()]
    assert [e.properties["n"] for e in out] == [9, 1]


def test_score_window_skips_empty_panes_and_partly_replayed_windows():
    fn = ScoreWindow(CATALOG, replay_from=at(10))
    pane = PaneInfo(True, False, PaneInfoTiming.LATE, 2, 1)
    key = ("zombies", "v1")
    before = IntervalWindow(Timestamp.of(wm(0)), Timestamp.of(wm(20)))
    after = IntervalWindow(Timestamp.of(wm(10)), Timestamp.of(wm(30)))
    assert list(fn.process((key, WindowCounts(0, 0)), after, pane)) == []
    assert list(fn.process((key, WindowCounts(5, 4)), before, pane)) == []
    [stats_] = list(fn.process((key, WindowCounts(5, 4)), after, pane))
    assert (stats_.pane, stats_.pane_index, stats_.n, stats_.baseline_accuracy) == (
        "late", 2, 5, 0.9)


def test_probe_emits_the_newest_event_time_once_per_bundle():
    fn = ProbeEventTime("feedback-pipeline")
    fn.start_bundle()
    for t in (3.0, 9.0, 1.0):
        assert not fn.process(None, Timestamp.of(wm(t)))
    [out] = list(fn.finish_bundle())
    assert out.value == ("feedback-pipeline", to_millis(at(9)))


def test_split_too_late_at_the_exact_expiry():
    from pipelines.metrics import TOO_LATE, SplitTooLate, last_window_end_ms
    # event at 7 s, windows of 10 s every 5 s: the last one is [5, 15); +30 s lateness
    assert last_window_end_ms(to_millis(at(7)), 10, 5) == to_millis(at(15))
    expires = at(45)

    def route(now):
        fn = SplitTooLate(10, 5, 30, clock=lambda: now)
        fn.start_bundle()
        out = list(fn.process(event(1, 7.0)))
        return getattr(out[0], "tag", "main")
    assert route(expires) == "main"
    assert route(expires + dt.timedelta(milliseconds=1)) == TOO_LATE


def test_split_too_late_warns_once_per_bundle(caplog):
    from pipelines.metrics import SplitTooLate
    fn = SplitTooLate(10, 5, 30, clock=lambda: at(1000))
    fn.start_bundle()
    for i in range(3):
        list(fn.process(event(i, float(i))))
    with caplog.at_level("WARNING", logger="pipelines.metrics"):
        fn.finish_bundle()
    [record] = caplog.records
    assert "count=3" in record.getMessage() and "2026-01-01T00:00:00.000Z" in \
        record.getMessage()


@pytest.mark.parametrize("batch, most", [(0, 10), (1001, 2000), (500, 100)])
def test_pull_backlog_refuses_bad_sizes(batch, most):
    from pipelines.source import PullBacklog
    with pytest.raises(ValueError, match="batch|max_per_bundle"):
        PullBacklog("projects/p/subscriptions/s", batch, most)


@pytest.mark.parametrize("size, period", [(10, 5), (20, 5), (60, 60), (25, 10), (7, 3)])
def test_count_in_windows_assigns_the_windows_slidingwindows_would(size, period):
    """CountInWindows assigns sliding windows itself (in whole ms, cached per
    bundle): the same windows, and the same counts, as WindowInto(SlidingWindows)."""
    import random
    from apache_beam.transforms.window import SlidingWindows, WindowFn
    from pipelines.metrics import AccuracyCombineFn, CountInWindows
    rng = random.Random(size * 100 + period)
    events = [event(i, rng.uniform(0, 300), ok=rng.random() < 0.7) for i in range(400)]
    fn = CountInWindows(AccuracyCombineFn(0), size, period)
    fn.start_bundle()
    assert list(fn.process((("zombies", "v1"), events))) == []
    got = {w.windows[0]: (w.value[1][0], w.value[1][1]) for w in fn.finish_bundle()}
    want = {}
    sliding = SlidingWindows(size, period)
    for e in events:
        ts = Timestamp(micros=to_millis(e.event_time) * 1000)
        for w in sliding.assign(WindowFn.AssignContext(ts)):
            n, correct = want.get(w, (0, 0))
            want[w] = (n + 1, correct + (1 if e.correct else 0))
    assert got == want
    if size % period == 0:   # then every event is in size / period windows
        assert sum(n for n, _ in got.values()) == len(events) * size // period
