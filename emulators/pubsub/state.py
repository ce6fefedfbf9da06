"""Topics, subscriptions, snapshots and publishing, under one lock.

Every public method is thread-safe and raises :class:`~emulators.pubsub.errors.ApiError`
with Pub/Sub's status code. Methods ending in ``_locked`` expect the caller to hold
:attr:`PubSubState.lock` (they are used by :mod:`emulators.pubsub.delivery`).
Resource messages handed out are never mutated afterwards (updates replace them), so
callers may serialize them after the lock is released.
"""
from __future__ import annotations

import bisect
import datetime as dt
import logging
import threading
import time

from emulators.pubsub import limits, names
from emulators.pubsub.errors import (already_exists, failed_precondition, invalid,
                                     not_found, unimplemented)
from emulators.pubsub.masks import apply_update
from emulators.pubsub.records import (MESSAGE_PB, SUBSCRIPTION_PB, TOPIC_PB,
                                      SnapshotRecord, SubscriptionRecord, TopicRecord,
                                      resolved_subscription)

__all__ = ["PubSubState", "now_us"]

_LOGGER = logging.getLogger(__name__)

# List calls: what a page holds when the caller does not say, and at most.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A snapshot lives 7 days from the oldest unacked message it holds (as in Pub/Sub).
SNAPSHOT_LIFETIME_US = 7 * 24 * 3600 * 1_000_000
# Topic-level retention may be asked for 10 minutes .. 31 days.
MAX_TOPIC_RETENTION_S = 31 * 24 * 3600

_TOPIC_UPDATABLE = frozenset({"labels", "message_storage_policy", "kms_key_name",
                              "message_retention_duration"})
_SUBSCRIPTION_UPDATABLE = frozenset({
    "ack_deadline_seconds", "retain_acked_messages", "message_retention_duration",
    "labels", "dead_letter_policy", "retry_policy", "expiration_policy", "push_config",
    "enable_exactly_once_delivery"})
_SNAPSHOT_UPDATABLE = frozenset({"labels", "expire_time"})


def now_us() -> int:
    return time.time_ns() // 1000


def _page(items: list[str], page_size: int, token: str) -> tuple[list[str], str]:
    """One page of sorted names; the token is the last name of the previous page."""
    if page_size < 0:
        raise invalid(f"Invalid page_size={page_size}: it must be >= 0.")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = bisect.bisect_right(items, token) if token else 0
    chunk = items[start:start + size]
    more = start + size < len(items)
    return chunk, (chunk[-1] if more and chunk else "")


def _dead_letter_copy(subscription: str, entry):
    """What Pub/Sub publishes to the dead-letter topic for ``entry``: its data,
    attributes and ordering key, plus attributes naming where it came from."""
    original = MESSAGE_PB.FromString(entry.wire)
    copy = MESSAGE_PB(data=original.data, attributes=original.attributes,
                      ordering_key=original.ordering_key)
    _, project, _, subscription_id = subscription.split("/")
    seconds, micros = divmod(entry.publish_us, 1_000_000)
    published = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(
        microsecond=micros)
    copy.attributes.update({
        "CloudPubSubDeadLetterSourceDeliveryCount": str(entry.attempts),
        "CloudPubSubDeadLetterSourceSubscription": subscription_id,
        "CloudPubSubDeadLetterSourceSubscriptionProject": project,
        "CloudPubSubDeadLetterSourceTopicPublishTime":
            published.isoformat(timespec="milliseconds"),
    })
    return copy


def _check_topic(topic) -> None:
    names.topic_name(topic.name)
    if topic.schema_settings.schema:
        raise unimplemented(f"Schemas are not supported by this emulator (topic "
                            f"{topic.name!r} asks for {topic.schema_settings.schema!r}).")
    if topic.HasField("message_retention_duration"):
        seconds = limits.duration_s(topic.message_retention_duration)
        if not limits.MIN_RETENTION_S <= seconds <= MAX_TOPIC_RETENTION_S:
            raise invalid(f"Invalid topic message_retention_duration={seconds:g}s: it "
                          f"must be between {limits.MIN_RETENTION_S} s and "
                          f"{MAX_TOPIC_RETENTION_S} s (31 days).")


class PubSubState:
    """All of the emulator's data. ``close()`` wakes every waiting puller."""

    def __init__(self):
        self.lock = threading.Lock()
        self.closing = False
        self._topics: dict[str, TopicRecord] = {}
        self._subs: dict[str, SubscriptionRecord] = {}
        self._snapshots: dict[str, SnapshotRecord] = {}
        self._seq = 0
        self._last_publish_us = 0

    def open(self) -> None:
        with self.lock:
            self.closing = False

    def close(self) -> None:
        with self.lock:
            self.closing = True
            for record in self._subs.values():
                record.cond.notify_all()

    # -- topics ---------------------------------------------------------------------
    def create_topic(self, requested):
        _check_topic(requested)
        resource = TOPIC_PB()
        resource.CopyFrom(requested)
        resource.state = 1  # ACTIVE
        with self.lock:
            if resource.name in self._topics:
                raise already_exists("Topic", resource.name)
            self._topics[resource.name] = TopicRecord(resource)
        _LOGGER.debug("created topic=%s", resource.name)
        return resource

    def get_topic(self, name: str):
        names.topic_name(name)
        with self.lock:
            return self._topic_locked(name).resource

    def update_topic(self, requested, paths):
        names.topic_name(requested.name)
        with self.lock:
            record = self._topic_locked(requested.name)
            resource = apply_update(record.resource, requested, paths, _TOPIC_UPDATABLE,
                                    "topic")
            _check_topic(resource)
            record.resource = resource
            return resource

    def list_topics(self, project: str, page_size: int, token: str):
        prefix = names.project_name(project) + "/topics/"
        with self.lock:
            found = sorted(n for n in self._topics if n.startswith(prefix))
            chunk, next_token = _page(found, page_size, token)
            return [self._topics[n].resource for n in chunk], next_token

    def topic_subscriptions(self, topic: str, page_size: int, token: str):
        names.topic_name(topic)
        with self.lock:
            return _page(sorted(self._topic_locked(topic).subscriptions), page_size,
                         token)

    def topic_snapshots(self, topic: str, page_size: int, token: str):
        names.topic_name(topic)
        with self.lock:
            record = self._topic_locked(topic)
            live = [n for n in sorted(record.snapshots) if self._live_snapshot_locked(n)]
            return _page(live, page_size, token)

    def delete_topic(self, name: str) -> None:
        names.topic_name(name)
        with self.lock:
            record = self._topic_locked(name)
            del self._topics[name]
            for sub_name in record.subscriptions:
                sub = self._subs[sub_name]
                resource = SUBSCRIPTION_PB()
                resource.CopyFrom(sub.resource)
                resource.topic = names.DELETED_TOPIC
                sub.resource = resource
            for snap_name in record.snapshots:
                if snap_name in self._snapshots:
                    self._snapshots[snap_name].topic = names.DELETED_TOPIC
        _LOGGER.debug("deleted topic=%s", name)

    def _topic_locked(self, name: str) -> TopicRecord:
        record = self._topics.get(name)
        if record is None:
            raise not_found("Topic", name)
        return record

    # -- publishing -----------------------------------------------------------------
    def publish(self, topic: str, messages) -> list[str]:
        """Store ``messages`` (PubsubMessage protobufs, given ids and a publish time)."""
        names.topic_name(topic)
        with self.lock:
            return self._publish_locked(self._topic_locked(topic), messages)

    def _publish_locked(self, topic: TopicRecord, messages) -> list[str]:
        publish_us = max(now_us(), self._last_publish_us)
        self._last_publish_us = publish_us
        seconds, micros = divmod(publish_us, 1_000_000)
        subs = [self._subs[n] for n in topic.subscriptions]
        snaps = [self._snapshots[n] for n in topic.snapshots if n in self._snapshots]
        ids = []
        for message in messages:
            self._seq += 1
            seq = self._seq
            message_id = str(seq)
            message.message_id = message_id
            message.publish_time.seconds = seconds
            message.publish_time.nanos = micros * 1000
            # One bytes object per message, shared by every subscription and snapshot
            # (a protobuf object would keep its whole publish request alive).
            wire = message.SerializeToString()
            for sub in subs:
                sub.queue.add(seq, wire, publish_us)
            for snap in snaps:
                snap.messages.append(seq, publish_us, wire)
            ids.append(message_id)
        for sub in subs:
            sub.queue.prune(publish_us - sub.retention_us)
            sub.cond.notify_all()
        return ids

    def dead_letter_locked(self, record: SubscriptionRecord, entries) -> None:
        """Forward entries that ran out of delivery attempts to the dead-letter topic."""
        name = record.resource.dead_letter_policy.dead_letter_topic
        topic = self._topics.get(name)
        if topic is None:
            _LOGGER.warning("dead-letter topic missing subscription=%s topic=%s: keeping "
                            "%d message(s); create the topic", record.name, name,
                            len(entries))
            for entry in entries:
                record.queue.requeue(entry)
            return
        self._publish_locked(topic, [_dead_letter_copy(record.name, e) for e in entries])
        _LOGGER.debug("dead-lettered subscription=%s topic=%s count=%d", record.name,
                      name, len(entries))

    # -- subscriptions --------------------------------------------------------------
    def create_subscription(self, requested):
        names.subscription_name(requested.name)
        names.topic_name(requested.topic)
        resource = resolved_subscription(requested)
        with self.lock:
            if resource.name in self._subs:
                raise already_exists("Subscription", resource.name)
            topic = self._topic_locked(resource.topic)
            self._check_dead_letter_topic_locked(resource)
            self._subs[resource.name] = SubscriptionRecord(resource, self.lock)
            topic.subscriptions.add(resource.name)
        _LOGGER.debug("created subscription=%s topic=%s", resource.name, resource.topic)
        return resource

    def _check_dead_letter_topic_locked(self, resource) -> None:
        dead_letter = resource.dead_letter_policy.dead_letter_topic
        if dead_letter and dead_letter not in self._topics:
            raise not_found("Dead-letter topic", dead_letter)

    def get_subscription(self, name: str):
        names.subscription_name(name)
        with self.lock:
            return self.sub_locked(name).resource

    def update_subscription(self, requested, paths):
        names.subscription_name(requested.name)
        with self.lock:
            record = self.sub_locked(requested.name)
            merged = apply_update(record.resource, requested, paths,
                                  _SUBSCRIPTION_UPDATABLE, "subscription")
            resource = resolved_subscription(merged)
            self._check_dead_letter_topic_locked(resource)
            record.configure(resource)
            record.cond.notify_all()
            return resource

    def list_subscriptions(self, project: str, page_size: int, token: str):
        prefix = names.project_name(project) + "/subscriptions/"
        with self.lock:
            found = sorted(n for n in self._subs if n.startswith(prefix))
            chunk, next_token = _page(found, page_size, token)
            return [self._subs[n].resource for n in chunk], next_token

    def delete_subscription(self, name: str) -> None:
        names.subscription_name(name)
        with self.lock:
            record = self.sub_locked(name)
            del self._subs[name]
            self._unlink_locked(record)
            record.deleted = True
            record.queue.drop_all()
            record.cond.notify_all()
        _LOGGER.debug("deleted subscription=%s", name)

    def detach_subscription(self, name: str) -> None:
        """Stop delivery: the backlog is dropped and Pull answers FAILED_PRECONDITION."""
        names.subscription_name(name)
        with self.lock:
            record = self.sub_locked(name)
            self._unlink_locked(record)
            resource = SUBSCRIPTION_PB()
            resource.CopyFrom(record.resource)
            resource.detached = True
            record.resource = resource
            record.queue.drop_all()
            record.cond.notify_all()

    def _unlink_locked(self, record: SubscriptionRecord) -> None:
        topic = self._topics.get(record.topic)
        if topic is not None:
            topic.subscriptions.discard(record.name)

    def backlog(self, subscription: str) -> dict[str, int]:
        """``{"unacked": n, "leased": m}`` of a subscription (for tests and benches,
        like Cloud Monitoring's num_undelivered_messages)."""
        with self.lock:
            queue = self.sub_locked(subscription).queue
            return {"unacked": queue.unacked, "leased": queue.leased}

    def sub_locked(self, name: str) -> SubscriptionRecord:
        record = self._subs.get(name)
        if record is None:
            raise not_found("Subscription", name)
        return record

    # -- seek and snapshots ---------------------------------------------------------
    def seek(self, subscription: str, time_us: int | None = None,
             snapshot: str | None = None) -> None:
        names.subscription_name(subscription)
        if snapshot:
            names.snapshot_name(snapshot)
        elif time_us is None:
            raise invalid("Seek needs a target: set either `time` or `snapshot`.")
        with self.lock:
            record = self.sub_locked(subscription)
            cutoff = now_us() - record.retention_us
            if snapshot:
                snap = self.snapshot_locked(snapshot)
                if snap.topic != record.topic:
                    raise invalid(f"Snapshot {snapshot!r} is of topic {snap.topic!r}, but "
                                  f"subscription {subscription!r} reads {record.topic!r}: "
                                  "seek to a snapshot of the same topic.")
                record.queue.seek_snapshot(snap.replay(), cutoff)
            else:
                record.queue.seek_time(time_us, cutoff)
            record.cond.notify_all()
        _LOGGER.debug("seek subscription=%s time_us=%s snapshot=%s", subscription,
                      time_us, snapshot)

    def create_snapshot(self, name: str, subscription: str, labels):
        names.snapshot_name(name)
        names.subscription_name(subscription)
        with self.lock:
            if self._live_snapshot_locked(name):
                raise already_exists("Snapshot", name)
            record = self.sub_locked(subscription)
            topic = self._topics.get(record.topic)
            if topic is None:
                raise failed_precondition(f"The topic of subscription {subscription!r} "
                                          "was deleted: a snapshot needs a live topic.")
            messages = record.queue.unacked_messages()
            oldest = messages[0][1] if messages else now_us()
            snap = SnapshotRecord(name, record.topic, messages,
                                  oldest + SNAPSHOT_LIFETIME_US, labels)
            self._snapshots[name] = snap
            topic.snapshots.add(name)
            return snap.resource()

    def get_snapshot(self, name: str):
        names.snapshot_name(name)
        with self.lock:
            return self.snapshot_locked(name).resource()

    def update_snapshot(self, requested, paths):
        names.snapshot_name(requested.name)
        with self.lock:
            snap = self.snapshot_locked(requested.name)
            resource = apply_update(snap.resource(), requested, paths,
                                    _SNAPSHOT_UPDATABLE, "snapshot")
            snap.labels = dict(resource.labels)
            snap.expire_us = limits.micros_of(resource.expire_time)
            return snap.resource()

    def list_snapshots(self, project: str, page_size: int, token: str):
        prefix = names.project_name(project) + "/snapshots/"
        with self.lock:
            found = sorted(n for n in list(self._snapshots)
                           if n.startswith(prefix) and self._live_snapshot_locked(n))
            chunk, next_token = _page(found, page_size, token)
            return [self._snapshots[n].resource() for n in chunk], next_token

    def delete_snapshot(self, name: str) -> None:
        names.snapshot_name(name)
        with self.lock:
            snap = self.snapshot_locked(name)
            self._drop_snapshot_locked(snap)

    def snapshot_locked(self, name: str) -> SnapshotRecord:
        if not self._live_snapshot_locked(name):
            raise not_found("Snapshot", name)
        return self._snapshots[name]

    def _live_snapshot_locked(self, name: str) -> bool:
        """Whether the snapshot exists; an expired one is dropped on the way."""
        snap = self._snapshots.get(name)
        if snap is None:
            return False
        if snap.expire_us <= now_us():
            self._drop_snapshot_locked(snap)
            return False
        return True

    def _drop_snapshot_locked(self, snap: SnapshotRecord) -> None:
        del self._snapshots[snap.name]
        topic = self._topics.get(snap.topic)
        if topic is not None:
            topic.snapshots.discard(snap.name)
