"""The estimators rotwatch can train, by name, and how a version is scored.

Both ``rotwatch model train`` (a person bootstrapping v1) and the trainer (building
vN+1 from feedback) pick an estimator here, so a version's recorded ``estimator`` and
``params`` always mean the same thing and can be rebuilt with :func:`make_estimator`.

>>> est = make_estimator("decision-tree", {"max_depth": 3})
>>> est.get_params()["max_depth"]
3
"""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["ESTIMATORS", "DEFAULT_ESTIMATOR", "make_estimator", "recorded_params",
           "holdout_metrics", "accuracy"]

# name -> (import path, default parameters). Defaults are chosen for labels inferred
# from feedback, which are noisy: a tree needs leaves of a few rows not to memorise
# the noise; forests stay on one core (the machine is shared with the pipeline);
# every estimator is seeded so the same data gives the same version.
ESTIMATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "decision-tree": ("sklearn.tree.DecisionTreeClassifier",
                      {"min_samples_leaf": 5, "random_state": 0}),
    "random-forest": ("sklearn.ensemble.RandomForestClassifier",
                      {"n_estimators": 100, "min_samples_leaf": 2, "n_jobs": 1,
                       "random_state": 0}),
    "logistic-regression": ("sklearn.linear_model.LogisticRegression",
                            {"max_iter": 1000}),
    # histogram boosting: the scikit-learn gradient boosting that scales to 100k+ rows
    "gradient-boosting": ("sklearn.ensemble.HistGradientBoostingClassifier",
                          {"random_state": 0}),
}
DEFAULT_ESTIMATOR = "decision-tree"


def _import(path: str):
    import importlib
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_estimator(name: str, params: Mapping[str, Any] | None = None):
    """An unfitted estimator: the defaults of ``name`` overridden by ``params``."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is not known; choose one of "
                         f"{', '.join(ESTIMATORS)}")
    path, defaults = ESTIMATORS[name]
    cls = _import(path)
    merged = {**defaults, **dict(params or {})}
    try:
        return cls(**merged)
    except TypeError as exc:
        raise ValueError(f"bad parameters {dict(params or {})!r} for {name}: {exc}; "
                         f"see {path}") from None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def recorded_params(estimator) -> dict[str, Any]:
    """The estimator's parameters that can be written down (JSON) and replayed."""
    return {k: v for k, v in sorted(estimator.get_params(deep=False).items())
            if _jsonable(v)}


def accuracy(estimator, X, y) -> float:
    """Share of rows where the estimator predicts the label."""
    import numpy as np
    y = np.asarray(y, dtype=object)
    if len(y) == 0:
        raise ValueError("cannot score on 0 rows; the holdout is empty")
    predicted = np.asarray(estimator.predict(X), dtype=object)
    return float(np.mean(predicted == y))


def holdout_metrics(estimator, X, y) -> dict[str, Any]:
    """Accuracy, balanced accuracy and macro F1 on a holdout (JSON-ready)."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, f1_score

    y = np.asarray(y, dtype=object)
    predicted = np.asarray(estimator.predict(X), dtype=object)
    # sklearn wants one label type: compare as strings, which is exact for ints too
    y_s, p_s = y.astype(str), predicted.astype(str)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y_s, p_s)),
        "f1_macro": float(f1_score(y_s, p_s, average="macro", zero_division=0)),
        "rows": int(len(y)),
    }
