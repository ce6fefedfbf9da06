"""Create the topics and subscriptions rotwatch needs, if they are missing.

Idempotent: an existing topic or subscription is left as it is. Used by
``rotwatch setup`` and ``rotwatch up``; in Google Cloud the same call (or the gcloud
commands in the README) prepares a project.

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

__all__ = ["ensure_pubsub_resources", "PLAN"]

_LOGGER = logging.getLogger(__name__)

# A feedback message that fails this often in the pipeline's subscription is a poison
# message: park it instead of retrying forever (Pub/Sub allows 5..100).
FEEDBACK_MAX_DELIVERY_ATTEMPTS = 10
# Training can take minutes; a rot event that failed 5 times needs a person.
ROT_MAX_DELIVERY_ATTEMPTS = 5
# Long enough for one training job's bookkeeping; the trainer extends leases itself.
ROT_ACK_DEADLINE_S = 60
FEEDBACK_ACK_DEADLINE_S = 60
# Keep dead letters for the longest retention Pub/Sub allows, 7 days.
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


def ensure_pubsub_resources(settings: Settings, publisher=None, subscriber=None) -> dict:
    """Create missing topics and subscriptions; returns ``{"created": [...], ...}``."""
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    publisher = publisher or pubsub_v1.PublisherClient()
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    created, existing = [], []
    for role in TOPICS:
        name = settings.topic(role)
        try:
            publisher.create_topic(name=name)
            created.append(name)
        except gexc.AlreadyExists:
            existing.append(name)
    for sub_role, topic_role, dead_role, attempts, ack_deadline in PLAN:
        request = {"name": settings.subscription(sub_role),
                   "topic": settings.topic(topic_role),
                   "ack_deadline_seconds": ack_deadline}
        if dead_role:
            request["dead_letter_policy"] = {
                "dead_letter_topic": settings.topic(dead_role),
                "max_delivery_attempts": attempts}
        if not dead_role or sub_role in RETAIN_ACKED:
            request["message_retention_duration"] = duration_pb2.Duration(
                seconds=DEADLETTER_RETENTION_S)
        if sub_role in RETAIN_ACKED:
            request["retain_acked_messages"] = True
        try:
            subscriber.create_subscription(request=request)
            created.append(request["name"])
        except gexc.AlreadyExists:
            existing.append(request["name"])
    for name in created:
        _LOGGER.info("created resource=%s", name)
    return {"created": created, "existing": existing}
