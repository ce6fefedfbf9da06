"""Batch job: recompute window metrics from stored ``Feedback`` over a time range.

For reports and threshold tuning: the same sliding windows, Wilson bounds and drift
scores as the streaming pipeline (:class:`pipelines.metrics.WindowedAccuracy`'s
combine and scoring), but over what is in Datastore, with any window settings.
``ReadFromDatastore`` splits the query over workers; the range is one inequality on
``event_time`` (built-in index), the model filter is applied in the pipeline so no
composite index is needed.

Results go to JSON lines (``--output``) and/or back to ``WindowMetric`` entities
(``--write_metrics``, overwriting the streamed ones for the same windows).

Locally (FnApiRunner, emulators)::

    python -m pipelines.batch_metrics --start 2026-12-03T10:00:00Z \\
        --end 2026-12-03T11:00:00Z --window_size_s 300 --window_period_s 60 \\
        --output .rotwatch/metrics
    rotwatch pipeline recompute --start ... --end ... --output .rotwatch/metrics

On Dataflow add ``--runner DataflowRunner --project P --region R
--temp_location gs://B/tmp --setup_file ./setup.py``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.io.gcp.datastore.v1new.datastoreio import ReadFromDatastore
from apache_beam.io.gcp.datastore.v1new.types import Query
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import window

from rotwatch import kinds
from rotwatch.events import FeedbackEvent, format_time, parse_time, to_millis
from pipelines.metrics import (AccuracyCombineFn, ScoreWindow, prefer_fuller,
                               window_metric_entity)
from pipelines.options import config_from_options
from pipelines.store import WriteEntities
from pipelines.versions import RegistryCatalog

__all__ = ["BatchMetricsOptions", "feedback_from_entity", "RecomputeWindowMetrics",
           "build_batch", "run", "stats_to_json"]

_LOGGER = logging.getLogger(__name__)

# Batch runs in this process unless told otherwise (DESIGN.md: the FnApiRunner).
LOCAL_BATCH_RUNNER = "FnApiRunner"


class BatchMetricsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("rotwatch batch metrics")
        # Not argparse-required: every PipelineOptions in the process parses these.
        g.add_argument("--start", default=None,
                       help="first event time, RFC 3339 (2026-12-03T10:00:00Z); required")
        g.add_argument("--end", default=None,
                       help="end of the range (exclusive), RFC 3339; required")
        g.add_argument("--model", default=None, help="only this model (default: all)")
        g.add_argument("--output", default=None,
                       help="write window metrics as JSON lines to this path prefix")
        g.add_argument("--write_metrics", default="false", choices=["true", "false"],
                       help="also store them as WindowMetric entities")


def feedback_from_entity(entity) -> FeedbackEvent:
    """A stored ``Feedback`` (Beam's Entity) as the event it came from."""
    p = entity.properties
    event_time = p["event_time"]
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=dt.timezone.utc)
    return FeedbackEvent(event_id=entity.key.path_elements[-1], model=p["model"],
                         version=p["version"], features=tuple(p["features"]),
                         prediction=p["prediction"], event_time=event_time,
                         was_correct=p.get("was_correct"), label=p.get("label"))


def stats_to_json(s) -> str:
    data = dataclasses.asdict(s)
    data["window_start"] = format_time(s.window_start)
    data["window_end"] = format_time(s.window_end)
    data["drift"] = [list(d) for d in s.drift]
    return json.dumps(data, sort_keys=True)


class RecomputeWindowMetrics(beam.PTransform):
    """Feedback entities -> WindowStats per (model, version) and window."""

    def __init__(self, config, catalog, model: str | None = None,
                 label: str | None = None):
        super().__init__(label)
        self._config = config
        self._catalog = catalog
        self._model = model

    def expand(self, entities):
        c, model = self._config, self._model
        return (entities
                | "ToEvent" >> beam.Map(feedback_from_entity)
                | "KeepModel" >> beam.Filter(lambda e: model is None or e.model == model)
                | "StampEventTime" >> beam.Map(
                    lambda e: window.TimestampedValue(e, to_millis(e.event_time) / 1000))
                | "KeyByVersion" >> beam.Map(lambda e: ((e.model, e.version), e))
                .with_output_types(Tuple[Tuple[str, str], Any])
                # Batch: the default trigger fires each window once, complete.
                | "WindowByVersion" >> beam.WindowInto(
                    window.SlidingWindows(c.window_size_s, c.window_period_s))
                | "CountCorrect" >> beam.CombinePerKey(AccuracyCombineFn(c.drift_sample))
                | "ScoreWindow" >> beam.ParDo(ScoreWindow(
                    self._catalog, c.z, c.drift_threshold, c.drift_min_n)))


def build_batch(p, options, catalog=None) -> dict:
    o = options.view_as(BatchMetricsOptions)
    config = config_from_options(options)
    if not (o.start and o.end):
        raise ValueError("give the time range: --start 2026-12-03T10:00:00Z "
                         "--end 2026-12-03T11:00:00Z")
    start, end = parse_time(o.start, "start"), parse_time(o.end, "end")
    if not start < end:
        raise ValueError(f"--start {o.start} must be before --end {o.end}")
    catalog = catalog or RegistryCatalog(config.project, config.namespace,
                                         config.registry_ttl_s)
    query = Query(kind=kinds.FEEDBACK, project=config.project, namespace=config.namespace,
                  filters=[("event_time", ">=", start), ("event_time", "<", end)])
    stats = (p
             | "ReadFeedback" >> ReadFromDatastore(query)
             | "RecomputeWindowMetrics" >> RecomputeWindowMetrics(config, catalog, o.model))
    if o.output:
        _ = (stats | "ToJson" >> beam.Map(stats_to_json)
             | "WriteJsonLines" >> beam.io.WriteToText(o.output, file_name_suffix=".jsonl"))
    if o.write_metrics == "true":
        project, namespace = config.project, config.namespace
        _ = (stats
             | "ToWindowMetricEntity" >> beam.Map(
                 lambda s: window_metric_entity(s, project, namespace))
             | "StoreWindowMetrics" >> WriteEntities(project, config.throttle_rampup,
                                                     prefer=prefer_fuller))
    return {"window_stats": stats}


def run(argv=None, catalog=None):
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    standard.streaming = False
    if not standard.runner:
        standard.runner = LOCAL_BATCH_RUNNER
    p = beam.Pipeline(options=options)
    build_batch(p, options, catalog=catalog)
    result = p.run()
    result.wait_until_finish()
    _LOGGER.info("window metrics recomputed state=%s", result.state)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run()
