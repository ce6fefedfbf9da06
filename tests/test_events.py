"""The wire formats: one parse/serialise pair each, errors that name the field."""
import datetime as dt
import json

import pytest

from rotwatch.events import (FeedbackEvent, InvalidEvent, ModelUpdate, RotEvent,
                             DriftedFeature, MAX_FEEDBACK_BYTES, to_millis)

T0 = dt.datetime(2026, 12, 3, 10, 0, 0, 123000, tzinfo=dt.timezone.utc)


def _valid(**changes):
    data = {"event_id": "e-1", "model": "zombies", "version": "v1",
            "features": [1.0, 2.5, -3, 4], "prediction": 1, "was_correct": False,
            "event_time": "2026-12-03T10:00:00.123Z"}
    data.update(changes)
    return data


def test_feedback_round_trip_keeps_every_field():
    event = FeedbackEvent.from_dict(_valid(label=0))
    assert event.features == (1.0, 2.5, -3.0, 4.0)
    assert event.event_time == T0
    assert event.correct is False
    assert FeedbackEvent.from_json(event.to_json()) == event
    assert json.loads(event.to_json())["schema_version"] == 1


def test_feedback_attributes_carry_event_time_in_millis():
    event = FeedbackEvent.from_dict(_valid())
    assert event.attributes() == {"event_id": "e-1", "event_ts": str(to_millis(T0)),
                                  "model": "zombies", "version": "v1"}
    assert to_millis(T0) == 1796292000123


def test_create_stamps_id_and_time_to_the_millisecond():
    event = FeedbackEvent.create(model="zombies", version="v2", features=[1, 2],
                                 prediction="cat", label="dog")
    assert len(event.event_id) == 32
    assert event.event_time.microsecond % 1000 == 0
    assert event.correct is False
    assert FeedbackEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize("changes, field, words", [
    ({"event_id": None}, "event_id", "missing"),
    ({"event_id": "bad id with spaces"}, "event_id", "not valid"),
    ({"model": 7}, "model", "expected a string"),
    ({"version": "1"}, "version", "'v1'"),
    ({"features": "1,2"}, "features", "list of numbers"),
    ({"features": []}, "features", "1..2000"),
    ({"features": [1.0, float("nan")]}, "features[1]", "finite"),
    ({"features": [1.0, True]}, "features[1]", "expected a number"),
    ({"prediction": 1.5}, "prediction", "class label"),
    ({"was_correct": "yes"}, "was_correct", "true or false"),
    ({"was_correct": None}, "was_correct", "and/or label"),
    ({"event_time": "yesterday"}, "event_time", "RFC 3339"),
    ({"event_time": "2026-12-03T10:00:00"}, "event_time", "time zone"),
    ({"schema_version": 9}, "schema_version", "not supported"),
])
def test_feedback_errors_name_the_field(changes, field, words):
    with pytest.raises(InvalidEvent) as info:
        FeedbackEvent.from_dict(_valid(**changes))
    assert info.value.field == field
    assert words in info.value.reason


def test_payload_errors():
    with pytest.raises(InvalidEvent, match="not JSON"):
        FeedbackEvent.from_json(b"{not json")
    with pytest.raises(InvalidEvent, match="not UTF-8"):
        FeedbackEvent.from_json(b"\xff\xfe")
    with pytest.raises(InvalidEvent, match="byte limit"):
        FeedbackEvent.from_json(b" " * (MAX_FEEDBACK_BYTES + 1))
    with pytest.raises(InvalidEvent, match="JSON object"):
        FeedbackEvent.from_json(b"[1, 2]")


def test_rot_event_id_is_deterministic_and_round_trips():
    kwargs = dict(model="zombies", version="v1", kind="accuracy", decided_at=T0,
                  window_start=T0 - dt.timedelta(seconds=30), window_end=T0, n=60,
                  accuracy=0.55, baseline_accuracy=0.9, bound=0.68,
                  change_point=T0 - dt.timedelta(seconds=12),
                  drifted_features=(DriftedFeature(2, 0.41),))
    first, second = RotEvent(**kwargs), RotEvent(**kwargs)
    assert first.rot_id == second.rot_id == "zombies.v1.accuracy.1796292000123"
    assert RotEvent.from_json(first.to_json()) == first
    tampered = json.loads(first.to_json())
    tampered["rot_id"] = "zombies.v1.accuracy.1"
    with pytest.raises(InvalidEvent, match="does not match"):
        RotEvent.from_dict(tampered)
    with pytest.raises(InvalidEvent, match="kind"):
        RotEvent(**{**kwargs, "kind": "vibes"})


def test_model_update_round_trip():
    update = ModelUpdate(model="zombies", default_version="v2", previous_version="v1",
                         changed_by="trainer", reason="rot zombies.v1.accuracy.1",
                         changed_at=T0)
    assert ModelUpdate.from_json(update.to_json()) == update
    with pytest.raises(InvalidEvent, match="default_version"):
        ModelUpdate.from_json(b'{"model": "zombies", "default_version": "2",'
                              b' "changed_at": "2026-12-03T10:00:00Z"}')
