"""The trainer against the emulators: rot event -> job -> dataset -> train -> gate -> promote."""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid

import pytest
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from rotwatch import kinds
from rotwatch.config import Settings
from rotwatch.events import RotEvent
from rotwatch.registry import Registry
from trainer.jobs import JobStore
from trainer.service import TrainerConfig, TrainerService

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)
POPULATION_ROWS = 5000
# Small, fast and still decisive: 600 rows give a holdout of 120.
CONFIG = TrainerConfig(min_rows=200, margin=0.02, time_limit_s=60, lease_s=120,
                       retry_insufficient_s=0.01)


# -- fit functions the training child runs (importable by name) -----------------------
def weak_fit(X, y, estimator, params):
    """A candidate that always says the most frequent class: clearly worse."""
    from sklearn.dummy import DummyClassifier
    return DummyClassifier(strategy="most_frequent").fit(X, y)


def fit_or_die_on_small_data(X, y, estimator, params):
    """Dies like a native crash on small datasets, trains normally on big ones."""
    if len(y) < 400:
        os._exit(7)
    from trainer.train import fit_estimator
    return fit_estimator(X, y, estimator, params)


# -- helpers ---------------------------------------------------------------------------
def _name() -> str:
    return f"z{uuid.uuid4().hex[:10]}"


def _population(seed: int, n: int):
    """The first ``n`` rows of a 5,000-row draw (rows come shuffled). The draw size
    is fixed because it changes the population: at 5,000 rows, seeds 99 (A) and 16 (B)
    are far apart (a tree from A scores ~0.55 on B); at 1,000 they are not."""
    X, y = make_classification(n_samples=POPULATION_ROWS, n_features=4, n_redundant=1,
                               random_state=seed)
    return X[:n], y[:n]


@pytest.fixture
def settings(emulators, tmp_path):
    return Settings.from_env(model_root=str(tmp_path / "models"))


@pytest.fixture
def client(settings):
    from google.cloud import datastore
    return datastore.Client(project=settings.project, namespace=settings.namespace)


def _deploy_v1(settings, model: str):
    """v1: a decision tree trained on population A (random_state 99), the default."""
    X, y = _population(99, 1000)
    cut = 800
    fitted = DecisionTreeClassifier(min_samples_leaf=5, random_state=0).fit(X[:cut], y[:cut])
    registry = Registry(settings, publish=False)
    registry.register_version(model, fitted, estimator="decision-tree", X_reference=X[:cut],
                              baseline_accuracy=float(fitted.score(X[cut:], y[cut:])),
                              created_by="person:test")
    registry.set_default(model, "v1", changed_by="person:test", reason="bootstrap")
    return fitted


def _write_feedback(client, model: str, v1, X, y, start=T0, version="v1", first=0):
    """Feedback entities as the pipeline stores them, one per row, a second apart."""
    from google.cloud import datastore
    predictions = v1.predict(X)
    entities = []
    for i, (features, label, prediction) in enumerate(zip(X, y, predictions)):
        event_id = f"{model}-{first + i}"
        entity = datastore.Entity(client.key(kinds.FEEDBACK, event_id),
                                  exclude_from_indexes=("features",))
        entity.update({
            "model": model, "version": version, "features": [float(v) for v in features],
            "prediction": int(prediction), "was_correct": bool(prediction == label),
            "label": None, "correct": bool(prediction == label),
            "event_time": start + dt.timedelta(seconds=first + i), "stored_at": start})
        entities.append(entity)
    for i in range(0, len(entities), 500):
        client.put_multi(entities[i:i + 500])


def _rot(model: str, version="v1", at=None) -> RotEvent:
    decided = at or T0 + dt.timedelta(hours=2)
    return RotEvent(model=model, version=version, kind="accuracy", decided_at=decided,
                    window_start=decided - dt.timedelta(minutes=5), window_end=decided,
                    n=200, accuracy=0.55, baseline_accuracy=0.9, change_point=T0)


def _service(settings, client, config=CONFIG, **kw) -> TrainerService:
    return TrainerService(settings, config, client=client,
                          registry=Registry(settings, client=client, publish=False), **kw)


# -- the story -------------------------------------------------------------------------
def test_zombie_story_v2_is_promoted_and_beats_v1_on_the_new_population(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 1000)               # the zombies mutated
    _write_feedback(client, model, v1, XB, yB)
    v1_on_b = float(v1.score(XB, yB))

    outcome = _service(settings, client).handle(_rot(model))

    assert outcome.state == "promoted" and outcome.produced_version == "v2"
    assert outcome.rows == 1000
    assert outcome.candidate_accuracy > outcome.current_accuracy + 0.2
    registry = Registry(settings, client=client, publish=False)
    loaded = registry.load_model(model)          # the default, sha256-checked
    v2 = loaded.info
    assert v2.version == "v2" and v2.parent_version == "v1"
    assert v2.created_by == f"rot:{_rot(model).rot_id}"
    assert v2.baseline_accuracy == outcome.candidate_accuracy
    assert v2.train_rows == 800 and v2.metrics["holdout"]["rows"] == 200
    assert v2.train_start == T0 and v2.train_end == T0 + dt.timedelta(seconds=799)
    assert v2.reference_stats["n"] == 800 and v2.n_features == 4
    # on fresh rows of population B, v2 is clearly the better zombie detector
    XB_all, yB_all = _population(16, POPULATION_ROWS)
    fresh_v1 = v1.score(XB_all[1000:], yB_all[1000:])
    fresh_v2 = loaded.estimator.score(XB_all[1000:], yB_all[1000:])
    assert fresh_v1 < 0.65 < 0.85 < fresh_v2
    assert v1_on_b < 0.65
    history = registry.history(model)
    assert [(c.version, c.changed_by) for c in history][-1] == ("v2", v2.created_by)
    job = JobStore(client).get(_rot(model).rot_id)
    assert job.state == "promoted" and job.attempts == 1
    assert job.detail["gate"].startswith("candidate 0.9")
    assert job.detail["published"] is False       # this test's registry does not publish
    assert job.detail["excluded"] == {} and job.detail["holdout_rows"] == 200


def test_duplicate_rot_events_make_exactly_one_version(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB, yB)
    service = _service(settings, client)
    rot = _rot(model)

    outcomes = [service.handle(rot) for _ in range(3)]
    assert [o.state for o in outcomes] == ["promoted"] * 3
    assert [o.handled_here for o in outcomes] == [True, False, False]
    # a later rot event about v1 (already replaced) does no new version either
    late = service.handle(_rot(model, at=T0 + dt.timedelta(hours=3)))
    assert late.state == "rejected" and "superseded" in late.error
    registry = Registry(settings, client=client, publish=False)
    assert [v.version for v in registry.list_versions(model)] == ["v1", "v2"]
    assert JobStore(client).get(rot.rot_id).attempts == 1


def test_two_trainers_racing_make_one_version(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB, yB)
    from google.cloud import datastore
    services = [TrainerService(settings, CONFIG, owner=f"worker-{i}",
                               client=datastore.Client(project=settings.project))
                for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes = [None, None]

    def work(i):
        barrier.wait()
        outcomes[i] = services[i].handle(_rot(model))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(o.handled_here for o in outcomes) == [False, True]
    assert {o.state for o in outcomes if o.handled_here} == {"promoted"}
    registry = Registry(settings, client=client, publish=False)
    assert [v.version for v in registry.list_versions(model)] == ["v1", "v2"]


def test_a_job_whose_worker_died_is_taken_over_after_its_lease(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB, yB)
    rot = _rot(model)
    # a worker claimed the job with a 1 s lease, then died without a word
    assert JobStore(client).claim(rot, "dead-worker", lease_s=1).status == "claimed"
    service = _service(settings, client)
    assert service.handle(rot).handled_here is False          # lease still live
    time.sleep(1.2)
    outcomes = service.sweep()
    assert [(o.state, o.produced_version) for o in outcomes] == [("promoted", "v2")]
    job = JobStore(client).get(rot.rot_id)
    assert job.attempts == 2 and job.lease_owner == service.owner


def test_a_worker_stalled_past_its_lease_before_registering_makes_no_second_version(
        settings, client, caplog):
    """The gap "a rot event handled twice makes one model version" closes: a worker
    that passed the gate, then stalled longer than its lease just before registering,
    while another worker took the job over and promoted v2, registers nothing new."""
    from google.cloud import datastore

    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB, yB)
    rot = _rot(model)
    reached, release = threading.Event(), threading.Event()

    class StallsBeforeRegistering(Registry):
        def register_version_once(self, *args, **kwargs):
            reached.set()
            assert release.wait(120)
            return super().register_version_once(*args, **kwargs)

    own_client = datastore.Client(project=settings.project, namespace=settings.namespace)
    stalled = TrainerService(
        settings, CONFIG, owner="stalled",
        client=own_client,
        registry=StallsBeforeRegistering(settings, client=own_client, publish=False))
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.append(stalled.handle(rot)))
    caplog.set_level(logging.INFO)
    thread.start()
    try:
        assert reached.wait(120)                 # trained, gated, about to register
        # ... and it stalls until its lease runs out (shortened here to now)
        JobStore(client).renew(rot.rot_id, "stalled", lease_s=0)
        took = _service(settings, client, owner="taker").handle(rot)
        assert (took.state, took.produced_version, took.handled_here) == \
            ("promoted", "v2", True)
    finally:
        release.set()
        thread.join(120)

    late = outcomes[0]
    assert (late.state, late.produced_version, late.handled_here) == \
        ("promoted", "v2", False)                # the taker's outcome stands
    registry = Registry(settings, client=client, publish=False)
    assert [(v.version, v.status) for v in registry.list_versions(model)] == \
        [("v1", "ready"), ("v2", "ready")]
    assert registry.get_model(model).default_version == "v2"
    job = JobStore(client).get(rot.rot_id)
    assert (job.state, job.attempts, job.lease_owner) == ("promoted", 2, "taker")
    assert job.detail["registration"] == "registered"
    assert f"step=register rot_id={rot.rot_id} outcome=exists version=v2" in caplog.text


def test_the_gate_rejects_a_worse_candidate_with_both_scores(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XA, yA = _population(99, 1600)               # the same population: v1 is still good
    _write_feedback(client, model, v1, XA[1000:], yA[1000:])

    outcome = _service(settings, client, fit=weak_fit).handle(_rot(model))

    assert outcome.state == "rejected"
    assert outcome.current_accuracy > 0.8 and outcome.candidate_accuracy < 0.65
    assert "below the margin" in outcome.error
    job = JobStore(client).get(_rot(model).rot_id)
    assert (job.candidate_accuracy, job.current_accuracy) == \
        (outcome.candidate_accuracy, outcome.current_accuracy)
    registry = Registry(settings, client=client, publish=False)
    assert registry.get_model(model).default_version == "v1"
    assert [v.version for v in registry.list_versions(model)] == ["v1"]


def test_insufficient_data_then_retried_when_more_feedback_arrives(settings, client):
    model = _name()
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB[:50], yB[:50])
    service = _service(settings, client)

    outcome = service.handle(_rot(model))
    assert outcome.state == "insufficient-data" and outcome.rows == 50
    assert "200 needed (150 more)" in outcome.error
    assert service.sweep() == []                 # nothing new: not retried

    _write_feedback(client, model, v1, XB[50:], yB[50:], first=50)
    time.sleep(0.05)
    outcomes = service.sweep()
    assert [(o.state, o.produced_version) for o in outcomes] == [("promoted", "v2")]


def test_a_training_crash_fails_the_job_and_the_service_keeps_running(emulators, tmp_path):
    """Through Pub/Sub: the service subscribes, a crash fails one job, the next works."""
    from google.cloud import datastore, pubsub_v1
    from rotwatch.resources import ensure_pubsub_resources

    # a project of its own, so no other test's rot events reach this subscription
    settings = Settings.from_env(project="trainer-crash-test",
                                 model_root=str(tmp_path / "models"))
    ensure_pubsub_resources(settings)
    client = datastore.Client(project=settings.project)
    small, big = _name(), _name()
    for model, n in ((small, 300), (big, 800)):
        v1 = _deploy_v1(settings, model)
        XB, yB = _population(16, n)
        _write_feedback(client, model, v1, XB, yB)

    service = TrainerService(settings, CONFIG, client=client, fit=fit_or_die_on_small_data)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,), daemon=True)
    runner.start()
    publisher = pubsub_v1.PublisherClient()
    try:
        for model in (small, big):
            rot = _rot(model)
            publisher.publish(settings.topic("rot"), rot.to_json(),
                              **rot.attributes()).result(timeout=10)
        jobs = JobStore(client)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [getattr(jobs.get(_rot(m).rot_id), "state", None) for m in (small, big)]
            if states[0] == "failed" and states[1] == "promoted":
                break
            time.sleep(0.2)
        assert states == ["failed", "promoted"]
        assert "exit code 7" in jobs.get(_rot(small).rot_id).error
        assert jobs.get(_rot(big).rot_id).detail["published"] is True
        assert runner.is_alive()
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
