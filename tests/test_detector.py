"""pipelines.detector: exact detection indices on seeded error streams."""
from __future__ import annotations

import json
import pickle
import random

import pytest

from pipelines.detector import ErrorRateDetector


def _stream(seed: int, *parts: tuple[int, float]) -> list[int]:
    """Concatenated Bernoulli error segments ``(events, error rate)``."""
    rng = random.Random(seed)
    return [int(rng.random() < p) for n, p in parts for _ in range(n)]


def _detections(detector: ErrorRateDetector, stream) -> list[tuple[int, int, int]]:
    """``(stream index, change_point, n)`` of every detection."""
    found = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            found.append((i, detector.change_point, detector.n))
    return found


# -- detection ---------------------------------------------------------------------------
def test_stationary_stream_of_20k_events_raises_no_alarm():
    stream = _stream(0, (20000, 0.1))
    assert _detections(ErrorRateDetector(), stream) == []
    assert _detections(ErrorRateDetector(baseline_error=0.1), stream) == []


def test_abrupt_rise_from_10_to_30_percent_at_1000():
    stream = _stream(1, (1000, 0.1), (1000, 0.3))
    assert _detections(ErrorRateDetector(), stream) == [(1057, 1001, 1058)]


def test_known_baseline_detects_sooner():
    stream = _stream(1, (1000, 0.1), (1000, 0.3))
    assert _detections(ErrorRateDetector(baseline_error=0.1), stream) == [(1048, 1001, 1049)]


def test_known_baseline_needs_no_warmup():
    stream = _stream(6, (100, 0.05), (400, 0.3))
    assert _detections(ErrorRateDetector(baseline_error=0.05), stream) == [(136, 95, 137)]
    # learning the baseline, nothing can fire during the 300-event warm-up
    assert _detections(ErrorRateDetector(), stream) == []


def test_each_step_up_is_detected_once():
    stream = _stream(5, (1000, 0.05), (1000, 0.2), (1500, 0.4))
    # the second change point counts from the reset after the first detection:
    # 1031 + 967 = 1998, two events before the true change at 2000
    assert _detections(ErrorRateDetector(), stream) == [(1030, 996, 1031),
                                                        (2073, 967, 1043)]


def test_falling_error_rate_is_not_rot():
    stream = _stream(7, (2000, 0.3), (20000, 0.1))
    assert _detections(ErrorRateDetector(), stream) == []


def test_streams_of_only_errors_or_only_successes_never_alarm():
    assert _detections(ErrorRateDetector(), [1] * 5000) == []
    assert _detections(ErrorRateDetector(), [0] * 5000) == []


def test_perfect_model_is_floored_at_one_percent_error():
    # training said 100% accurate: one error is not yet a rise, a burst is
    detector = ErrorRateDetector(baseline_error=0.0)
    assert _detections(detector, [0] * 50 + [1] + [0] * 50) == []
    assert _detections(detector, [1, 0, 1, 0, 1]) == []      # 3 errors in 5: not yet
    assert _detections(detector, [1]) == [(0, 101, 107)]     # a fourth one is


def test_accepts_booleans():
    stream = [bool(x) for x in _stream(1, (1000, 0.1), (1000, 0.3))]
    assert _detections(ErrorRateDetector(), stream) == [(1057, 1001, 1058)]


# -- reset -------------------------------------------------------------------------------
def test_detector_resets_itself_on_the_update_after_a_detection():
    detector = ErrorRateDetector()
    stream = _stream(1, (1000, 0.1), (1000, 0.3))
    for x in stream[:1058]:
        detector.update(x)
    assert detector.drift_detected and detector.n == 1058
    assert detector.change_point == 1001
    detector.update(0)
    assert not detector.drift_detected
    assert detector.n == 1
    assert detector.change_point is None
    assert detector.warming_up


def test_after_a_detection_a_known_baseline_gives_way_to_the_new_level():
    # a rotten version alarms once, not every few dozen events
    stream = _stream(0, (1000, 0.1), (1000, 0.3))
    assert _detections(ErrorRateDetector(baseline_error=0.1), stream) == [(1075, 993, 1076)]


def test_manual_reset_restores_the_initial_state():
    detector = ErrorRateDetector(baseline_error=0.1)
    _detections(detector, _stream(0, (1000, 0.1), (1000, 0.3)))
    detector._reset()
    assert detector.to_state() == ErrorRateDetector(baseline_error=0.1).to_state()
    assert detector.baseline() == 0.1


# -- state -------------------------------------------------------------------------------
def test_state_round_trip_continues_identically():
    stream = _stream(3, (1500, 0.1), (1500, 0.25), (1500, 0.5))
    whole = _detections(ErrorRateDetector(), stream)
    assert [i for i, _, _ in whole] == [1633, 3062]

    first = ErrorRateDetector()
    found = _detections(first, stream[:1600])
    state = json.loads(json.dumps(first.to_state()))   # through JSON, like Beam state
    second = ErrorRateDetector.from_state(state)
    assert second.to_state() == first.to_state()
    for i, x in enumerate(stream[1600:], start=1600):
        second.update(x)
        if second.drift_detected:
            found.append((i, second.change_point, second.n))
    assert found == whole


def test_state_round_trip_right_after_a_detection_keeps_the_pending_reset():
    stream = _stream(1, (1000, 0.1), (1000, 0.3))
    detector = ErrorRateDetector()
    for x in stream[:1058]:
        detector.update(x)
    restored = ErrorRateDetector.from_state(detector.to_state())
    assert restored.drift_detected and restored.change_point == 1001
    restored.update(0)
    assert restored.n == 1 and not restored.drift_detected


def test_state_is_small_and_json_ready():
    detector = ErrorRateDetector()
    _detections(detector, _stream(2, (700, 0.2)))
    state = detector.to_state()
    assert len(json.dumps(state)) < 400
    assert state["n"] == 700 and state["version"] == 1


def test_detector_pickles_mid_stream():
    stream = _stream(1, (1000, 0.1), (1000, 0.3))
    detector = ErrorRateDetector()
    _detections(detector, stream[:1020])
    clone = pickle.loads(pickle.dumps(detector))
    assert _detections(clone, stream[1020:]) == [(37, 1001, 1058)]


def test_from_state_names_what_is_missing():
    state = ErrorRateDetector().to_state()
    del state["s"]
    with pytest.raises(ValueError, match="state lacks s"):
        ErrorRateDetector.from_state(state)


def test_from_state_refuses_another_layout_version():
    state = dict(ErrorRateDetector().to_state(), version=99)
    with pytest.raises(ValueError, match="state version 99"):
        ErrorRateDetector.from_state(state)


# -- settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    ({"delta": 0.0}, "delta=0.0"),
    ({"delta": 1.5}, "delta=1.5"),
    ({"threshold": -1}, "threshold=-1"),
    ({"warmup": -5}, "warmup=-5"),
    ({"warmup": 2.5}, "warmup=2.5"),
    ({"margin": -0.1}, "margin=-0.1"),
    ({"baseline_error": 1.5}, "baseline_error=1.5"),
    ({"baseline_error": -0.1}, "baseline_error=-0.1"),
])
def test_bad_settings_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ErrorRateDetector(**kwargs)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="x=0.5 must be 1"):
        ErrorRateDetector().update(0.5)


def test_settings_are_public_and_state_is_private():
    detector = ErrorRateDetector(delta=0.2, threshold=6.0, warmup=100, margin=1.0,
                                 baseline_error=0.05)
    public = {k: v for k, v in vars(detector).items() if not k.startswith("_")}
    assert public == {"delta": 0.2, "threshold": 6.0, "warmup": 100, "margin": 1.0,
                      "baseline_error": 0.05}
