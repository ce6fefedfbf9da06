"""Fault 5: duplicate rot events, two trainers at once, and a trainer killed mid-job.

Two ``rotwatch trainer run`` processes share the ``model-rot-trainer`` subscription
of a project of their own, as two replicas would. The model and its feedback are set
up the way the trainer's own tests do (``tests/test_trainer_service.py``: v1 trained
on population A, feedback from population B).

* **Duplicates, concurrently**: the same rot event is published twice at once; both
  trainers are free, so each may get one copy → exactly one new version.
* **Killed mid-job**: another model's rot event is published; whichever trainer logs
  ``step=claim ... outcome=claimed`` is SIGKILLed (process group: its training child
  too) at that moment. The survivor must finish the job after the lease expires (its
  sweep), from the event stored on the job → promoted, attempts 2, one new version.
"""
from __future__ import annotations

import os
import re
import time

from faultkit.outcome import Outcome
from faultkit.procs import CliProcess, cli, stack_env
from faultkit.stores import wait_until

__all__ = ["trainer_race", "INVARIANT", "PROJECT"]

PROJECT = "fault-trainer"
INVARIANT = ("A rot event delivered twice to two trainers running at once produces "
             "exactly one new version; a trainer SIGKILLed mid-job leaves the job to "
             "the other, which finishes it after the lease expires (one new version).")
READY_TIMEOUT_S = 120.0


def _setup_model(settings, client, model: str, rows: int):
    from test_trainer_service import _deploy_v1, _population, _write_feedback
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, rows)
    _write_feedback(client, model, v1, XB, yB)


def _claims(trainers, rot_id: str) -> list[tuple[int, str]]:
    pattern = rf"step=claim rot_id={re.escape(rot_id)} outcome=(\S+)"
    out = []
    for i, t in enumerate(trainers):
        for line in t.matching(pattern):
            out.append((i, re.search(pattern, line).group(1)))
    return out


def trainer_race(workdir: str, lease_s: float = 10.0, time_limit_s: float = 8.0,
                 rows: int = 600, log_path: str | None = None,
                 timeout_s: float = 120.0) -> Outcome:
    import uuid

    from google.cloud import datastore, pubsub_v1

    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources
    from test_trainer_service import _rot
    from trainer.jobs import JobStore

    out = Outcome("5 duplicate rot events, racing and killed trainers", INVARIANT)
    c = out.counts
    model_root = os.path.join(workdir, "models")
    settings = Settings(project=PROJECT, model_root=model_root)
    ensure_pubsub_resources(settings)
    client = datastore.Client(project=PROJECT)
    registry = Registry(settings, client=client, publish=False)
    jobs = JobStore(client)
    publisher = pubsub_v1.PublisherClient()
    topic = settings.topic("rot")
    env = stack_env(PROJECT, model_root, home=workdir)
    argv = cli("trainer", "run", "--min-rows", "200", "--time-limit", f"{time_limit_s:g}",
               "--lease", f"{lease_s:g}", "--sweep-interval", "1",
               "--retry-insufficient", "1")
    tag = uuid.uuid4().hex[:6]
    dup_model, kill_model = f"dup{tag}", f"kill{tag}"
    _setup_model(settings, client, dup_model, rows)
    _setup_model(settings, client, kill_model, rows)

    trainers = [CliProcess(f"trainer-{i}", argv, env, log_path) for i in range(2)]
    try:
        for t in trainers:
            t.wait_for("outcome=listening", READY_TIMEOUT_S)

        # -- the same rot event twice, both trainers free --------------------------
        rot = _rot(dup_model)
        futures = [publisher.publish(topic, rot.to_json(), **rot.attributes())
                   for _ in range(2)]
        for f in futures:
            f.result(timeout=30)
        wait_until(lambda: len(_claims(trainers, rot.rot_id)) >= 2 and getattr(
            jobs.get(rot.rot_id), "state", "running") != "running", timeout_s)
        time.sleep(1.0)   # a late third claim (a redelivery) would show up here
        claims = _claims(trainers, rot.rot_id)
        versions = [v.version for v in registry.list_versions(dup_model)]
        job = jobs.get(rot.rot_id)
        c["duplicate_claims"] = [o for _, o in claims]
        c["duplicate_trainers_involved"] = len({i for i, _ in claims})
        c["duplicate_versions"] = versions
        c["duplicate_job"] = (job.state, job.attempts) if job else None
        out.check("one version from a duplicated event",
                  versions == ["v1", "v2"] and job is not None and job.state == "promoted"
                  and [o for _, o in claims].count("claimed") == 1,
                  f"2 deliveries handled by {c['duplicate_trainers_involved']} trainer(s) "
                  f"with claim outcomes {c['duplicate_claims']}; versions {versions}; job "
                  f"{c['duplicate_job']}")

        # -- a trainer killed mid-job ----------------------------------------------
        rot = _rot(kill_model)
        publisher.publish(topic, rot.to_json(), **rot.attributes()).result(timeout=30)
        claimed = wait_until(lambda: [i for i, o in _claims(trainers, rot.rot_id)
                                      if o == "claimed"], timeout_s, every=0.02)
        if not claimed:
            out.check("killed mid-job", False, "no trainer claimed the job in time")
            return out
        victim, survivor = trainers[claimed[0]], trainers[1 - claimed[0]]
        victim.kill()
        at_kill = jobs.get(rot.rot_id)
        c["job_at_kill"] = (at_kill.state, at_kill.attempts) if at_kill else None
        killed_at = time.monotonic()
        wait_until(lambda: getattr(jobs.get(rot.rot_id), "state", None) == "promoted",
                   lease_s + timeout_s)
        job = jobs.get(rot.rot_id)
        took = time.monotonic() - killed_at
        versions = [v.version for v in registry.list_versions(kill_model)]
        owner_pid = (job.lease_owner or "").split(":")[1:2] if job else []
        c["killed_job"] = (job.state, job.attempts) if job else None
        c["killed_versions"] = versions
        c["finished_by_survivor"] = owner_pid == [str(survivor.pid)]
        c["takeover_s"] = round(took, 1)
        c["default_after_kill"] = registry.get_model(kill_model).default_version
        out.check("killed job finished by the other trainer",
                  at_kill is not None and at_kill.state == "running"
                  and job is not None and job.state == "promoted" and job.attempts == 2
                  and c["finished_by_survivor"] and versions == ["v1", "v2"]
                  and c["default_after_kill"] == "v2",
                  f"job {c['job_at_kill']} when its trainer was SIGKILLed; "
                  f"{c['killed_job']} {took:.1f} s later (lease {lease_s:g} s), finished "
                  f"by the survivor: {c['finished_by_survivor']}; versions {versions}, "
                  f"default {c['default_after_kill']}")
    finally:
        for t in trainers:
            t.stop()
    return out
