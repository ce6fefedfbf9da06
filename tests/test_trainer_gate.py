"""The promotion gate and the time-ordered holdout (pure)."""
from __future__ import annotations

import pytest

from trainer.gate import MIN_HOLDOUT_ROWS, decide, holdout_split


def test_candidate_must_win_by_the_margin():
    assert decide(0.91, 0.89, margin=0.02).promote           # exactly the margin
    assert not decide(0.90, 0.89, margin=0.02).promote
    result = decide(0.55, 0.90, margin=0.02)
    assert not result.promote
    assert (result.candidate_accuracy, result.current_accuracy) == (0.55, 0.90)
    assert "below the margin" in result.reason


def test_no_current_default_promotes():
    assert decide(0.6, None).promote


def test_negative_margin_is_refused():
    with pytest.raises(ValueError, match="margin"):
        decide(0.9, 0.8, margin=-0.1)


def test_holdout_is_the_newest_share():
    assert holdout_split(1000, 0.2) == 800
    assert holdout_split(100, 0.1) == 100 - MIN_HOLDOUT_ROWS   # at least 20 held out
    with pytest.raises(ValueError, match="collect more feedback"):
        holdout_split(20, 0.2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        holdout_split(100, 1.5)
