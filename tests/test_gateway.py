"""The gateway end to end against the emulators and a registered zombie model.

A project of its own (``gateway-tests-project``) keeps these tests' topics, models and
feedback apart from the other tests sharing the session's emulators.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from fastapi.testclient import TestClient

ARTICLE_INSTANCE = [2.0, 3.4, 5.1, 1.0]
PROJECT = "gateway-tests-project"
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SWITCH_DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def settings(emulators, tmp_path_factory):
    from rotwatch.config import Settings
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project=PROJECT, model_root=str(tmp_path_factory.mktemp("models")))
    ensure_pubsub_resources(settings)
    return settings


@pytest.fixture(scope="module")
def registry(settings):
    from rotwatch.registry import Registry

    return Registry(settings)


@pytest.fixture(scope="module")
def versions(registry):
    from publishers.gateway.testing import register_zombies

    return register_zombies(registry)


@pytest.fixture(scope="module")
def feedback_subscription(settings):
    """A subscription of our own on `feedback`, made before anything is published."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    name = f"projects/{PROJECT}/subscriptions/gateway-test-feedback"
    subscriber.create_subscription(request={"name": name, "topic": settings.topic("feedback")})
    yield subscriber, name
    subscriber.delete_subscription(request={"subscription": name})
    subscriber.close()


@pytest.fixture(scope="module")
def client(settings, registry, versions, feedback_subscription):
    from publishers.gateway import GatewayConfig, create_app

    app = create_app(settings, GatewayConfig(auth_token=TOKEN), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def pull_events(subscription, want: set[str], timeout_s: float = 10.0) -> dict:
    """Pull until every event id in ``want`` was seen; ``{event_id: message}``."""
    subscriber, name = subscription
    seen = {}
    deadline = time.monotonic() + timeout_s
    while want - set(seen) and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": name, "max_messages": 100},
                                   timeout=5)
        if response.received_messages:
            subscriber.acknowledge(request={"subscription": name, "ack_ids": [
                m.ack_id for m in response.received_messages]})
        for received in response.received_messages:
            seen[received.message.attributes["event_id"]] = received.message
    assert want <= set(seen), f"not published: {want - set(seen)}"
    return seen


def predict(client, body, path="/v1/predict"):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == status
    return body["error"]["message"]


# -- predictions ------------------------------------------------------------------------
def test_article_body_default_version(client, versions):
    answer = predict(client, {"instances": [ARTICLE_INSTANCE], "model": "zombies"})
    assert answer["model"] == "zombies" and answer["version"] == "v1"
    assert answer["predictions"] in ([0], [1])
    assert len(answer["prediction_ids"]) == 1


def test_article_body_pinned_version(client, versions):
    from publishers.simulator import population

    X, y = population("B")
    rows = X[:50].tolist()
    answer = predict(client, {"instances": rows, "model": "zombies/versions/v2"})
    assert answer["version"] == "v2"
    assert len(answer["predictions"]) == len(answer["prediction_ids"]) == 50
    assert len(set(answer["prediction_ids"])) == 50
    # v2 was trained on population B: it knows these zombies.
    assert sum(p == t for p, t in zip(answer["predictions"], y[:50])) >= 45


def test_rest_paths_with_colons(client, versions):
    default = predict(client, {"instances": [ARTICLE_INSTANCE]}, "/v1/models/zombies:predict")
    pinned = predict(client, {"instances": [ARTICLE_INSTANCE]},
                     "/v1/models/zombies/versions/v2:predict")
    assert default["version"] == "v1" and pinned["version"] == "v2"
    projects = predict(client, {"instances": [ARTICLE_INSTANCE],
                                "model": f"projects/{PROJECT}/models/zombies/versions/v2"})
    assert projects["version"] == "v2"


def test_fast_lane_answers_exactly_like_the_routes(settings, registry, client):
    from publishers.gateway import GatewayConfig, create_app

    gateway = client.app.state.gateway
    routes_only = create_app(settings, GatewayConfig(fast_lane=False, listen_for_updates=False),
                             registry=registry)
    cases = [("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "zombies"}),
             ("/v1/predict", {"instances": [ARTICLE_INSTANCE, [1, 2, 3, 4]],
                              "model": "zombies/versions/v2", "signature_name": "x"}),
             ("/v1/models/zombies:predict", {"instances": [[-1.5, 0, 2, 8]]}),
             ("/v1/models/zombies/versions/v1:predict", {"instances": [ARTICLE_INSTANCE]})]
    with TestClient(routes_only) as slow:
        for path, body in cases:
            client.post(path, json=body)   # loads a pinned version on first use
            before = gateway.fast_answers
            fast, routed = client.post(path, json=body), slow.post(path, json=body)
            assert gateway.fast_answers == before + 1, path
            assert fast.status_code == routed.status_code == 200
            assert fast.headers["content-type"] == routed.headers["content-type"]
            one, two = fast.json(), routed.json()
            assert len(one.pop("prediction_ids")) == len(two.pop("prediction_ids"))
            assert one == two
        assert routes_only.state.gateway.fast_answers == 0


# -- feedback ---------------------------------------------------------------------------
def test_feedback_by_prediction_id_is_published_with_attributes(client, feedback_subscription):
    answer = predict(client, {"instances": [ARTICLE_INSTANCE], "model": "zombies"})
    pid = answer["prediction_ids"][0]
    response = client.post("/v1/feedback", json={"prediction_id": pid, "was_correct": False},
                           headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "event_ids": [pid]}

    message = pull_events(feedback_subscription, {pid})[pid]
    event = json.loads(message.data)
    assert event["model"] == "zombies" and event["version"] == "v1"
    assert event["features"] == ARTICLE_INSTANCE
    assert event["prediction"] == answer["predictions"][0]
    assert event["was_correct"] is False
    attributes = dict(message.attributes)
    assert attributes["event_id"] == pid
    assert attributes["model"] == "zombies" and attributes["version"] == "v1"
    assert int(attributes["event_ts"]) == pytest.approx(time.time() * 1000, abs=60_000)


def test_feedback_many_complete_and_by_id(client, feedback_subscription):
    answer = predict(client, {"instances": [ARTICLE_INSTANCE, [0.1, 0.2, 0.3, 0.4]],
                              "model": "zombies/versions/v2"})
    complete = {"model": "zombies", "version": "v1", "features": [1.0, 2.0, 3.0, 4.0],
                "prediction": 1, "label": 0, "event_id": "complete-event-1",
                "event_time": "2026-12-03T10:00:00.000Z"}
    body = [{"prediction_id": answer["prediction_ids"][0], "was_correct": True},
            {"prediction_id": answer["prediction_ids"][1], "label": 1}, complete]
    response = client.post("/v1/feedback", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    ids = response.json()["event_ids"]
    assert ids == answer["prediction_ids"] + ["complete-event-1"]
    seen = pull_events(feedback_subscription, set(ids))
    stored = json.loads(seen["complete-event-1"].data)
    assert stored["label"] == 0 and stored["event_time"] == "2026-12-03T10:00:00.000Z"
    assert seen["complete-event-1"].attributes["event_ts"] == "1796292000000"
    assert json.loads(seen[ids[1]].data)["version"] == "v2"


@pytest.mark.parametrize("body,status,words", [
    ({"prediction_id": "0" * 32, "was_correct": True}, 404, ["unknown", "complete event"]),
    ({"prediction_id": "abc"}, 400, ["was_correct"]),
    ({"model": "zombies", "version": "v1", "features": [1.0], "was_correct": True},
     400, ["prediction"]),
    ({"model": "zombies", "version": "version-one", "features": [1.0], "prediction": 1,
      "was_correct": True}, 400, ["event.version", "v1"]),
    ({"model": "zombies", "version": "v1", "features": [1.0], "prediction": 1,
      "was_correct": True, "event_time": "yesterday"}, 400, ["event_time", "RFC 3339"]),
    ({"model": "zombies", "version": "v1", "features": [1.0], "prediction": 1,
      "was_correct": "yes"}, 422, ["was_correct"]),
    ({"prediction_id": "abc", "was_correct": True, "features": [1.0]}, 400,
     ["prediction_id", "features"]),
    ([], 422, ["at least 1"]),
    ({"prediction_id": "abc", "was_correct": True, "colour": "red"}, 422, ["colour"]),
])
def test_feedback_bad_input_names_the_problem(client, body, status, words):
    message = error_of(client.post("/v1/feedback", json=body, headers=AUTH), status)
    for word in words:
        assert word in message


def test_feedback_batch_with_one_bad_event_sends_nothing(client, feedback_subscription):
    answer = predict(client, {"instances": [ARTICLE_INSTANCE], "model": "zombies"})
    body = [{"prediction_id": answer["prediction_ids"][0], "was_correct": True},
            {"prediction_id": "f" * 32, "was_correct": True}]
    message = error_of(client.post("/v1/feedback", json=body, headers=AUTH), 404)
    assert message.startswith("events[1].prediction_id")
    subscriber, name = feedback_subscription
    response = subscriber.pull(request={"subscription": name, "max_messages": 100},
                               timeout=5)
    sent = {m.message.attributes["event_id"] for m in response.received_messages}
    assert answer["prediction_ids"][0] not in sent


# -- bad predict input ------------------------------------------------------------------
@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/predict", {"instances": [[1.0, 2.0, 3.0]], "model": "zombies"}, 400,
     ["instances[0]", "3 feature values", "expects 4"]),
    ("/v1/predict", {"instances": [[1.0, "x", 3.0, 4.0]], "model": "zombies"}, 422,
     ["instances[0][1]", "valid number", "'x'"]),
    ("/v1/predict", {"instances": [[1.0, True, 3.0, 4.0]], "model": "zombies"}, 422,
     ["instances[0][1]"]),
    ("/v1/predict", {"instances": [[1.0, "2.0", 3.0, 4.0]], "model": "zombies"}, 422,
     ["instances[0][1]"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "skeletons"}, 404,
     ["skeletons", "not registered"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "zombies/versions/v7"}, 404,
     ["v7"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "zombies/v2"}, 400,
     ["zombies/versions/v2"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "9lives"}, 400, ["model"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE]}, 422, ["model: Field required"]),
    ("/v1/predict", {"instances": [], "model": "zombies"}, 422, ["instances"]),
    ("/v1/predict", {"instances": [[]], "model": "zombies"}, 422, ["instances[0]"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE] * 1001, "model": "zombies"}, 422,
     ["instances", "at most 1000"]),
    ("/v1/predict", {"instances": [[1e300, 1.0, 1.0, 1.0]], "model": "zombies"}, 400,
     ["cannot take"]),
    ("/v1/predict", {"instances": [ARTICLE_INSTANCE], "model": "zombies", "x": 1}, 422,
     ["x: Extra inputs"]),
    ("/v1/models/zombies:predict", {"instances": [ARTICLE_INSTANCE], "model": "zombies"},
     422, ["model"]),
    ("/v1/models/zombies/versions/v0:predict", {"instances": [ARTICLE_INSTANCE]}, 422,
     ["version"]),
    ("/v1/models/zombies:explain", {"instances": [ARTICLE_INSTANCE]}, 405, ["POST"]),
    ("/v1/models/zombies/versions/v1:explain", {"instances": [ARTICLE_INSTANCE]}, 404,
     ["no route"]),
])
def test_predict_bad_input_names_the_problem(client, versions, path, body, status, words):
    message = error_of(client.post(path, json=body), status)
    for word in words:
        assert word in message, message


def test_non_json_and_nan_bodies_are_4xx(client, versions):
    headers = {"Content-Type": "application/json"}
    message = error_of(client.post("/v1/predict", content=b"{not json", headers=headers), 422)
    assert "not valid JSON" in message
    nan = b'{"instances": [[NaN, 1, 2, 3]], "model": "zombies"}'
    error_of(client.post("/v1/predict", content=nan, headers=headers), 422)


def test_body_too_large_refused_before_parsing(client):
    big = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 80_000 + b'[1.0, 2.0, 3.0, 4.0]]}'
    message = error_of(client.post("/v1/predict", content=big,
                                   headers={"Content-Type": "application/json"}), 413)
    assert "1500000-byte limit" in message

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(2000):
            yield b" " * 1000
    message = error_of(client.post("/v1/feedback", content=chunks(), headers=AUTH), 413)
    assert "more than 1500000 bytes" in message


# -- auth -------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-123456789"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_feedback_and_admin_routes_need_the_token(client, headers):
    response = client.post("/v1/feedback", json={"prediction_id": "a", "was_correct": True},
                           headers=headers)
    error_of(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error_of(client.post("/v1/models/zombies:setDefault", json={"version": "v1"},
                         headers=headers), 401)


def test_predictions_and_reads_need_no_token(client, versions):
    assert client.post("/v1/predict", json={"instances": [ARTICLE_INSTANCE],
                                            "model": "zombies"}).status_code == 200
    assert client.get("/v1/models").status_code == 200


# -- models -----------------------------------------------------------------------------
def test_list_and_show_models(client, versions):
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["zombies"]
    detail = client.get("/v1/models/zombies").json()
    assert [v["version"] for v in detail["versions"]] == ["v1", "v2"]
    assert detail["versions"][0]["baseline_accuracy"] > 0.8
    assert detail["history"][0]["version"] == "v1"
    error_of(client.get("/v1/models/skeletons"), 404)


def wait_for_version(client, version, deadline_s=SWITCH_DEADLINE_S):
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        answer = predict(client, {"instances": [ARTICLE_INSTANCE], "model": "zombies"})
        if answer["version"] == version:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"still serving {answer['version']} after {deadline_s} s, "
                         f"expected {version}")


def test_model_switch_on_model_updates_without_restart(client, registry, versions):
    # Another process (the trainer, the CLI) changes the default; only Pub/Sub tells us.
    registry.set_default("zombies", "v2", changed_by="test:trainer", reason="rot")
    elapsed = wait_for_version(client, "v2")
    assert elapsed < SWITCH_DEADLINE_S
    registry.set_default("zombies", "v1", changed_by="test:trainer", reason="back")
    wait_for_version(client, "v1")


def test_set_default_through_the_api_rolls_back(client, versions):
    response = client.post("/v1/models/zombies:setDefault",
                           json={"version": "v2", "reason": "try v2"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() | {} == {"model": "zombies", "default_version": "v2",
                                    "previous_version": "v1", "changed": True,
                                    "published": True, "serving_version": "v2"}
    assert predict(client, {"instances": [ARTICLE_INSTANCE],
                            "model": "zombies"})["version"] == "v2"
    response = client.post("/v1/models/zombies/versions/v1:setDefault", json={},
                           headers=AUTH)
    assert response.json()["default_version"] == "v1", response.text
    assert response.json()["serving_version"] == "v1"
    history = client.get("/v1/models/zombies").json()["history"]
    assert [h["version"] for h in history][-2:] == ["v2", "v1"]
    assert history[-1]["changed_by"] == "gateway-api"
    error_of(client.post("/v1/models/zombies:setDefault", json={"version": "v9"},
                         headers=AUTH), 404)


def test_tampered_artifact_is_refused_and_current_version_keeps_serving(
        client, registry, versions, caplog):
    from publishers.gateway.testing import register_zombies

    v3 = register_zombies(registry, set_default=False)[0]   # v3 (A), v4 (B)
    path = v3.artifact_uri
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    # Pinned: refused with the reason.
    message = error_of(client.post("/v1/predict", json={
        "instances": [ARTICLE_INSTANCE], "model": f"zombies/versions/{v3.version}"}), 409)
    assert "sha256" in message and "refused" in message
    # Through the API: refused, and the default does not move.
    error_of(client.post("/v1/models/zombies:setDefault", json={"version": v3.version},
                         headers=AUTH), 409)
    # Behind the gateway's back: the registry itself refuses to move the pointer.
    from rotwatch.artifacts import ArtifactIntegrityError
    with pytest.raises(ArtifactIntegrityError, match="altered or replaced"):
        registry.set_default("zombies", v3.version, changed_by="test:attacker",
                             reason="evil")
    assert registry.get_model("zombies").default_version == "v1"
    assert predict(client, {"instances": [ARTICLE_INSTANCE],
                            "model": "zombies"})["version"] == "v1"


def test_openapi_describes_the_colon_routes(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/predict", "/v1/models/{model}:predict",
                 "/v1/models/{model}/versions/{version}:predict", "/v1/feedback",
                 "/v1/models", "/v1/models/{model}", "/v1/models/{model}:setDefault"):
        assert path in spec["paths"], path
    assert "bearerAuth" in str(spec["components"]["securitySchemes"]) or \
        "HTTPBearer" in spec["components"]["securitySchemes"]
