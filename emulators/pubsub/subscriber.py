"""The ``google.pubsub.v1.Subscriber`` service: subscriptions, pulling, seek, snapshots.

StreamingPull lives in :mod:`emulators.pubsub.streaming`.
"""
from __future__ import annotations

import logging

from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub as types

from emulators.grpcserver import stream_stream, unary
from emulators.pubsub import limits
from emulators.pubsub.delivery import Delivery
from emulators.pubsub.errors import abort_on_error, unimplemented
from emulators.pubsub.state import PubSubState
from emulators.pubsub.streaming import StreamingPull
from emulators.pubsub.wire import received_messages_bytes

__all__ = ["SubscriberService", "PULL_WAIT_S"]

_LOGGER = logging.getLogger(__name__)

SERVICE = "google.pubsub.v1.Subscriber"

# How long a Pull without return_immediately waits for a message before answering
# empty. Short on purpose: Beam's DirectRunner moves its watermark only when a Pull
# returns, and polls again at once, so holding an empty Pull open only adds latency.
PULL_WAIT_S = 0.2

_PULL_RESPONSE = types.PullResponse.pb()
_LIST_SUBSCRIPTIONS_RESPONSE = types.ListSubscriptionsResponse.pb()
_LIST_SNAPSHOTS_RESPONSE = types.ListSnapshotsResponse.pb()
_SEEK_RESPONSE = types.SeekResponse.pb()


class SubscriberService:
    """Handlers of the Subscriber RPCs."""

    def __init__(self, state: PubSubState, delivery: Delivery):
        self._state = state
        self._delivery = delivery
        self._streaming = StreamingPull(delivery)

    def handlers(self) -> dict:
        t = types
        return {SERVICE: {
            "CreateSubscription": unary(self.create_subscription, t.Subscription,
                                        t.Subscription),
            "GetSubscription": unary(self.get_subscription, t.GetSubscriptionRequest,
                                     t.Subscription),
            "UpdateSubscription": unary(self.update_subscription,
                                        t.UpdateSubscriptionRequest, t.Subscription),
            "ListSubscriptions": unary(self.list_subscriptions, t.ListSubscriptionsRequest,
                                       t.ListSubscriptionsResponse),
            "DeleteSubscription": unary(self.delete_subscription,
                                        t.DeleteSubscriptionRequest, empty_pb2.Empty),
            "ModifyAckDeadline": unary(self.modify_ack_deadline,
                                       t.ModifyAckDeadlineRequest, empty_pb2.Empty),
            "Acknowledge": unary(self.acknowledge, t.AcknowledgeRequest, empty_pb2.Empty),
            "Pull": unary(self.pull, t.PullRequest, t.PullResponse),
            "StreamingPull": stream_stream(self._streaming.handle, t.StreamingPullRequest,
                                           t.StreamingPullResponse),
            "ModifyPushConfig": unary(self.modify_push_config, t.ModifyPushConfigRequest,
                                      empty_pb2.Empty),
            "GetSnapshot": unary(self.get_snapshot, t.GetSnapshotRequest, t.Snapshot),
            "ListSnapshots": unary(self.list_snapshots, t.ListSnapshotsRequest,
                                   t.ListSnapshotsResponse),
            "CreateSnapshot": unary(self.create_snapshot, t.CreateSnapshotRequest,
                                    t.Snapshot),
            "UpdateSnapshot": unary(self.update_snapshot, t.UpdateSnapshotRequest,
                                    t.Snapshot),
            "DeleteSnapshot": unary(self.delete_snapshot, t.DeleteSnapshotRequest,
                                    empty_pb2.Empty),
            "Seek": unary(self.seek, t.SeekRequest, t.SeekResponse),
        }}

    # -- subscriptions --------------------------------------------------------------
    @abort_on_error
    def create_subscription(self, request, context):
        return self._state.create_subscription(request)

    @abort_on_error
    def get_subscription(self, request, context):
        return self._state.get_subscription(request.subscription)

    @abort_on_error
    def update_subscription(self, request, context):
        return self._state.update_subscription(request.subscription,
                                               request.update_mask.paths)

    @abort_on_error
    def list_subscriptions(self, request, context):
        found, token = self._state.list_subscriptions(request.project, request.page_size,
                                                      request.page_token)
        return _LIST_SUBSCRIPTIONS_RESPONSE(subscriptions=found, next_page_token=token)

    @abort_on_error
    def delete_subscription(self, request, context):
        self._state.delete_subscription(request.subscription)
        return empty_pb2.Empty()

    @abort_on_error
    def modify_push_config(self, request, context):
        if request.push_config.push_endpoint:
            raise unimplemented("Push subscriptions are not supported by this emulator "
                                f"(push_endpoint={request.push_config.push_endpoint!r})"
                                ": pull instead.")
        self._state.get_subscription(request.subscription)   # NOT_FOUND if missing
        return empty_pb2.Empty()

    # -- pulling --------------------------------------------------------------------
    @abort_on_error
    def pull(self, request, context):
        wait_s = 0.0 if request.return_immediately else PULL_WAIT_S
        taken = self._delivery.pull(request.subscription, request.max_messages, wait_s)
        return _PULL_RESPONSE.FromString(received_messages_bytes(taken))

    @abort_on_error
    def acknowledge(self, request, context):
        self._delivery.acknowledge(request.subscription, request.ack_ids)
        return empty_pb2.Empty()

    @abort_on_error
    def modify_ack_deadline(self, request, context):
        self._delivery.modify_ack_deadline(request.subscription, request.ack_ids,
                                           request.ack_deadline_seconds)
        return empty_pb2.Empty()

    # -- seek and snapshots ---------------------------------------------------------
    @abort_on_error
    def seek(self, request, context):
        which = request.WhichOneof("target")
        time_us = limits.micros_of(request.time) if which == "time" else None
        self._state.seek(request.subscription, time_us=time_us,
                         snapshot=request.snapshot if which == "snapshot" else None)
        return _SEEK_RESPONSE()

    @abort_on_error
    def create_snapshot(self, request, context):
        return self._state.create_snapshot(request.name, request.subscription,
                                           request.labels)

    @abort_on_error
    def get_snapshot(self, request, context):
        return self._state.get_snapshot(request.snapshot)

    @abort_on_error
    def update_snapshot(self, request, context):
        return self._state.update_snapshot(request.snapshot, request.update_mask.paths)

    @abort_on_error
    def list_snapshots(self, request, context):
        found, token = self._state.list_snapshots(request.project, request.page_size,
                                                  request.page_token)
        return _LIST_SNAPSHOTS_RESPONSE(snapshots=found, next_page_token=token)

    @abort_on_error
    def delete_snapshot(self, request, context):
        self._state.delete_snapshot(request.snapshot)
        return empty_pb2.Empty()
