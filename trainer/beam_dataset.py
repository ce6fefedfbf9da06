"""Read a rot event's feedback with a Beam batch pipeline, for datasets of any size.

The Datastore-client path (:func:`trainer.dataset.read_feedback`) reads in one
process. This pipeline reads the same ``Feedback`` rows with Beam's
``ReadFromDatastore``, which splits the query by key ranges (``__scatter__``) across
workers, so on Dataflow the read scales out. Splitting forbids inequality filters, so
the query asks only ``model = <name>`` and the time range is a ``Filter`` step. Rows
are deduplicated by event id and written as JSON lines under ``output_prefix``
(a local folder or ``gs://...``), then read back by the trainer.

Locally it runs on Beam's FnApiRunner (no Prism download, no network). Run it alone:

    python -m trainer.beam_dataset --model zombies --since 2026-12-03T10:00:00Z \
        --output-prefix .rotwatch/tmp/zombies
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import uuid

import apache_beam as beam
from apache_beam.io.gcp.datastore.v1new.datastoreio import ReadFromDatastore
from apache_beam.io.gcp.datastore.v1new.types import Query

from rotwatch import kinds
from rotwatch.config import Settings
from trainer.dataset import FeedbackRow, dedupe, iso_time, row_from_properties

__all__ = ["ReadFeedbackRows", "build_pipeline", "read_feedback_with_beam", "run"]

_LOGGER = logging.getLogger(__name__)


def _to_row(entity) -> dict:
    """A Beam Datastore entity -> a :class:`FeedbackRow` as a plain dict."""
    event_id = entity.key.path_elements[-1]
    return row_from_properties(str(event_id), entity.properties).to_dict()


def _first(rows) -> dict:
    return sorted(rows, key=lambda r: r["event_time"])[0]


class ReadFeedbackRows(beam.PTransform):
    """``Feedback`` of one model with ``since <= event_time``, one row per event id."""

    def __init__(self, project: str, namespace: str | None, model: str,
                 since: dt.datetime, num_splits: int = 0):
        super().__init__()
        if since.tzinfo is None:
            raise ValueError(f"since={since!r} must be timezone-aware (UTC)")
        self.project, self.namespace, self.model = project, namespace, model
        self.since, self.num_splits = since, num_splits

    def expand(self, pbegin):
        since = iso_time(self.since)
        query = Query(kind=kinds.FEEDBACK, project=self.project, namespace=self.namespace,
                      filters=[("model", "=", self.model)])
        return (pbegin
                | "ReadFeedback" >> ReadFromDatastore(query, num_splits=self.num_splits)
                | "ToRow" >> beam.Map(_to_row)
                # fixed-width UTC strings order like the times they name
                | "SinceChangePoint" >> beam.Filter(lambda r: r["event_time"] >= since)
                | "KeyByEventId" >> beam.Map(lambda r: (r["event_id"], r))
                | "GroupByEventId" >> beam.GroupByKey()
                | "TakeFirst" >> beam.MapTuple(lambda _, rows: _first(rows)))


def build_pipeline(p, settings: Settings, model: str, since: dt.datetime,
                   output_prefix: str, num_splits: int = 0):
    """Wire the read into ``p``; returns the rows collection (tests can assert on it)."""
    rows = p | "ReadRows" >> ReadFeedbackRows(settings.project, settings.namespace,
                                              model, since, num_splits)
    (rows
     | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
     | "WriteRows" >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl"))
    return rows


def _local_runner():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return FnApiRunner()


def read_feedback_with_beam(settings: Settings, model: str, since: dt.datetime, *,
                            output_prefix: str | None = None, runner=None,
                            options=None) -> list[FeedbackRow]:
    """Run the pipeline and read its output back: time-ordered, deduplicated rows."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    prefix = output_prefix or FileSystems.join(
        settings.home, "tmp", f"feedback-{model}-{uuid.uuid4().hex[:8]}", "rows")
    options = options or PipelineOptions(project=settings.project)
    with beam.Pipeline(runner=runner or _local_runner(), options=options) as p:
        build_pipeline(p, settings, model, since, prefix)
    matches = FileSystems.match([prefix + "*"])[0].metadata_list
    rows = []
    for meta in matches:
        with FileSystems.open(meta.path) as handle:
            rows.extend(FeedbackRow.from_dict(json.loads(line))
                        for line in handle.read().decode("utf-8").splitlines() if line)
    FileSystems.delete([m.path for m in matches])
    rows = dedupe(rows)
    _LOGGER.info("step=read-feedback source=beam model=%s since=%s rows=%d files=%d",
                 model, since.isoformat(), len(rows), len(matches))
    return rows


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--since", required=True, help="RFC 3339, e.g. 2026-12-03T10:00:00Z")
    parser.add_argument("--output-prefix", required=True,
                        help="where the rows go: a local path or gs://bucket/prefix")
    parser.add_argument("--project", help="default: ROTWATCH_PROJECT or local-project")
    args, beam_args = parser.parse_known_args(argv)
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from rotwatch.events import parse_time
    settings = Settings.from_env(project=args.project)
    options = PipelineOptions(beam_args, project=settings.project)
    # --runner given (DataflowRunner...): use it; otherwise the local batch runner
    runner = None if options.view_as(StandardOptions).runner else _local_runner()
    with beam.Pipeline(runner=runner, options=options) as p:
        build_pipeline(p, settings, args.model, parse_time(args.since, "since"),
                       args.output_prefix)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(run())
