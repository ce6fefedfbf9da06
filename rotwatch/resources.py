"""Create the topics and subscriptions rotwatch needs, and keep their settings current.

Idempotent: a missing topic or subscription is created; an existing subscription whose
ack deadline, dead-letter policy, retain-acked-messages or message retention differ
from the plan is updated in place (``UpdateSubscription`` with an update mask of just
the differing fields), so a stack set up by an older rotwatch gets, for instance, the
retained acknowledged messages its pipeline's restart seek relies on. A subscription
attached to the wrong topic cannot be updated (Pub/Sub does not move subscriptions):
:class:`SubscriptionTopicMismatch` says how to delete it. Used by ``rotwatch setup``
and ``rotwatch up``; in Google Cloud the same call (or the gcloud commands in
docs/cloud.md) prepares a project.

=================================  ==============================  =====================
subscription                       topic                           dead letters to
=================================  ==============================  =====================
``feedback-pipeline``              ``feedback``                    ``feedback-deadletter``
``feedback-deadletter-inspect``    ``feedback-deadletter``         —
``model-rot-trainer``              ``model-rot``                   ``model-rot-deadletter``
``model-rot-deadletter-inspect``   ``model-rot-deadletter``        —
=================================  ==============================  =====================
"""
from __future__ import annotations

import logging

from google.api_core import exceptions as gexc

from rotwatch.config import TOPICS, Settings

__all__ = ["ensure_pubsub_resources", "subscription_plan", "SubscriptionTopicMismatch",
           "PLAN"]

_LOGGER = logging.getLogger(__name__)

# A feedback message that fails this often in the pipeline's subscription is a poison
# message: park it instead of retrying forever (Pub/Sub allows 5..100).
FEEDBACK_MAX_DELIVERY_ATTEMPTS = 10
# Training can take minutes; a rot event that failed 5 times needs a person.
ROT_MAX_DELIVERY_ATTEMPTS = 5
# Long enough for one training job's bookkeeping; the trainer extends leases itself.
ROT_ACK_DEADLINE_S = 60
FEEDBACK_ACK_DEADLINE_S = 60
# Keep dead letters for the longest retention Pub/Sub allows, 7 days (also Pub/Sub's
# default, which every other subscription keeps).
DEADLETTER_RETENTION_S = 7 * 24 * 3600

# The DirectRunner acknowledges feedback before processing it; on restart the pipeline
# seeks back to its checkpoint, which replays acknowledged messages only if they are
# retained (pipelines/checkpoint.py).
RETAIN_ACKED = frozenset({"pipeline"})

# (subscription role, topic role, dead-letter topic role, max attempts, ack deadline)
PLAN = (
    ("pipeline", "feedback", "deadletter", FEEDBACK_MAX_DELIVERY_ATTEMPTS,
     FEEDBACK_ACK_DEADLINE_S),
    ("deadletter", "deadletter", None, None, FEEDBACK_ACK_DEADLINE_S),
    ("trainer", "rot", "rot-deadletter", ROT_MAX_DELIVERY_ATTEMPTS, ROT_ACK_DEADLINE_S),
    ("rot-deadletter", "rot-deadletter", None, None, ROT_ACK_DEADLINE_S),
)


class SubscriptionTopicMismatch(RuntimeError):
    """An existing subscription reads another topic than the plan's."""


def subscription_plan(settings: Settings) -> list[dict]:
    """The subscriptions rotwatch needs, as ``CreateSubscription`` requests."""
    plan = []
    for sub_role, topic_role, dead_role, attempts, ack_deadline in PLAN:
        plan.append({
            "name": settings.subscription(sub_role),
            "topic": settings.topic(topic_role),
            "ack_deadline_seconds": ack_deadline,
            "dead_letter_policy": {"dead_letter_topic": settings.topic(dead_role),
                                   "max_delivery_attempts": attempts}
            if dead_role else None,
            "retain_acked_messages": sub_role in RETAIN_ACKED,
            "message_retention_duration": {"seconds": DEADLETTER_RETENTION_S},
        })
    return plan


def _settings_of(sub) -> dict:
    """The planned fields of an existing subscription, as plain values."""
    policy = sub.dead_letter_policy
    return {
        "ack_deadline_seconds": sub.ack_deadline_seconds,
        "dead_letter_policy": {"dead_letter_topic": policy.dead_letter_topic,
                               "max_delivery_attempts": policy.max_delivery_attempts}
        if policy.dead_letter_topic else None,
        "retain_acked_messages": bool(sub.retain_acked_messages),
        "message_retention_duration": {
            "seconds": int(sub.message_retention_duration.total_seconds())},
    }


def _mismatch(name: str, topic: str, wanted: str) -> SubscriptionTopicMismatch:
    project, sub_id = name.split("/")[1], name.split("/")[-1]
    return SubscriptionTopicMismatch(
        f"Subscription {name} reads {topic}, but rotwatch needs it on {wanted}, and "
        "Pub/Sub cannot move a subscription to another topic. Delete it (its unacked "
        "messages go with it), then run `rotwatch setup` again:\n"
        f"  gcloud pubsub subscriptions delete {sub_id} --project={project}\n"
        "or, against the emulator (PUBSUB_EMULATOR_HOST set):\n"
        "  python -c \"from google.cloud import pubsub_v1; pubsub_v1.SubscriberClient()"
        f".delete_subscription(subscription='{name}')\"")


def _reconcile(subscriber, wanted: dict) -> dict:
    """Update an existing subscription to ``wanted``; ``{field: [old, new]}`` changed."""
    name = wanted["name"]
    existing = subscriber.get_subscription(subscription=name)
    if existing.topic != wanted["topic"]:
        raise _mismatch(name, existing.topic, wanted["topic"])
    current = _settings_of(existing)
    changed = {field: [value, wanted[field]] for field, value in current.items()
               if value != wanted[field]}
    if changed:
        subscription = {key: value for key, value in wanted.items() if value is not None}
        subscriber.update_subscription(request={
            "subscription": subscription, "update_mask": {"paths": sorted(changed)}})
        _LOGGER.info("updated subscription=%s %s", name, "; ".join(
            f"{field}: {old} -> {new}" for field, (old, new) in sorted(changed.items())))
    return changed


def ensure_pubsub_resources(settings: Settings, publisher=None, subscriber=None) -> dict:
    """Create missing topics and subscriptions, bring existing subscriptions' settings
    to the plan. Returns ``{"created": [names], "existing": [names],
    "updated": {subscription: {field: [old, new]}}}`` ("existing" includes those
    updated). Raises :class:`SubscriptionTopicMismatch` for a subscription on another
    topic."""
    from google.cloud import pubsub_v1

    publisher = publisher or pubsub_v1.PublisherClient()
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    created, existing, updated = [], [], {}
    for role in TOPICS:
        name = settings.topic(role)
        try:
            publisher.create_topic(name=name)
            created.append(name)
        except gexc.AlreadyExists:
            existing.append(name)
    for wanted in subscription_plan(settings):
        request = {key: value for key, value in wanted.items() if value is not None}
        try:
            subscriber.create_subscription(request=request)
            created.append(wanted["name"])
            continue
        except gexc.AlreadyExists:
            existing.append(wanted["name"])
        changed = _reconcile(subscriber, wanted)
        if changed:
            updated[wanted["name"]] = changed
    for name in created:
        _LOGGER.info("created resource=%s", name)
    return {"created": created, "existing": existing, "updated": updated}
