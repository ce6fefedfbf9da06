"""Per-bundle grouping (pipelines/bundling.py): keyed input, or a ``key_fn`` that saves
the keying step; the same groups, windows and watermark-holding timestamps either way.

    .venv/bin/python -m pytest tests/test_pipeline_bundling.py -q
"""
from __future__ import annotations

import pytest

apache_beam = pytest.importorskip("apache_beam")

import apache_beam as beam  # noqa: E402
from apache_beam.transforms.window import GlobalWindow, IntervalWindow  # noqa: E402
from apache_beam.utils.timestamp import Timestamp  # noqa: E402

from pipelines.bundling import CombineInBundle, GroupInBundle  # noqa: E402

W1, W2 = IntervalWindow(0, 10), IntervalWindow(5, 15)


def _run(fn, elements):
    """``(element, timestamp s, window)`` through one bundle of ``fn``."""
    fn.start_bundle()
    for element, seconds, window in elements:
        fn.process(element, window=window, timestamp=Timestamp(seconds))
    return sorted(((wv.value[0], wv.value[1], wv.timestamp.micros // 10 ** 6,
                    tuple(wv.windows)) for wv in fn.finish_bundle()),
                  key=lambda row: (row[0], row[2], str(row[3])))


EVENTS = [("a", 3, W1), ("b", 2, W1), ("a", 1, W1), ("a", 4, W2), ("b", 6, W2)]


def test_key_fn_groups_like_keyed_input():
    keyed = _run(GroupInBundle(), [((v, v * 10), t, w) for v, t, w in EVENTS])
    by_fn = _run(GroupInBundle(key_fn=lambda x: x[0]),
                 [((v, v * 10), t, w) for v, t, w in EVENTS])
    assert [(k, [x[1] for x in g], t, ws) for k, g, t, ws in by_fn] == \
        [(k, g, t, ws) for k, g, t, ws in keyed]
    assert [(k, t, ws) for k, _, t, ws in keyed] == [
        ("a", 1, (W1,)), ("a", 4, (W2,)), ("b", 2, (W1,)), ("b", 6, (W2,))]


def test_global_window_merges_windows_and_keeps_the_earliest_timestamp():
    out = _run(GroupInBundle(key_fn=lambda x: x, global_window=True), EVENTS)
    assert out == [("a", ["a", "a", "a"], 1, (GlobalWindow(),)),
                   ("b", ["b", "b"], 2, (GlobalWindow(),))]


def test_combine_in_bundle_with_key_fn():
    out = _run(CombineInBundle(beam.combiners.CountCombineFn(), key_fn=lambda x: x),
               EVENTS)
    assert [(k, n, ws) for k, n, _, ws in out] == [
        ("a", 2, (W1,)), ("a", 1, (W2,)), ("b", 1, (W1,)), ("b", 1, (W2,))]
