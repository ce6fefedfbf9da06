"""The pipeline's pure logic, without Beam: rot rules, cooldown, parsing, entities.

Rules are driven with hand-made WindowStats whose bounds are exact binary fractions
(baseline 0.75, tolerance 0.25: the limit is exactly 0.5), so "equal is not rot" is
tested at the threshold itself.
"""
from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from pipelines.dedupe import BUCKET_S, SHARDS, dedupe_key, id_hash
from pipelines.metrics import (AccuracyCombineFn, WindowCounts, WindowStats,
                               score_window, window_metric_entity)
from pipelines.options import PipelineConfig
from pipelines.parse import (MAX_ATTRIBUTE_BYTES, MAX_DEADLETTER_DATA_BYTES,
                             STAGE_ATTRIBUTES, STAGE_REGISTRY, STAGE_SCHEMA, DeadLetter,
                             Rejected, check_message, fit_attributes)
from pipelines.rot import CHANGE_POINT_HISTORY, ErrorMonitor, RuleSettings, WindowRules
from pipelines.store import feedback_entity
from pipelines.versions import StaticCatalog, VersionInfo
from rotwatch import kinds, stats
from rotwatch.events import FeedbackEvent, to_millis

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PERIOD = 10
RULES = RuleSettings(window_period_s=PERIOD, window_size_s=20, min_n=100, tolerance=0.25,
                     consecutive=3, drift_consecutive=2, cooldown_s=100)
CATALOG = StaticCatalog([VersionInfo("zombies", "v1", 4, 0.9)])


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def secs(t: dt.datetime) -> float:
    return (t - T0).total_seconds()


def window(end_s: int, upper: float, n: int = 200, drift=(), drift_rows: int = 0,
           baseline: float | None = 0.75) -> WindowStats:
    return WindowStats(model="zombies", version="v1", window_start=at(end_s - 20),
                       window_end=at(end_s), n=n, correct=n // 2, accuracy=0.5,
                       lower=0.0, upper=upper, baseline_accuracy=baseline,
                       drift=tuple(drift), drift_rows=drift_rows)


def feed(rules: WindowRules, panes) -> list:
    out = []
    for pane in panes:
        out.extend(rules.update(pane, RULES))
    return out


# -- windowed accuracy rule ----------------------------------------------------------
def test_accuracy_rot_after_k_consecutive_windows_dated_at_the_newest():
    events = feed(WindowRules(), [window(10, 0.9), window(20, 0.4), window(30, 0.4),
                                  window(40, 0.4)])
    assert [(e.kind, e.decided_at) for e in events] == [("accuracy", at(40))]
    event = events[0]
    assert (event.window_start, event.window_end, event.n, event.bound,
            event.baseline_accuracy) == (at(20), at(40), 200, 0.4, 0.75)
    # The window ending at 20 is the first bad one: the decline is dated at its
    # newest slice, [10 s, 20 s).
    assert event.change_point == at(10)
    assert event.rot_id == f"zombies.v1.accuracy.{to_millis(at(40))}"


def test_k_minus_one_bad_windows_are_not_rot():
    assert feed(WindowRules(), [window(10, 0.4), window(20, 0.4)]) == []


def test_upper_bound_equal_to_the_limit_is_not_rot():
    assert feed(WindowRules(), [window(e, 0.5) for e in (10, 20, 30)]) == []
    assert len(feed(WindowRules(), [window(e, 0.4999) for e in (10, 20, 30)])) == 1


def test_a_window_with_fewer_than_min_n_events_breaks_the_run():
    assert feed(WindowRules(), [window(10, 0.1), window(20, 0.1, n=99),
                                window(30, 0.1)]) == []
    assert len(feed(WindowRules(), [window(10, 0.1), window(20, 0.1, n=100),
                                    window(30, 0.1)])) == 1


def test_a_missing_window_breaks_the_run():
    assert feed(WindowRules(), [window(10, 0.1), window(30, 0.1), window(40, 0.1)]) == []


def test_no_baseline_no_accuracy_verdict():
    assert feed(WindowRules(), [window(e, 0.1, baseline=None) for e in (10, 20, 30)]) == []


def test_late_pane_of_a_window_updates_it_and_can_complete_the_run():
    rules = WindowRules()
    assert feed(rules, [window(10, 0.1), window(20, 0.1, n=50), window(30, 0.1)]) == []
    # The late pane brings the middle window to 150 events: the run is complete.
    assert [e.decided_at for e in feed(rules, [window(20, 0.1, n=150)])] == [at(30)]


def test_cooldown_silences_a_version_until_it_recovers_and_time_has_passed():
    rules = WindowRules()
    first = feed(rules, [window(e, 0.1) for e in (10, 20, 30)])
    assert [e.decided_at for e in first] == [at(30)]
    # Still bad: no repeat, however long it lasts.
    assert feed(rules, [window(e, 0.1) for e in range(40, 300, 10)]) == []
    # Healthy again (re-armed), then bad again; 330 s is past the cooldown (100 s
    # after the event at 30 s), so the new run alerts.
    assert feed(rules, [window(300, 0.9)]) == []
    again = feed(rules, [window(e, 0.1) for e in (310, 320, 330)])
    assert [e.decided_at for e in again] == [at(330)]


def test_recovery_within_the_cooldown_does_not_realert():
    rules = WindowRules()
    assert len(feed(rules, [window(e, 0.1) for e in (10, 20, 30)])) == 1
    assert feed(rules, [window(40, 0.9)]) == []                  # re-armed at 40 s
    assert feed(rules, [window(e, 0.1) for e in (50, 60, 70)]) == []   # 70 - 30 < 100
    assert [e.decided_at for e in feed(rules, [window(130, 0.1), window(140, 0.1),
                                               window(150, 0.1)])] == [at(150)]


def test_a_window_with_too_few_events_does_not_rearm():
    rules = WindowRules()
    assert len(feed(rules, [window(e, 0.1) for e in (10, 20, 30)])) == 1
    assert feed(rules, [window(200, 0.9, n=5)]) == []
    assert feed(rules, [window(e, 0.1) for e in (210, 220, 230)]) == []


# -- input drift rule ----------------------------------------------------------------
def test_input_drift_needs_drift_in_consecutive_windows():
    drifted = ((2, 1.7),)
    events = feed(WindowRules(), [window(10, 0.9, drift=drifted, drift_rows=500),
                                  window(20, 0.9, drift=(), drift_rows=500),
                                  window(30, 0.9, drift=drifted, drift_rows=500),
                                  window(40, 0.9, drift=((2, 2.1), (0, 0.4)),
                                         drift_rows=500)])
    assert [(e.kind, e.decided_at) for e in events] == [("input-drift", at(40))]
    assert [(f.index, f.score) for f in events[0].drifted_features] == [(2, 2.1), (0, 0.4)]


def test_untested_windows_give_no_drift_verdict_and_do_not_rearm():
    rules = WindowRules()
    drifted = ((1, 0.9),)
    assert len(feed(rules, [window(10, 0.9, drift=drifted, drift_rows=500),
                            window(20, 0.9, drift=drifted, drift_rows=500)])) == 1
    assert feed(rules, [window(200, 0.9, drift_rows=0)]) == []       # not tested
    assert feed(rules, [window(210, 0.9, drift=drifted, drift_rows=500),
                        window(220, 0.9, drift=drifted, drift_rows=500)]) == []
    assert feed(rules, [window(230, 0.9, drift_rows=500)]) == []     # clean: re-arm
    assert len(feed(rules, [window(240, 0.9, drift=drifted, drift_rows=500),
                            window(250, 0.9, drift=drifted, drift_rows=500)])) == 1


# -- sequential detector -------------------------------------------------------------
def _errors_then(monitor, n_good, n_bad, start_s=0.0, rules=RULES):
    out = []
    for i in range(n_good + n_bad):
        event = monitor.observe("zombies", "v1", i < n_good, at(start_s + i), rules)
        if event is not None:
            out.append((i, event))
    return out


def test_detector_dates_the_change_at_the_first_bad_event():
    detections = _errors_then(ErrorMonitor(baseline_accuracy=0.9), 500, 100)
    index, event = detections[0]
    assert event.kind == "error-rate-change"
    assert 500 <= index < 520
    assert event.change_point == at(500)        # all good before: the run began there
    assert event.decided_at == at(index)
    assert event.n == index - 499 and event.accuracy == 0.0
    assert event.baseline_accuracy == 0.9


def _two_rises(monitor, rules):
    """500 right, 600 alternating right/wrong (50% error), then 300 wrong: one event
    per second."""
    pattern = [True] * 500 + [i % 2 == 0 for i in range(600)] + [False] * 300
    out = []
    for i, ok in enumerate(pattern):
        event = monitor.observe("zombies", "v1", ok, at(i), rules)
        if event is not None:
            out.append(event)
    return out


def test_detector_alerts_again_on_a_further_rise_after_the_cooldown():
    events = _two_rises(ErrorMonitor(baseline_accuracy=0.9), RuleSettings(cooldown_s=100))
    assert len(events) == 2
    first, second = events
    assert first.change_point == at(501)         # the first wrong prediction
    assert 501 < secs(first.decided_at) < 600
    assert secs(second.decided_at) >= 1100 and second.accuracy < first.accuracy


def test_detector_cooldown_suppresses_a_second_detection():
    events = _two_rises(ErrorMonitor(baseline_accuracy=0.9),
                        RuleSettings(cooldown_s=10_000))
    assert [secs(e.decided_at) < 600 for e in events] == [True]


def test_detector_without_events_enough_stays_silent():
    monitor = ErrorMonitor(baseline_accuracy=None, warmup=300)
    assert _errors_then(monitor, 100, 100) == []          # still learning its baseline


def test_monitor_state_survives_pickling():
    import pickle
    monitor = ErrorMonitor(baseline_accuracy=0.9)
    _errors_then(monitor, 300, 0)
    copy = pickle.loads(pickle.dumps(monitor))
    assert copy.updates == 300 and copy.detector.to_state() == monitor.detector.to_state()
    assert len(pickle.dumps(monitor)) < 8 * CHANGE_POINT_HISTORY * 2


# -- parsing -------------------------------------------------------------------------
def event(**overrides) -> FeedbackEvent:
    values = dict(model="zombies", version="v1", features=[1.0, 2.0, 3.0, 4.0],
                  prediction=1, was_correct=True, event_id="e1", event_time=at(0))
    values.update(overrides)
    return FeedbackEvent.create(**values)


def check(data, attributes=None):
    return check_message(data, attributes, CATALOG, now=at(0))


def test_valid_message_parses_to_its_event():
    e = event()
    assert check(e.to_json(), e.attributes()) == e


@pytest.mark.parametrize("data, attributes, stage, field", [
    (b"{not json", {}, STAGE_SCHEMA, "<payload>"),
    (b'{"event_id": "e1"}', {}, STAGE_SCHEMA, "was_correct"),
    (b"\xff\xfe", {}, STAGE_SCHEMA, "<payload>"),
    (b"x" * (64 * 1024 + 1), {}, STAGE_SCHEMA, "<payload>"),
    (json.dumps(dict(event().to_dict(), features=[1.0, "NaN", 3.0, 4.0])).encode(), {},
     STAGE_SCHEMA, "features[1]"),
    (event().to_json().replace(b"1.0,", b"1e999,"), {}, STAGE_SCHEMA, "features[0]"),
    (event(features=[1.0, 2.0]).to_json(), {}, STAGE_REGISTRY, "features"),
    (event(version="v7").to_json(), {}, STAGE_REGISTRY, "version"),
    (event(model="ghosts").to_json(), {}, STAGE_REGISTRY, "version"),
    (event().to_json(), {"event_ts": "12"}, STAGE_ATTRIBUTES, "event_ts"),
    (event().to_json(), {"model": "other"}, STAGE_ATTRIBUTES, "model"),
    (event(event_time=at(601)).to_json(), {}, STAGE_SCHEMA, "event_time"),
])
def test_invalid_messages_are_rejected_with_stage_and_field(data, attributes, stage, field):
    with pytest.raises(Rejected) as info:
        check(data, attributes)
    assert (info.value.stage, info.value.field) == (stage, field)


def test_event_time_exactly_at_the_future_limit_is_accepted():
    e = event(event_time=at(600))
    assert check(e.to_json()) == e


def test_dead_letter_keeps_the_payload_and_fits_pubsub_limits():
    original = {f"a{i}": "v" for i in range(120)}
    letter = DeadLetter(payload=b"\x00raw", attributes=original, stage="schema",
                        field="f", reason="é" * 2000, failed_at=at(0))
    message = letter.to_message()
    assert message.data == b"\x00raw"
    assert len(message.attributes) == 100
    assert all(len(v.encode()) <= MAX_ATTRIBUTE_BYTES for v in message.attributes.values())
    assert message.attributes["rotwatch_stage"] == "schema"
    assert message.attributes["rotwatch_reason"].startswith("éé")
    assert message.attributes["rotwatch_failed_at"] == "2026-01-01T00:00:00.000Z"


def test_a_maximal_payload_is_cut_to_fit_a_dead_letter():
    letter = DeadLetter(payload=b"x" * 10_000_000, attributes={}, stage="schema",
                        field="<payload>", reason="too big")
    message = letter.to_message()
    assert len(message.data) == MAX_DEADLETTER_DATA_BYTES
    assert message.attributes["rotwatch_truncated_from_bytes"] == "10000000"


def test_fit_attributes_lets_rotwatch_keys_win():
    assert fit_attributes({"rotwatch_stage": "x", "k": "v"}, {"rotwatch_stage": "y"}) == {
        "rotwatch_stage": "y", "k": "v"}


# -- entities, window scoring, dedupe keys -------------------------------------------
def test_feedback_entity_is_keyed_by_event_id_with_unindexed_features():
    entity = feedback_entity(event(label=0, was_correct=None), "local-project", "ns",
                             stored_at=at(5))
    assert tuple(entity.key.path_elements) == (kinds.FEEDBACK, "e1")
    assert entity.key.namespace == "ns"
    assert "features" in entity.exclude_from_indexes
    assert entity.properties["correct"] is False
    assert entity.properties["event_time"] == at(0)


def test_window_metric_entity_key_is_per_version_and_window():
    s = score_window("zombies", "v1", at(0), at(20), WindowCounts(10, 8), None)
    entity = window_metric_entity(s, "local-project")
    assert tuple(entity.key.path_elements) == (
        kinds.WINDOW_METRIC, kinds.window_metric_name("zombies", "v1", at(0), at(20)))
    assert entity.properties["n"] == 10 and entity.properties["accuracy"] == 0.8
    assert (entity.properties["lower"], entity.properties["upper"]) == pytest.approx(
        stats.wilson_interval(8, 10))


def test_score_window_tests_drift_only_with_reference_and_enough_rows():
    import numpy as np
    rng = np.random.default_rng(3)
    reference = stats.reference_statistics(rng.normal(size=(2000, 2)))
    info = VersionInfo("zombies", "v1", 2, 0.9, reference)
    rows = rng.normal(size=(300, 2))
    rows[:, 1] += 2.0
    counts = WindowCounts(300, 270, tuple(map(tuple, rows)))
    scored = score_window("zombies", "v1", at(0), at(20), counts, info, drift_min_n=100)
    assert [i for i, _ in scored.drift] == [1] and scored.drift_rows == 300
    few = WindowCounts(300, 270, tuple(map(tuple, rows[:99])))
    assert score_window("zombies", "v1", at(0), at(20), few, info,
                        drift_min_n=100).drift_rows == 0


def test_accuracy_sample_is_the_same_whatever_the_order_and_merge():
    fn = AccuracyCombineFn(sample_size=5)
    events = [event(event_id=f"e{i}", features=[float(i)] * 4, was_correct=i % 3 > 0)
              for i in range(40)]

    def combine(chunks):
        accs = []
        for chunk in chunks:
            acc = fn.create_accumulator()
            for e in chunk:
                acc = fn.add_input(acc, e)
            accs.append(acc)
        return fn.extract_output(fn.merge_accumulators(accs))
    whole = combine([events])
    assert whole == combine([events[::-1]]) == combine([events[:7], events[7:30],
                                                        events[30:]])
    assert (whole.n, whole.correct, len(whole.rows)) == (40, 26, 5)


def test_dedupe_key_is_stable_and_bucketed():
    e = event(event_time=at(125.5))
    bucket, shard = dedupe_key(e)
    assert bucket == to_millis(at(120)) and bucket % (BUCKET_S * 1000) == 0
    assert 0 <= shard < SHARDS and id_hash("e1") == id_hash("e1") != id_hash("e2")


# -- configuration -------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"subscription": "feedback"}, "projects/<project>/subscriptions"),
    ({"window_size_s": 25, "window_period_s": 10}, "multiple of window_period_s"),
    ({"dedupe_ttl_s": 10}, "dedupe_ttl_s=10"),
    ({"tolerance": 1.5}, "tolerance=1.5"),
    ({"drift_sample": 10, "drift_min_n": 30}, "drift_sample=10"),
])
def test_config_names_the_bad_value(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PipelineConfig(**overrides)


def test_config_dedupe_ttl_defaults_to_window_plus_lateness():
    assert PipelineConfig(window_size_s=20, window_period_s=5,
                          allowed_lateness_s=100).dedupe_ttl_s == 120
    assert math.isclose(PipelineConfig().z, 1.96)
