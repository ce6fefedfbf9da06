"""Fault 3 — the emulators killed (SIGKILL) and restarted on the same ports, with
Datastore on a data dir.

Invariant: data intact, and the official clients created before the crash recover
by themselves (gRPC reconnects to the same port); see
``faultkit/emulator_restart.py``.
"""
from __future__ import annotations

import pytest

from faultkit.procs import log_of
from faultkit.emulator_restart import emulator_restart

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restarted(fault_dir, tmp_path_factory):
    return emulator_restart(str(tmp_path_factory.mktemp("fault3")), feedback_rows=1500,
                            log_path=log_of(fault_dir, "emulators-restart"))


def test_datastore_data_survives_a_sigkill(restarted):
    """Invariant: every entity written before the kill is there, unchanged."""
    c = restarted.counts
    assert c["feedback_before"] == c["feedback_after"] == 1500
    assert c["entities_after"] == c["entities_before"], restarted.summary()
    assert c["entities_lost_or_changed"] == 0, restarted.summary()
    assert c["default_loads_as"] == "v1", restarted.summary()


def test_acknowledged_commits_are_durable_and_atomic(restarted):
    """Invariant: every commit acknowledged before the kill is stored whole; a commit
    cut by the kill is stored whole or not at all."""
    c = restarted.counts
    assert c["commits_acknowledged"] >= 1
    assert (c["acknowledged_commits_missing"], c["torn_commits"]) == (0, 0), \
        restarted.summary()


def test_clients_made_before_the_crash_recover(restarted):
    """Invariant: the same Datastore, publisher and subscriber objects work again; a
    read in flight during the outage completes (its retry covers UNAVAILABLE), a
    commit during it fails loudly (commits are not retried) instead of vanishing."""
    c = restarted.counts
    assert c["read_during_outage"] == ("ok", True), restarted.summary()
    assert c["write_during_outage"][0] == "error", restarted.summary()
    assert c["write_after_restart"] is True, restarted.summary()
    assert c["pubsub_publish_after_restart"] is True, restarted.summary()
    assert c["pubsub_pulled_after_restart"] == 1, restarted.summary()
