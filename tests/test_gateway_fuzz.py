"""Fuzz the gateway from its own OpenAPI description: no input may cause a 5xx.

Schemathesis reads ``/openapi.json`` from the app in-process (ASGI), generates valid
and invalid requests for every operation, and checks each answer. The app runs on
the emulators with a registered zombie model, in a project of its own, with auth on
(the token is sent, so the fuzzer reaches the handlers behind it).
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings

PROJECT = "gateway-fuzz-project"
TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Examples per operation: 9 operations x 30 stays well under a minute here.
MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_app(emulators, tmp_path_factory):
    from publishers.gateway import GatewayConfig, create_app
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project=PROJECT, model_root=str(tmp_path_factory.mktemp("fuzz")))
    ensure_pubsub_resources(settings)
    registry = Registry(settings)
    register_zombies(registry)
    # No model-updates subscription: schemathesis keeps the app's lifespan running
    # until it is shut down below, and this app needs nothing from other processes.
    app = create_app(settings, GatewayConfig(auth_token=TOKEN, listen_for_updates=False),
                     registry=registry)
    yield app
    from schemathesis.python import asgi
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _operations(api_schema):
    return [result.ok() for result in api_schema.get_all_operations()]


# schemathesis.pytest.from_fixture (lazy schemas) reads a private pytest attribute that
# pytest 9 removed, so each operation's strategy is driven with Hypothesis directly.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_causes_a_server_error(api_schema, mode):
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    operations = _operations(api_schema)
    assert len(operations) >= 9, [op.label for op in operations]
    failures, skipped = [], []
    for operation in operations:
        strategy = operation.as_strategy(GenerationMode(mode))

        @given(case=strategy)
        @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                             database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call(headers=AUTH)
            if response.status_code >= 500:
                failures.append(f"{operation.label}: {response.status_code} "
                                f"{response.text[:200]} <- {case.as_curl_command()}")
            assert response.status_code < 500

        try:
            fuzz()
        except AssertionError:
            pass  # recorded above, with the request; go on with the next operation
        except Unsatisfiable:
            skipped.append(operation.label)  # nothing to negate (no parameters, no body)
    assert not failures, "\n".join(failures)
    if mode == "negative":
        assert set(skipped) <= {"GET /v1/models", "GET /healthz"}, skipped

