"""``rotwatch deadletter``: show leaves letters in place, replay republishes the
original message of the stages named, discard removes, late reports never replay."""
from __future__ import annotations

import json
import uuid

import pytest
from google.cloud import pubsub_v1

from rotwatch.cli import main
from rotwatch.config import Settings
from rotwatch.deadletter import Letter, original_attributes
from rotwatch.resources import ensure_pubsub_resources

ORIGINAL = {"event_id": "e-1", "model": "zombies", "version": "v9", "event_ts": "1"}


@pytest.fixture()
def project(emulators):
    settings = Settings(project=f"dl-{uuid.uuid4().hex[:10]}")
    ensure_pubsub_resources(settings)
    publisher = pubsub_v1.PublisherClient()
    topic = settings.topic("deadletter")
    letters = [
        (b'{"registry": 1}', dict(ORIGINAL, rotwatch_stage="registry",
                                  rotwatch_field="version",
                                  rotwatch_reason="model 'zombies' has no ready version")),
        (b"not json", {"event_id": "e-2", "rotwatch_stage": "schema",
                       "rotwatch_field": "<payload>", "rotwatch_reason": "not JSON"}),
        (b'{"late": 1}', {"event_id": "e-3", "rotwatch_stage": "late",
                          "rotwatch_field": "event_time",
                          "rotwatch_reason": "too late for any window"}),
        (b"\xff" * 10, {"CloudPubSubDeadLetterSourceDeliveryCount": "10",
                        "CloudPubSubDeadLetterSourceSubscription": "feedback-pipeline"}),
    ]
    for data, attributes in letters:
        publisher.publish(topic, data, **attributes).result(timeout=10)
    return settings


def run(capsys, *argv) -> tuple[int, str]:
    code = main(["deadletter", *argv])
    return code, capsys.readouterr().out


def test_show_counts_by_stage_and_leaves_everything_in_place(project, capsys):
    for _ in range(2):
        code, out = run(capsys, "show", "--project", project.project)
        assert code == 0
        assert "4 dead letter(s) read from " in out
        assert "1 delivery, 1 late, 1 registry, 1 schema" in out
        assert "not acknowledged after 10 deliveries from subscription " \
               "feedback-pipeline" in out
    code, out = run(capsys, "show", "--project", project.project, "--stage", "registry",
                    "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["stage"], r["field"], r["data"]) for r in rows] == [
        ("registry", "version", '{"registry": 1}')]


def test_replay_republishes_the_original_message_and_removes_the_letter(project,
                                                                           capsys):
    subscriber = pubsub_v1.SubscriberClient()
    code, out = run(capsys, "replay", "--project", project.project, "--stage", "registry",
                    "--dry-run")
    assert code == 0 and "would replay 1 to " in out
    code, out = run(capsys, "replay", "--project", project.project, "--stage", "registry")
    assert code == 0 and out.startswith("replayed 1 to ")
    got = subscriber.pull(subscription=project.subscription("pipeline"), max_messages=10,
                          timeout=5).received_messages
    assert [(m.message.data, dict(m.message.attributes)) for m in got] == [
        (b'{"registry": 1}', ORIGINAL)]
    code, out = run(capsys, "show", "--project", project.project)
    assert "3 dead letter(s)" in out and "registry" not in out.splitlines()[0]


def test_late_reports_are_never_replayed(project, capsys):
    code, out = run(capsys, "replay", "--project", project.project, "--stage", "late")
    assert code == 0 and "replayed 0 " in out and "late reports skipped 1" in out
    code, out = run(capsys, "show", "--project", project.project, "--stage", "late")
    assert "1 late" in out


def test_discard_removes_only_the_stages_named(project, capsys):
    code, out = run(capsys, "discard", "--project", project.project, "--stage", "schema",
                    "--stage", "delivery")
    assert code == 0 and "discarded 2 " in out
    code, out = run(capsys, "show", "--project", project.project)
    assert "2 dead letter(s)" in out and "1 late, 1 registry" in out


def test_replay_and_discard_need_a_stage_and_limits_are_bounded(project, capsys):
    with pytest.raises(SystemExit):
        main(["deadletter", "replay", "--project", project.project])
    code, out = run(capsys, "show", "--project", project.project, "--limit", "0")
    assert code == 2 and "limit=0 must be in 1..100,000" in out


def test_original_attributes_drop_what_dead_lettering_added():
    letter = Letter("a", "m", None, b"", dict(ORIGINAL, rotwatch_stage="schema",
                                             CloudPubSubDeadLetterSourceDeliveryCount="5"))
    assert original_attributes(letter.attributes) == ORIGINAL
