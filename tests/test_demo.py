"""`rotwatch demo`: the measurements (pure, exact values), its settings, and one small
end-to-end run on the real local stack (slow)."""
import csv
import datetime as dt
import io
import json

import pytest

from rotwatch.demo import (DemoConfig, DemoTargets, EventClock, RotMark, SimEvent,
                           StoredFeedback, _fields, _StackWatcher, check_targets,
                           summarize, summary_table, write_population_csv)

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# -- EventClock ---------------------------------------------------------------------
def test_clock_maps_times_to_the_highest_index_seen_and_the_lowest_index_after():
    # events 2 and 3 were sent concurrently and arrived out of order
    clock = EventClock({0: at(0), 1: at(1), 2: at(2.5), 3: at(2.0), 4: at(4)})
    assert clock.last_event_by(at(2.0)) == 3
    assert clock.last_event_by(at(2.4)) == 3
    assert clock.last_event_by(at(2.5)) == 3
    assert clock.last_event_by(at(1.0)) == 1
    assert clock.last_event_by(at(-1)) is None
    assert clock.first_event_from(at(2.0)) == 2
    assert clock.first_event_from(at(2.1)) == 2
    assert clock.first_event_from(at(2.6)) == 4
    assert clock.first_event_from(at(4.5)) is None
    assert clock.last_event_by(None) is None and clock.first_event_from(None) is None
    assert len(clock) == 5


def test_sim_event_from_a_simulator_record():
    record = {"index": 7, "population": "B", "features": [1, 2, 3, 4], "truth": 1,
              "prediction": 0, "version": "v1", "prediction_id": "p7", "feedback": False,
              "feedback_sent": True, "error": None, "sent_at": 0.7}
    assert SimEvent.from_record(record) == SimEvent(7, "B", "v1", "p7", False, True)
    unanswered = dict(record, prediction=None, version=None, feedback_sent=False)
    assert SimEvent.from_record(unanswered).truth_correct is None


# -- summarize ----------------------------------------------------------------------
def _story(rots=(), published_all=True):
    """12 events, one a second; B from event 6; v1 serves 0..8, v2 serves 9..11.

    v1 right on 0..5 except event 2; wrong on 6, 7; right on 8. v2 right on 9..11
    except 10. Event 11's feedback was never published.
    """
    right = {0: 1, 1: 1, 2: 0, 3: 1, 4: 1, 5: 1, 6: 0, 7: 0, 8: 1, 9: 1, 10: 0, 11: 1}
    events, stored = [], {}
    for i in range(12):
        sent = published_all or i != 11
        events.append(SimEvent(i, "A" if i < 6 else "B", "v1" if i < 9 else "v2",
                               f"p{i}", bool(right[i]), sent))
        if sent:
            stored[f"p{i}"] = StoredFeedback(f"p{i}", at(i), "v1" if i < 9 else "v2",
                                             bool(right[i]))
    versions = [{"version": "v1", "holdout_accuracy": 0.9},
                {"version": "v2", "holdout_accuracy": 0.95}]
    promotions = [{"default_version": "v2", "previous_version": "v1",
                   "changed_at": at(8.5)}]
    return summarize(events, stored, list(rots), versions, promotions,
                     default_version="v2", drift_onset_event=6,
                     dead_lettered=0 if published_all else 0,
                     feedback_stored=len(stored), duration_s=123.456)


def test_summary_maps_rot_events_to_event_indices_and_measures_the_story():
    rot = RotMark("v1", "error-rate-change", decided_at=at(7.2), change_point=at(6.0),
                  published_at=at(8.1))
    window_rot = RotMark("v1", "accuracy", decided_at=at(8.0), change_point=at(5.5))
    s = _story([window_rot, rot])
    assert s["drift_onset_event"] == 6
    assert s["rot_events"] == [
        {"version": "v1", "kind": "error-rate-change", "decided_at":
         "2026-12-03T10:00:07.200Z", "change_point": "2026-12-03T10:00:06.000Z",
         "detected_after_event": 7, "change_point_event": 6, "published_after_event": 8},
        {"version": "v1", "kind": "accuracy", "decided_at": "2026-12-03T10:00:08.000Z",
         "change_point": "2026-12-03T10:00:05.500Z", "detected_after_event": 8,
         "change_point_event": 6, "published_after_event": None}]
    assert s["detection_delay_events"] == 1
    assert s["first_rot"]["kind"] == "error-rate-change"
    assert s["rot_events_before_onset"] == 0
    assert s["accuracy"] == {"v1_before_drift": 0.8333, "v1_after_drift": 0.3333,
                             "after_promotion": 0.6667}
    assert s["accuracy_events"] == {"v1_before_drift": 6, "v1_after_drift": 3,
                                    "after_promotion": 3}
    assert s["promoted_version"] == "v2"
    assert s["promoted_at"] == "2026-12-03T10:00:08.500Z"
    assert s["first_event_served_by_promoted"] == 9
    assert s["recovery_events"] == 3
    assert (s["events_published"], s["feedback_stored"], s["dead_lettered"],
            s["feedback_lost"]) == (12, 12, 0, 0)
    assert s["duration_s"] == 123.5
    assert s["versions"] == [{"version": "v1", "holdout_accuracy": 0.9},
                             {"version": "v2", "holdout_accuracy": 0.95}]
    json.dumps(s)  # summary.json must serialise as is


def test_a_rot_event_before_the_onset_is_a_false_alarm_not_a_detection():
    early = RotMark("v1", "accuracy", decided_at=at(3.0), change_point=at(2.0))
    s = _story([early])
    assert s["rot_events_before_onset"] == 1
    assert s["detection_delay_events"] is None
    assert s["rot_events"][0]["detected_after_event"] == 3


def test_accuracy_is_the_stored_verdict_and_missing_feedback_counts_as_lost():
    s = _story(published_all=False)
    # event 11 was not published: not counted anywhere, and nothing is "lost"
    assert s["events_published"] == 11
    assert s["accuracy"]["after_promotion"] == 0.5
    assert s["feedback_lost"] == 0
    events = [SimEvent(0, "A", "v1", "p0", True, True),
              SimEvent(1, "B", "v1", "p1", True, True)]
    stored = {"p0": StoredFeedback("p0", at(0), "v1", True)}
    lost = summarize(events, stored, [], [], [], default_version="v1",
                     drift_onset_event=1, dead_lettered=0, feedback_stored=1,
                     duration_s=1.0)
    assert lost["feedback_lost"] == 1
    assert lost["promoted_version"] is None and lost["recovery_events"] is None
    assert lost["accuracy"] == {"v1_before_drift": 1.0, "v1_after_drift": None,
                                "after_promotion": None}


# -- targets and the table --------------------------------------------------------------
def test_targets_all_met_for_a_closed_loop():
    s = _story([RotMark("v1", "accuracy", at(7.2), at(6.0))])
    s["accuracy"]["after_promotion"] = 0.95
    targets = check_targets(s, DemoTargets())
    assert [t.met for t in targets] == [True] * 7
    assert targets[0].got == "+1 (event 7, v1 accuracy)"
    assert targets[3].got == "from event 9 (+3)"


def test_targets_missed_are_named():
    s = _story([RotMark("v1", "accuracy", at(3.0), at(2.0))])   # a false alarm only
    s["duration_s"] = 301.0
    missed = {t.name for t in check_targets(s, DemoTargets()) if not t.met}
    assert missed == {"rot event after the onset", "rot events before the onset",
                      "accuracy after promotion", "duration"}
    late = DemoTargets(max_detection_delay=0)
    s = _story([RotMark("v1", "accuracy", at(7.2), at(6.0))])
    assert not check_targets(s, late)[0].met


def test_summary_table_shows_the_story_and_the_targets():
    s = _story([RotMark("v1", "accuracy", at(7.2), at(6.0))])
    text = summary_table(s, check_targets(s))
    assert "accuracy v1 before drift         0.833  (n=6)" in text
    assert "accuracy after promotion (v2)    0.667  (n=3)" in text
    assert "v1         accuracy  7                    6" in text
    assert "MISSED" in text and text.count(" ok") == 6


# -- settings -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"events": 100, "mutate_at": 100}, "mutate_at=100 must be inside"),
    ({"mutate_at": 0}, "mutate_at=0"),
    ({"rate": 0}, "rate=0 must be > 0"),
    ({"window_size_s": 3, "window_period_s": 2}, "multiple of window_period_s=2"),
    ({"min_rows": 10}, "min_rows=10 must be >= 40"),
    ({"tolerance": 1.0}, "tolerance=1.0"),
    ({"detector_threshold": 0}, "detector_threshold=0"),
])
def test_config_rejects_bad_values_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)


def test_demo_flags_are_flags_the_pipeline_and_trainer_accept():
    from pipelines.feedback_pipeline import make_options
    from pipelines.options import config_from_options
    from rotwatch.cli import build_parser
    from trainer.config import TrainerConfig

    config = DemoConfig()
    pipeline = config_from_options(make_options(list(config.pipeline_args())))
    assert (pipeline.window_size_s, pipeline.window_period_s, pipeline.min_n,
            pipeline.consecutive, pipeline.tolerance) == (2, 1, 15, 1, 0.10)
    assert (pipeline.detector_threshold, pipeline.detector_min_error) == (4.5, 0.10)
    args = build_parser().parse_args(["trainer", "run", *config.trainer_args()])
    assert (args.min_rows, args.margin, args.sweep_interval,
            args.retry_insufficient) == (300, 0.02, 1.0, 1.0)
    TrainerConfig(min_rows=args.min_rows, margin=args.margin,
                  sweep_interval_s=args.sweep_interval,
                  retry_insufficient_s=args.retry_insufficient)


def test_population_a_is_the_articles_exact_call(tmp_path):
    from sklearn.datasets import make_classification

    path = tmp_path / "a.csv"
    assert write_population_csv(str(path)) == 100
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["x0", "x1", "x2", "x3", "y"]
    X, y = make_classification(n_features=4, n_redundant=1, random_state=99)
    assert [float(v) for v in rows[1][:4]] == X[0].tolist()
    assert [int(r[4]) for r in rows[1:]] == y.tolist()


def test_progress_lines_from_the_stack_logs():
    out = io.StringIO()
    from rotwatch.demo import _Console
    watcher = _StackWatcher(_Console(out, started=0.0))
    watcher.on_line("pipeline", "2026-12-03 10:00:00,000 INFO pipelines.publish: rot event "
                                "published rot_id=zombies.v1.accuracy.1 kind=accuracy "
                                "message_id=3")
    reason = ("'56 usable feedback rows, 300 needed (244 more); excluded: none; will "
              "retry'")
    line = ("INFO trainer.service: step=outcome rot_id=r1 state=insufficient-data "
            f"reason={reason}")
    watcher.on_line("trainer", line)
    watcher.on_line("trainer", line)    # said once per rot event
    watcher.on_line("trainer", "step=done rot_id=r1 state=insufficient-data rows=56")
    watcher.on_line("trainer", "step=outcome rot_id=r2 state=rejected reason='superseded: "
                               "v1 is no longer the default'")
    watcher.on_line("trainer", "step=done rot_id=r2 state=rejected produced_version=None")
    watcher.on_line("trainer", "step=done rot_id=r1 state=promoted produced_version=v2")
    watcher.on_line("gateway", "step=receive-update model=zombies version=v2 changed_by=x")
    text = out.getvalue()
    assert "pipeline: rot event published: zombies.v1.accuracy.1" in text
    assert text.count("waiting for feedback (56 usable feedback rows, 300 needed "
                      "(244 more))") == 1
    assert "gateway: default of zombies is now v2" in text
    assert "trainer: r2: rejected (superseded: v1 is no longer the default)" in text
    assert "trainer: r1: promoted -> v2\n" in text
    assert "insufficient-data" not in text
    assert _fields("a=1 b='x y' c=\"z\"") == {"a": "1", "b": "x y", "c": "z"}


# -- the real thing -------------------------------------------------------------------
def _pipeline_command_exists() -> bool:
    from rotwatch.cli import build_parser
    try:
        build_parser().parse_known_args(["pipeline", "run"])
    except SystemExit:
        return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_a_small_demo_closes_the_loop_on_the_real_stack(tmp_path):
    """~100 s: stack, v1, 600 events (mutation at 200), rot, v2, recovery."""
    if not _pipeline_command_exists():
        pytest.skip("`rotwatch pipeline run` is not registered in rotwatch.cli yet")
    from rotwatch.demo import run_demo

    config = DemoConfig(events=600, mutate_at=200, min_rows=200, out_dir=str(tmp_path))
    summary, targets = run_demo(config, out=io.StringIO())
    assert summary["rot_events_before_onset"] == 0
    assert summary["detection_delay_events"] is not None
    assert 0 <= summary["detection_delay_events"] <= 50
    assert summary["promoted_version"] == "v2"
    assert summary["recovery_events"] is not None
    assert summary["feedback_lost"] == 0
    assert (summary["feedback_stored"]
            == summary["events_published"] - summary["dead_lettered"])
    assert summary["accuracy"]["after_promotion"] > summary["accuracy"]["v1_after_drift"]
    for name in ("summary.json", "accuracy.png", "inputs.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_story_plots_draw_judged_windows_and_the_first_versions_inputs(tmp_path):
    from rotwatch.demo import _story_plots
    from rotwatch.report import FeedbackSample, Report, WindowRow

    windows = tuple(WindowRow("v1", at(i), at(i + 2), n, n - 2, (n - 2) / n, 0.5, 0.99)
                    for i, n in enumerate([20, 25, 1, 30]))
    feedback = FeedbackSample(versions=("v1",) * 4 + ("v2",) * 2,
                              features=tuple((float(i), 1.0, 2.0, 3.0) for i in range(6)),
                              correct=(True, True, False, False, True, True),
                              times=tuple(at(i) for i in range(6)), limit=100)
    report = Report(model="zombies", project="local-project", namespace=None, since=None,
                    until=None, generated_at=at(10), default_version="v2", versions=(),
                    windows=windows, rot_events=(), default_changes=(), training_jobs=(),
                    feedback=feedback)
    paths = {"accuracy.png": str(tmp_path / "accuracy.png"),
             "inputs.png": str(tmp_path / "inputs.png")}
    _story_plots(report, paths, at(2), "v1", min_n=20)
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000
    assert (tmp_path / "inputs.png").stat().st_size > 10_000


def test_environment_sets_drops_and_restores(monkeypatch):
    import os
    from rotwatch.environ import scoped_environ

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/keys/user.json")
    monkeypatch.delenv("DATASTORE_EMULATOR_HOST", raising=False)
    with scoped_environ({"DATASTORE_EMULATOR_HOST": "127.0.0.1:1"},
                      drop=("GOOGLE_APPLICATION_CREDENTIALS",)):
        assert os.environ["DATASTORE_EMULATOR_HOST"] == "127.0.0.1:1"
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == "/keys/user.json"
    assert "DATASTORE_EMULATOR_HOST" not in os.environ


def test_demo_detector_settings_reach_the_pipelines_detector():
    """The demo's detector flags build the detector the pipeline runs per version."""
    from pipelines.rot import ErrorMonitor, RuleSettings

    config = DemoConfig()
    rules = RuleSettings(detector_threshold=config.detector_threshold,
                         detector_min_error=config.detector_min_error)
    perfect = ErrorMonitor(1.0, None, rules.detector_delta, rules.detector_threshold,
                           rules.detector_min_error).detector
    assert (perfect.baseline_error, perfect.threshold, perfect.delta) == (0.10, 4.5, 0.1)
    v1 = ErrorMonitor(0.85, None, None, 4.5, 0.10).detector
    assert v1.baseline_error == pytest.approx(0.15)      # a floor, not a replacement
    plain = ErrorMonitor(1.0).detector                    # no options: as before
    assert (plain.baseline_error, plain.threshold) == (0.0, 8.0)
