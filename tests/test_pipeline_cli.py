"""``rotwatch pipeline``: the commands exist and hand their options to Beam."""
from __future__ import annotations

import pytest

from rotwatch.cli import build_parser, main


def test_pipeline_commands_are_listed(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "--help"])
    out = capsys.readouterr().out
    assert "run" in out and "recompute" in out


def test_run_help_names_the_main_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "run", "--help"])
    out = capsys.readouterr().out
    assert "--window_size_s" in out and "--feedback_subscription" in out


def test_recompute_without_a_time_range_says_how_to_give_one(capsys):
    assert main(["pipeline", "recompute", "--output", "/tmp/unused"]) == 2
    assert "--start 2026-12-03T10:00:00Z" in capsys.readouterr().out


def test_bad_pipeline_option_fails_before_anything_starts(capsys):
    assert main(["pipeline", "run", "--window_size_s", "25", "--window_period_s", "10",
                 "--runner", "DataflowRunner", "--dry_run=True"]) == 2
    assert "window_size_s=25 must be a multiple" in capsys.readouterr().out
