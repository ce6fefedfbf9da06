"""The zombie traffic simulator: its populations and schedule, then a real run through
a gateway (uvicorn in a thread) on the emulators, with a model switch mid-run."""
from __future__ import annotations

import json
import threading
import time

import pytest

PROJECT = "simulator-tests-project"


# -- populations and schedule -----------------------------------------------------------
def test_populations_are_the_articles():
    from sklearn.datasets import make_classification

    from publishers.simulator import population

    X, y = population("A")
    X99, y99 = make_classification(n_features=4, n_redundant=1, random_state=99)
    assert (X == X99).all() and (y == y99).all()
    XB, _ = population("B")
    assert XB.shape == (100, 4) and not (XB == X).all()
    with pytest.raises(ValueError, match="one of A, B"):
        population("C")


def test_a_model_of_population_a_fails_on_b():
    """The story needs it: v1 knows A, and the mutation hurts it."""
    from sklearn.tree import DecisionTreeClassifier

    from publishers.simulator import population

    XA, yA = population("A")
    XB, yB = population("B")
    v1 = DecisionTreeClassifier(max_depth=5, random_state=0).fit(XA, yA)
    assert v1.score(XA, yA) > 0.95 and v1.score(XB, yB) < 0.7


@pytest.mark.parametrize("width,shares", [
    (0, {0: 0.0, 99: 0.0, 100: 1.0, 500: 1.0}),
    (100, {99: 0.0, 100: 0.01, 149: 0.5, 199: 1.0, 300: 1.0}),
])
def test_mutation_schedule(width, shares):
    from publishers.simulator import ZombieStream

    stream = ZombieStream(mutation_start=100, width=width)
    for i, share in shares.items():
        assert stream.share_b(i) == pytest.approx(share)


def test_draws_never_run_out_and_follow_the_schedule():
    from publishers.simulator import ZombieStream

    stream = ZombieStream(mutation_start=1000, seed=3)
    draws = [stream.draw(i) for i in range(2000)]
    assert {d[0] for d in draws[:1000]} == {"A"} and {d[0] for d in draws[1000:]} == {"B"}
    assert all(len(d[1]) == 4 and d[2] in (0, 1) for d in draws)


def test_same_seed_same_traffic():
    from publishers.simulator import SimulationConfig, Simulator

    config = SimulationConfig(events=300, mutation_start=100, mutation_width=50,
                              feedback_share=0.5, feedback_noise=0.2, seed=7)
    one = [(r.population, r.features, r.truth, lies) for r, lies in Simulator(config).plan()]
    two = [(r.population, r.features, r.truth, lies) for r, lies in Simulator(config).plan()]
    assert one == two
    answering = [lies for *_, lies in one if lies is not None]
    assert 120 < len(answering) < 180 and 0.1 < sum(answering) / len(answering) < 0.3


@pytest.mark.parametrize("kwargs,words", [
    ({"gateway_url": "localhost:8080"}, "http"),
    ({"events": 0}, "events"),
    ({"feedback_share": 1.5}, "feedback_share"),
    ({"feedback_noise": -0.1}, "feedback_noise"),
    ({"rate": -1}, "rate"),
    ({"concurrency": 0}, "concurrency"),
])
def test_bad_config_names_the_problem(kwargs, words):
    from publishers.simulator import SimulationConfig

    with pytest.raises(ValueError, match=words):
        SimulationConfig(**kwargs)


# -- a real run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(emulators, tmp_path_factory):
    from google.cloud import pubsub_v1

    from publishers.gateway import GatewayConfig, create_app
    from publishers.gateway.testing import ServerThread, register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project=PROJECT, model_root=str(tmp_path_factory.mktemp("models")))
    ensure_pubsub_resources(settings)
    subscriber = pubsub_v1.SubscriberClient()
    subscription = f"projects/{PROJECT}/subscriptions/simulator-test-feedback"
    subscriber.create_subscription(request={"name": subscription,
                                            "topic": settings.topic("feedback")})
    registry = Registry(settings)
    register_zombies(registry)
    app = create_app(settings, GatewayConfig(), registry=registry)
    with ServerThread(app) as server:
        yield server, registry, (subscriber, subscription)
    subscriber.delete_subscription(request={"subscription": subscription})
    subscriber.close()


def pull_all(subscription, expected, timeout_s=10.0):
    subscriber, name = subscription
    messages = {}
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": name, "max_messages": 500},
                                   timeout=5)
        if response.received_messages:
            subscriber.acknowledge(request={"subscription": name, "ack_ids": [
                m.ack_id for m in response.received_messages]})
        for m in response.received_messages:
            messages[m.message.attributes["event_id"]] = json.loads(m.message.data)
    return messages


def test_simulation_through_the_gateway_with_a_switch_mid_run(stack):
    from publishers.simulator import SimulationConfig, Simulator

    server, registry, subscription = stack
    switched = threading.Event()

    def on_progress(done, total, text):
        # The trainer's part, played by hand: promote v2 once B has arrived.
        if done == 260 and not switched.is_set():
            switched.set()
            threading.Thread(target=registry.set_default, args=("zombies", "v2"),
                             kwargs={"changed_by": "test:trainer", "reason": "rot"}).start()

    config = SimulationConfig(gateway_url=server.url, events=400, mutation_start=200,
                              rate=200, feedback_share=0.5, feedback_noise=0.1,
                              feedback_delay_s=0.2, concurrency=4, seed=5)
    summary = Simulator(config, on_progress=on_progress).run()

    assert summary.stopped_early is None and summary.errors == 0
    assert summary.predictions == 400
    accuracy = summary.accuracy
    assert accuracy["before_mutation"] > 0.9          # v1 on its own population
    v1_on_b = [r.correct for r in summary.answered if r.version == "v1"
               and r.population == "B"]
    assert sum(v1_on_b) / len(v1_on_b) < 0.75         # the mutation hurts v1
    assert accuracy["version_v2"] > 0.9               # v2 knows the mutants
    first = summary.first_event_by_version
    assert first["v1"] == 0 and 260 < first["v2"] < 360   # switched within ~0.5 s
    # Feedback: about half answered, each sent by prediction id, as the user said.
    assert 150 < summary.feedback_planned < 250
    assert summary.feedback_sent == summary.feedback_planned
    published = pull_all(subscription, summary.feedback_sent)
    answered = [r for r in summary.records if r.feedback_sent]
    assert set(published) == {r.prediction_id for r in answered}
    for record in answered:
        event = published[record.prediction_id]
        assert event["was_correct"] == record.feedback
        assert event["version"] == record.version and event["features"] == record.features
    assert 0 < summary.noisy_feedback < 0.25 * summary.feedback_sent
    windows = summary.windows()
    assert windows[0]["share_b"] == 0 and windows[-1]["share_b"] == 1
    assert windows[-1]["versions"] == ["v2"]
    registry.set_default("zombies", "v1", changed_by="test:trainer", reason="reset")
    _wait_serving(server.url, "v1")   # the gateway hears of it through model-updates


def _wait_serving(url: str, version: str, timeout_s: float = 10.0) -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/healthz").json()["serving"].get("zombies") == version:
            return
        time.sleep(0.02)
    raise AssertionError(f"the gateway did not serve zombies {version} within {timeout_s} s")


def test_simulate_command_prints_what_it_sent(stack, capsys, tmp_path):
    from rotwatch.cli import main

    server, _, _ = stack
    out_file = tmp_path / "run.json"
    code = main(["simulate", "--gateway", server.url, "--events", "60", "--mutate-at", "30",
                 "--rate", "0", "--feedback-share", "1", "--out", str(out_file)])
    assert code == 0
    out = capsys.readouterr().out
    assert "sent 60 predict requests" in out and "feedback sent       60 of 60" in out
    assert "v1: 60 (from event 0)" in out
    data = json.loads(out_file.read_text())
    assert len(data["records"]) == 60 and data["predictions"] == 60


def test_simulator_stops_when_the_gateway_is_down():
    from publishers.gateway.testing import free_port
    from publishers.simulator import MAX_CONSECUTIVE_ERRORS, SimulationConfig, Simulator

    config = SimulationConfig(gateway_url=f"http://127.0.0.1:{free_port()}", events=500,
                              rate=0, concurrency=10)
    summary = Simulator(config).run()
    assert summary.predictions == 0 and "is the gateway" in summary.stopped_early
    assert MAX_CONSECUTIVE_ERRORS <= summary.errors < 500
