"""`rotwatch setup` creates every topic and subscription once, with dead-letter policies."""
from google.cloud import pubsub_v1

from rotwatch.config import Settings
from rotwatch.resources import ensure_pubsub_resources


def test_setup_is_idempotent_and_wires_dead_letters(emulators):
    settings = Settings(project="rw-resources-test")
    first = ensure_pubsub_resources(settings)
    assert len(first["created"]) == 9 and first["existing"] == []
    second = ensure_pubsub_resources(settings)
    assert second["created"] == [] and sorted(second["existing"]) == sorted(first["created"])

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
