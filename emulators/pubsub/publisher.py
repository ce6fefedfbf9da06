"""The ``google.pubsub.v1.Publisher`` service: topics and publishing."""
from __future__ import annotations

import logging

from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub as types

from emulators.grpcserver import unary
from emulators.pubsub import limits
from emulators.pubsub.errors import abort_on_error
from emulators.pubsub.state import PubSubState

__all__ = ["PublisherService"]

_LOGGER = logging.getLogger(__name__)

SERVICE = "google.pubsub.v1.Publisher"

_PUBLISH_RESPONSE = types.PublishResponse.pb()
_LIST_TOPICS_RESPONSE = types.ListTopicsResponse.pb()
_LIST_TOPIC_SUBSCRIPTIONS_RESPONSE = types.ListTopicSubscriptionsResponse.pb()
_LIST_TOPIC_SNAPSHOTS_RESPONSE = types.ListTopicSnapshotsResponse.pb()
_DETACH_RESPONSE = types.DetachSubscriptionResponse.pb()


class PublisherService:
    """Handlers of the Publisher RPCs, each a thin translation to :class:`PubSubState`."""

    def __init__(self, state: PubSubState):
        self._state = state

    def handlers(self) -> dict:
        return {SERVICE: {
            "CreateTopic": unary(self.create_topic, types.Topic, types.Topic),
            "UpdateTopic": unary(self.update_topic, types.UpdateTopicRequest, types.Topic),
            "Publish": unary(self.publish, types.PublishRequest, types.PublishResponse),
            "GetTopic": unary(self.get_topic, types.GetTopicRequest, types.Topic),
            "ListTopics": unary(self.list_topics, types.ListTopicsRequest,
                                types.ListTopicsResponse),
            "ListTopicSubscriptions": unary(
                self.list_topic_subscriptions, types.ListTopicSubscriptionsRequest,
                types.ListTopicSubscriptionsResponse),
            "ListTopicSnapshots": unary(
                self.list_topic_snapshots, types.ListTopicSnapshotsRequest,
                types.ListTopicSnapshotsResponse),
            "DeleteTopic": unary(self.delete_topic, types.DeleteTopicRequest,
                                 empty_pb2.Empty),
            "DetachSubscription": unary(
                self.detach_subscription, types.DetachSubscriptionRequest,
                types.DetachSubscriptionResponse),
        }}

    @abort_on_error
    def create_topic(self, request, context):
        return self._state.create_topic(request)

    @abort_on_error
    def update_topic(self, request, context):
        return self._state.update_topic(request.topic, request.update_mask.paths)

    @abort_on_error
    def publish(self, request, context):
        limits.check_publish(request)
        ids = self._state.publish(request.topic, request.messages)
        return _PUBLISH_RESPONSE(message_ids=ids)

    @abort_on_error
    def get_topic(self, request, context):
        return self._state.get_topic(request.topic)

    @abort_on_error
    def list_topics(self, request, context):
        topics, token = self._state.list_topics(request.project, request.page_size,
                                                request.page_token)
        return _LIST_TOPICS_RESPONSE(topics=topics, next_page_token=token)

    @abort_on_error
    def list_topic_subscriptions(self, request, context):
        found, token = self._state.topic_subscriptions(request.topic, request.page_size,
                                                       request.page_token)
        return _LIST_TOPIC_SUBSCRIPTIONS_RESPONSE(subscriptions=found,
                                                  next_page_token=token)

    @abort_on_error
    def list_topic_snapshots(self, request, context):
        found, token = self._state.topic_snapshots(request.topic, request.page_size,
                                                   request.page_token)
        return _LIST_TOPIC_SNAPSHOTS_RESPONSE(snapshots=found, next_page_token=token)

    @abort_on_error
    def delete_topic(self, request, context):
        self._state.delete_topic(request.topic)
        return empty_pb2.Empty()

    @abort_on_error
    def detach_subscription(self, request, context):
        self._state.detach_subscription(request.subscription)
        return _DETACH_RESPONSE()
