"""Shared fixtures: real local emulators on free ports, started once per session."""
from __future__ import annotations

import os

import pytest

PROJECT = "local-project"


@pytest.fixture(scope="session")
def emulators():
    """Both emulators (Datastore in memory), with the *_EMULATOR_HOST variables set."""
    from emulators.local import LocalEmulators
    with LocalEmulators(in_memory=True) as stack:
        saved = {k: os.environ.get(k) for k in stack.env}
        os.environ.update(stack.env)
        try:
            yield stack
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def pubsub_emulator(emulators):
    return emulators.pubsub


@pytest.fixture(scope="session")
def datastore_emulator(emulators):
    return emulators.datastore
