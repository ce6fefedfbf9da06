"""Beam's own Datastore connectors (``datastoreio`` v1new) against the local emulator.

``WriteToDatastore`` commits upserts in batches; ``ReadFromDatastore`` with
``num_splits`` asks the emulator for ``__scatter__``-ordered keys to split the kind
into key ranges and reads each range. Both run batch on the FnApiRunner (the
DirectRunner would first try to download Prism).

    .venv/bin/python -m pytest tests/test_beam_datastore.py -q
"""
from __future__ import annotations


import pytest

apache_beam = pytest.importorskip("apache_beam")

import apache_beam as beam  # noqa: E402
from apache_beam.io.gcp.datastore.v1new import helper, query_splitter  # noqa: E402
from apache_beam.io.gcp.datastore.v1new.datastoreio import (  # noqa: E402
    ReadFromDatastore, WriteToDatastore)
from apache_beam.io.gcp.datastore.v1new.types import Entity, Key, Query  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402


# Beam's own statistics query passes filters positionally; the client warns about it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Detected filter using positional arguments:UserWarning")

PROJECT = "local-project"
KIND = "BeamThing"
COUNT = 3000  # six full commits of 500, and enough keys for four scatter splits


@pytest.fixture(scope="module")
def emulator(beam_datastore):
    return beam_datastore


def _entity(i: int) -> Entity:
    entity = Entity(Key([KIND, f"e{i:05d}"], project=PROJECT))
    entity.set_properties({"i": i, "square": i * i, "label": f"item-{i}"})
    return entity


def _options() -> PipelineOptions:
    return PipelineOptions(["--project", PROJECT])


def _as_tuple(entity: Entity):
    props = entity.properties
    return entity.key.path_elements[-1], props["i"], props["square"], props["label"]


@pytest.fixture(scope="module")
def written(emulator):
    """The kind as Beam's WriteToDatastore left it: COUNT entities."""
    with beam.Pipeline(runner=FnApiRunner(), options=_options()) as pipeline:
        _ = (pipeline
             | "MakeEntities" >> beam.Create(range(COUNT))
             | "ToEntity" >> beam.Map(_entity)
             | "Write" >> WriteToDatastore(PROJECT, throttle_rampup=False))
    return [(f"e{i:05d}", i, i * i, f"item-{i}") for i in range(COUNT)]


def test_write_then_read_with_splits_round_trips_every_entity(written):
    with beam.Pipeline(runner=FnApiRunner(), options=_options()) as pipeline:
        read = (pipeline
                | "Read" >> ReadFromDatastore(Query(kind=KIND, project=PROJECT),
                                              num_splits=4)
                | "ToTuple" >> beam.Map(_as_tuple))
        assert_that(read, equal_to(written))


def test_scatter_keys_split_the_kind_into_balanced_disjoint_ranges(written):
    client = helper.get_client(PROJECT, None)
    splits = query_splitter.get_splits(client, Query(kind=KIND, project=PROJECT), 4)
    assert len(splits) == 4
    parts = [[e.key.name for e in split._to_client_query(client).fetch()]
             for split in splits]
    assert sorted(n for part in parts for n in part) == [w[0] for w in written]
    # Beam splits at every 32nd of the 96 sorted scatter keys it asks for, so the
    # last range holds only what lies past the largest sample: about 1/97 of the kind.
    assert [COUNT / 8 < len(part) < COUNT / 2 for part in parts] == [True] * 3 + [False]
    assert 0 < len(parts[-1]) < COUNT / 8


def test_read_without_num_splits_sizes_splits_from_statistics(written):
    client = helper.get_client(PROJECT, None)
    query = Query(kind=KIND, project=PROJECT)
    size = ReadFromDatastore._SplitQueryFn.get_estimated_size_bytes(client, query)
    assert 30 * COUNT < size < 200 * COUNT
    with beam.Pipeline(runner=FnApiRunner(), options=_options()) as pipeline:
        count = (pipeline
                 | "Read" >> ReadFromDatastore(query)
                 | "Count" >> beam.combiners.Count.Globally())
        assert_that(count, equal_to([COUNT]))
