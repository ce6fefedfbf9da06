"""rotwatch report: reading stored kinds back, the table, the JSON and the plots.

Fixture entities are written with the official Datastore client exactly per the
contract in ``rotwatch/kinds.py``, into a namespace of their own (so "the only stored
model" is well defined while other tests share the emulator).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import struct
import uuid

import numpy as np
import pytest

from rotwatch import kinds
from rotwatch.config import Settings
from rotwatch.events import RotEvent, format_time

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)
MINUTE = dt.timedelta(minutes=1)
# v1: ten one-minute windows of 100 events, good then rotting after minute 4.
V1_CORRECT = [95, 96, 94, 95, 80, 70, 62, 60, 58, 55]
# v2: promoted at minute 12, six windows, recovered.
V2_CORRECT = [90, 93, 94, 95, 94, 96]
V2_START_MIN = 12
ROT_DECIDED = T0 + 7 * MINUTE
CHANGE_POINT = T0 + 4 * MINUTE
PROMOTED = T0 + 11.5 * MINUTE
# Feedback rows: v1 before the change point (all in cluster A), v1 after (cluster B,
# mostly wrong), v2 (cluster B, mostly right).
FB_V1_BEFORE, FB_V1_AFTER, FB_V2 = 240, 160, 120


def _png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# -- fixture data ---------------------------------------------------------------------
def _write_fixture(client, model: str) -> dict:
    from google.cloud import datastore
    model_key = client.key(kinds.MODEL, model)
    entities = []

    def entity(key, exclude=(), **props):
        e = datastore.Entity(key=key, exclude_from_indexes=tuple(exclude))
        e.update(props)
        entities.append(e)
        return e

    entity(model_key, default_version="v2", created_at=T0 - MINUTE, updated_at=PROMOTED)
    for number, baseline, created, parent in ((1, 0.95, T0 - MINUTE, None),
                                              (2, 0.93, PROMOTED - 10 * dt.timedelta(seconds=1), "v1")):
        name = kinds.version_name(number)
        entity(client.key(kinds.MODEL_VERSION, name, parent=model_key),
               exclude=("params", "metrics", "reference_stats"),
               version=name, number=number, artifact_uri=f"/tmp/{model}/{name}.joblib",
               sha256="0" * 64, estimator="DecisionTreeClassifier", params="{}",
               n_features=4, classes=[0, 1], baseline_accuracy=baseline,
               metrics=json.dumps({"holdout_accuracy": baseline, "holdout_rows": 200}),
               reference_stats="{}", train_start=created - 10 * MINUTE,
               train_end=created, train_rows=800, parent_version=parent,
               created_at=created, created_by="trainer" if parent else "cli",
               status="ready")
    for when, version, previous in ((T0 - MINUTE, "v1", None), (PROMOTED, "v2", "v1")):
        entity(client.key(kinds.DEFAULT_CHANGE, f"{int(when.timestamp() * 1000)}-{version}",
                          parent=model_key),
               default_version=version, previous_version=previous,
               changed_by="trainer" if previous else "cli",
               reason="rot" if previous else "first version", changed_at=when)

    def windows(version, correct_counts, start_min):
        for i, correct in enumerate(correct_counts):
            start = T0 + (start_min + i) * MINUTE
            end = start + MINUTE
            from rotwatch.stats import wilson_interval
            lower, upper = wilson_interval(correct, 100)
            entity(client.key(kinds.WINDOW_METRIC,
                              kinds.window_metric_name(model, version, start, end)),
                   exclude=("drift",),
                   model=model, version=version, window_start=start, window_end=end,
                   n=100, correct=correct, accuracy=correct / 100, lower=lower,
                   upper=upper, drift=json.dumps({"psi": [0.01, 0.02, 0.0, 0.01]}),
                   pane="on_time", updated_at=end)
    windows("v1", V1_CORRECT, 0)
    windows("v2", V2_CORRECT, V2_START_MIN)
    # an empty late pane: must not count as a window with an accuracy
    start = T0 + 20 * MINUTE
    entity(client.key(kinds.WINDOW_METRIC,
                      kinds.window_metric_name(model, "v2", start, start + MINUTE)),
           model=model, version="v2", window_start=start, window_end=start + MINUTE,
           n=0, correct=0, accuracy=None, lower=0.0, upper=1.0, drift="{}", pane="late",
           updated_at=start + MINUTE)

    rot = RotEvent(model=model, version="v1", kind="accuracy", decided_at=ROT_DECIDED,
                   window_start=ROT_DECIDED - MINUTE, window_end=ROT_DECIDED, n=100,
                   accuracy=0.62, baseline_accuracy=0.95, bound=0.71,
                   change_point=CHANGE_POINT, detail="3 windows below baseline")
    entity(client.key(kinds.ROT_EVENT, rot.rot_id), exclude=("evidence",),
           model=model, version="v1", kind="accuracy", decided_at=ROT_DECIDED,
           evidence=json.dumps(rot.to_dict()), published_at=ROT_DECIDED)
    entity(client.key(kinds.TRAINING_JOB, rot.rot_id),
           model=model, version="v1", state="promoted", lease_owner="trainer-1",
           lease_expires=PROMOTED, attempts=1, produced_version="v2",
           candidate_accuracy=0.93, current_accuracy=0.58, rows=400, error=None,
           created_at=ROT_DECIDED + dt.timedelta(seconds=5), updated_at=PROMOTED)

    rng = np.random.default_rng(7)
    feedback_plan = [("v1", FB_V1_BEFORE, T0, CHANGE_POINT, 0.0, 0.95),
                     ("v1", FB_V1_AFTER, CHANGE_POINT, PROMOTED, 3.0, 0.40),
                     ("v2", FB_V2, T0 + V2_START_MIN * MINUTE, T0 + 18 * MINUTE, 3.0, 0.92)]
    expected_ok = {}
    for version, count, start, end, shift, p_ok in feedback_plan:
        step = (end - start) / count
        oks = rng.random(count) < p_ok
        expected_ok[version] = expected_ok.get(version, 0) + int(oks.sum())
        for i in range(count):
            features = (rng.normal(size=4) + shift * np.array([1.0, 0.5, 0.0, -1.0])).tolist()
            event_id = uuid.uuid4().hex
            ok = bool(oks[i])
            entity(client.key(kinds.FEEDBACK, event_id), exclude=("features",),
                   model=model, version=version, features=features, prediction=1,
                   was_correct=ok, label=None, correct=ok, event_time=start + step * i,
                   stored_at=start + step * i + dt.timedelta(seconds=1))
    for i in range(0, len(entities), 400):  # <= 500 mutations per commit
        client.put_multi(entities[i:i + 400])
    return {"feedback_ok": expected_ok}


@pytest.fixture(scope="module")
def stored(emulators):
    """A model with two versions, a rot and a promotion, alone in its namespace."""
    from google.cloud import datastore
    namespace = "report-" + uuid.uuid4().hex[:10]
    model = "zombies-" + uuid.uuid4().hex[:6]
    client = datastore.Client(project=emulators.project, namespace=namespace)
    expected = _write_fixture(client, model)
    settings = Settings(project=emulators.project, namespace=namespace)
    return {"client": client, "model": model, "settings": settings,
            "namespace": namespace, **expected}


@pytest.fixture(scope="module")
def report(stored):
    from rotwatch.report import load_report
    return load_report(stored["model"], settings=stored["settings"])


# -- reading --------------------------------------------------------------------------
def test_report_reads_every_kind(report, stored):
    assert report.model == stored["model"]
    assert report.namespace == stored["namespace"]
    assert report.default_version == "v2"
    assert [v.version for v in report.versions] == ["v1", "v2"]
    assert [v.holdout_accuracy for v in report.versions] == [0.95, 0.93]
    assert [v.parent_version for v in report.versions] == [None, "v1"]
    by_version = report.windows_by_version()
    assert {k: len(v) for k, v in by_version.items()} == {"v1": 10, "v2": 7}
    assert [r.correct for r in by_version["v1"]] == V1_CORRECT
    assert [(r.version, r.kind, r.decided_at) for r in report.rot_events] == [
        ("v1", "accuracy", ROT_DECIDED)]
    assert report.rot_events[0].change_point == CHANGE_POINT
    assert report.rot_events[0].accuracy == 0.62
    assert [(c.default_version, c.previous_version) for c in report.default_changes] == [
        ("v1", None), ("v2", "v1")]
    assert [c.changed_at for c in report.promotions()] == [PROMOTED]
    assert [(j.state, j.produced_version, j.rows) for j in report.training_jobs] == [
        ("promoted", "v2", 400)]


def test_feedback_sample_is_oldest_first_with_features(report):
    fb = report.feedback
    assert len(fb) == FB_V1_BEFORE + FB_V1_AFTER + FB_V2
    assert not fb.truncated
    assert list(fb.times) == sorted(fb.times)
    assert fb.times[0] == T0
    assert all(len(f) == 4 for f in fb.features)
    assert fb.versions.count("v1") == FB_V1_BEFORE + FB_V1_AFTER
    assert fb.versions.count("v2") == FB_V2


def test_version_summaries_hold_the_real_numbers(report, stored):
    v1, v2 = report.version_summaries()
    assert (v1.version, v1.windows, v1.rot_events, v1.is_default) == ("v1", 10, 1, False)
    assert v1.window_accuracy_min == 0.55
    assert v1.window_accuracy_last == 0.55
    assert v1.window_accuracy_mean == pytest.approx(sum(V1_CORRECT) / 1000)
    assert v1.feedback_n == FB_V1_BEFORE + FB_V1_AFTER
    assert v1.feedback_accuracy == pytest.approx(
        stored["feedback_ok"]["v1"] / (FB_V1_BEFORE + FB_V1_AFTER))
    assert v1.promoted_at == T0 - MINUTE
    # the empty late pane is not a window with an accuracy
    assert (v2.windows, v2.rot_events, v2.is_default) == (6, 0, True)
    assert v2.window_accuracy_mean == pytest.approx(sum(V2_CORRECT) / 600)
    assert (v2.window_accuracy_min, v2.window_accuracy_last) == (0.90, 0.96)
    assert v2.promoted_at == PROMOTED


def test_summary_table_shows_the_numbers(report):
    from rotwatch.report import summary_table
    table = summary_table(report)
    lines = table.splitlines()
    v1_line = next(line for line in lines if line.startswith("v1 "))
    v2_line = next(line for line in lines if line.startswith("v2 *"))
    assert v1_line.split()[1:3][0] == str(FB_V1_BEFORE + FB_V1_AFTER)
    assert "0.550" in v1_line and f"{sum(V1_CORRECT) / 1000:.3f}" in v1_line
    assert "0.950" in v1_line                           # holdout
    assert v2_line.split()[2] == str(FB_V2)
    assert "0.900" in v2_line and "0.960" in v2_line and "0.937" in v2_line
    assert "2026-12-03 10:11:30Z" in v2_line            # default since
    assert "10:07:00Z  v1  accuracy  accuracy 0.620  change point 2026-12-03 10:04:00Z" in table
    assert "v1 -> v2  promoted  candidate 0.930 vs current 0.580" in table


def test_time_range_keeps_only_what_falls_inside(stored):
    from rotwatch.report import load_report
    since = T0 + V2_START_MIN * MINUTE
    report = load_report(stored["model"], settings=stored["settings"], since=since,
                         until=format_time(T0 + 16 * MINUTE))
    assert {r.version for r in report.windows} == {"v2"}
    assert [r.window_end for r in report.windows] == [
        T0 + (V2_START_MIN + i) * MINUTE for i in range(1, 5)]   # [12,13) .. [15,16)
    assert report.rot_events == () and report.default_changes == ()
    assert all(since <= t < T0 + 16 * MINUTE for t in report.feedback.times)
    assert set(report.feedback.versions) == {"v2"}


def test_feedback_sample_is_bounded_newest_first(stored):
    from rotwatch.report import load_report, summary_table
    report = load_report(stored["model"], settings=stored["settings"], max_feedback=50)
    assert len(report.feedback) == 50 and report.feedback.truncated
    assert set(report.feedback.versions) == {"v2"}       # the newest rows
    assert ">=50" in summary_table(report)


# -- the command ----------------------------------------------------------------------
def test_report_command_writes_plots_json_and_table(stored, tmp_path, monkeypatch, capsys):
    from rotwatch.cli import main
    monkeypatch.setenv("ROTWATCH_NAMESPACE", stored["namespace"])
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--project", stored["settings"].project]) == 0
    printed = capsys.readouterr().out
    assert f"model {stored['model']}" in printed
    assert "v2 *" in printed and f"wrote {out / 'accuracy.png'}" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["model"] == stored["model"] and data["default_version"] == "v2"
    summary = {s["version"]: s for s in data["summary"]}
    assert summary["v1"]["feedback_n"] == FB_V1_BEFORE + FB_V1_AFTER
    assert summary["v1"]["rot_events"] == 1 and summary["v2"]["rot_events"] == 0
    assert summary["v2"]["promoted_at"] == "2026-12-03T10:11:30.000Z"
    assert summary["v1"]["window_accuracy_min"] == 0.55
    assert [r["rot_id"] for r in data["rot_events"]] == [
        f"{stored['model']}.v1.accuracy.{int(ROT_DECIDED.timestamp() * 1000)}"]
    assert data["inputs_split"] == {"time": "2026-12-03T10:04:00.000Z",
                                    "basis": "change point"}
    assert data["feedback_sample"]["rows"] == FB_V1_BEFORE + FB_V1_AFTER + FB_V2
    assert len(data["windows"]) == 17
    for name in ("accuracy.png", "inputs.png"):
        width, height = _png_size(str(out / name))
        assert 1000 <= width <= 1400 and 500 <= height <= 700, (name, width, height)
        assert os.path.getsize(out / name) > 20_000


def test_report_without_model_in_empty_namespace_says_what_to_run(emulators, tmp_path,
                                                                  monkeypatch, capsys):
    from rotwatch.cli import main
    monkeypatch.setenv("ROTWATCH_NAMESPACE", "empty-" + uuid.uuid4().hex[:8])
    assert main(["report", "--out", str(tmp_path), "--project", emulators.project]) == 1
    err = capsys.readouterr().err
    assert "no models are stored" in err and "rotwatch demo" in err
    assert not (tmp_path / "accuracy.png").exists()


def test_report_for_unknown_model_lists_the_stored_ones(stored, tmp_path, monkeypatch,
                                                       capsys):
    from rotwatch.cli import main
    monkeypatch.setenv("ROTWATCH_NAMESPACE", stored["namespace"])
    assert main(["report", "--out", str(tmp_path), "--model", "nosuch",
                 "--project", stored["settings"].project]) == 1
    err = capsys.readouterr().err
    assert "'nosuch' is not stored" in err and stored["model"] in err


def test_report_rejects_bad_time_and_empty_range(stored, tmp_path, monkeypatch, capsys):
    from rotwatch.cli import main
    monkeypatch.setenv("ROTWATCH_NAMESPACE", stored["namespace"])
    assert main(["report", "--out", str(tmp_path), "--since", "yesterday",
                 "--project", stored["settings"].project]) == 2
    assert "'yesterday' is not an RFC 3339 time" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path), "--since", "2030-01-01T00:00:00Z",
                 "--project", stored["settings"].project]) == 1
    err = capsys.readouterr().err
    assert "no feedback and no window metrics" in err and "widen --since/--until" in err


# -- plots without a store ------------------------------------------------------------
def test_plot_accuracy_from_rows(tmp_path):
    from rotwatch.plots import plot_accuracy
    rows = [{"version": "v1", "window_end": T0 + i * MINUTE, "accuracy": a,
             "lower": a - 0.05, "upper": min(1.0, a + 0.05), "n": 100}
            for i, a in enumerate([0.95, 0.9, 0.7, 0.6])]
    path = plot_accuracy(rows, tmp_path / "a.png", mutation_time=T0 + 1.5 * MINUTE,
                         rot_events=[(T0 + 3 * MINUTE, "rot: v1 accuracy")])
    assert _png_size(path) == (1210, 682)


def test_plot_inputs_rejects_mismatched_rows(tmp_path):
    from rotwatch.plots import plot_inputs
    with pytest.raises(ValueError, match="must describe the same rows"):
        plot_inputs([[1.0, 2.0]], [True, False], [T0], tmp_path / "i.png", T0)
    with pytest.raises(ValueError, match="should name a .png file"):
        plot_inputs([[1.0, 2.0]], [True], [T0], tmp_path / "i.jpg", T0)


def test_project_2d_finds_the_main_direction():
    from rotwatch.plots import project_2d
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    X = np.column_stack([t, 2 * t, rng.normal(scale=0.01, size=500),
                         rng.normal(scale=0.01, size=500)])
    XY, names = project_2d(X)
    assert XY.shape == (500, 2)
    assert names[0].startswith("PC1 (100%")
    # PC1 is t * |(1, 2)| up to centring: the direction of the data
    assert np.corrcoef(XY[:, 0], t)[0, 1] > 0.999


def test_plots_say_when_there_is_nothing_to_draw(tmp_path):
    from rotwatch.plots import plot_accuracy, plot_inputs
    assert _png_size(plot_accuracy([], tmp_path / "a.png")) == (1210, 682)
    assert _png_size(plot_inputs([], [], [], tmp_path / "i.png", T0)) == (1210, 572)


def test_report_fails_fast_when_the_emulator_is_down(tmp_path, monkeypatch, capsys):
    from rotwatch.cli import main
    monkeypatch.setenv("DATASTORE_EMULATOR_HOST", "127.0.0.1:1")
    assert main(["report", "--out", str(tmp_path)]) == 1
    assert "DATASTORE_EMULATOR_HOST=127.0.0.1:1 does not answer" in capsys.readouterr().err
