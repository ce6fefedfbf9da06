"""Fault 2 — the pipeline killed with SIGKILL in the middle of a stream, restarted.

Invariant: zero events lost, zero double-counted, compared with what was published:
stored ``Feedback`` = published, and every window's (n, correct) = the published
events'. The pipeline runs as ``rotwatch pipeline run`` on a subscription made by
``ensure_pubsub_resources`` (``rotwatch setup``); see ``faultkit/pipeline_kill.py``.
"""
from __future__ import annotations

import pytest

from faultkit.procs import log_of
from faultkit.pipeline_kill import pipeline_kill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def killed_mid_stream(emulators, fault_dir):
    return pipeline_kill(fault_dir, rate=200.0, kill_after_s=5.0, run_after_restart_s=6.0,
                         log_path=log_of(fault_dir, "pipeline-kill"))


def test_restart_after_sigkill_loses_no_event(killed_mid_stream):
    """Invariant: every published event is stored after the kill and restart."""
    c = killed_mid_stream.counts
    assert c["retain_acked_messages"] is True   # what the restart's seek replays from
    assert c["checkpoints_at_kill"] >= 1 and 0 < c["stored_at_kill"] < c["published"]
    assert "subscription seeked" in c["restart_seek"], killed_mid_stream.summary()
    assert (c["lost"], c["publish_errors"]) == (0, 0), killed_mid_stream.summary()
    assert c["stored"] == c["published"], killed_mid_stream.summary()


def test_restart_after_sigkill_counts_no_event_twice_nor_drops_one(killed_mid_stream):
    """Invariant: no window counts more (or fewer) events than were published in it."""
    c = killed_mid_stream.counts
    assert c["windows"] >= 5
    assert c["windows_over"] == 0 and c["stored_not_published"] == 0, \
        killed_mid_stream.summary()
    assert (c["windows_under"], c["windows_missing"]) == (0, 0), \
        killed_mid_stream.summary()


def test_sigkill_before_the_first_checkpoint_loses_no_event(emulators, fault_dir):
    """Invariant: the same, for a kill before the first checkpoint was written."""
    outcome = pipeline_kill(fault_dir, early=True, backlog=3000, rate=100.0,
                            run_after_restart_s=4.0, timeout_s=60.0,
                            log_path=log_of(fault_dir, "pipeline-kill-early"))
    c = outcome.counts
    assert c["checkpoints_at_kill"] == 0
    assert c["lost"] == 0 and c["stored"] == c["published"], outcome.summary()
