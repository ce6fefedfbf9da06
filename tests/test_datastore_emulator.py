"""The Datastore emulator, driven through the official google-cloud-datastore client.

Every test talks gRPC to a real emulator (in memory, one per module) and asserts the
values the client hands back. Raw requests (an ``insert`` mutation, a 600-mutation
commit, a deferred lookup, GQL) go through the client's own GAPIC layer.

    .venv/bin/python -m pytest tests/test_datastore_emulator.py -q
"""
from __future__ import annotations

import datetime
import os
import re
import threading

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import datastore
from google.cloud.datastore.helpers import GeoPoint
from google.cloud.datastore.query import And, Or, PropertyFilter
from google.cloud.datastore_v1 import DatastoreClient
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport

from emulators.datastore import DatastoreEmulator
from rotwatch.environ import scoped_environ

PROJECT = "local-project"
_ENV = ("DATASTORE_EMULATOR_HOST", "DATASTORE_PROJECT_ID")


def _start(data_dir=None) -> DatastoreEmulator:
    emulator = DatastoreEmulator(data_dir=data_dir).start()
    os.environ["DATASTORE_EMULATOR_HOST"] = emulator.address
    os.environ["DATASTORE_PROJECT_ID"] = PROJECT
    return emulator


@pytest.fixture(scope="module")
def emulator():
    with scoped_environ(keep=_ENV):
        emulator = _start()
        try:
            yield emulator
        finally:
            emulator.stop()


@pytest.fixture
def client(emulator, request):
    """A client in a namespace of its own, so tests never see each other's data."""
    os.environ["DATASTORE_EMULATOR_HOST"] = emulator.address
    return datastore.Client(project=PROJECT,
                            namespace=re.sub(r"[^\w.-]", "_", request.node.name)[:90])


@pytest.fixture
def gapic(emulator):
    """The client's generated layer, for requests the high-level client never sends."""
    channel = grpc.insecure_channel(emulator.address)
    yield DatastoreClient(transport=DatastoreGrpcTransport(channel=channel))
    channel.close()


def _numbers(client, kind="Num", count=20):
    entities = []
    for i in range(count):
        entity = datastore.Entity(client.key(kind, i + 1))
        entity.update(i=i, parity=i % 2, third=i % 3, tags=[f"t{i % 4}", "all"],
                      name=f"n{i:02d}")
        entities.append(entity)
    client.put_multi(entities)
    return entities


def _ids(results):
    return sorted(e["i"] for e in results)


def _keys_only(query):
    query.keys_only()  # changes the query in place, returns None
    return query


def _query(client, *filters, kind="Num", **kwargs):
    query = client.query(kind=kind, **kwargs)
    for f in filters:
        query.add_filter(filter=f)
    return query


# -- entities --------------------------------------------------------------------------
def test_put_get_update_delete_round_trips_every_value_type(client):
    when = datetime.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=datetime.timezone.utc)
    inner = datastore.Entity()
    inner.update(a=1, b="two")
    entity = datastore.Entity(client.key("Thing", "t1"), exclude_from_indexes=("blob",))
    entity.update(i=7, f=2.5, s="héllo", blob=b"\x00\x01", yes=True, when=when,
                  tags=["a", "b"], ref=client.key("Other", 9), geo=GeoPoint(1.5, -2.5),
                  inner=inner, nothing=None)
    client.put(entity)

    got = client.get(client.key("Thing", "t1"))
    assert dict(got) == dict(entity)
    assert got["when"] == when and got["ref"] == client.key("Other", 9)
    assert got.exclude_from_indexes == {"blob"}

    got["i"] = 8
    client.put(got)
    assert client.get(got.key)["i"] == 8
    client.delete(got.key)
    assert client.get(got.key) is None


def test_insert_of_existing_key_is_already_exists(client, gapic):
    client.put(datastore.Entity(client.key("Thing", "dup")))
    mutation = {"insert": {"key": client.key("Thing", "dup").to_protobuf()}}
    with pytest.raises(exceptions.AlreadyExists, match="already exists"):
        gapic.commit(request={"project_id": PROJECT, "mode": "NON_TRANSACTIONAL",
                              "mutations": [mutation]})


def test_update_of_missing_key_is_not_found(client, gapic):
    mutation = {"update": {"key": client.key("Thing", "ghost").to_protobuf()}}
    with pytest.raises(exceptions.NotFound, match="no entity to update"):
        gapic.commit(request={"project_id": PROJECT, "mode": "NON_TRANSACTIONAL",
                              "mutations": [mutation]})
    assert client.get(client.key("Thing", "ghost")) is None


def test_incomplete_keys_get_distinct_ids(client):
    entities = [datastore.Entity(client.key("Auto")) for _ in range(5)]
    for n, entity in enumerate(entities):
        entity["n"] = n
    client.put_multi(entities)
    ids = [e.key.id for e in entities]
    assert all(ids) and len(set(ids)) == 5
    assert [client.get(e.key)["n"] for e in entities] == [0, 1, 2, 3, 4]


def test_commit_of_more_than_500_mutations_is_refused_and_writes_nothing(client):
    entities = [datastore.Entity(client.key("Many", i + 1)) for i in range(501)]
    with pytest.raises(exceptions.InvalidArgument, match="at most 500 mutations"):
        client.put_multi(entities)
    assert list(client.query(kind="Many").fetch()) == []
    client.put_multi(entities[:500])
    assert len(list(_keys_only(client.query(kind="Many")).fetch())) == 500


def test_two_mutations_of_one_key_in_a_commit_are_refused(client):
    first, second = (datastore.Entity(client.key("Twice", "k")) for _ in range(2))
    with pytest.raises(exceptions.InvalidArgument, match="two mutations of the same key"):
        client.put_multi([first, second])


def test_entity_over_1_mib_is_refused(client):
    entity = datastore.Entity(client.key("Huge", 1), exclude_from_indexes=("data",))
    entity["data"] = b"x" * (1024 * 1024 + 1)
    with pytest.raises(exceptions.InvalidArgument, match="larger than"):
        client.put(entity)
    entity["data"] = b"x" * (1000 * 1000)
    client.put(entity)
    assert len(client.get(entity.key)["data"]) == 1000 * 1000


def test_indexed_string_over_1500_bytes_is_refused(client):
    entity = datastore.Entity(client.key("Long", 1))
    entity["text"] = "y" * 1501
    with pytest.raises(exceptions.InvalidArgument, match="exclude it from indexes"):
        client.put(entity)


def test_lookup_defers_beyond_1000_keys_and_the_client_fetches_the_rest(client, gapic):
    entities = [datastore.Entity(client.key("Bulk", i + 1)) for i in range(1200)]
    for start in range(0, 1200, 500):
        client.put_multi(entities[start:start + 500])
    keys = [e.key for e in entities]
    raw = gapic.lookup(request={"project_id": PROJECT,
                                "keys": [k.to_protobuf() for k in keys]})
    assert len(raw.found) == 1000 and len(raw.deferred) == 200
    batch = gapic.run_query(request={"project_id": PROJECT, "partition_id": {
        "namespace_id": client.namespace}, "query": {"kind": [{"name": "Bulk"}]}}).batch
    assert len(batch.entity_results) == 1000 and batch.more_results.name == "NOT_FINISHED"
    assert len(list(client.query(kind="Bulk").fetch())) == 1200
    missing = []
    found = client.get_multi(keys + [client.key("Bulk", 99999)], missing=missing)
    assert sorted(e.key.id for e in found) == list(range(1, 1201))
    assert [m.key.id for m in missing] == [99999]


# -- queries ---------------------------------------------------------------------------
@pytest.mark.parametrize("op, value, expected", [
    ("=", 4, [4]), ("<", 3, [0, 1, 2]), ("<=", 2, [0, 1, 2]),
    (">", 17, [18, 19]), (">=", 18, [18, 19]),
    ("!=", 5, [i for i in range(20) if i != 5]),
    ("IN", [3, 5, 99], [3, 5]),
    ("NOT_IN", list(range(2, 20)), [0, 1]),
])
def test_each_filter_operator(client, op, value, expected):
    _numbers(client)
    assert _ids(_query(client, PropertyFilter("i", op, value)).fetch()) == expected


def test_array_properties_match_filters_per_element(client):
    _numbers(client)
    one_tag = _query(client, PropertyFilter("tags", "=", "t1"))
    assert _ids(one_tag.fetch()) == [1, 5, 9, 13, 17]
    assert len(list(_query(client, PropertyFilter("tags", "=", "all")).fetch())) == 20
    assert _ids(_query(client, PropertyFilter("tags", "IN", ["t0", "t3"]),
                       PropertyFilter("i", "<", 8)).fetch()) == [0, 3, 4, 7]


def test_and_or_composite_filters(client):
    _numbers(client)
    both = And([PropertyFilter("parity", "=", 0), PropertyFilter("i", ">=", 14)])
    assert _ids(_query(client, both).fetch()) == [14, 16, 18]
    either = Or([PropertyFilter("i", "<", 2), PropertyFilter("name", "=", "n19")])
    assert _ids(_query(client, either).fetch()) == [0, 1, 19]
    nested = Or([And([PropertyFilter("third", "=", 0), PropertyFilter("i", ">", 15)]),
                 PropertyFilter("i", "=", 1)])
    assert _ids(_query(client, nested).fetch()) == [1, 18]


def test_ordering_by_several_properties(client):
    _numbers(client)
    query = client.query(kind="Num", order=["-parity", "i"])
    got = [(e["parity"], e["i"]) for e in query.fetch()]
    assert got == sorted(((i % 2, i) for i in range(20)), key=lambda p: (-p[0], p[1]))
    query = client.query(kind="Num", order=["third", "-i"])
    got = [(e["third"], e["i"]) for e in query.fetch()]
    assert got == sorted(((i % 3, i) for i in range(20)), key=lambda p: (p[0], -p[1]))


def test_mixed_types_sort_in_datastore_value_order(client):
    day = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    values = [True, "b", 2.5, None, 1, b"a", day, client.key("K", 1), GeoPoint(0, 0), -3]
    for n, value in enumerate(values):
        entity = datastore.Entity(client.key("Mixed", n + 1))
        entity["v"] = value
        client.put(entity)
    got = [e["v"] for e in client.query(kind="Mixed", order=["v"]).fetch()]
    assert got == [None, -3, 1, 2.5, day, True, b"a", "b", client.key("K", 1),
                   GeoPoint(0, 0)]


def test_limit_and_offset(client):
    _numbers(client)
    query = client.query(kind="Num", order=["i"])
    assert [e["i"] for e in query.fetch(limit=3, offset=5)] == [5, 6, 7]
    assert [e["i"] for e in query.fetch(offset=18)] == [18, 19]
    assert list(query.fetch(limit=0)) == []


@pytest.mark.parametrize("order", [[], ["-name"]])
def test_cursor_paging_returns_every_entity_once(client, order):
    _numbers(client, count=50)
    seen, cursor, pages = [], None, 0
    while True:
        iterator = client.query(kind="Num", order=order).fetch(limit=7, start_cursor=cursor)
        page = list(next(iterator.pages))
        seen += [e["i"] for e in page]
        pages += 1
        cursor = iterator.next_page_token
        if cursor is None:
            break
    assert pages == 8 and len(seen) == 50 and sorted(seen) == list(range(50))
    if order:
        assert seen == sorted(range(50), reverse=True)


def test_end_cursor_stops_the_query(client):
    _numbers(client)
    iterator = client.query(kind="Num", order=["i"]).fetch(limit=5)
    list(iterator)
    end = iterator.next_page_token
    got = [e["i"] for e in client.query(kind="Num", order=["i"]).fetch(end_cursor=end)]
    assert got == [0, 1, 2, 3, 4]


def test_projection_keys_only_and_distinct_on(client):
    _numbers(client)
    projected = client.query(kind="Num", projection=["i", "name"], order=["i"])
    rows = list(projected.fetch(limit=2))
    assert [dict(r) for r in rows] == [{"i": 0, "name": "n00"}, {"i": 1, "name": "n01"}]
    keys = list(_keys_only(client.query(kind="Num", order=["-i"])).fetch(limit=3))
    assert [k.key.id for k in keys] == [20, 19, 18] and all(dict(k) == {} for k in keys)
    distinct = client.query(kind="Num", projection=["third"], distinct_on=["third"],
                            order=["third"])
    assert [dict(r) for r in distinct.fetch()] == [{"third": 0}, {"third": 1}, {"third": 2}]


def test_key_filters_and_key_order(client):
    _numbers(client)
    query = client.query(kind="Num", order=["-__key__"])
    query.add_filter(filter=PropertyFilter("__key__", ">", client.key("Num", 5)))
    query.add_filter(filter=PropertyFilter("__key__", "<=", client.key("Num", 8)))
    assert [e.key.id for e in query.fetch()] == [8, 7, 6]


def test_ancestor_queries(client):
    parent = client.key("Model", "zombie")
    other = client.key("Model", "human")
    for model in (parent, other):
        for v in range(3):
            child = datastore.Entity(client.key("ModelVersion", v + 1, parent=model))
            child["v"] = v
            client.put(child)
    client.put(datastore.Entity(parent))
    got = client.query(kind="ModelVersion", ancestor=parent, order=["-v"]).fetch()
    assert [(e.key.parent, e["v"]) for e in got] == [(parent, 2), (parent, 1), (parent, 0)]
    kindless = client.query(ancestor=parent).fetch()
    assert [e.key.flat_path for e in kindless] == [
        ("Model", "zombie"), *[("Model", "zombie", "ModelVersion", v) for v in (1, 2, 3)]]


def test_namespaces_are_separate(emulator):
    first = datastore.Client(project=PROJECT, namespace="ns-one")
    second = datastore.Client(project=PROJECT, namespace="ns-two")
    for client, value in ((first, 1), (second, 2)):
        entity = datastore.Entity(client.key("Same", "k"))
        entity["v"] = value
        client.put(entity)
    assert first.get(first.key("Same", "k"))["v"] == 1
    assert second.get(second.key("Same", "k"))["v"] == 2
    assert [e["v"] for e in second.query(kind="Same").fetch()] == [2]
    listing = first.query(kind="__namespace__", namespace="")
    namespaces = {e.key.id_or_name for e in listing.fetch()}
    assert {"ns-one", "ns-two"} <= namespaces


def test_aggregations_count_sum_avg(client):
    _numbers(client)
    query = _query(client, PropertyFilter("parity", "=", 1))
    result = {r.alias: r.value for r in next(iter(
        client.aggregation_query(query).count(alias="n").sum("i", alias="total")
        .avg("i", alias="mean").fetch()))}
    assert result == {"n": 10, "total": 100, "mean": 10.0}
    limited = client.aggregation_query(client.query(kind="Num")).count(alias="n")
    assert next(iter(limited.fetch(limit=4)))[0].value == 4


def test_count_without_filters_matches_a_scan(client):
    """A plain COUNT is answered from SQL; it must agree with counting what a query
    returns (limit, keys-only, ancestors, other kinds, namespaces)."""
    _numbers(client)
    _numbers(client, kind="Other", count=3)
    parent = client.key("Num", 1)
    child = datastore.Entity(client.key("Num", 1, "Child", "c"))
    client.put(child)

    def count(query, **fetch):
        return next(iter(client.aggregation_query(query).count(alias="n")
                         .fetch(**fetch)))[0].value

    assert count(client.query(kind="Num")) == 20
    assert count(client.query(kind="Other")) == 3
    assert count(client.query(kind="Child")) == 1
    assert count(client.query(kind="Num"), limit=25) == 20
    assert count(client.query(kind="Num"), limit=7) == 7
    keys_only = client.query(kind="Num")
    keys_only.keys_only()
    assert count(keys_only) == 20
    assert count(client.query(kind="Num", ancestor=parent)) == 1
    assert count(client.query(kind="Missing")) == 0
    other = datastore.Client(project=client.project, namespace=client.namespace + "-x")
    assert next(iter(other.aggregation_query(other.query(kind="Num"))
                     .count(alias="n").fetch()))[0].value == 0
    assert len(list(client.query(kind="Num").fetch())) == 20


def test_statistics_and_gql(client, gapic):
    _numbers(client)
    totals = list(client.query(kind="__Stat_Ns_Total__").fetch())
    assert totals[0]["count"] == 20 and totals[0]["bytes"] > 0
    with pytest.raises(exceptions.MethodNotImplemented, match="GQL"):
        gapic.run_query(request={"project_id": PROJECT,
                                 "gql_query": {"query_string": "SELECT * FROM Num"}})


# -- transactions ----------------------------------------------------------------------
def test_conflicting_transaction_is_aborted_and_a_retry_succeeds(client):
    key = client.key("Counter", "c")
    counter = datastore.Entity(key)
    counter["n"] = 0
    client.put(counter)

    loser = client.transaction()
    loser.begin()
    stale = client.get(key, transaction=loser)
    with client.transaction():
        fresh = client.get(key)
        fresh["n"] += 1
        client.put(fresh)
    stale["n"] += 10
    loser.put(stale)
    with pytest.raises(exceptions.Conflict):  # ABORTED: the client raises Aborted
        loser.commit()
    assert client.get(key)["n"] == 1

    with client.transaction():
        retry = client.get(key)
        retry["n"] += 10
        client.put(retry)
    assert client.get(key)["n"] == 11


def _increment(client, key) -> int:
    for attempt in range(50):
        try:
            with client.transaction():
                entity = client.get(key)
                entity["n"] += 1
                client.put(entity)
            return attempt
        except exceptions.Aborted:
            continue
    raise AssertionError("no attempt got through")


def test_concurrent_transactions_lose_no_update(client):
    key = client.key("Counter", "shared")
    counter = datastore.Entity(key)
    counter["n"] = 0
    client.put(counter)
    retries = []

    def worker():
        own = datastore.Client(project=PROJECT, namespace=client.namespace)
        retries.extend(_increment(own, key) for _ in range(10))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert client.get(key)["n"] == 40 and len(retries) == 40


def test_read_only_transaction(client):
    entity = datastore.Entity(client.key("Doc", 1))
    entity["v"] = "x"
    client.put(entity)
    with client.transaction(read_only=True) as txn:
        assert client.get(entity.key)["v"] == "x"
        with pytest.raises(RuntimeError):
            txn.put(entity)


def test_transaction_begun_by_its_first_read(client):
    key = client.key("Doc", 3)
    with client.transaction(begin_later=True) as txn:
        assert client.get(key) is None
        assert txn.id  # the lookup began it
        entity = datastore.Entity(key)
        entity["v"] = 1
        client.put(entity)
    assert client.get(key)["v"] == 1


def test_rollback_discards_mutations(client):
    key = client.key("Doc", 2)
    with pytest.raises(ZeroDivisionError):
        with client.transaction():
            client.put(datastore.Entity(key))
            raise ZeroDivisionError
    assert client.get(key) is None


# -- ids and persistence ------------------------------------------------------------------
def test_allocate_and_reserve_ids(client):
    allocated = client.allocate_ids(client.key("Alloc"), 3)
    ids = [k.id for k in allocated]
    assert len(set(ids)) == 3 and all(k.kind == "Alloc" for k in allocated)
    reserved = max(ids) + 10
    client.reserve_ids_sequential(client.key("Alloc", reserved), 5)
    later = [k.id for k in client.allocate_ids(client.key("Alloc"), 5)]
    assert min(later) >= reserved + 5


def test_a_data_dir_serves_one_emulator_at_a_time(tmp_path):
    first = DatastoreEmulator(data_dir=str(tmp_path)).start()
    try:
        with pytest.raises(RuntimeError, match="in use by another Datastore emulator"):
            DatastoreEmulator(data_dir=str(tmp_path)).start()
    finally:
        first.stop()


def test_data_survives_a_restart(tmp_path):
    data_dir = tmp_path / "datastore"
    with scoped_environ(keep=_ENV):
        emulator = _start(str(data_dir))
        client = datastore.Client(project=PROJECT)
        entity = datastore.Entity(client.key("Keep", "me"))
        entity["v"] = 42
        client.put(entity)
        emulator.stop()

        emulator = _start(str(data_dir))
        client = datastore.Client(project=PROJECT)
        assert client.get(client.key("Keep", "me"))["v"] == 42
        fresh = datastore.Entity(client.key("Keep"))
        client.put(fresh)
        assert fresh.key.id >= 1 and len(list(client.query(kind="Keep").fetch())) == 2
        emulator.stop()
