"""Label inference from feedback and dataset building (pure, no emulator)."""
from __future__ import annotations

import datetime as dt

import numpy as np

from trainer.dataset import FeedbackRow, build_dataset, dedupe
from trainer.labels import infer_label, infer_labels

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)


def test_label_wins_over_everything():
    assert infer_label(prediction=1, was_correct=True, label=0, classes=[0, 1]) == 0
    assert infer_label(prediction=2, was_correct=False, label=1, classes=[0, 1, 2]) == 1
    assert infer_label(prediction=1, was_correct=None, label=1, classes=[0, 1]) == 1


def test_correct_prediction_is_the_label():
    assert infer_label(prediction=1, was_correct=True, label=None, classes=[0, 1]) == 1
    assert infer_label(prediction="b", was_correct=True, label=None,
                       classes=["a", "b", "c"]) == "b"


def test_binary_incorrect_is_the_other_class():
    assert infer_label(prediction=1, was_correct=False, label=None, classes=[0, 1]) == 0
    assert infer_label(prediction=0, was_correct=False, label=None, classes=[0, 1]) == 1
    assert infer_label(prediction="human", was_correct=False, label=None,
                       classes=["human", "zombie"]) == "zombie"


def test_multiclass_incorrect_without_label_is_excluded_and_counted():
    result = infer_labels([(0, True, None), (1, False, None), (2, False, None),
                           (2, False, 0), (0, None, None)], classes=[0, 1, 2])
    assert result.labels == [0, 0]
    assert result.kept == [0, 3]
    assert result.excluded == {"multiclass-incorrect-without-label": 2, "no-verdict": 1}
    assert result.excluded_total == 3


def test_binary_incorrect_prediction_outside_the_classes_is_excluded():
    result = infer_labels([(7, False, None), (1, False, None)], classes=[0, 1])
    assert result.labels == [0]
    assert result.excluded == {"prediction-not-a-known-class": 1}


def _row(i, features=(0.1, 0.2), prediction=1, was_correct=True, label=None, minutes=0):
    return FeedbackRow(event_id=f"e{i}", event_time=T0 + dt.timedelta(minutes=minutes),
                       version="v1", features=features, prediction=prediction,
                       was_correct=was_correct, label=label)


def test_dedupe_keeps_one_row_per_event_id_in_time_order():
    rows = dedupe([_row(2, minutes=5), _row(1, minutes=1), _row(2, minutes=9),
                   _row(3, minutes=0)])
    assert [r.event_id for r in rows] == ["e3", "e1", "e2"]
    assert rows[-1].event_time == T0 + dt.timedelta(minutes=5)


def test_build_dataset_labels_and_drops_wrong_width():
    rows = [_row(1, prediction=1, was_correct=True), _row(2, prediction=1, was_correct=False),
            _row(3, features=(1.0,), prediction=0), _row(4, prediction=0, label=1)]
    data = build_dataset(rows, classes=[0, 1], n_features=2)
    assert data.y.tolist() == [1, 0, 1]
    assert data.y.dtype == np.int64
    assert data.X.shape == (3, 2)
    assert data.read_rows == 4
    assert data.excluded == {"wrong-feature-count": 1}
    assert data.classes == [0, 1]
