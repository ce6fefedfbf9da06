"""Fault 5 — duplicate rot events, two trainers at once, a trainer killed mid-job.

Invariant: the same rot event delivered twice to two ``rotwatch trainer run``
processes makes exactly one new version; a trainer SIGKILLed mid-job leaves the job
to the other, which finishes it once the (short) lease expires. See
``faultkit/trainer_race.py``.
"""
from __future__ import annotations

import pytest

from faultkit.procs import log_of
from faultkit.trainer_race import trainer_race

pytestmark = pytest.mark.slow

LEASE_S = 7.0


@pytest.fixture(scope="module")
def raced(emulators, fault_dir):
    return trainer_race(fault_dir, lease_s=LEASE_S, time_limit_s=6.0,
                        log_path=log_of(fault_dir, "trainers"))


def test_a_rot_event_delivered_twice_to_two_trainers_makes_one_version(raced):
    """Invariant: 2 deliveries, 2 trainers -> 1 claim, 1 new version (v2)."""
    c = raced.counts
    assert len(c["duplicate_claims"]) == 2, raced.summary()
    assert c["duplicate_claims"].count("claimed") == 1, raced.summary()
    assert c["duplicate_versions"] == ["v1", "v2"], raced.summary()
    assert c["duplicate_job"] == ("promoted", 1), raced.summary()


def test_a_job_whose_trainer_is_killed_is_finished_by_the_other(raced):
    """Invariant: SIGKILL mid-job (running, attempt 1) -> the survivor finishes it
    after the lease (attempt 2), with exactly one new version, now the default."""
    c = raced.counts
    assert c["job_at_kill"] == ("running", 1), raced.summary()
    assert c["killed_job"] == ("promoted", 2), raced.summary()
    assert c["finished_by_survivor"] is True, raced.summary()
    assert c["killed_versions"] == ["v1", "v2"] and c["default_after_kill"] == "v2"
    # not before the lease ran out (it began at the claim, just before the kill)
    assert LEASE_S - 1 <= c["takeover_s"] < LEASE_S + 60, raced.summary()
