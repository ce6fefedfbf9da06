"""The model registry against the Datastore emulator: versions, defaults, artifacts."""
from __future__ import annotations

import concurrent.futures
import os
import pickle
import uuid

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from rotwatch import cli, kinds
from rotwatch.artifacts import ArtifactIntegrityError
from rotwatch.config import Settings
from rotwatch.events import ModelUpdate
from rotwatch.registry import (DefaultChanged, Registry, UpdateNotPublished,
                               VersionNotFound)
from rotwatch.stats import reference_statistics


def _name() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(emulators, tmp_path):
    return Settings.from_env(model_root=str(tmp_path / "models"))


@pytest.fixture
def registry(settings):
    return Registry(settings, publish=False)


@pytest.fixture(scope="module")
def population():
    X, y = make_classification(n_samples=400, n_features=4, n_redundant=1,
                               random_state=99)
    return X, y


def _register(registry, model, population, **kw):
    X, y = population
    fitted = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    return registry.register_version(model, fitted, estimator="decision-tree",
                                     X_reference=X, baseline_accuracy=0.9,
                                     created_by=kw.pop("created_by", "person:test"), **kw)


def test_versions_record_what_the_pipeline_and_people_need(registry, population):
    model = _name()
    v1 = _register(registry, model, population, train_rows=400,
                   metrics={"accuracy": 0.9})
    v2 = _register(registry, model, population, parent_version="v1",
                   created_by="rot:x.v1.accuracy.1")
    assert (v1.version, v1.number, v2.version, v2.number) == ("v1", 1, "v2", 2)
    got = registry.get_version(model, "v2")
    assert got.status == "ready"
    assert got.n_features == 4 and got.classes == [0, 1]
    assert got.baseline_accuracy == 0.9
    assert got.parent_version == "v1" and got.created_by == "rot:x.v1.accuracy.1"
    assert got.params["max_depth"] == 3
    assert got.reference_stats == reference_statistics(population[0])
    assert got.artifact_uri.endswith(os.path.join(model, "v2", "model.joblib"))
    assert len(got.sha256) == 64
    assert registry.get_version(model, "v1").metrics == {"accuracy": 0.9}
    assert [v.version for v in registry.find_versions(model, "rot:x.v1.accuracy.1")] == ["v2"]


def test_concurrent_registrations_never_share_a_number(registry, population):
    model = _name()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(lambda _: _register(registry, model, population).version,
                                 range(4)))
    assert sorted(versions, key=kinds.version_number) == ["v1", "v2", "v3", "v4"]
    assert [v.version for v in registry.list_versions(model)] == ["v1", "v2", "v3", "v4"]


def test_load_model_checks_the_sha256_and_refuses_an_altered_file(registry, population,
                                                                  tmp_path):
    model = _name()
    _register(registry, model, population)
    registry.set_default(model, "v1", changed_by="person:test")
    loaded = registry.load_model(model)
    assert loaded.info.version == "v1"
    assert loaded.estimator.predict(population[0][:5]).tolist() == \
        DecisionTreeClassifier(max_depth=3, random_state=0).fit(*population).predict(
            population[0][:5]).tolist()

    # Replace the artifact by a pickle that would run code when loaded.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(loaded.info.artifact_uri, "wb") as handle:
        handle.write(pickle.dumps(Evil()))
    with pytest.raises(ArtifactIntegrityError, match="was altered") as info:
        registry.load_model(model)
    assert info.value.expected == loaded.info.sha256
    assert not marker.exists()          # refused before unpickling: nothing ran


def test_set_default_keeps_history_and_rolls_back(emulators, settings, population):
    from google.cloud import pubsub_v1
    from google.api_core import exceptions as gexc

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    try:
        publisher.create_topic(name=settings.topic("updates"))
    except gexc.AlreadyExists:
        pass
    sub = f"projects/{settings.project}/subscriptions/updates-{uuid.uuid4().hex[:8]}"
    subscriber.create_subscription(name=sub, topic=settings.topic("updates"))
    registry = Registry(settings, publisher=publisher)
    model = _name()
    _register(registry, model, population)
    _register(registry, model, population)

    assert registry.set_default(model, "v1", changed_by="person:ana", reason="first")
    assert registry.set_default(model, "v2", changed_by="rot:r1", reason="rot")
    rollback = registry.set_default(model, "v1", changed_by="person:ana",
                                    reason="v2 misbehaves")
    assert (rollback.previous_version, rollback.default_version) == ("v2", "v1")
    assert registry.set_default(model, "v1", changed_by="person:ana") is None  # no-op
    assert registry.get_model(model).default_version == "v1"
    assert registry.load_model(model).info.version == "v1"
    history = registry.history(model)
    assert [(c.previous_version, c.version, c.changed_by, c.reason) for c in history] == [
        (None, "v1", "person:ana", "first"), ("v1", "v2", "rot:r1", "rot"),
        ("v2", "v1", "person:ana", "v2 misbehaves")]

    received = []
    for _ in range(20):
        response = subscriber.pull(subscription=sub, max_messages=10, timeout=5)
        for m in response.received_messages:
            received.append(ModelUpdate.from_json(m.message.data))
        if response.received_messages:
            subscriber.acknowledge(subscription=sub,
                                   ack_ids=[m.ack_id for m in response.received_messages])
        if len([u for u in received if u.model == model]) >= 3:
            break
    assert [(u.previous_version, u.default_version) for u in received
            if u.model == model] == [(None, "v1"), ("v1", "v2"), ("v2", "v1")]

    with pytest.raises(DefaultChanged):
        registry.set_default(model, "v2", changed_by="rot:r2", if_current="v2")
    with pytest.raises(VersionNotFound, match="rotwatch model list"):
        registry.set_default(model, "v9", changed_by="person:ana")


def test_a_missing_updates_topic_names_the_setup_command(emulators, tmp_path, population):
    # a project with no topics at all: the change is recorded, the publish fails clearly
    settings = Settings.from_env(project="no-topics-project",
                                 model_root=str(tmp_path / "models"))
    registry = Registry(settings)
    model = _name()
    _register(registry, model, population)
    with pytest.raises(UpdateNotPublished, match="rotwatch setup"):
        registry.set_default(model, "v1", changed_by="person:test")
    assert registry.get_model(model).default_version == "v1"


def test_model_cli_trains_lists_shows_and_rolls_back(emulators, tmp_path, monkeypatch,
                                                     capsys, population):
    monkeypatch.setenv("ROTWATCH_MODEL_ROOT", str(tmp_path / "models"))
    X, y = population
    csv_path = tmp_path / "zombies.csv"
    with open(csv_path, "w") as handle:
        handle.write("f0,f1,f2,f3,label\n")
        for row, label in zip(X, y):
            handle.write(",".join(f"{v:.6f}" for v in row) + f",{label}\n")
    npz_path = tmp_path / "zombies.npz"
    np.savez(npz_path, x=X, y=y)
    model = _name()

    assert cli.main(["model", "train", "--model", model, "--data", str(csv_path),
                     "--label", "label", "--set-default", "--no-publish"]) == 0
    assert cli.main(["model", "train", "--model", model, "--data", str(npz_path),
                     "--estimator", "logistic-regression", "--no-publish"]) == 0
    out = capsys.readouterr().out
    assert f"{model} default is now v1" in out and "holdout accuracy" in out

    registry = Registry(Settings.from_env(), publish=False)
    v2 = registry.get_version(model, "v2")
    assert v2.estimator == "logistic-regression" and v2.train_rows == 320
    assert 0.5 < v2.baseline_accuracy <= 1.0

    assert cli.main(["model", "set-default", "--model", model, "--version", "v2",
                     "--reason", "try lr", "--no-publish"]) == 0
    assert cli.main(["model", "set-default", "--model", model, "--version", "v1",
                     "--reason", "rollback", "--by", "person:ana", "--no-publish"]) == 0
    assert cli.main(["model", "list", "--model", model]) == 0
    assert cli.main(["model", "show", "--model", model]) == 0
    out = capsys.readouterr().out
    assert f"{model} default: v2 -> v1" in out
    assert "* v1" in out and "  v2" in out
    assert "rollback" in out and "person:ana" in out
    assert registry.get_model(model).default_version == "v1"

    with pytest.raises(SystemExit, match="not a column"):
        cli.main(["model", "train", "--model", model, "--data", str(csv_path),
                  "--label", "nope", "--no-publish"])
