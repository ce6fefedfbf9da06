"""Fault 9 — clock and order.

Invariant: out-of-order and late feedback (minutes late) is counted in the right
windows, or explicitly reported late — never silently lost.

The stream (shared with faults 1 and 4, ``delivery_run``) is published in shuffled
event-time order; 3% of it is 2-4 minutes old (inside the default 300 s allowed
lateness) and 1% is 10-15 minutes old (beyond it).
"""
from __future__ import annotations

import pytest

from faultkit.pipeline_delivery import LATENESS_S, clock_outcome

pytestmark = pytest.mark.slow


def test_out_of_order_feedback_is_counted_in_its_windows(delivery_run):
    """Invariant: windows of shuffled, on-time events hold exactly their events."""
    outcome = clock_outcome(delivery_run)
    c = outcome.counts
    assert c["out_of_order_windows"] > 10
    assert c["out_of_order_wrong"] == 0, outcome.summary()


def test_minutes_late_feedback_within_the_lateness_is_counted(delivery_run):
    """Invariant: events 2-4 minutes late update their (long closed) windows."""
    outcome = clock_outcome(delivery_run)
    c = outcome.counts
    assert c["late_events"] > 0 and c["late_windows"] > 0
    assert c["late_windows_wrong"] == 0, outcome.summary()


def test_feedback_beyond_the_lateness_is_still_stored(delivery_run):
    """Invariant (storage half): events 10-15 minutes late are stored as Feedback."""
    c = clock_outcome(delivery_run).counts
    assert c["too_late_stored"] == c["too_late_events"] > 0


@pytest.mark.xfail(strict=True, reason=(
    f"Feedback later than allowed_lateness ({LATENESS_S} s) is stored, but dropped "
    "from the window metrics without any report: Beam's trigger driver skips expired "
    "windows silently (apache_beam/transforms/trigger.py 'ignore expired windows'), "
    "and pipelines/metrics.py WindowedAccuracy has no step that sees it first — no "
    "counter, no dead letter, no log line. Fix in pipelines/ (metrics.py or parse.py): "
    "before WindowByVersion, tag events whose window end + allowed lateness is behind "
    "the watermark (on local runners: the wall clock) and send them to a 'late' output "
    "that is counted and published (e.g. feedback-deadletter with rotwatch_stage=late)"))
def test_feedback_beyond_the_lateness_is_counted_or_reported_late(delivery_run):
    """Invariant: each event 10-15 minutes late is in its windows' counts, or
    reported late (a dead letter saying so, or a late/drop counter)."""
    outcome = clock_outcome(delivery_run)
    c = outcome.counts
    assert c["too_late_events"] > 0
    assert c["too_late_unaccounted"] == 0, outcome.summary()
