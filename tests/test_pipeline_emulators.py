"""The real thing: the streaming pipeline on the bundle-based DirectRunner against the
local Pub/Sub and Datastore emulators, then a restart, then the batch recompute.

One stream with a known abrupt change (92% -> 40% accuracy halfway) is published all
at once, so on this runner (watermark = wall clock) nearly every event arrives after
its window "closed": the allowed lateness and late panes must still count each of
them. Duplicates and invalid messages are mixed in. The pipeline must store every
valid event exactly once, dead-letter every invalid one with its original payload,
publish the rot event and write window metrics equal to the true counts. A restart
seeks back to the checkpoint and replays: nothing may be stored, counted or
announced twice. Waits are bounded; every job is cancelled at the end.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import time
import uuid

import numpy as np
import pytest

from rotwatch import kinds, stats
from rotwatch.events import FeedbackEvent, RotEvent

PROJECT = "local-project"
N_VALID = 600
N_DUPLICATES = 60
N_TOO_LATE = 3         # an hour old: stored, counted as too late, in no window
SPAN_S = 30            # event times spread over the last 30 s before publishing
WINDOW_S, PERIOD_S = 4, 2
DEADLINE_S = 90.0      # upper bound for the pipeline to catch up (it takes ~5-15 s)

pytestmark = pytest.mark.slow


def _wait(condition, timeout=DEADLINE_S, every=0.5):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


def _counter(result, name) -> int:
    from apache_beam.metrics.metric import MetricsFilter
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed or 0 for c in found)


@pytest.fixture(scope="module")
def stack(emulators):
    from google.cloud import datastore, pubsub_v1
    rid = uuid.uuid4().hex[:8]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    def topic(name):
        return publisher.create_topic(name=f"projects/{PROJECT}/topics/{name}-{rid}").name

    def subscription(name, topic_name, retain=False):
        return subscriber.create_subscription(request={
            "name": f"projects/{PROJECT}/subscriptions/{name}-{rid}", "topic": topic_name,
            "retain_acked_messages": retain, "ack_deadline_seconds": 60}).name
    feedback, deadletter, rot = topic("feedback"), topic("deadletter"), topic("rot")
    names = {
        "feedback": feedback,
        # the pipeline's subscription keeps acked messages so a seek can replay them
        "feedback_sub": subscription("feedback", feedback, retain=True),
        "deadletter_sub": subscription("deadletter", deadletter),
        "rot_sub": subscription("rot", rot),
        "deadletter": deadletter, "rot": rot, "namespace": f"pipeline-{rid}",
    }
    ds = datastore.Client(project=PROJECT, namespace=names["namespace"])
    rng = np.random.default_rng(5)
    version = datastore.Entity(ds.key(kinds.MODEL, "zombies", kinds.MODEL_VERSION, "v1"),
                               exclude_from_indexes=("reference_stats",))
    version.update({"version": "v1", "number": 1, "n_features": 4, "status": "ready",
                    "baseline_accuracy": 0.9, "reference_stats": json.dumps(
                        stats.reference_statistics(rng.normal(size=(3000, 4))))})
    ds.put(version)
    names.update(publisher=publisher, subscriber=subscriber, datastore=ds, rng=rng)
    yield names
    subscriber.close()


def _argv(stack, *extra):
    return [f"--project={PROJECT}", f"--datastore_namespace={stack['namespace']}",
            f"--feedback_subscription={stack['feedback_sub']}",
            f"--deadletter_topic={stack['deadletter']}", f"--rot_topic={stack['rot']}",
            f"--window_size_s={WINDOW_S}", f"--window_period_s={PERIOD_S}",
            "--allowed_lateness_s=600", "--late_firing_s=1", "--min_n=30",
            "--consecutive=2", "--checkpoint_interval_s=1", "--checkpoint_margin_s=5",
            "--cooldown_s=3600", *extra]


def _stream(rng, now):
    events = []
    for i in range(N_VALID):
        bad = i >= N_VALID // 2
        ok = bool(rng.random() < (0.4 if bad else 0.92))
        events.append(FeedbackEvent.create(
            model="zombies", version="v1", features=rng.normal(size=4).tolist(),
            prediction=1, was_correct=ok,
            event_time=now - dt.timedelta(seconds=SPAN_S * (1 - i / N_VALID))))
    too_late = [FeedbackEvent.create(
        model="zombies", version="v1", features=rng.normal(size=4).tolist(),
        prediction=1, was_correct=True, event_time=now - dt.timedelta(hours=1))
        for _ in range(N_TOO_LATE)]
    good = events[0]
    invalid = [
        (b"{not json", {"event_id": "junk-1"}),
        (FeedbackEvent.create(model="zombies", version="v1", features=[1.0, 2.0],
                              prediction=1, was_correct=True).to_json(), {}),
        (FeedbackEvent.create(model="zombies", version="v9", features=[1.0] * 4,
                              prediction=1, was_correct=True).to_json(), {}),
        (good.to_json().replace(b'"features":[', b'"features":[NaN,', 1), {}),
        (good.to_json(), dict(good.attributes(), event_ts="yesterday")),
    ]
    return events, too_late, invalid


def _true_counts(events):
    counts = {}
    for e in events:
        ms = int(e.event_time.timestamp() * 1000)
        first = (ms // (PERIOD_S * 1000)) * PERIOD_S * 1000
        for start in range(first - (WINDOW_S - PERIOD_S) * 1000, first + 1,
                           PERIOD_S * 1000):
            n, c = counts.get(start, (0, 0))
            counts[start] = (n + 1, c + int(e.correct))
    return counts


def _keys(ds, kind):
    query = ds.query(kind=kind)
    query.keys_only()
    return [e.key.name for e in query.fetch()]


def _metrics(ds):
    return {int(m["window_start"].timestamp() * 1000): (m["n"], m["correct"])
            for m in ds.query(kind=kinds.WINDOW_METRIC).fetch()}


def _pull_all(subscriber, subscription, timeout=5.0):
    out = []
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=100,
                                   timeout=timeout)
        if not response.received_messages:
            return out
        out.extend(m.message for m in response.received_messages)
        subscriber.acknowledge(subscription=subscription,
                               ack_ids=[m.ack_id for m in response.received_messages])


@pytest.fixture(scope="module")
def first_run(stack):
    """Publish the stream, run the pipeline until it has caught up, cancel it."""
    from pipelines.feedback_pipeline import run
    events, too_late, invalid = _stream(stack["rng"], dt.datetime.now(dt.timezone.utc))
    publisher = stack["publisher"]
    publish_started = dt.datetime.now(dt.timezone.utc)
    futures = [publisher.publish(stack["feedback"], e.to_json(), **e.attributes())
               for e in events]
    futures += [publisher.publish(stack["feedback"], e.to_json(), **e.attributes())
                for e in events[:N_DUPLICATES]]
    futures += [publisher.publish(stack["feedback"], data, **attrs)
                for data, attrs in invalid]
    futures += [publisher.publish(stack["feedback"], e.to_json(), **e.attributes())
                for e in too_late]
    for future in futures:
        future.result(timeout=30)
    publish_done = dt.datetime.now(dt.timezone.utc)
    ds = stack["datastore"]
    truth = _true_counts(events)
    started = time.monotonic()
    result = run(_argv(stack))
    try:
        stored = _wait(lambda: len(_keys(ds, kinds.FEEDBACK)) >= N_VALID + N_TOO_LATE)
        converged = _wait(lambda: _metrics(ds) == truth)
        rot_messages = _wait(lambda: _pull_all(stack["subscriber"], stack["rot_sub"], 1.0))
        time.sleep(2)   # a second rule may decide a moment later
        rot_messages += _pull_all(stack["subscriber"], stack["rot_sub"], 1.0)
        checkpoint = _wait(lambda: [c for c in ds.query(kind=kinds.PIPELINE_CHECKPOINT)
                                    .fetch() if c["stored_through"] >= publish_done
                                    - dt.timedelta(seconds=1)])
        letters = []
        _wait(lambda: letters.extend(_pull_all(stack["subscriber"],
                                               stack["deadletter_sub"], 1.0))
              or len(letters) >= len(invalid) + N_TOO_LATE)
        too_late_counted = _counter(result, "too_late_for_windows")
        caught_up_s = time.monotonic() - started
        backlog_pulled = _counter(result, "backlog_pulled")
        state = str(result.state)
    finally:
        result.cancel()
    return dict(events=events, too_late=too_late, invalid=invalid, truth=truth,
                stored=stored,
                rot_messages=rot_messages, converged=converged, checkpoint=checkpoint,
                letters=letters, caught_up_s=caught_up_s, backlog_pulled=backlog_pulled,
                state=state, published=(publish_started, publish_done),
                too_late_counted=too_late_counted)


def test_every_valid_event_is_stored_exactly_once(stack, first_run):
    ds = stack["datastore"]
    stored = list(ds.query(kind=kinds.FEEDBACK).fetch())
    assert sorted(e.key.name for e in stored) == sorted(
        e.event_id for e in first_run["events"] + first_run["too_late"])
    by_id = {e.event_id: e for e in first_run["events"] + first_run["too_late"]}
    for entity in stored[:50]:
        event = by_id[entity.key.name]
        assert entity["correct"] == event.correct
        assert list(entity["features"]) == list(event.features)


def _refusals(letters):
    return [m for m in letters if m.attributes.get("rotwatch_stage") != "late"]


def test_every_invalid_message_is_dead_lettered_with_its_payload(first_run):
    letters = _refusals(first_run["letters"])
    assert sorted(m.data for m in letters) == sorted(d for d, _ in first_run["invalid"])
    stages = sorted((m.attributes["rotwatch_stage"], m.attributes["rotwatch_field"])
                    for m in letters)
    assert stages == sorted([("schema", "<payload>"), ("registry", "features"),
                             ("registry", "version"), ("schema", "features[0]"),
                             ("attributes", "event_ts")])
    assert all(m.attributes["rotwatch_reason"] for m in letters)


def test_feedback_too_late_for_any_window_is_reported_late_not_dropped_silently(
        first_run):
    # Stored (test above), left out of every window (truth excludes it), counted and
    # reported on the dead-letter topic as late, with the command that counts it.
    # (The counter is exact here because the whole stream was published before the
    # pipeline started, so it is one bundle: the local runner counts only a step's
    # first bundle; README, "Beam counters on the local runner".)
    assert first_run["too_late_counted"] == N_TOO_LATE
    late = [m for m in first_run["letters"] if m.attributes.get("rotwatch_stage") == "late"]
    assert sorted(m.attributes["event_id"] for m in late) == sorted(
        e.event_id for e in first_run["too_late"])
    by_id = {e.event_id: e for e in first_run["too_late"]}
    for m in late:
        event = by_id[m.attributes["event_id"]]
        assert FeedbackEvent.from_json(m.data) == event
        assert m.attributes["rotwatch_field"] == "event_time"
        reason = m.attributes["rotwatch_reason"]
        assert reason.startswith("too late for any window") and event.event_id in reason
        assert "rotwatch pipeline recompute --start " in reason


def test_window_metrics_count_every_unique_event_despite_lateness(first_run):
    # Published in one burst, nearly all feedback was late for its window: the late
    # panes must bring every window to its true count, duplicates excluded.
    assert first_run["converged"], "window metrics never matched the true counts"


def test_the_abrupt_change_is_published_as_rot_and_stored(stack, first_run):
    rot = [RotEvent.from_json(m.data) for m in first_run["rot_messages"]]
    assert rot and {(r.model, r.version) for r in rot} == {("zombies", "v1")}
    assert {"accuracy", "error-rate-change"} & {r.kind for r in rot}
    change = min(e.event_time for e in first_run["events"][N_VALID // 2:])
    for r in rot:
        if r.kind == "error-rate-change":
            assert abs((r.change_point - change).total_seconds()) < 3
    stored = {e.key.name: e for e in stack["datastore"].query(kind=kinds.ROT_EVENT).fetch()}
    assert {r.rot_id for r in rot} <= set(stored)
    assert all(stored[r.rot_id]["published_at"] is not None for r in rot)


def test_local_runner_pulls_the_backlog_in_big_batches(first_run):
    # Beam's DirectRunner read takes 10 messages a pull; most came through PullBacklog.
    assert first_run["backlog_pulled"] > (N_VALID + N_DUPLICATES) // 2
    assert first_run["state"] == "RUNNING"


def test_checkpoint_records_how_far_input_is_handled_in_publish_time(first_run):
    [checkpoint] = first_run["checkpoint"]
    started, done = first_run["published"]
    slack = dt.timedelta(seconds=1)     # the emulator stamps publish time itself
    assert started - slack <= checkpoint["stored_through"] <= done + slack


def test_restart_replays_from_the_checkpoint_without_double_counting(stack, first_run):
    from pipelines.feedback_pipeline import run
    ds = stack["datastore"]
    metrics_before = _metrics(ds)
    rot_before = {e.key.name for e in ds.query(kind=kinds.ROT_EVENT).fetch()}
    result = run(_argv(stack))
    try:
        # Every message is retained and was published after the seek point: all of
        # them come again (valid, duplicates and invalid ones).
        replayed = _wait(lambda: _counter(result, "feedback_valid")
                         >= N_VALID + N_DUPLICATES + N_TOO_LATE)
        _wait(lambda: _metrics(ds) == first_run["truth"], timeout=30)
        time.sleep(3)   # let late panes and any rot decision go through
        repeats = _counter(result, "rot_repeats_skipped")
    finally:
        result.cancel()
    assert replayed
    assert len(_keys(ds, kinds.FEEDBACK)) == N_VALID + N_TOO_LATE
    assert _metrics(ds) == metrics_before == first_run["truth"]
    assert _pull_all(stack["subscriber"], stack["rot_sub"], 1.0) == []
    assert {e.key.name for e in ds.query(kind=kinds.ROT_EVENT).fetch()} == rot_before
    assert repeats >= 1


def test_a_restart_before_the_first_checkpoint_replays_from_the_start_snapshot(stack):
    """No checkpoint yet: the first start takes a snapshot; a second start that still
    finds none seeks to it, so what the first one pulled and acked comes again."""
    from pipelines.checkpoint import restore_position, start_snapshot_name
    from pipelines.options import PipelineConfig
    subscriber, publisher = stack["subscriber"], stack["publisher"]
    rid = uuid.uuid4().hex[:8]
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/early-{rid}").name
    subscription = subscriber.create_subscription(request={
        "name": f"projects/{PROJECT}/subscriptions/early-{rid}", "topic": topic,
        "retain_acked_messages": True}).name
    for i in range(20):
        publisher.publish(topic, b"m%d" % i).result(timeout=10)
    config = PipelineConfig(project=PROJECT, namespace=stack["namespace"],
                            subscription=subscription)
    assert restore_position(config) is None                  # first start: snapshot
    subscriber.get_snapshot(snapshot=start_snapshot_name(subscription))
    assert len(_pull_all(subscriber, subscription, 1.0)) == 20   # pulled and acked
    assert restore_position(config) is None                  # crashed before a checkpoint
    assert sorted(m.data for m in _pull_all(subscriber, subscription, 1.0)) == sorted(
        b"m%d" % i for i in range(20))


def test_batch_recompute_matches_the_streamed_metrics(stack, first_run, tmp_path):
    from pipelines.batch_metrics import run
    events = first_run["events"]
    start = min(e.event_time for e in events) - dt.timedelta(seconds=WINDOW_S)
    end = max(e.event_time for e in events) + dt.timedelta(seconds=WINDOW_S)
    prefix = str(tmp_path / "metrics")
    run([f"--project={PROJECT}", f"--datastore_namespace={stack['namespace']}",
         f"--start={start.isoformat()}", f"--end={end.isoformat()}",
         f"--window_size_s={WINDOW_S}", f"--window_period_s={PERIOD_S}",
         f"--output={prefix}"])
    rows = [json.loads(line) for path in glob.glob(prefix + "*.jsonl")
            for line in open(path)]
    recomputed = {int(dt.datetime.fromisoformat(r["window_start"].replace("Z", "+00:00"))
                      .timestamp() * 1000): (r["n"], r["correct"]) for r in rows}
    assert recomputed == first_run["truth"]
