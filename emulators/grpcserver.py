"""A small base for the local gRPC emulators: bind, refuse a taken port, stop cleanly.

Both emulators serve Google's real gRPC services with generic handlers: no generated
servicer code is needed, only the request/response message types of the official
clients (``Type.pb().FromString`` / ``SerializeToString``).
"""
from __future__ import annotations

import abc
import logging
import socket
from concurrent import futures
from typing import Callable, Mapping

import grpc

__all__ = ["GrpcEmulator", "PortInUseError", "free_port", "unary", "stream_stream",
           "foreground_parser", "run_in_foreground"]

_LOGGER = logging.getLogger(__name__)

# gRPC Python servers set SO_REUSEPORT by default, so two servers can silently share a
# port and split traffic between them. Turning it off makes a second bind fail.
_SERVER_OPTIONS = (
    ("grpc.so_reuseport", 0),
    # Pub/Sub messages may be 10 MB and a publish request carries up to 1000 of them;
    # Datastore commits carry up to 500 entities of up to 1 MiB each.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)

# Enough workers for a pipeline, a trainer, a gateway and a few streaming pulls at once;
# each open StreamingPull holds a worker for its whole life.
DEFAULT_MAX_WORKERS = 64


class PortInUseError(OSError):
    """The emulator's port is already taken by another process."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def unary(behaviour: Callable, request_type, response_type) -> grpc.RpcMethodHandler:
    """A unary-unary handler from proto-plus (or raw protobuf) message types."""
    req = getattr(request_type, "pb", lambda: request_type)()
    resp = getattr(response_type, "pb", lambda: response_type)()
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=req.FromString,
        response_serializer=resp.SerializeToString,
    )


def stream_stream(behaviour: Callable, request_type, response_type) -> grpc.RpcMethodHandler:
    req = getattr(request_type, "pb", lambda: request_type)()
    resp = getattr(response_type, "pb", lambda: response_type)()
    return grpc.stream_stream_rpc_method_handler(
        behaviour,
        request_deserializer=req.FromString,
        response_serializer=resp.SerializeToString,
    )


class GrpcEmulator(abc.ABC):
    """Base class: subclasses return their services from :meth:`handlers`.

    ``port=0`` picks a free port; after :meth:`start`, :attr:`port` and
    :attr:`address` (``host:port``, the value for ``*_EMULATOR_HOST``) are set.
    """

    name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 max_workers: int = DEFAULT_MAX_WORKERS):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0..65535, got {port!r}")
        self.host = host
        self.port = port
        self.max_workers = max_workers
        self._server: grpc.Server | None = None

    # -- to be provided by subclasses -------------------------------------------------
    @abc.abstractmethod
    def handlers(self) -> Mapping[str, Mapping[str, grpc.RpcMethodHandler]]:
        """``{"google.pubsub.v1.Publisher": {"Publish": handler, ...}, ...}``."""

    def on_stop(self) -> None:
        """Release resources (threads, files) after the server has stopped."""

    # -- lifecycle ------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "GrpcEmulator":
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started at {self.address}")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers,
                                       thread_name_prefix=self.name),
            options=_SERVER_OPTIONS,
        )
        for service, methods in self.handlers().items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, dict(methods)),))
        try:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            bound = 0
            _LOGGER.debug("bind failed: %s", exc)
        if not bound:
            server.stop(None)
            raise PortInUseError(
                f"{self.name}: cannot listen on {self.host}:{self.port}: the port is in "
                f"use. Stop the other process or choose another port.")
        self.port = bound
        server.start()
        self._server = server
        _LOGGER.info("%s listening address=%s", self.name, self.address)
        return self

    def stop(self, grace: float | None = 0.5) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        self.on_stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout``); True if it stopped."""
        if self._server is None:
            return True
        return self._server.wait_for_termination(timeout)

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info):
        self.stop()


def foreground_parser(doc: str, default_port: int):
    """The ``python -m emulators.<one>`` parser: ``--host`` and ``--port``; the
    module's docstring's first line is its description."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on (default {default_port}; 0 = any free)")
    return parser


def run_in_foreground(emulator: GrpcEmulator, env_var: str) -> None:
    """Start ``emulator``, print the ``export`` line for ``env_var``, serve until
    Ctrl-C, then stop it."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    emulator.start()
    print(f"export {env_var}={emulator.address}", flush=True)
    try:
        emulator.wait()
    except KeyboardInterrupt:
        _LOGGER.info("%s stopping", emulator.name)
    finally:
        emulator.stop()
