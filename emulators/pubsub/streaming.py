"""StreamingPull: a bidirectional stream that leases messages within flow control.

The first request names the subscription, the stream's ack deadline and the flow
control (``max_outstanding_messages`` / ``max_outstanding_bytes``); later requests
carry acks, deadline changes (0 = nack) and new stream deadlines. A reader thread
applies the client's requests while the handler yields messages; the stream ends
cleanly when the client closes it, the RPC is cancelled, or the emulator stops.
"""
from __future__ import annotations

import logging
import threading

import grpc
from google.pubsub_v1.types import pubsub as types

from emulators.pubsub.delivery import Delivery, Stream
from emulators.pubsub.errors import ApiError, invalid
from emulators.pubsub.wire import received_messages_bytes

__all__ = ["StreamingPull", "TICK_S"]

_LOGGER = logging.getLogger(__name__)

# How often an idle stream checks that its RPC is still alive (termination also wakes
# it at once through the RPC's done-callback; this is only a safety net).
TICK_S = 1.0

_RESPONSE = types.StreamingPullResponse.pb()


class StreamingPull:
    """The StreamingPull handler, one call per open stream."""

    def __init__(self, delivery: Delivery):
        self._delivery = delivery

    def handle(self, request_iterator, context):
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        try:
            stream = self._open(first)
        except ApiError as err:
            context.abort(err.code, err.message)
        context.add_callback(lambda: self._delivery.close_stream(stream))
        reader = threading.Thread(target=self._read, args=(request_iterator, stream),
                                  name="pubsub-stream-reader", daemon=True)
        reader.start()
        _LOGGER.debug("stream opened subscription=%s client_id=%s max_messages=%d",
                      first.subscription, first.client_id,
                      first.max_outstanding_messages)
        try:
            while context.is_active():
                taken = self._delivery.stream_wait(stream, TICK_S)
                if taken is None:
                    return
                if taken:
                    yield self._response(stream, taken)
        except ApiError as err:
            context.abort(err.code, err.message)
        finally:
            self._delivery.close_stream(stream)
            _LOGGER.debug("stream closed subscription=%s", first.subscription)

    def _open(self, first) -> Stream:
        if not first.subscription:
            raise invalid("The first StreamingPullRequest must name the subscription "
                          "('projects/<project>/subscriptions/<id>').")
        stream = self._delivery.open_stream(
            first.subscription, first.stream_ack_deadline_seconds,
            first.max_outstanding_messages, first.max_outstanding_bytes)
        self._delivery.stream_request(stream, first)
        return stream

    def _read(self, request_iterator, stream: Stream) -> None:
        """Apply the client's requests until it closes its side or the RPC ends."""
        error = None
        try:
            for request in request_iterator:
                if request.subscription and request.subscription != stream.record.name:
                    raise invalid("Only the first StreamingPullRequest may name the "
                                  f"subscription (got {request.subscription!r}).")
                self._delivery.stream_request(stream, request)
        except ApiError as err:
            error = err
        except grpc.RpcError:
            pass   # cancelled or the server is stopping: the stream ends either way
        finally:
            self._delivery.close_stream(stream, error)

    @staticmethod
    def _response(stream: Stream, taken):
        resource = stream.record.resource
        response = _RESPONSE.FromString(received_messages_bytes(taken))
        props = response.subscription_properties
        props.exactly_once_delivery_enabled = resource.enable_exactly_once_delivery
        props.message_ordering_enabled = resource.enable_message_ordering
        return response
