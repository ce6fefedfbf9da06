"""Training in a child process: success, an exception, a hard crash, a hang."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from trainer.train import (TrainingCrashed, TrainingFailed, TrainingTimeout,
                           train_in_child)

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 10)
Y = np.array([0, 1, 1, 0] * 10)


# Fit functions run in the spawned child, which imports this module by name.
def raising_fit(X, y, estimator, params):
    raise MemoryError("pretend the data did not fit")


def dying_fit(X, y, estimator, params):
    os._exit(3)          # what a crash in native code looks like from outside


def hanging_fit(X, y, estimator, params):
    time.sleep(600)


def test_fits_in_a_child_and_returns_the_model():
    fitted = train_in_child(X, Y, "decision-tree", {"min_samples_leaf": 1},
                            time_limit_s=60)
    assert fitted.predict([[1.0, 0.0], [1.0, 1.0]]).tolist() == [1, 0]
    assert fitted.get_params()["min_samples_leaf"] == 1


def test_an_exception_in_training_is_reported():
    with pytest.raises(TrainingFailed, match="MemoryError: pretend"):
        train_in_child(X, Y, "decision-tree", {}, time_limit_s=60, fit=raising_fit)


def test_a_crashed_child_is_a_failure_not_a_crash_here():
    with pytest.raises(TrainingCrashed, match="exit code 3"):
        train_in_child(X, Y, "decision-tree", {}, time_limit_s=60, fit=dying_fit)


def test_a_hanging_fit_is_stopped_at_the_time_limit():
    started = time.monotonic()
    with pytest.raises(TrainingTimeout, match="longer than 2 s"):
        train_in_child(X, Y, "decision-tree", {}, time_limit_s=2, fit=hanging_fit)
    assert time.monotonic() - started < 10
