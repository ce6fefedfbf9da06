"""Process-wide Google Cloud clients for the pipeline's DoFns.

A DoFn makes its clients in ``setup()``, never at import; but Beam's bundle-based
DirectRunner unpickles a fresh DoFn and calls ``setup()``/``teardown()`` for *every
bundle*, so a client per ``setup()`` would open a gRPC channel per bundle. These
helpers hand out one client per process and configuration (Beam's Datastore IO does
the same with a cached ``get_client``). They are keyed by the process id as well: a
gRPC client must not cross a ``fork``.

With ``PUBSUB_EMULATOR_HOST`` / ``DATASTORE_EMULATOR_HOST`` set the official clients
go to the emulators with anonymous credentials by themselves.
"""
from __future__ import annotations

import logging
import os
import threading

__all__ = ["datastore_client", "publisher_client", "subscriber_client"]

_LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()
_CLIENTS: dict = {}


def _shared(kind: str, key: tuple, make):
    full_key = (kind, os.getpid()) + key
    with _LOCK:
        client = _CLIENTS.get(full_key)
        if client is None:
            client = _CLIENTS[full_key] = make()
            _LOGGER.debug("client created kind=%s key=%s", kind, key)
        return client


def datastore_client(project: str, namespace: str | None = None):
    from google.cloud import datastore
    return _shared("datastore", (project, namespace,
                                 os.environ.get("DATASTORE_EMULATOR_HOST")),
                   lambda: datastore.Client(project=project, namespace=namespace))


def publisher_client():
    from google.cloud import pubsub_v1
    return _shared("publisher", (os.environ.get("PUBSUB_EMULATOR_HOST"),),
                   pubsub_v1.PublisherClient)


def subscriber_client():
    """Under ``PUBSUB_EMULATOR_HOST`` the official client opens a plain gRPC channel
    with gRPC's 4 MiB receive limit, where its production transport has none: a Pull
    holding a legal 5 MB message would fail forever. This channel has no limit."""
    from google.cloud import pubsub_v1
    host = os.environ.get("PUBSUB_EMULATOR_HOST")

    def make():
        if not host:
            return pubsub_v1.SubscriberClient()
        import grpc
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
        channel = grpc.insecure_channel(host, options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1)])
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return _shared("subscriber", (host,), make)
