"""Training labels from feedback: what the true class of each prediction was.

Feedback says whether a prediction was right (``was_correct``) and sometimes what the
right class was (``label``). The label of a row is, in this order:

1. ``label`` when the app sent one;
2. the prediction, when the user said it was correct;
3. for a binary model, the *other* class, when the user said it was wrong;
4. otherwise (a wrong multiclass prediction without a label) unknown: the row is
   excluded, and counted, so a report can say how much feedback could not be used.

>>> infer_label(prediction=1, was_correct=False, label=None, classes=[0, 1])
0
>>> infer_label(prediction=2, was_correct=False, label=None, classes=[0, 1, 2]) is None
True
>>> infer_label(prediction=2, was_correct=False, label=0, classes=[0, 1, 2])
0
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Sequence

__all__ = ["infer_label", "infer_labels", "LabelResult", "EXCLUDED_REASONS"]

# Why a row can have no label; the counts are logged and recorded on the job.
EXCLUDED_REASONS = (
    "multiclass-incorrect-without-label",  # rule 4
    "prediction-not-a-known-class",        # binary, wrong, and the prediction is not
                                           # one of the model's two classes
    "no-verdict",                          # neither was_correct nor label
)


def _other(prediction: Any, classes: Sequence[Any]) -> tuple[Any, str | None]:
    if len(classes) != 2:
        return None, "multiclass-incorrect-without-label"
    if prediction == classes[0]:
        return classes[1], None
    if prediction == classes[1]:
        return classes[0], None
    return None, "prediction-not-a-known-class"


def _infer(prediction, was_correct, label, classes) -> tuple[Any, str | None]:
    if label is not None:
        return label, None
    if was_correct is True:
        return prediction, None
    if was_correct is False:
        return _other(prediction, classes)
    return None, "no-verdict"


def infer_label(prediction: Any, was_correct: bool | None, label: Any,
                classes: Sequence[Any]) -> Any:
    """The row's label, or ``None`` if it cannot be known (see the module rules).

    ``classes`` are the classes of the model that made the predictions (its
    ``ModelVersion.classes``); two classes make a model binary.
    """
    return _infer(prediction, was_correct, label, list(classes))[0]


@dataclasses.dataclass(frozen=True)
class LabelResult:
    """Labels for the kept rows, the kept row positions, and why others were dropped."""

    labels: list
    kept: list[int]
    excluded: dict[str, int]

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())


def infer_labels(rows: Iterable[tuple[Any, bool | None, Any]],
                 classes: Sequence[Any]) -> LabelResult:
    """Infer labels for ``(prediction, was_correct, label)`` rows.

    >>> r = infer_labels([(1, True, None), (1, False, None), (2, False, None)], [0, 1, 2])
    >>> r.labels, r.kept, r.excluded
    ([1], [0], {'multiclass-incorrect-without-label': 2})
    """
    classes = list(classes)
    labels, kept = [], []
    excluded: collections.Counter = collections.Counter()
    for i, (prediction, was_correct, label) in enumerate(rows):
        value, reason = _infer(prediction, was_correct, label, classes)
        if reason is None:
            labels.append(value)
            kept.append(i)
        else:
            excluded[reason] += 1
    return LabelResult(labels=labels, kept=kept, excluded=dict(excluded))
