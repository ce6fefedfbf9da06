"""Fault 9 — clock and order.

Invariant: out-of-order and late feedback (minutes late) is counted in the right
windows, or explicitly reported late — never silently lost.

The stream (shared with faults 1 and 4, ``delivery_run``) is published in shuffled
event-time order; 3% of it is 2-4 minutes old (inside the default 300 s allowed
lateness) and 1% is 10-15 minutes old (beyond it): those are stored and reported
late by name, on feedback-deadletter with ``rotwatch_stage=late``.
"""
from __future__ import annotations

import pytest

from faultkit.pipeline_delivery import clock_outcome

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


def test_feedback_beyond_the_lateness_is_counted_or_reported_late(delivery_run):
    """Invariant: each event 10-15 minutes late is in its windows' counts, or
    reported late (a dead letter saying so, or a late/drop counter)."""
    outcome = clock_outcome(delivery_run)
    c = outcome.counts
    assert c["too_late_events"] > 0
    assert c["too_late_unaccounted"] == 0, outcome.summary()
