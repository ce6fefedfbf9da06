"""What the emulator keeps per topic, subscription and snapshot (in memory, like
Google's own emulator), and the resource messages it answers Get calls with."""
from __future__ import annotations

import threading

from google.pubsub_v1.types import pubsub as types

from emulators.pubsub import limits
from emulators.pubsub.queue import SubscriptionQueue
from emulators.pubsub.retained import MessageLog

__all__ = ["TopicRecord", "SubscriptionRecord", "SnapshotRecord", "resolved_subscription",
           "TOPIC_PB", "SUBSCRIPTION_PB", "SNAPSHOT_PB", "MESSAGE_PB"]

TOPIC_PB = types.Topic.pb()
SUBSCRIPTION_PB = types.Subscription.pb()
SNAPSHOT_PB = types.Snapshot.pb()
MESSAGE_PB = types.PubsubMessage.pb()

_ACTIVE = types.Subscription.State.ACTIVE.value


class TopicRecord:
    """A topic: its resource message and the names attached to it."""

    __slots__ = ("resource", "subscriptions", "snapshots")

    def __init__(self, resource):
        self.resource = resource                 # Topic protobuf, replaced on update
        self.subscriptions: set[str] = set()
        self.snapshots: set[str] = set()


class SubscriptionRecord:
    """A subscription: its settings, its queue, and a condition its pullers wait on."""

    __slots__ = ("resource", "queue", "cond", "ack_deadline_us", "retention_us",
                 "deleted")

    def __init__(self, resource, lock: threading.Lock):
        self.cond = threading.Condition(lock)
        self.queue = SubscriptionQueue()
        self.deleted = False
        self.configure(resource)

    def configure(self, resource) -> None:
        """Take (already resolved and checked) settings."""
        self.resource = resource
        self.ack_deadline_us = resource.ack_deadline_seconds * 1_000_000
        self.retention_us = int(limits.duration_s(resource.message_retention_duration)
                                * 1_000_000)
        self.queue.max_attempts = limits.max_attempts_of(resource)
        if self.queue.retain_acked and not resource.retain_acked_messages:
            self.queue.forget_acked()
        self.queue.retain_acked = resource.retain_acked_messages

    @property
    def name(self) -> str:
        return self.resource.name

    @property
    def topic(self) -> str:
        return self.resource.topic


class SnapshotRecord:
    """A snapshot: the unacked messages of a subscription at creation, plus every
    message published to the topic since, as ``(seq, publish_us, wire)`` in a
    compact :class:`~emulators.pubsub.retained.MessageLog`."""

    __slots__ = ("name", "topic", "messages", "expire_us", "labels")

    def __init__(self, name: str, topic: str, messages, expire_us: int, labels):
        self.name = name
        self.topic = topic
        self.messages = MessageLog(messages)
        self.expire_us = expire_us
        self.labels = dict(labels)

    def resource(self):
        snapshot = SNAPSHOT_PB(name=self.name, topic=self.topic, labels=self.labels)
        snapshot.expire_time.FromMicroseconds(self.expire_us)
        return snapshot

    def replay(self):
        return self.messages.items()


def resolved_subscription(requested):
    """A copy of a requested Subscription with Pub/Sub's defaults filled in."""
    limits.check_subscription(requested)
    resource = SUBSCRIPTION_PB()
    resource.CopyFrom(requested)
    resource.ack_deadline_seconds = limits.ack_deadline_of(requested.ack_deadline_seconds)
    resource.message_retention_duration.FromSeconds(int(limits.retention_of(requested)))
    if resource.HasField("dead_letter_policy") and \
            resource.dead_letter_policy.dead_letter_topic:
        resource.dead_letter_policy.max_delivery_attempts = \
            limits.max_attempts_of(requested)
    if not resource.HasField("expiration_policy"):
        resource.expiration_policy.ttl.FromSeconds(limits.DEFAULT_EXPIRATION_TTL_S)
    resource.state = _ACTIVE
    return resource
