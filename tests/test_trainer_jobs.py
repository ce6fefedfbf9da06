"""TrainingJob claims, leases and outcomes against the Datastore emulator (no training)."""
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from rotwatch.events import RotEvent
from trainer.jobs import MAX_ATTEMPTS, JobStore, LeaseLost


@pytest.fixture
def store(emulators):
    from google.cloud import datastore
    return JobStore(datastore.Client(project="local-project"))


def _rot() -> RotEvent:
    return RotEvent(model=f"j{uuid.uuid4().hex[:8]}", version="v3", kind="input-drift",
                    decided_at=dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc))


def test_one_job_per_rot_event_and_a_finished_job_stays_done(store):
    rot = _rot()
    first = store.claim(rot, "a", lease_s=60)
    assert first.status == "claimed" and first.job.state == "running"
    assert first.job.rot_event == rot and first.job.attempts == 1
    assert store.claim(rot, "b", lease_s=60).status == "busy"
    store.finish(rot.rot_id, "a", "rejected", error="gain below the margin",
                 candidate_accuracy=0.7, current_accuracy=0.71, rows=500,
                 detail={"gate": "x"})
    again = store.claim(rot, "b", lease_s=60)
    assert again.status == "done" and again.job.state == "rejected"
    assert (again.job.candidate_accuracy, again.job.rows) == (0.7, 500)
    assert again.job.detail == {"gate": "x"} and again.job.lease_expires is None


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(store):
    rot = _rot()
    store.claim(rot, "a", lease_s=0.2)
    time.sleep(0.3)
    assert [j.rot_id for j in store.due(retry_after_s=60) if j.rot_id == rot.rot_id] == \
        [rot.rot_id]
    takeover = store.claim(rot, "b", lease_s=60)
    assert takeover.status == "claimed" and takeover.job.attempts == 2
    with pytest.raises(LeaseLost, match="no longer held by a"):
        store.finish(rot.rot_id, "a", "promoted", produced_version="v4")
    store.renew(rot.rot_id, "b", lease_s=60)
    assert store.finish(rot.rot_id, "b", "failed", error="boom").state == "failed"


def test_a_job_that_keeps_losing_its_worker_is_given_up(store):
    rot = _rot()
    for i in range(MAX_ATTEMPTS):
        assert store.claim(rot, f"w{i}", lease_s=0.05).status == "claimed"
        time.sleep(0.1)
    gave_up = store.claim(rot, "last", lease_s=60)
    assert gave_up.status == "done" and gave_up.job.state == "failed"
    assert f"gave up after {MAX_ATTEMPTS} attempts" in gave_up.job.error


def test_insufficient_data_is_retryable(store):
    rot = _rot()
    store.claim(rot, "a", lease_s=60)
    store.finish(rot.rot_id, "a", "insufficient-data", rows=12, error="need 200")
    assert rot.rot_id in [j.rot_id for j in store.due(retry_after_s=0)]
    assert rot.rot_id not in [j.rot_id for j in store.due(retry_after_s=3600)]
    retry = store.claim(rot, "b", lease_s=60)
    assert retry.status == "claimed" and retry.job.attempts == 2


def test_outcomes_must_be_real_states(store):
    rot = _rot()
    store.claim(rot, "a", lease_s=60)
    with pytest.raises(ValueError, match="not an outcome"):
        store.finish(rot.rot_id, "a", "done")
    with pytest.raises(ValueError, match="unknown job fields"):
        store.finish(rot.rot_id, "a", "failed", colour="red")
