"""The feedback publisher and ``rotwatch publish``: checked before sending, published
with the pipeline's attributes, and never lost silently."""
from __future__ import annotations

import io
import json
import time

import pytest

PROJECT = "publisher-tests-project"


@pytest.fixture(scope="module")
def settings(emulators):
    from rotwatch.config import Settings
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project=PROJECT)
    ensure_pubsub_resources(settings)
    return settings


@pytest.fixture
def subscription(settings, request):
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    name = f"projects/{PROJECT}/subscriptions/publisher-test-{request.node.name[:40]}"
    name = "".join(c if c.isalnum() or c in "/-_" else "-" for c in name)
    subscriber.create_subscription(request={"name": name, "topic": settings.topic("feedback")})
    yield subscriber, name
    subscriber.delete_subscription(request={"subscription": name})
    subscriber.close()


def pull_all(subscription, expected: int, timeout_s: float = 10.0) -> list:
    subscriber, name = subscription
    messages = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": name, "max_messages": 500},
                                   timeout=5)
        if response.received_messages:
            subscriber.acknowledge(request={"subscription": name, "ack_ids": [
                m.ack_id for m in response.received_messages]})
        messages.extend(m.message for m in response.received_messages)
    return messages


# -- without Pub/Sub --------------------------------------------------------------------
def test_building_an_event_fills_id_and_time():
    from publishers.feedback_client import FeedbackPublisher

    event = FeedbackPublisher.event(model="zombies", version="v1", features=[1, 2.5],
                                    prediction=1, was_correct=False)
    assert len(event.event_id) == 32 and event.event_time.tzinfo is not None
    assert event.features == (1.0, 2.5)


def test_bad_events_are_refused_before_any_client_exists():
    from publishers.feedback_client import FeedbackPublisher
    from rotwatch.config import Settings
    from rotwatch.events import InvalidEvent

    publisher = FeedbackPublisher(Settings())
    with pytest.raises(InvalidEvent, match="was_correct"):
        publisher.send(model="zombies", version="v1", features=[1.0], prediction=1)
    with pytest.raises(InvalidEvent, match="features\\[1\\]"):
        publisher.publish({"event_id": "e1", "model": "zombies", "version": "v1",
                           "features": [1.0, "x"], "prediction": 1, "was_correct": True,
                           "event_time": "2026-12-03T10:00:00Z"})
    with pytest.raises(InvalidEvent, match="version"):
        publisher.send(model="zombies", version="latest", features=[1.0], prediction=1,
                       was_correct=True)
    assert publisher._client is None   # nothing connected for bad input


@pytest.mark.parametrize("kwargs,words", [
    ({"topic": "feedback"}, "projects/<project>/topics/<topic>"),
    ({"max_latency_s": -1}, "max_latency_s"),
    ({"retry_deadline_s": 0}, "retry_deadline_s"),
])
def test_bad_settings_name_the_fix(kwargs, words):
    from publishers.feedback_client import FeedbackPublisher
    from rotwatch.config import Settings

    with pytest.raises(ValueError, match=words.replace("<", ".").replace(">", ".")):
        FeedbackPublisher(Settings(), **kwargs)


def test_batching_and_flow_control_are_spelled_out():
    from google.cloud import pubsub_v1

    from publishers.feedback_client import default_batch_settings, default_flow_control

    batch = default_batch_settings()
    assert (batch.max_messages, batch.max_bytes) == (100, 1_000_000)
    flow = default_flow_control()
    assert flow.limit_exceeded_behavior == pubsub_v1.types.LimitExceededBehavior.BLOCK
    assert (flow.message_limit, flow.byte_limit) == (1000, 10_000_000)


# -- against the emulator ---------------------------------------------------------------
def test_publish_sends_events_with_the_pipelines_attributes(settings, subscription):
    from publishers.feedback_client import FeedbackPublisher
    from rotwatch.events import FeedbackEvent, to_millis

    with FeedbackPublisher(settings) as publisher:
        futures = [publisher.send(model="zombies", version="v1", features=[i, 1.0],
                                  prediction=i % 2, was_correct=bool(i % 3))
                   for i in range(250)]
        ids = [f.result(timeout=30) for f in futures]
    assert len(set(ids)) == 250 and publisher.published == 250 and publisher.pending == 0
    messages = pull_all(subscription, 250)
    assert len(messages) == 250
    for message in messages[:20]:
        event = FeedbackEvent.from_json(message.data)
        assert dict(message.attributes) == {
            "event_id": event.event_id, "event_ts": str(to_millis(event.event_time)),
            "model": "zombies", "version": "v1"}


def test_a_failed_publish_is_reported_not_lost(settings, caplog):
    """A topic that does not exist: NotFound is not retried, the failure is logged,
    handed to on_error, and raised by close() with the event id."""
    from publishers.feedback_client import FeedbackPublisher, PublishError

    failed = []
    publisher = FeedbackPublisher(settings, topic=f"projects/{PROJECT}/topics/missing",
                                  on_error=lambda event, exc: failed.append(event.event_id))
    future = publisher.send(model="zombies", version="v1", features=[1.0], prediction=0,
                            was_correct=True, event_id="lost-event-1")
    with pytest.raises(Exception):
        future.result(timeout=30)
    with pytest.raises(PublishError, match="lost-event-1") as raised:
        publisher.close(timeout=30)
    assert [eid for eid, _ in raised.value.failures] == ["lost-event-1"]
    assert failed == ["lost-event-1"] and publisher.failed == 1
    assert "event_id=lost-event-1" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        publisher.send(model="zombies", version="v1", features=[1.0], prediction=0,
                       was_correct=True)


# -- rotwatch publish -------------------------------------------------------------------
def _lines(n, bad_at=()):
    out = []
    for i in range(n):
        event = {"model": "zombies", "version": "v1", "features": [float(i), 2.0],
                 "prediction": 1, "was_correct": i % 2 == 0}
        if i in bad_at:
            event["features"] = ["x"]
        out.append(json.dumps(event) + "\n")
    return out


def test_publish_file_checks_everything_first(settings, subscription):
    from publishers.feedback_client import FeedbackPublisher
    from publishers.publish_cli import publish_file

    out = io.StringIO()
    with FeedbackPublisher(settings) as publisher:
        result = publish_file(_lines(10, bad_at=(3, 7)), publisher, out=out,
                              progress_stream=io.StringIO())
    assert result == {"valid": 8, "invalid": 2, "published": 0, "failed": 0}
    text = out.getvalue()
    assert "line 4: features[0]" in text and "line 8:" in text and "nothing sent" in text
    assert pull_all(subscription, 1, timeout_s=1.0) == []


def test_publish_command_sends_a_file(settings, subscription, tmp_path, capsys,
                                      monkeypatch):
    from rotwatch.cli import main

    path = tmp_path / "events.jsonl"
    path.write_text("".join(_lines(120, bad_at=(5,))) + "\n")
    monkeypatch.setenv("ROTWATCH_PROJECT", PROJECT)
    assert main(["publish", "--file", str(path), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "published 119 of 119 events" in out and "1 invalid lines skipped" in out
    assert len(pull_all(subscription, 119)) == 119
    assert main(["publish", "--file", str(path)]) == 2
    assert main(["publish", "--file", str(tmp_path / "nope.jsonl")]) == 2
