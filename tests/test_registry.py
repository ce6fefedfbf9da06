"""The model registry against the Datastore emulator: versions, defaults, artifacts."""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
import time
import pickle
import uuid

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from rotwatch import artifacts, cli, kinds
from rotwatch.artifacts import ArtifactIntegrityError
from rotwatch.config import Settings
from rotwatch.events import ModelUpdate
from rotwatch.registry import (DefaultChanged, Registry, RegistryError,
                               UpdateNotPublished, VersionNotFound)
from rotwatch.stats import reference_statistics


def _file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _flip_last_byte(path: str) -> None:
    """Alter a registered artifact after the fact (as fault 6 does)."""
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))


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


def _register_once(registry, model, population, depth=3, created_by="rot:r1", **kw):
    """Once per creator; ``depth`` makes each attempt's artifact different bytes."""
    X, y = population
    fitted = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(X, y)
    return registry.register_version_once(model, fitted, estimator="decision-tree",
                                          X_reference=X, baseline_accuracy=0.9,
                                          created_by=created_by, **kw)


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
    assert len(got.sha256) == 64
    # content-addressed: <root>/<model>/<version>/<sha256>/model.joblib
    assert got.artifact_uri == os.path.join(registry.settings.model_root, model, "v2",
                                            got.sha256, "model.joblib")
    assert _file_sha256(got.artifact_uri) == got.sha256
    assert registry.get_version(model, "v1").metrics == {"accuracy": 0.9}
    assert [v.version for v in registry.find_versions(model, "rot:x.v1.accuracy.1")] == ["v2"]


def test_concurrent_registrations_never_share_a_number(registry, population):
    model = _name()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(lambda _: _register(registry, model, population).version,
                                 range(4)))
    assert sorted(versions, key=kinds.version_number) == ["v1", "v2", "v3", "v4"]
    assert [v.version for v in registry.list_versions(model)] == ["v1", "v2", "v3", "v4"]


# -- once per creator (a rot event handled twice makes one version) -------------------
class WorkerDied(BaseException):
    """A worker process ending mid-registration (nothing below catches it)."""


class _QueryAfter:
    """A query whose results are handed to ``after`` before the caller sees them."""

    def __init__(self, query, after):
        self.query, self.after = query, after

    def fetch(self):
        results = list(self.query.fetch())
        self.after(results)
        return results


class BothPassTheCheck(Registry):
    """Its first in-transaction look for the creator's versions waits at a barrier,
    so two of these both find nothing before either commits an allocation."""

    def __init__(self, settings, barrier):
        from google.cloud import datastore
        super().__init__(settings, publish=False, client=datastore.Client(
            project=settings.project, namespace=settings.namespace))
        self.barrier, self.seen = barrier, []

    def _creator_query(self, model, created_by):
        def after(results):
            self.seen.append(sorted((e.key.name, e["status"]) for e in results))
            if len(self.seen) == 1:
                self.barrier.wait(30)
        return _QueryAfter(super()._creator_query(model, created_by), after)


class DiesBeforeReady(Registry):
    """Allocates, writes its artifact, then dies before marking the version ready."""

    def _write_and_complete(self, model, version, data, properties, **_):
        uri = artifacts.artifact_uri(self.settings.model_root, model, version,
                                     properties["sha256"])
        artifacts.write_artifact(uri, data)
        raise WorkerDied(uri)


def _files(root, model):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(os.path.join(root, model)) for f in names)


def test_racing_registrations_of_one_creator_make_one_version(settings, population):
    model = _name()
    barrier = threading.Barrier(2)
    racers = [BothPassTheCheck(settings, barrier) for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # different bytes (depth 2 vs 3): two different candidates for one rot event
        got = list(pool.map(lambda i: _register_once(racers[i], model, population,
                                                     depth=2 + i), range(2)))
    # both looked inside their allocation transaction before either committed
    assert [r.seen[0] for r in racers] == [[], []]
    # the one whose commit lost (ABORTED) retried and found the other's version
    first, retried = sorted((r.seen for r in racers), key=len)
    assert len(first) == 1 and len(retried) == 2
    assert retried[1] in ([("v1", "pending")], [("v1", "ready")])
    registry = Registry(settings, publish=False)
    versions = registry.list_versions(model)
    assert [(v.version, v.status) for v in versions] == [("v1", "ready")]
    v1 = versions[0]
    assert [g.record for g in got] == [v1, v1]            # both got the same record
    assert sorted(g.outcome for g in got) in (["exists", "registered"],
                                              ["completed", "exists"])
    # the loser's artifact is gone; the winner's matches the recorded sha256
    assert _files(settings.model_root, model) == [
        os.path.join(model, "v1", v1.sha256, "model.joblib")]
    assert _file_sha256(v1.artifact_uri) == v1.sha256
    assert registry.load_model(model, "v1").info == v1


def test_two_attempts_completing_one_pending_version_one_wins(settings, population,
                                                             monkeypatch):
    model = _name()
    barrier = threading.Barrier(2)
    write = artifacts.write_artifact
    written = []

    def write_then_wait(uri, data):   # both have written their file: now both mark it
        digest = write(uri, data)
        written.append(uri)
        barrier.wait(30)
        return digest

    monkeypatch.setattr(artifacts, "write_artifact", write_then_wait)
    registries = [Registry(settings, publish=False) for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(_register_once, registries[0], model, population, depth=2)
        while not written:            # the first holds v1 pending, its file written
            time.sleep(0.01)
        second = pool.submit(_register_once, registries[1], model, population, depth=3)
        got = [first.result(60), second.result(60)]

    assert len(set(written)) == 2 and all("/v1/" in uri for uri in written)
    registry = Registry(settings, publish=False)
    versions = registry.list_versions(model)
    assert [(v.version, v.status) for v in versions] == [("v1", "ready")]
    v1 = versions[0]
    assert [g.record for g in got] == [v1, v1]
    assert sorted(g.outcome for g in got) in (["exists", "registered"],
                                              ["completed", "exists"])
    assert _files(settings.model_root, model) == [
        os.path.join(model, "v1", v1.sha256, "model.joblib")]   # the loser's deleted
    assert _file_sha256(v1.artifact_uri) == v1.sha256
    assert v1.params["max_depth"] == registry.load_model(model, "v1").estimator.get_depth()


def test_a_pending_version_left_by_a_dead_worker_is_completed_by_the_next(
        settings, registry, population):
    model = _name()
    dead = DiesBeforeReady(settings, publish=False)
    with pytest.raises(WorkerDied) as died:
        _register_once(dead, model, population, depth=2)
    dead_file = died.value.args[0]
    assert [(v.version, v.status) for v in registry.list_versions(model)] == \
        [("v1", "pending")]

    later = _register_once(registry, model, population, depth=3)

    assert (later.outcome, later.record.version, later.abandoned) == \
        ("completed", "v1", ())
    versions = registry.list_versions(model)
    assert [(v.version, v.status) for v in versions] == [("v1", "ready")]
    v1 = versions[0]
    assert v1 == later.record and v1.params["max_depth"] == 3    # the completer's
    assert _file_sha256(v1.artifact_uri) == v1.sha256
    assert v1.artifact_uri != dead_file and os.path.exists(dead_file)  # unreferenced
    assert registry.load_model(model, "v1").estimator.get_depth() == 3
    again = _register_once(registry, model, population, depth=4)
    assert (again.outcome, again.record) == ("exists", v1)
    assert len(registry.list_versions(model)) == 1


def test_a_failed_artifact_write_abandons_a_persons_version_but_not_a_creators(
        registry, population, monkeypatch):
    model = _name()
    write = artifacts.write_artifact

    def broken(uri, data):
        raise artifacts.ArtifactError(f"could not write artifact {uri}: disk full")

    monkeypatch.setattr(artifacts, "write_artifact", broken)
    with pytest.raises(artifacts.ArtifactError):
        _register(registry, model, population)              # a person's: v1
    with pytest.raises(artifacts.ArtifactError):
        _register_once(registry, model, population)         # rot:r1's: v2
    v1, v2 = registry.list_versions(model)
    assert (v1.status, v2.status) == ("abandoned", "pending")
    assert "disk full" in v1.status_reason
    monkeypatch.setattr(artifacts, "write_artifact", write)
    retried = _register_once(registry, model, population)   # the retry completes v2
    assert (retried.outcome, retried.record.version, retried.record.status) == \
        ("completed", "v2", "ready")
    assert _file_sha256(retried.record.artifact_uri) == retried.record.sha256


def test_an_altered_version_of_the_creator_is_abandoned_then_replaced(
        registry, population):
    model = _name()
    first = _register_once(registry, model, population)
    assert (first.outcome, first.record.version) == ("registered", "v1")
    _flip_last_byte(first.record.artifact_uri)

    second = _register_once(registry, model, population)

    assert (second.outcome, second.record.version, second.abandoned) == \
        ("registered", "v2", ("v1",))
    v1, v2 = registry.list_versions(model)
    assert (v1.status, v2.status) == ("abandoned", "ready")
    assert "sha256" in v1.status_reason and "altered" in v1.status_reason
    assert v2.sha256 == first.record.sha256              # the same bytes, a new path
    assert v2.artifact_uri != v1.artifact_uri
    assert _file_sha256(v2.artifact_uri) == v2.sha256
    assert registry.load_model(model, "v2").info == v2
    third = _register_once(registry, model, population)
    assert (third.outcome, third.record.version) == ("exists", "v2")
    # a person's registration is not once-per-creator: it always makes a new version
    assert _register(registry, model, population, created_by="rot:r1").version == "v3"


def test_an_altered_default_is_not_abandoned(registry, population):
    model = _name()
    first = _register_once(registry, model, population)
    registry.set_default(model, "v1", changed_by="person:test")
    _flip_last_byte(first.record.artifact_uri)
    with pytest.raises(RegistryError, match="it is the default"):
        _register_once(registry, model, population)
    assert [(v.version, v.status) for v in registry.list_versions(model)] == \
        [("v1", "ready")]


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
    # a retried promotion that already happened is a no-op, not a conflict
    assert registry.set_default(model, "v1", changed_by="rot:r3", if_current="v2") is None
    assert registry.get_model(model).default_version == "v1"
    assert len(registry.history(model)) == 3
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
