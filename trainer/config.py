"""How the trainer decides: row minimum, holdout, margin, time limits, leases.

Kept apart from the service so ``rotwatch --help`` can show the defaults without
importing the service's clients. Every field is a ``rotwatch trainer run`` flag.

>>> TrainerConfig(min_rows=500, margin=0.05).holdout_share
0.2
"""
from __future__ import annotations

import dataclasses

from rotwatch.estimators import ESTIMATORS
from trainer.gate import DEFAULT_HOLDOUT_SHARE, DEFAULT_MARGIN, MIN_HOLDOUT_ROWS
from trainer.train import DEFAULT_TIME_LIMIT_S

__all__ = ["TrainerConfig", "DATASET_SOURCES"]

DATASET_SOURCES = ("datastore", "beam")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Settings of the trainer service, checked on construction."""

    # 200 labelled rows: a holdout of 40 scores accuracy to about +-0.07 (95%), the
    # least that still separates a rotten model from a fresh one.
    min_rows: int = 200
    holdout_share: float = DEFAULT_HOLDOUT_SHARE
    margin: float = DEFAULT_MARGIN
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    # Longer than one job can take (training's time limit plus reading and
    # registering), so a live worker never loses its job; renewed between steps.
    lease_s: float = DEFAULT_TIME_LIMIT_S + 300.0
    older_share: float = 0.0
    estimator: str | None = None          # None: the current version's estimator
    # When a rot event carries no change point nor window, train on this much history.
    lookback_s: float = 24 * 3600.0
    # An insufficient-data job is looked at again after this long (feedback trickles).
    retry_insufficient_s: float = 300.0
    sweep_interval_s: float = 60.0
    dataset_source: str = "datastore"

    def __post_init__(self):
        if self.min_rows < 2 * MIN_HOLDOUT_ROWS:
            raise ValueError(f"min_rows={self.min_rows!r} must be >= {2 * MIN_HOLDOUT_ROWS} "
                             "to leave both a training set and a holdout (200 is sensible)")
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} is not one of "
                             f"{', '.join(ESTIMATORS)}")
        if self.dataset_source not in DATASET_SOURCES:
            raise ValueError(f"dataset_source {self.dataset_source!r} is not one of "
                             f"{', '.join(DATASET_SOURCES)}")
        if self.lease_s <= self.time_limit_s:
            raise ValueError(f"lease_s={self.lease_s:g} must exceed time_limit_s="
                             f"{self.time_limit_s:g}, or a live job's lease expires")
        for name in ("time_limit_s", "lookback_s", "retry_insufficient_s",
                     "sweep_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0 seconds")
        if not 0.0 <= self.older_share <= 1.0:
            raise ValueError(f"older_share={self.older_share!r} must be in [0, 1]")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError(f"holdout_share={self.holdout_share!r} must be between 0 "
                             "and 1 (0.2 holds out the newest fifth)")
        if self.margin < 0:
            raise ValueError(f"margin={self.margin!r} must be >= 0 (0.02 = two points)")
