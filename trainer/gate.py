"""The promotion gate: does the candidate beat the current default on recent data?

The newest share of the dataset (in event time) is held out; the candidate is trained
on the rest. Both the candidate and the current default are scored on the same
holdout, and the candidate is promoted only if its accuracy is higher by at least
``margin``. A time-ordered holdout asks the question that matters after rot: which
model is better on the population as it is *now*.

>>> decide(candidate_accuracy=0.91, current_accuracy=0.62, margin=0.02).promote
True
>>> decide(candidate_accuracy=0.63, current_accuracy=0.62, margin=0.02).promote
False
"""
from __future__ import annotations

import dataclasses
import math

__all__ = ["GateResult", "decide", "holdout_split", "DEFAULT_HOLDOUT_SHARE",
           "DEFAULT_MARGIN", "MIN_HOLDOUT_ROWS"]

# The newest 20%: big enough to score both models tightly with a few hundred rows,
# small enough to leave most recent rows for training.
DEFAULT_HOLDOUT_SHARE = 0.2
# Two accuracy points: below that a "better" candidate is within the noise of a
# holdout of a few hundred rows, and churning versions costs more than it gains.
DEFAULT_MARGIN = 0.02
# Fewer holdout rows than this and an accuracy difference means nothing.
MIN_HOLDOUT_ROWS = 20


@dataclasses.dataclass(frozen=True)
class GateResult:
    promote: bool
    candidate_accuracy: float
    current_accuracy: float | None
    margin: float
    reason: str


def holdout_split(rows: int, share: float = DEFAULT_HOLDOUT_SHARE) -> int:
    """Index where the holdout starts in time-ordered rows (train ``[:i]``, hold ``[i:]``)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"holdout share {share!r} must be between 0 and 1 (e.g. 0.2)")
    holdout = max(MIN_HOLDOUT_ROWS, math.ceil(rows * share))
    if holdout >= rows:
        raise ValueError(f"{rows} rows cannot give a training set and a holdout of "
                         f"{holdout}; collect more feedback")
    return rows - holdout


def decide(candidate_accuracy: float, current_accuracy: float | None,
           margin: float = DEFAULT_MARGIN) -> GateResult:
    """Promote iff ``candidate >= current + margin`` (or there is no current model)."""
    if margin < 0:
        raise ValueError(f"margin={margin!r} must be >= 0 (0.02 = two accuracy points)")
    if current_accuracy is None:
        return GateResult(True, candidate_accuracy, None, margin, "no current default")
    gain = candidate_accuracy - current_accuracy
    # round away float noise so 0.91 - 0.89 == 0.02 passes a 0.02 margin
    if round(gain, 9) >= margin:
        return GateResult(True, candidate_accuracy, current_accuracy, margin,
                          f"candidate {candidate_accuracy:.4f} beats current "
                          f"{current_accuracy:.4f} by {gain:.4f} >= margin {margin:g}")
    return GateResult(False, candidate_accuracy, current_accuracy, margin,
                      f"candidate {candidate_accuracy:.4f} vs current "
                      f"{current_accuracy:.4f}: gain {gain:.4f} is below the margin "
                      f"{margin:g}")
