"""The pipeline's Datastore sink encodes entities itself: the same protobuf as the client.

:class:`pipelines.store.EncodingWriteToDatastore` is Beam's ``WriteToDatastore`` with
its per-entity hooks encoding a Beam ``Entity`` straight to protobuf. Every mutation
it adds to a batch must equal the one ``google-cloud-datastore`` adds for
``entity.to_client_entity()``; values it does not encode take the client's path
(and its errors). Then a real write through the emulator, read back with the client.

    .venv/bin/python -m pytest tests/test_store_encoding.py -q
"""
from __future__ import annotations

import datetime as dt
import os

import pytest

apache_beam = pytest.importorskip("apache_beam")

import apache_beam as beam  # noqa: E402
from apache_beam.io.gcp.datastore.v1new.datastoreio import WriteToDatastore  # noqa: E402
from apache_beam.io.gcp.datastore.v1new.types import Entity, Key  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402
from google.cloud import datastore  # noqa: E402
from google.cloud.datastore.helpers import GeoPoint  # noqa: E402

from pipelines.checkpoint import checkpoint_entity  # noqa: E402
from pipelines.store import (EncodingWriteToDatastore, _EncodingWriteFn,  # noqa: E402
                             entity_pb, feedback_entity, make_entity)
from rotwatch.events import FeedbackEvent  # noqa: E402

PROJECT = "local-project"
UTC = dt.timezone.utc


class _NoOffset(dt.tzinfo):
    """A tzinfo that knows no offset: such a datetime counts as naive."""

    def utcoffset(self, _when):
        return None


def _client():
    """A client that is never contacted: a batch only builds mutations until commit."""
    if os.environ.get("DATASTORE_EMULATOR_HOST"):
        return datastore.Client(project=PROJECT)
    from google.auth.credentials import AnonymousCredentials
    return datastore.Client(project=PROJECT, credentials=AnonymousCredentials())


def _mutations(entity: Entity, fn_class) -> list:
    """The raw mutation protobufs Beam's write DoFn (``fn_class``) adds for ``entity``."""
    fn = fn_class(PROJECT)
    fn._client = _client()
    fn._init_batch()
    item = fn.element_to_client_batch_item(entity)
    fn.add_to_batch(item)
    return [m._pb for m in fn._batch.mutations]


def _same_as_client(entity: Entity, encoded: bool = True):
    ours = _mutations(entity, _EncodingWriteFn)
    theirs = _mutations(entity, WriteToDatastore._DatastoreWriteFn)
    assert ours == theirs
    assert (ours[0].SerializeToString(deterministic=True)
            == theirs[0].SerializeToString(deterministic=True))
    assert (entity_pb(entity) is not None) is encoded
    return ours[0].upsert


def _event(**overrides):
    fields = dict(model="zombies", version="v3", features=[0.5, -1.25, 3.0, 1e-9],
                  prediction=1, was_correct=True)
    fields.update(overrides)
    return FeedbackEvent.create(**fields)


@pytest.mark.parametrize("namespace", [None, "", "ns-1"])
def test_feedback_entities_encode_as_the_client_does(namespace):
    for event in (_event(), _event(was_correct=None, label=0),
                  _event(prediction="cat", label="dog", was_correct=False)):
        pb = _same_as_client(feedback_entity(event, PROJECT, namespace))
        assert pb.key.path[0].name == event.event_id
        assert pb.properties["features"].array_value.values[0].exclude_from_indexes
        assert pb.key.partition_id.namespace_id == (namespace or "")


def test_state_entities_encode_as_the_client_does():
    _same_as_client(checkpoint_entity("projects/p/subscriptions/s",
                                      dt.datetime(2026, 12, 3, 10, tzinfo=UTC), PROJECT,
                                      "ns"))
    _same_as_client(make_entity("WindowMetric", "zombies/v1/a/b", {
        "n": 120, "accuracy": 0.875, "drift": '{"rows": 3}', "pane": 2,
        "updated_at": dt.datetime.now(UTC)}, PROJECT, "ns", unindexed=("drift",)))


@pytest.mark.parametrize("value", [
    0, -1, 2 ** 63 - 1, -(2 ** 63), 1.5, float("inf"), -0.0, True, False, "", "zombie ☠",
    "x" * 2000, b"", b"\x00\xff", None, [], [1, "a", None, 2.5, False],
    [dt.datetime(2026, 1, 1, tzinfo=UTC)],
    dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
    dt.datetime(2026, 12, 3, 10, 0, 0, 123456),          # naive: taken as UTC
    dt.datetime(2026, 12, 3, 10, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
    dt.datetime(2026, 12, 3, 10, 0, 0, 5, tzinfo=_NoOffset()),
])
@pytest.mark.parametrize("unindexed", [False, True])
def test_values_encode_as_the_client_does(value, unindexed):
    entity = make_entity("Thing", "a", {"v": value, "other": 1}, PROJECT, "ns",
                         unindexed=("v",) if unindexed else ())
    _same_as_client(entity)


@pytest.mark.parametrize("path", [["K", 7], ["K", 2 ** 63 - 1], ["Parent", "p", "K", 3],
                                  ["Parent", 1, "K", "n"]])
def test_keys_encode_as_the_client_does(path):
    entity = Entity(Key(path, project=PROJECT, namespace="ns"))
    entity.set_properties({"x": 1})
    _same_as_client(entity)


def test_a_key_without_project_gets_the_writes_project():
    entity = Entity(Key(["K", "a"]))
    entity.set_properties({"x": 1})
    pb = _same_as_client(entity)
    assert pb.key.partition_id.project_id == PROJECT


@pytest.mark.parametrize("value", [
    Key(["Other", "o"], project=PROJECT), {"nested": 1}, GeoPoint(1.0, 2.0), [[1, 2]],
    [Key(["Other", 1], project=PROJECT)],
])
def test_what_it_does_not_encode_goes_the_clients_way(value):
    entity = make_entity("Thing", "a", {"v": value}, PROJECT, "ns")
    assert entity_pb(entity) is None
    _same_outcome(entity)


def _same_outcome(entity: Entity):
    """The client's mutation, or the client's error, for ``entity`` either way."""
    try:
        theirs = _mutations(entity, WriteToDatastore._DatastoreWriteFn)
    except Exception as exc:   # the client refuses it: so must we, the same way
        with pytest.raises(type(exc)):
            _mutations(entity, _EncodingWriteFn)
        return
    assert _mutations(entity, _EncodingWriteFn) == theirs


def test_parents_and_odd_keys_go_the_clients_way():
    parent = Key(["P", "p"], project=PROJECT)
    child = Entity(Key(["C", "c"], parent=parent, project=PROJECT))
    child.set_properties({"x": 1})
    _same_as_client(child, encoded=False)
    for path in (["K"], ["K", 0], ["K", -5], ["K", 1.5], [3, "a"], ["K", True]):
        entity = Entity(Key(path, project=PROJECT))
        assert entity_pb(entity) is None
        _same_outcome(entity)


def test_another_project_is_refused_as_the_client_does():
    entity = Entity(Key(["K", "a"], project="other-project"))
    for fn_class in (_EncodingWriteFn, WriteToDatastore._DatastoreWriteFn):
        with pytest.raises(ValueError, match="same project"):
            _mutations(entity, fn_class)


@pytest.fixture(scope="module")
def emulator(beam_datastore):
    return beam_datastore


def test_written_through_the_emulator_reads_back_as_with_beams_write(emulator):
    events = [_event(was_correct=i % 3 == 0, label=None if i % 2 else i % 2)
              for i in range(1200)]
    read = {}
    for namespace, write in (("encoded", EncodingWriteToDatastore),
                             ("beam", WriteToDatastore)):
        with beam.Pipeline(runner=FnApiRunner(),
                           options=PipelineOptions(["--project", PROJECT])) as p:
            _ = (p | beam.Create(events)
                 | beam.Map(feedback_entity, PROJECT, namespace,
                            dt.datetime(2026, 12, 3, tzinfo=UTC))
                 | write(PROJECT, throttle_rampup=False))
        client = datastore.Client(project=PROJECT, namespace=namespace)
        read[namespace] = {e.key.name: dict(e) for e in client.query(kind="Feedback").fetch()}
    assert len(read["encoded"]) == len(events)
    assert read["encoded"] == read["beam"]
    stored = read["encoded"][events[0].event_id]
    assert stored["features"] == list(events[0].features)
    assert stored["event_time"] == events[0].event_time


def test_a_refused_commit_fails_the_bundle_with_datastores_reason(emulator):
    """Commits run off the bundle's thread, but a refusal still reaches the bundle:
    finish_bundle raises it (the runner retries the bundle; nothing is reported
    written that was not)."""
    fn = _EncodingWriteFn(PROJECT)
    fn.start_bundle()
    twice, other = _event(), _event()
    for event in (twice, other, twice):   # one key twice in a commit: refused
        fn.process(feedback_entity(event, PROJECT, "refused"))
    with pytest.raises(Exception, match="two mutations of the same key"):
        fn.finish_bundle()
    client = datastore.Client(project=PROJECT, namespace="refused")
    assert client.get(client.key("Feedback", other.event_id)) is None


def test_full_batches_commit_while_the_bundle_goes_on(emulator):
    """Full batches commit during the bundle, the rest at its end; all are stored
    when finish_bundle returns and every commit's latency reached the sizer."""
    fn = _EncodingWriteFn(PROJECT)
    fn.start_bundle()
    target = fn._target_batch_size
    events = [_event() for _ in range(target * 3 + 7)]
    for event in events[:target * 3]:
        fn.process(feedback_entity(event, PROJECT, "overlap"))
    # full batches were handed to the commit thread during the bundle
    assert fn._committing is not None
    for event in events[target * 3:]:
        fn.process(feedback_entity(event, PROJECT, "overlap"))
    fn.finish_bundle()
    assert fn._committing is None and fn._committer is None
    client = datastore.Client(project=PROJECT, namespace="overlap")
    query = client.aggregation_query(client.query(kind="Feedback")).count(alias="n")
    assert next(iter(query.fetch()))[0].value == len(events)
    import time
    # the first batch (Beam's initial size) and at least one after it; the sizer
    # grows the target from the first latency on
    assert fn._batch_sizer._commit_time_per_entity_ms.count(time.time() * 1000) >= 2
