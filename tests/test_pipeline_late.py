"""Feedback too late for any window: split off before windowing and reported late."""
from __future__ import annotations

import datetime as dt
import re

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from rotwatch.events import FeedbackEvent, parse_time
from pipelines.metrics import STAGE_LATE, TOO_LATE, SplitTooLate, late_report

NOW = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.timezone.utc)
SIZE, PERIOD, LATENESS = 20, 5, 300


def _event(seconds_ago: float, i: int = 0) -> FeedbackEvent:
    return FeedbackEvent.create(model="zombies", version="v1", features=[1.0, 2.0],
                                prediction=1, was_correct=True, event_id=f"e{i}",
                                event_time=NOW - dt.timedelta(seconds=seconds_ago))


def test_the_boundary_is_the_last_window_end_plus_the_allowed_lateness():
    # event at 11:54:03 -> windows end at 11:54:05 ... 11:54:20; last closes 11:59:20.
    clock = lambda: NOW  # noqa: E731
    inside = _event(NOW.timestamp() - parse_time("2026-12-03T11:55:00Z").timestamp(), 1)
    just_out = _event(357, 2)     # 11:54:03: last window end 11:54:20 + 300 s < 12:00
    with BeamTestPipeline() as p:
        split = (p | beam.Create([inside, just_out])
                 | beam.ParDo(SplitTooLate(SIZE, PERIOD, LATENESS, clock=clock))
                 .with_outputs(TOO_LATE, main="in_time"))
        assert_that(split.in_time | "Ids" >> beam.Map(lambda e: e.event_id),
                    equal_to(["e1"]), label="in_time")
        assert_that(split[TOO_LATE] | "Late" >> beam.Map(
            lambda d: (d.stage, d.attributes["event_id"])),
            equal_to([(STAGE_LATE, "e2")]), label="late")


def test_a_late_report_keeps_the_event_and_names_the_command_that_counts_it():
    event = _event(900, 7)        # 11:45:00, 15 minutes old
    report = late_report(event, NOW, SIZE, PERIOD, LATENESS)
    assert FeedbackEvent.from_json(report.payload) == event
    assert report.attributes == event.attributes()
    message = report.to_message()
    assert message.attributes["rotwatch_stage"] == "late"
    assert message.attributes["rotwatch_field"] == "event_time"
    reason = message.attributes["rotwatch_reason"]
    assert "arrived 900 s after it" in reason
    assert "closed for good at 2026-12-03T11:50:20" in reason
    # The range it names covers every window that holds the event, whole.
    m = re.search(r"--start (\S+) --end (\S+) --model zombies --window_size_s 20 "
                  r"--window_period_s 5 --write_metrics true", reason)
    assert m, reason
    start, end = parse_time(m.group(1)), parse_time(m.group(2))
    holding = [event.event_time - dt.timedelta(seconds=k * PERIOD)
               for k in range(SIZE // PERIOD)]      # the starts, event on a boundary
    assert start == min(holding) and end == max(holding) + dt.timedelta(seconds=SIZE)
