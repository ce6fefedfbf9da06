"""A local Datastore emulator speaking Google's gRPC API ``google.datastore.v1``.

The official ``google-cloud-datastore`` client and Beam's ``WriteToDatastore`` /
``ReadFromDatastore`` use it unchanged through ``DATASTORE_EMULATOR_HOST``. Data lives
in SQLite: in memory (``data_dir=None``, for tests) or in ``data_dir``, where it
survives restarts.

>>> emulator = DatastoreEmulator(data_dir=None).start()
>>> os.environ["DATASTORE_EMULATOR_HOST"] = emulator.address

    python -m emulators.datastore --port 8081 --data-dir .rotwatch/emulators
"""
from emulators.datastore.service import DatastoreEmulator

__all__ = ["DatastoreEmulator"]
