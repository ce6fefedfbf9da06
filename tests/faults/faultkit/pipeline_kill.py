"""Fault 2: ``rotwatch pipeline run`` SIGKILLed in the middle of a stream, restarted.

A publisher thread sends feedback steadily (event time = now) to a project of the
run's own, prepared by ``ensure_pubsub_resources`` as ``rotwatch setup`` does. The
pipeline runs as its CLI command, in its own process group. Once it has stored part
of the stream and written a ``PipelineCheckpoint``, the group gets SIGKILL: no
handler runs, whatever was pulled and acknowledged but not yet stored is in flight.
A new ``rotwatch pipeline run`` starts at once; it seeks the subscription back to the
checkpoint (minus the margin) and replays. The publisher keeps going throughout.

Compared with what was published: every event stored (none lost), no window counted
more than its events (none double-counted) nor less (none lost from the metrics).

``early=True`` kills the first process before it has written its first checkpoint
(a crash in the first seconds of a first start, with a backlog waiting): the restart
then has no position to seek back to.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid

import numpy as np

from faultkit.feedback_stream import make_events, publish_all
from faultkit.outcome import Outcome
from faultkit.procs import CliProcess, cli, stack_env
from faultkit.stores import (compare_windows, feedback_ids, true_window_counts,
                             wait_for_all, wait_until, window_metrics)

__all__ = ["pipeline_kill", "INVARIANT"]

WINDOW_S, PERIOD_S = 4, 2
INVARIANT = ("A pipeline SIGKILLed mid-stream and restarted loses no event and counts "
             "none twice: stored Feedback = published, every window's (n, correct) = "
             "the published events'.")
START_TIMEOUT_S = 120.0


class _SteadyPublisher(threading.Thread):
    """Publishes ``rate`` events a second (event time = now) until stopped."""

    def __init__(self, publisher, topic: str, rate: float, seed: int):
        super().__init__(daemon=True, name="fault2-publisher")
        self.publisher, self.topic, self.rate = publisher, topic, rate
        self.rng = np.random.default_rng(seed)
        self.events: list = []
        self.errors: list = []
        self.stop = threading.Event()

    def run(self):
        tick = 0.1
        per_tick = max(1, int(self.rate * tick))
        batch = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            now = dt.datetime.now(dt.timezone.utc)
            events = make_events(per_tick, now, self.rng, spread_s=0.05,
                                 prefix=f"s{batch:05d}-")
            futures = [self.publisher.publish(self.topic, e.to_json(), **e.attributes())
                       for e in events]
            for e, f in zip(events, futures):
                try:
                    f.result(timeout=30)
                    self.events.append(e)
                except Exception as exc:  # noqa: BLE001 - counted, the run reports it
                    self.errors.append((e.event_id, repr(exc)))
            batch += 1
            next_at += tick
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def _checkpoints(client) -> int:
    from rotwatch import kinds
    query = client.query(kind=kinds.PIPELINE_CHECKPOINT)
    query.keys_only()
    return sum(1 for _ in query.fetch())


def pipeline_kill(workdir: str, early: bool = False, rate: float = 200.0,
                  backlog: int = 0, kill_after_s: float = 6.0,
                  run_after_restart_s: float = 8.0, timeout_s: float = 90.0,
                  log_path: str | None = None) -> Outcome:
    from google.cloud import datastore, pubsub_v1

    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    when = "before its first checkpoint" if early else "mid-stream"
    out = Outcome(f"2 pipeline SIGKILL {when} and restart", INVARIANT)
    c = out.counts
    settings = Settings(project=f"fk-{uuid.uuid4().hex[:10]}",
                        model_root=os.path.join(workdir, "models"))
    ensure_pubsub_resources(settings)
    sub = settings.subscription("pipeline")
    subscriber, publisher = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    c["retain_acked_messages"] = subscriber.get_subscription(
        subscription=sub).retain_acked_messages
    client = datastore.Client(project=settings.project)
    register_zombies(Registry(settings, client=client, publish=False))
    env = stack_env(settings.project, settings.model_root, home=workdir)
    argv = cli("pipeline", "run", f"--project={settings.project}",
               f"--window_size_s={WINDOW_S}", f"--window_period_s={PERIOD_S}",
               "--allowed_lateness_s=300", "--late_firing_s=1", "--min_n=1000000",
               "--checkpoint_interval_s=1", "--checkpoint_margin_s=5")

    stream = _SteadyPublisher(publisher, settings.topic("feedback"), rate, seed=2)
    if backlog:   # waiting before the pipeline starts
        stream.events += make_events(backlog, dt.datetime.now(dt.timezone.utc),
                                     np.random.default_rng(3), spread_s=5.0, prefix="b")
        publish_all(publisher, settings.topic("feedback"),
                    [(e.to_json(), e.attributes()) for e in stream.events])
    first = CliProcess("pipeline-1", argv, env, log_path)
    second = None
    try:
        first.wait_for("pipeline running", START_TIMEOUT_S)
        stream.start()
        if early:     # as soon as it has stored something, before any checkpoint
            wait_until(lambda: len(feedback_ids(client)) > 0, timeout_s, every=0.05)
        else:
            time.sleep(kill_after_s)
            wait_until(lambda: _checkpoints(client) > 0 and len(feedback_ids(client)),
                       timeout_s)
        c["checkpoints_at_kill"] = _checkpoints(client)
        first.kill()                                  # SIGKILL, no handler runs
        c["stored_at_kill"] = len(feedback_ids(client))
        c["published_at_kill"] = len(stream.events)
        second = CliProcess("pipeline-2", argv, env, log_path)
        second.wait_for("pipeline running", START_TIMEOUT_S)
        c["restart_seek"] = (second.matching("subscription seeked") or
                             second.matching("no checkpoint") or ["?"])[0][-160:]
        time.sleep(run_after_restart_s)
        stream.stop.set()
        stream.join(30)
        published = {e.event_id for e in stream.events}
        truth = true_window_counts(stream.events, WINDOW_S, PERIOD_S)
        complete = wait_for_all(lambda: feedback_ids(client), published,
                                timeout_s) >= published
        # windows can only reach the truth if nothing was lost; give them the time
        # their last (late) panes take, or only a moment
        wait_until(lambda: all(window_metrics(client).get(k) == v
                               for k, v in truth.items()), 20.0 if complete else 3.0)
        time.sleep(2.0)                               # anything double-counted shows
        stored = feedback_ids(client)
        metrics = window_metrics(client, "zombies", "v1")
    finally:
        stream.stop.set()
        first.stop()
        if second is not None:
            second.stop()
    diff = compare_windows({k: v for k, v in metrics.items() if k in truth}, truth)
    c.update(published=len(published), publish_errors=len(stream.errors),
             stored=len(stored), lost=len(published - stored),
             stored_not_published=len(stored - published), windows=len(truth),
             windows_over=len(diff["over"]), windows_under=len(diff["under"]),
             windows_missing=len(diff["missing"]))
    out.check("no event lost", not c["lost"] and not stream.errors,
              f"{len(published)} published, {len(stored)} stored, {c['lost']} lost "
              f"(killed with {c['stored_at_kill']} of {c['published_at_kill']} stored, "
              f"{c['checkpoints_at_kill']} checkpoint(s) written; subscription retains "
              f"acked messages: {c['retain_acked_messages']}; "
              f"restart: {c['restart_seek']!r})")
    out.check("no event double-counted", not diff["over"] and not c["stored_not_published"],
              f"{len(truth)} windows: {len(diff['over'])} counted more than their "
              f"events {diff['over'][:2]}")
    out.check("no event lost from the window metrics",
              not diff["under"] and not diff["missing"],
              f"{len(truth)} windows: {len(diff['under'])} counted less than their "
              f"events {diff['under'][:2]}, {len(diff['missing'])} never written "
              f"{diff['missing'][:3]}")
    return out
