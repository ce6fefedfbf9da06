"""Fault 7 — the gateway abused over real HTTP.

``tests/test_gateway_fuzz.py`` fuzzes every operation of the OpenAPI description
(positive and negative cases, no 5xx) in-process; this file checks, against a
running ``rotwatch gateway run`` process with a token, what needs real sockets:
oversize bodies, floods, auth. See ``faultkit/gateway_abuse.py``.

Invariant: no 5xx; oversize bodies and floods of instances refused with 4xx; auth
enforced where configured.
"""
from __future__ import annotations

import pytest

from faultkit.gateway_abuse import gateway_abuse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def abused(fault_gateway):
    return gateway_abuse(fault_gateway.gateway, fault_gateway.model, flood_requests=200,
                         flood_threads=8)


def test_no_request_gets_a_server_error(abused):
    """Invariant: 0 answers >= 500 and no dropped connection, over every case."""
    c = abused.counts
    assert c["server_errors"] == 0 and "dropped" not in c["status_classes"], \
        abused.summary()
    assert c["unhandled_errors_logged"] == 0 and c["alive"], abused.summary()
    assert c["cases"]["health after the abuse"] == 200


def test_oversize_bodies_are_refused_with_413(abused):
    """Invariant: a declared length over 1.5 MB and a chunked body passing it: 413."""
    cases = abused.counts["cases"]
    assert cases["oversize: declared length"] == 413
    assert cases["oversize: chunked, no length"] == 413


def test_floods_are_refused_with_4xx(abused):
    """Invariant: too many instances/events/features, or nesting: 4xx, not 5xx."""
    floods = {k: v for k, v in abused.counts["cases"].items() if k.startswith("flood")}
    assert len(floods) == 5
    assert all(400 <= v < 500 for v in floods.values()), floods


def test_a_concurrent_flood_is_served(abused):
    """Invariant: 200 concurrent predict/feedback requests all answered 2xx."""
    flood = abused.counts["flood_statuses"]
    assert sum(n for s, n in flood.items() if 200 <= s < 300) == 200, flood


def test_the_token_is_enforced_where_configured(abused):
    """Invariant: feedback and admin routes refuse no/wrong/Basic credentials with
    401 and accept the token; predictions and reads need none."""
    cases = abused.counts["cases"]
    refused = [v for k, v in cases.items() if k.startswith("auth") and
               ("without a token" in k or "wrong" in k or "Basic" in k)
               and "predict" not in k and "list" not in k]
    assert refused == [401] * 5, cases
    assert cases["auth: feedback with the token"] == 202
    assert cases["auth: setDefault with the token"] == 200
    assert cases["auth: predict without a token"] == 200
    assert cases["auth: list models without a token"] == 200
