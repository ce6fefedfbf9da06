"""A local Pub/Sub emulator speaking Google's real ``google.pubsub.v1`` gRPC API.

Start it, point ``PUBSUB_EMULATOR_HOST`` at :attr:`PubSubEmulator.address`, and use
the official client unchanged::

    python -m emulators.pubsub --port 8085
"""
from emulators.pubsub.emulator import DEFAULT_PORT, PubSubEmulator

__all__ = ["PubSubEmulator", "DEFAULT_PORT"]
