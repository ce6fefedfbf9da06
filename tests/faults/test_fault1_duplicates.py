"""Fault 1 — duplicate delivery.

Invariant: with 10% of the feedback published twice (same event id) and Pub/Sub
redelivering (a competing consumer's leases expiring after the shortest ack
deadline, then a seek back over everything), the stored ``Feedback`` count and every
window's (n, correct) are exactly those of the stream without duplicates.

The run is shared with faults 4 and 9 (``delivery_run`` in conftest.py; the stream
and its judges are in ``faultkit/pipeline_delivery.py``).
"""
from __future__ import annotations

import pytest

from faultkit.pipeline_delivery import duplicates_outcome

pytestmark = pytest.mark.slow


def test_duplicates_and_redeliveries_really_reached_the_pipeline(delivery_run):
    """Precondition of the invariant: each kind of repeat happened, as counted."""
    outcome = duplicates_outcome(delivery_run)
    c = outcome.counts
    assert c["published_twice"] >= 0.09 * c["unique_valid"], outcome.summary()
    # every message a competing consumer held was stored only after its lease expired
    assert c["leased_valid_redelivered"] == len(delivery_run.leased_away
                                                & {e.event_id for e in delivery_run.valid})
    assert c["leased_valid_redelivered"] > 0, outcome.summary()
    # the seek back delivered the whole stream again (each poison dead-lettered twice)
    assert c["stream_replayed_times"] >= 2, outcome.summary()


def test_feedback_is_stored_once_per_event_id(delivery_run):
    """Invariant: stored Feedback = unique events, none missing, none extra."""
    outcome = duplicates_outcome(delivery_run)
    c = outcome.counts
    assert (c["stored"], c["stored_missing"], c["stored_unexpected"]) == \
        (c["unique_valid"], 0, 0), outcome.summary()


def test_every_window_counts_each_event_exactly_once(delivery_run):
    """Invariant: each window's (n, correct) equals the duplicate-free stream's, and
    stays so after the late panes and replays settle."""
    outcome = duplicates_outcome(delivery_run)
    c = outcome.counts
    assert c["windows"] > 10
    assert (c["windows_over"], c["windows_under"], c["windows_missing"],
            c["windows_moved_after_settling"]) == (0, 0, 0, 0), outcome.summary()
