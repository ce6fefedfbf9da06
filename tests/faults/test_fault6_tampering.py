"""Fault 6 — a model artifact altered after registration.

Invariant: the altered file is refused everywhere it would be loaded or put into
service — registry load, the default pointer, the gateway process, the trainer —
and the previous version keeps serving. See ``faultkit/tampering.py``.
"""
from __future__ import annotations

import pytest

from faultkit import Outcome
from faultkit.tampering import gateway_and_registry, trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tampered(fault_gateway):
    outcome = Outcome("6 altered model artifact", "")
    gateway_and_registry(outcome, fault_gateway.gateway, fault_gateway.settings,
                         fault_gateway.client)
    trainer(outcome, fault_gateway.settings, fault_gateway.client)
    return outcome


def test_registry_load_refuses_an_altered_artifact(tampered):
    """Invariant: Registry.load_model raises instead of unpickling the file."""
    assert tampered.counts["registry_load"] == "refused", tampered.summary()


def test_gateway_refuses_it_and_the_previous_version_keeps_serving(tampered):
    """Invariant: pinned predict 409, API setDefault 409 (default unchanged), and
    the running gateway keeps answering with v1 whatever the pointer says."""
    c = tampered.counts
    assert (c["gateway_pinned"], c["gateway_set_default"]) == (409, 409)
    assert c["default_after_api"] == "v1"
    assert c["served_before"] == "v1" and c["served_after"] == ["v1"], tampered.summary()


def test_trainer_refuses_an_altered_current_version(tampered):
    """Invariant: a rot event whose current default is altered ends failed (sha256
    named), with no new version and the default unchanged."""
    c = tampered.counts
    assert c["trainer_altered_current"][0] == "failed", tampered.summary()
    assert "sha256" in c["trainer_altered_current"][1]
    assert c["trainer_altered_current_versions"] == ["v1"]


def test_the_default_pointer_refuses_an_altered_version(tampered):
    """Invariant: pointing the default at an altered version is refused, by the
    registry and by the gateway API even for a version it already holds."""
    c = tampered.counts
    assert c["registry_set_default"] != "accepted", tampered.summary()
    assert c["default_after_set_default"] == "v1", tampered.summary()
    # the API too, for a version this gateway loaded before the file was altered
    assert c["gateway_set_default_cached"] == (200, 409), tampered.summary()


def test_the_trainer_does_not_promote_an_altered_earlier_candidate(tampered):
    """Invariant: a retried job never makes a version whose file fails its sha256
    check the default."""
    state, produced, default = tampered.counts["trainer_reused_altered"]
    assert default == "v1" or produced != "v2", tampered.summary()
    # once per rot event: the altered v2 is abandoned, and a fresh v3 promoted
    assert tampered.counts["trainer_reused_altered_versions"] == [
        ("v1", "ready"), ("v2", "abandoned"), ("v3", "ready")], tampered.summary()
    assert (state, produced, default) == ("promoted", "v3", "v3"), tampered.summary()
