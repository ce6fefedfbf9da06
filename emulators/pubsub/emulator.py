"""The Pub/Sub emulator server: Google's ``google.pubsub.v1`` gRPC API, in memory.

The unmodified ``google-cloud-pubsub`` client and Beam's ``ReadFromPubSub`` /
``WriteToPubSub`` reach it through ``PUBSUB_EMULATOR_HOST=host:port``. Like Google's
own emulator it keeps everything in memory.

>>> emulator = PubSubEmulator().start()      # any free port; .address is host:port
>>> emulator.stop()
"""
from __future__ import annotations

import logging

from emulators.grpcserver import GrpcEmulator
from emulators.pubsub.delivery import Delivery
from emulators.pubsub.publisher import PublisherService
from emulators.pubsub.state import PubSubState
from emulators.pubsub.subscriber import SubscriberService
from emulators.pubsub.unsupported import unsupported_handlers

__all__ = ["PubSubEmulator", "DEFAULT_PORT"]

_LOGGER = logging.getLogger(__name__)

# The port Google's Pub/Sub emulator listens on by default.
DEFAULT_PORT = 8085


class PubSubEmulator(GrpcEmulator):
    """Topics, subscriptions, snapshots, Pull and StreamingPull on one gRPC server."""

    name = "pubsub-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs):
        super().__init__(host=host, port=port, **kwargs)
        self.state = PubSubState()
        self._delivery = Delivery(self.state)

    def handlers(self):
        services = {}
        services.update(PublisherService(self.state).handlers())
        services.update(SubscriberService(self.state, self._delivery).handlers())
        services.update(unsupported_handlers())
        return services

    def start(self) -> "PubSubEmulator":
        self.state.open()
        super().start()
        return self

    def stop(self, grace: float | None = 0.5) -> None:
        # Wake and end open streaming pulls first, so the server's grace period is not
        # spent waiting for streams that would otherwise only end when cancelled.
        self.state.close()
        super().stop(grace)
