"""`rotwatch setup` creates every topic and subscription once, with dead-letter policies,
and brings subscriptions made by an older setup to the current settings."""

import pytest
from google.cloud import pubsub_v1

from rotwatch.cli import main
from rotwatch.config import Settings
from rotwatch.resources import SubscriptionTopicMismatch, ensure_pubsub_resources

WEEK_S = 7 * 24 * 3600


def test_setup_is_idempotent_and_wires_dead_letters(emulators):
    settings = Settings(project="rw-resources-test")
    first = ensure_pubsub_resources(settings)
    assert len(first["created"]) == 9 and first["existing"] == []
    second = ensure_pubsub_resources(settings)
    assert second["created"] == [] and sorted(second["existing"]) == sorted(first["created"])
    assert second["updated"] == {}

    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.get_subscription(subscription=settings.subscription("pipeline"))
    assert sub.topic == settings.topic("feedback")
    assert sub.dead_letter_policy.dead_letter_topic == settings.topic("deadletter")
    assert sub.dead_letter_policy.max_delivery_attempts == 10
    assert sub.retain_acked_messages  # the restart seek replays acknowledged feedback
    trainer = subscriber.get_subscription(subscription=settings.subscription("trainer"))
    assert trainer.dead_letter_policy.dead_letter_topic == settings.topic("rot-deadletter")
    inspect = subscriber.get_subscription(subscription=settings.subscription("deadletter"))
    assert inspect.message_retention_duration.total_seconds() == 7 * 24 * 3600


def _old_stack(settings: Settings, subscriber, publisher) -> None:
    """Topics and two subscriptions as an older setup (or a person) left them."""
    for role in ("feedback", "deadletter", "rot", "rot-deadletter"):
        publisher.create_topic(name=settings.topic(role))
    subscriber.create_subscription(request={   # before retained acks; other settings
        "name": settings.subscription("pipeline"), "topic": settings.topic("feedback"),
        "ack_deadline_seconds": 10, "labels": {"owner": "ops"},
        "message_retention_duration": {"seconds": 24 * 3600},
        "dead_letter_policy": {"dead_letter_topic": settings.topic("deadletter"),
                               "max_delivery_attempts": 5}})
    subscriber.create_subscription(request={   # a dead-letter policy it should not have
        "name": settings.subscription("deadletter"),
        "topic": settings.topic("deadletter"), "ack_deadline_seconds": 60,
        "message_retention_duration": {"seconds": WEEK_S},
        "dead_letter_policy": {"dead_letter_topic": settings.topic("rot-deadletter")}})


def test_setup_updates_subscriptions_of_an_older_setup(emulators):
    settings = Settings(project="rw-resources-upgrade")
    subscriber, publisher = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    _old_stack(settings, subscriber, publisher)
    pipeline, inspect = settings.subscription("pipeline"), settings.subscription("deadletter")

    result = ensure_pubsub_resources(settings)
    assert result["updated"] == {
        pipeline: {
            "ack_deadline_seconds": [10, 60],
            "dead_letter_policy": [
                {"dead_letter_topic": settings.topic("deadletter"),
                 "max_delivery_attempts": 5},
                {"dead_letter_topic": settings.topic("deadletter"),
                 "max_delivery_attempts": 10}],
            "message_retention_duration": [{"seconds": 24 * 3600}, {"seconds": WEEK_S}],
            "retain_acked_messages": [False, True]},
        inspect: {"dead_letter_policy": [
            {"dead_letter_topic": settings.topic("rot-deadletter"),
             "max_delivery_attempts": 5}, None]}}
    assert {pipeline, inspect} <= set(result["existing"])
    assert len(result["created"]) == 3     # model-updates, trainer, rot-deadletter-inspect

    sub = subscriber.get_subscription(subscription=pipeline)
    assert (sub.ack_deadline_seconds, sub.retain_acked_messages,
            sub.message_retention_duration.total_seconds(),
            sub.dead_letter_policy.max_delivery_attempts) == (60, True, WEEK_S, 10)
    assert dict(sub.labels) == {"owner": "ops"}       # not in the mask: left alone
    assert not subscriber.get_subscription(subscription=inspect).dead_letter_policy \
        .dead_letter_topic
    assert ensure_pubsub_resources(settings)["updated"] == {}

    # The point of it: acknowledged feedback now comes back after a seek.
    publisher.publish(settings.topic("feedback"), b"f1").result(timeout=10)
    pulled = subscriber.pull(subscription=pipeline, max_messages=10, timeout=10)
    (message,) = pulled.received_messages
    subscriber.acknowledge(subscription=pipeline, ack_ids=[message.ack_id])
    subscriber.seek(request={"subscription": pipeline,
                             "time": message.message.publish_time})
    replayed = subscriber.pull(subscription=pipeline, max_messages=10, timeout=10)
    assert [m.message.data for m in replayed.received_messages] == [b"f1"]


def test_setup_prints_what_it_updated(emulators, capsys):
    settings = Settings(project="rw-resources-cli")
    _old_stack(settings, pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient())
    assert main(["setup", "--project", settings.project]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (f"updated  {settings.subscription('deadletter')}: dead_letter_policy "
            f"{{'dead_letter_topic': '{settings.topic('rot-deadletter')}', "
            "'max_delivery_attempts': 5} -> None") in lines
    assert any(line.startswith(f"updated  {settings.subscription('pipeline')}: "
                               "ack_deadline_seconds 10 -> 60;") for line in lines)
    assert f"created  {settings.subscription('trainer')}" in lines


def test_setup_refuses_a_subscription_on_the_wrong_topic(emulators, capsys):
    settings = Settings(project="rw-resources-wrong")
    subscriber, publisher = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    pipeline = settings.subscription("pipeline")
    publisher.create_topic(name=settings.topic("rot"))
    subscriber.create_subscription(name=pipeline, topic=settings.topic("rot"))

    with pytest.raises(SubscriptionTopicMismatch) as caught:
        ensure_pubsub_resources(settings)
    text = str(caught.value)
    assert f"{pipeline} reads {settings.topic('rot')}" in text
    assert f"needs it on {settings.topic('feedback')}" in text
    assert (f"gcloud pubsub subscriptions delete feedback-pipeline "
            f"--project={settings.project}") in text
    assert f".delete_subscription(subscription='{pipeline}')" in text
    assert subscriber.get_subscription(subscription=pipeline).topic == \
        settings.topic("rot")                       # nothing was changed

    assert main(["setup", "--project", settings.project]) == 1
    assert "Pub/Sub cannot move a subscription" in capsys.readouterr().err
    subscriber.delete_subscription(subscription=pipeline)   # the fix it names works
    assert pipeline in ensure_pubsub_resources(settings)["created"]
