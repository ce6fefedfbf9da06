"""The detector benchmark's scoring: what counts as a hit, a false alarm, a chance hit
and a paired delay (the figures its verdict rests on)."""
from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "detectors.py"
_spec = importlib.util.spec_from_file_location("bench_detectors", _PATH)
detectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(detectors)


def test_first_detection_in_the_window_is_the_hit_and_the_rest_false_alarms():
    # before the change, the hit, a second one in the window, one after the window
    assert detectors.score([100, 1040, 1200, 1600], change=1000, window=500) == (40, 3)
    assert detectors.score([999, 1500], change=1000, window=500) == (None, 2)
    assert detectors.score([], change=1000, window=500) == (None, 0)


def test_chance_hits_follow_the_false_alarm_rate():
    # one false alarm per 500 events, window 500: 1 - e^-1 of the streams
    result = {"false_alarms_per_10k": 20.0, "drifts": 60}
    assert detectors.chance_hits(result, window=500) == pytest.approx(
        60 * (1 - math.exp(-1.0)))
    assert detectors.chance_hits({"false_alarms_per_10k": 0.0, "drifts": 60}) == 0.0


def test_paired_delays_compare_only_the_changes_both_found():
    ours = {"_delays": {0: 10, 1: 50, 2: None, 3: 200}}
    theirs = {"_delays": {0: 30, 1: 40, 2: 5, 3: None}}
    # streams 0 and 1: ours 10 vs 30 (-20), 50 vs 40 (+10)
    assert detectors.paired_delays(ours, theirs) == (2, 1, 1, -5.0)
    assert detectors.paired_delays(ours, {"_delays": {2: 5}}) == (0, 0, 0, None)


def test_summary_keeps_each_streams_delay():
    streams = [("a", [0] * 10), ("a", [0] * 10), ("b", [0] * 20)]
    summary = detectors._summary([(0, 12, 0), (1, None, 2), (2, 30, 1)], streams, 0.5)
    assert summary["hits"] == 2 and summary["drifts"] == 3
    assert summary["false_alarms_per_10k"] == round(3 * 10000 / 40, 2)
    assert summary["median_delay"] == 21.0
    assert summary["_delays"] == {0: 12, 1: None, 2: 30}


def test_stationary_alarms_count_per_mode_and_error_rate_reproducibly():
    first = detectors.stationary_alarms(20_000, errors=(0.05, 0.3))
    assert set(first) == {"known", "learnt"}
    assert all(set(by_p) == {0.05, 0.3} for by_p in first.values())
    assert all(isinstance(a, int) and a >= 0 for by_p in first.values()
               for a in by_p.values())
    assert detectors.stationary_alarms(20_000, errors=(0.05, 0.3)) == first
