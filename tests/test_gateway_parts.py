"""The gateway's parts on their own: prediction memory, model names, body limit,
auth, config, and the per-process model-updates subscription's lifecycle."""
from __future__ import annotations

import asyncio

import pytest


# -- prediction memory ------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_memory_recalls_what_was_predicted():
    from publishers.gateway.memory import PredictionMemory

    import numpy as np

    memory = PredictionMemory(capacity=10, ttl_s=60)
    ids = memory.remember_many("zombies", "v2", np.array([[1.0, 2.0], [3.0, 4.0]]), [0, 1])
    assert len(set(ids)) == 2
    second = memory.recall(ids[1])
    assert (second.model, second.version, second.features, second.prediction) == \
        ("zombies", "v2", (3.0, 4.0), 1)
    assert memory.recall("never-issued") is None


def test_memory_is_bounded_by_count_and_age():
    from publishers.gateway.memory import PredictionMemory

    clock = FakeClock()
    memory = PredictionMemory(capacity=3, ttl_s=60, clock=clock)
    ids = [memory.remember("m", "v1", [float(i)], i) for i in range(5)]
    assert len(memory) == 3
    assert memory.recall(ids[0]) is None and memory.recall(ids[1]) is None
    assert memory.recall(ids[4]).prediction == 4
    clock.now += 61
    assert memory.recall(ids[4]) is None            # expired, even before eviction
    memory.remember("m", "v1", [9.0], 9)
    assert len(memory) == 1                         # expired ones evicted on insert


def test_memory_is_bounded_by_bytes_for_wide_features():
    from publishers.gateway.memory import ENTRY_OVERHEAD_BYTES, PredictionMemory

    entry = 2000 * 8 + ENTRY_OVERHEAD_BYTES
    memory = PredictionMemory(capacity=1000, max_bytes=10 * entry)
    ids = [memory.remember("m", "v1", [1.0] * 2000, 0) for _ in range(25)]
    assert len(memory) == 10 and memory.bytes == 10 * entry
    assert memory.recall(ids[-1]).features == (1.0,) * 2000
    assert memory.recall(ids[0]) is None


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"ttl_s": 0}, {"max_bytes": 10}])
def test_memory_refuses_bad_bounds(kwargs):
    from publishers.gateway.memory import PredictionMemory

    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PredictionMemory(**kwargs)


# -- model names ------------------------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    ("zombies", ("zombies", None)),
    ("zombies/versions/v2", ("zombies", "v2")),
    ("models/zombies", ("zombies", None)),
    ("projects/local-project/models/zombies/versions/v12", ("zombies", "v12")),
])
def test_model_specs_of_ml_engine(spec, expected):
    from publishers.gateway.models import parse_model_spec

    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize("spec", ["zombies/v2", "zombies/versions/", "zombies/versions/2",
                                  "", "zom bies", "a/b/c/d", "projects/p"])
def test_bad_model_specs_are_400(spec):
    from publishers.gateway.models import ModelUnavailable, parse_model_spec

    with pytest.raises(ModelUnavailable) as raised:
        parse_model_spec(spec)
    assert raised.value.status == 400


# -- body size limit --------------------------------------------------------------------
async def _call(middleware, headers, chunks, method="POST"):
    sent, seen = [], {}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": method, "headers": headers}
    await middleware(app)(scope, receive, send)
    return sent[0]["status"], seen.get("body")


def _limit(app):
    from publishers.gateway.limits import BodySizeLimit

    return BodySizeLimit(app, max_bytes=10)


@pytest.mark.parametrize("headers,chunks,status,body", [
    ([(b"content-length", b"5")], [b"12345"], 200, b"12345"),
    ([(b"content-length", b"11")], [b"12345678901"], 413, None),
    ([(b"content-length", b"x1")], [b"1"], 400, None),
    ([], [b"12345", b"67890"], 200, b"1234567890"),      # chunked, at the limit
    ([], [b"123456", b"78901"], 413, None),              # chunked, one byte over
])
def test_body_limit_refuses_before_the_app_reads(headers, chunks, status, body):
    assert asyncio.run(_call(_limit, headers, chunks)) == (status, body)


# -- auth and config --------------------------------------------------------------------
def test_token_check_is_exact():
    from publishers.gateway.auth import check_token

    assert check_token(None, None) and check_token("", "anything")
    assert check_token("s3cret-token-abcdefgh", "s3cret-token-abcdefgh")
    assert not check_token("s3cret-token-abcdefgh", "s3cret-token-abcdefg")
    assert not check_token("s3cret-token-abcdefgh", None)


def test_config_from_env_and_its_checks():
    from publishers.gateway import GatewayConfig

    assert GatewayConfig.from_env({}).auth_token is None
    token = "x" * 20
    assert GatewayConfig.from_env({"ROTWATCH_GATEWAY_TOKEN": token}).auth_token == token
    with pytest.raises(ValueError, match="at least 16"):
        GatewayConfig(auth_token="short")
    with pytest.raises(ValueError, match="max_body_bytes"):
        GatewayConfig(max_body_bytes=10)


def test_gateway_command_is_registered():
    from rotwatch.cli import build_parser

    args = build_parser().parse_args(["gateway", "run", "--port", "9000", "--no-updates"])
    assert args.port == 9000 and args.no_updates and args.host == "127.0.0.1"


# -- the model-updates subscription -----------------------------------------------------
def test_each_process_subscribes_on_start_and_deletes_on_stop(emulators, tmp_path):
    from google.cloud import pubsub_v1

    from publishers.gateway import GatewayConfig, create_app
    from rotwatch.config import Settings
    from rotwatch.resources import ensure_pubsub_resources
    from fastapi.testclient import TestClient

    settings = Settings(project="gateway-parts-project", model_root=str(tmp_path))
    ensure_pubsub_resources(settings)
    publisher = pubsub_v1.PublisherClient()
    topic = settings.topic("updates")

    def gateway_subscriptions():
        return [s for s in publisher.list_topic_subscriptions(request={"topic": topic})
                if "/model-updates-gateway-" in s]

    assert gateway_subscriptions() == []
    app_one = create_app(settings, GatewayConfig())
    app_two = create_app(settings, GatewayConfig())
    with TestClient(app_one) as one, TestClient(app_two) as two:
        subs = gateway_subscriptions()
        assert len(subs) == 2                          # one per process (replica)
        assert one.get("/healthz").json() == {"status": "ok", "serving": {}}
        assert two.get("/healthz").status_code == 200
    assert gateway_subscriptions() == []


# -- the loaded model's predict ---------------------------------------------------------
def test_tree_fast_path_predicts_exactly_what_scikit_learn_does():
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from publishers.gateway.models import LoadedVersion
    from publishers.simulator import population

    X, y = population("A")
    rows = np.random.default_rng(0).normal(scale=3.0, size=(5000, 4))
    tree = DecisionTreeClassifier(random_state=0).fit(X, y)
    fast = LoadedVersion("zombies", "v1", tree, 4, (0, 1))
    assert fast.fast_tree
    assert fast.predict(rows) == tree.predict(rows).tolist()
    with pytest.raises(ValueError, match="float32"):
        fast.predict(np.array([[1e300, 0.0, 0.0, 0.0]]))
    linear = LoadedVersion("zombies", "v2", LogisticRegression().fit(X, y), 4, (0, 1))
    assert not linear.fast_tree
    assert linear.predict(rows) == linear.estimator.predict(rows).tolist()


def test_gateway_command_serves_and_stops_cleanly(emulators, tmp_path):
    """The container's entry point: `rotwatch gateway run --port P`, stopped by SIGTERM
    (as Cloud Run stops it), leaves no subscription behind."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from google.cloud import pubsub_v1

    from publishers.gateway.testing import free_port, register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project="gateway-cli-project", model_root=str(tmp_path))
    ensure_pubsub_resources(settings)
    register_zombies(Registry(settings))
    port = free_port()
    env = dict(os.environ, ROTWATCH_PROJECT=settings.project,
               ROTWATCH_MODEL_ROOT=str(tmp_path), PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "rotwatch.cli", "gateway", "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=1) as response:
                    assert json.loads(response.read())["serving"] == {"zombies": "v1"}
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "gateway did not start in 60 s"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict", method="POST",
            data=json.dumps({"instances": [[2.0, 3.4, 5.1, 1.0]],
                             "model": "zombies"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["version"] == "v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log = proc.stderr.read()
    assert "outcome=deleted" in log, log[-2000:]
    publisher = pubsub_v1.PublisherClient()
    left = [s for s in publisher.list_topic_subscriptions(
        request={"topic": settings.topic("updates")}) if "gateway" in s]
    assert left == []
