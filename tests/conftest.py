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
