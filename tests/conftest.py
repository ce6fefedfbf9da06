"""Shared fixtures: real local emulators on free ports, started once per session."""
from __future__ import annotations


import pytest

PROJECT = "local-project"


@pytest.fixture(scope="session")
def emulators():
    """Both emulators (Datastore in memory), with the *_EMULATOR_HOST variables set."""
    from emulators.local import LocalEmulators
    from rotwatch.environ import scoped_environ
    with LocalEmulators(in_memory=True) as stack, scoped_environ(stack.env):
        yield stack


@pytest.fixture(scope="session")
def pubsub_emulator(emulators):
    return emulators.pubsub


@pytest.fixture(scope="session")
def datastore_emulator(emulators):
    return emulators.datastore


@pytest.fixture(scope="module")
def beam_datastore():
    """A Datastore emulator of the module's own for Beam's Datastore IO (project
    ``local-project``). Beam caches its client per (project, namespace) for an hour,
    bound to the address of its first use: the cache is empty before and after."""
    from apache_beam.io.gcp.datastore.v1new import helper

    from emulators.datastore import DatastoreEmulator
    from rotwatch.environ import scoped_environ
    helper.get_client.cache_clear()
    with DatastoreEmulator() as emulator, scoped_environ(
            {"DATASTORE_EMULATOR_HOST": emulator.address,
             "DATASTORE_PROJECT_ID": PROJECT}):
        try:
            yield emulator
        finally:
            helper.get_client.cache_clear()
