"""Reading a rot event's feedback: the client path, older rows, and the Beam path."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from rotwatch import kinds
from rotwatch.config import Settings
from trainer.dataset import read_feedback

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)


def _store(client, model, other, n=240):
    from google.cloud import datastore
    entities = []
    for i in range(n):
        entity = datastore.Entity(client.key(kinds.FEEDBACK, f"{model}-{i}"),
                                  exclude_from_indexes=("features",))
        entity.update({"model": other if i % 4 == 0 else model, "version": "v1",
                       "features": [float(i), 0.5], "prediction": i % 2,
                       "was_correct": i % 3 != 0, "label": None,
                       # microseconds on some rows: the time filter must compare exactly
                       "event_time": T0 + dt.timedelta(seconds=i, microseconds=i * 7)})
        entities.append(entity)
    client.put_multi(entities)


def test_older_share_adds_the_newest_rows_before_the_change_point(emulators):
    from google.cloud import datastore
    client = datastore.Client(project=Settings.from_env().project)
    model, other = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    _store(client, model, other)
    since = T0 + dt.timedelta(seconds=200)       # rows 200..239: 30 of this model

    rows = read_feedback(client, model, since, older_share=0.5)

    assert len(rows) == 30 + 15
    assert rows[0].event_id == f"{model}-181"    # 199..181 hold its 15 newest before 200
    assert [r.event_time for r in rows] == sorted(r.event_time for r in rows)


# Beam's Datastore connector calls the client the old way; not ours to fix.
@pytest.mark.filterwarnings("ignore:Detected filter using positional arguments")
def test_beam_and_client_paths_agree(emulators, tmp_path):
    from google.cloud import datastore
    from trainer.beam_dataset import read_feedback_with_beam

    settings = Settings.from_env(home=str(tmp_path))
    client = datastore.Client(project=settings.project)
    model, other = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    _store(client, model, other)
    since = T0 + dt.timedelta(seconds=61, microseconds=427)   # row 61 exactly

    by_client = read_feedback(client, model, since)
    by_beam = read_feedback_with_beam(settings, model, since)

    assert len(by_client) == 135                   # rows 61..239 but every 4th
    assert by_client[0].event_id == f"{model}-61"  # since is inclusive, to the µs
    assert [(r.event_id, r.event_time, r.features, r.prediction, r.was_correct)
            for r in by_beam] == \
        [(r.event_id, r.event_time, r.features, r.prediction, r.was_correct)
         for r in by_client]
    assert list(tmp_path.joinpath("tmp").rglob("*.jsonl")) == []   # cleaned up
