"""Hear ``model-updates`` in this process and switch defaults without a restart.

Every gateway process must see every change, so each makes its own subscription on
``model-updates`` when it starts (``model-updates-gateway-<host>-<pid>-<random>``)
and deletes it when it stops. A process that dies without stopping leaves its
subscription behind; Pub/Sub deletes it after :data:`EXPIRATION_TTL_S` of
inactivity. Messages arrive by streaming pull, so a change reaches the process in
well under a second; the handler loads the new default, then switches to it.

A message is acknowledged once handled — also when the new version is refused (bad
sha256): the refusal is logged, the old default keeps serving, and redelivering the
same message would only refuse again. A registry that does not answer is a reason to
``nack``: Pub/Sub redelivers and the switch is tried again.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Callable

from rotwatch.config import Settings
from rotwatch.events import InvalidEvent, ModelUpdate

__all__ = ["ModelUpdateListener", "subscription_id_for_process", "EXPIRATION_TTL_S"]

_LOGGER = logging.getLogger(__name__)

# Pub/Sub's shortest expiration: a subscription left by a crashed process is deleted
# after a day without subscribers.
EXPIRATION_TTL_S = 24 * 3600
# Pub/Sub's shortest retention: an update older than this is stale anyway.
RETENTION_S = 10 * 60
# A handler loads one model version (an artifact read and a sha256): 60 s is plenty.
ACK_DEADLINE_S = 60
# Default changes are rare; handle a few at once at most.
MAX_OUTSTANDING_MESSAGES = 4
# How long stop() waits for the streaming pull to wind down.
STOP_TIMEOUT_S = 10.0


def subscription_id_for_process() -> str:
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:40]
    return f"model-updates-gateway-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ModelUpdateListener:
    """A per-process subscription on ``model-updates`` calling ``on_update``.

    ``on_update(update)`` runs in a client thread; returning normally acknowledges the
    message, raising asks Pub/Sub to deliver it again.
    """

    def __init__(self, settings: Settings, on_update: Callable[[ModelUpdate], None], *,
                 subscription_id: str | None = None, subscriber=None):
        self.settings = settings
        self.on_update = on_update
        self.topic = settings.topic("updates")
        self.subscription = (f"projects/{settings.project}/subscriptions/"
                             f"{subscription_id or subscription_id_for_process()}")
        self._subscriber = subscriber
        self._future = None
        self._lock = threading.Lock()
        self.received = 0
        self.handled = 0

    @property
    def subscriber(self):
        if self._subscriber is None:
            from google.cloud import pubsub_v1
            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def start(self) -> "ModelUpdateListener":
        """Create this process's subscription and start receiving (fails fast)."""
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1
        from google.protobuf import duration_pb2

        try:
            self.subscriber.create_subscription(request={
                "name": self.subscription, "topic": self.topic,
                "ack_deadline_seconds": ACK_DEADLINE_S,
                "message_retention_duration": duration_pb2.Duration(seconds=RETENTION_S),
                "expiration_policy": {"ttl": duration_pb2.Duration(seconds=EXPIRATION_TTL_S)},
            })
        except gexc.NotFound as exc:
            raise RuntimeError(f"topic {self.topic} does not exist, so the gateway cannot "
                               "hear default-version changes; create the topics with: "
                               "rotwatch setup") from exc
        flow = pubsub_v1.types.FlowControl(max_messages=MAX_OUTSTANDING_MESSAGES)
        self._future = self.subscriber.subscribe(self.subscription, self._receive,
                                                 flow_control=flow)
        _LOGGER.info("step=listen-updates subscription=%s topic=%s", self.subscription,
                     self.topic)
        return self

    def _receive(self, message) -> None:
        self.received += 1
        try:
            update = ModelUpdate.from_json(message.data)
        except (InvalidEvent, TypeError, ValueError) as exc:
            # A malformed update cannot become valid by redelivery: log it and drop it.
            _LOGGER.error("step=receive-update outcome=invalid message_id=%s reason=%s "
                          "data=%r", message.message_id, exc, bytes(message.data[:200]))
            message.ack()
            return
        try:
            self.on_update(update)
        except Exception as exc:  # redelivered by Pub/Sub; logged with the traceback
            _LOGGER.exception("step=apply-update model=%s version=%s outcome=retry "
                              "error=%s", update.model, update.default_version, exc)
            message.nack()
            return
        self.handled += 1
        message.ack()

    def stop(self) -> None:
        """Stop receiving and delete this process's subscription."""
        from google.api_core import exceptions as gexc

        with self._lock:
            future, self._future = self._future, None
        if future is None:
            return
        future.cancel()
        try:
            future.result(timeout=STOP_TIMEOUT_S)
        except Exception as exc:  # a cancelled stream ends with an error by design
            _LOGGER.debug("streaming pull ended: %r", exc)
        try:
            # bounded: at shutdown Pub/Sub (or the emulator) may already be gone
            self.subscriber.delete_subscription(request={"subscription": self.subscription},
                                                timeout=STOP_TIMEOUT_S)
            _LOGGER.info("step=stop-updates subscription=%s outcome=deleted",
                         self.subscription)
        except gexc.NotFound:
            pass
        except gexc.GoogleAPICallError as exc:
            _LOGGER.warning("step=stop-updates subscription=%s outcome=left reason=%s "
                            "(Pub/Sub expires it after %d s unused)", self.subscription,
                            exc, EXPIRATION_TTL_S)
        finally:
            self.subscriber.close()
            self._subscriber = None
