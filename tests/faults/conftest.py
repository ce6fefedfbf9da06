"""Fixtures of the fault suite: shared runs of the real stack, made once per session.

The scenarios live in :mod:`faultkit` (this folder is on ``sys.path`` as pytest puts
a conftest's folder there), so ``bench/faults.py`` runs the very same code at longer
sizes. Child processes log to ``<tmp>/faults*/<scenario>.log``; a failed assertion
prints the scenario's checks with their counts.

The trainer's and gateway's own test helpers are reused as they are:
``tests/test_trainer_service.py`` (v1 trained on population A, feedback rows from
population B, rot events) and ``publishers.gateway.testing.register_zombies``.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory) -> str:
    """Where the scenarios keep their child processes' logs and data."""
    return str(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="session")
def delivery_run(emulators):
    """One pipeline run fed duplicates, redeliveries, poison, shuffled and late
    feedback (faults 1, 4 and 9 are judged on it)."""
    from faultkit.pipeline_delivery import run_delivery
    return run_delivery(n_valid=1500)


@pytest.fixture(scope="session")
def fault_gateway(emulators, fault_dir):
    """``rotwatch gateway run`` (token on) serving the zombies of ``fault-gateway``."""
    from google.cloud import datastore

    from faultkit.gateway_proc import start_gateway
    from faultkit.procs import log_of
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project="fault-gateway",
                        model_root=os.path.join(fault_dir, "gateway-models"))
    ensure_pubsub_resources(settings)
    client = datastore.Client(project=settings.project)
    register_zombies(Registry(settings, client=client), model="zombies")
    gateway = start_gateway(settings.project, settings.model_root, fault_dir,
                            log_path=log_of(fault_dir, "gateway"))
    try:
        yield SimpleNamespace(gateway=gateway, settings=settings, client=client,
                              model="zombies")
    finally:
        gateway.stop()
