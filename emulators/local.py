"""Start both emulators together: in-process for tests, or in the foreground for users.

>>> with LocalEmulators(in_memory=True) as stack:     # free ports, nothing on disk
...     os.environ.update(stack.env)                  # what the official clients read
"""
from __future__ import annotations

import logging
import os

from emulators.datastore import DatastoreEmulator
from emulators.pubsub import PubSubEmulator

__all__ = ["LocalEmulators", "DEFAULT_PROJECT", "DEFAULT_DATA_DIR"]

_LOGGER = logging.getLogger(__name__)

# Beam checks project ids against Google's pattern: `test` is refused, this is not.
DEFAULT_PROJECT = "local-project"
DEFAULT_DATA_DIR = os.path.join(".rotwatch", "emulators")


class LocalEmulators:
    """Pub/Sub and Datastore emulators started and stopped as one.

    Ports of 0 mean "any free port". ``in_memory`` keeps Datastore's data in memory
    (tests); otherwise it lives in SQLite under ``data_dir`` and survives a restart.
    """

    def __init__(self, host: str = "127.0.0.1", pubsub_port: int = 0,
                 datastore_port: int = 0, data_dir: str | None = DEFAULT_DATA_DIR,
                 in_memory: bool = False, project: str = DEFAULT_PROJECT):
        self.host = host
        self.project = project
        self.data_dir = None if in_memory else data_dir
        if not in_memory and not data_dir:
            raise ValueError("give a data_dir, or in_memory=True for a throwaway store")
        self.pubsub = PubSubEmulator(host=host, port=pubsub_port)
        self.datastore = DatastoreEmulator(host=host, port=datastore_port,
                                           data_dir=self.data_dir)

    @property
    def env(self) -> dict[str, str]:
        """The variables that point the official clients at these emulators."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub.address,
            "DATASTORE_EMULATOR_HOST": self.datastore.address,
            "PUBSUB_PROJECT_ID": self.project,
            "DATASTORE_PROJECT_ID": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def start(self) -> "LocalEmulators":
        self.pubsub.start()
        try:
            self.datastore.start()
        except BaseException:
            self.pubsub.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.pubsub.stop()
        finally:
            self.datastore.stop()

    def __enter__(self) -> "LocalEmulators":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
