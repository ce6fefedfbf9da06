"""``rotwatch pipeline``: run the streaming rot pipeline, or recompute window metrics.

Every option after the command goes to Beam (``--runner``, ``--project``, ...) and to
rotwatch's pipeline options (``--window_size_s``, ``--min_n``, ...; see
``pipelines/options.py``)::

    rotwatch pipeline run --window_size_s 20 --window_period_s 5 --min_n 30
    rotwatch pipeline run --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --setup_file ./setup.py
    rotwatch pipeline recompute --start 2026-12-03T10:00:00Z --end 2026-12-03T11:00:00Z \\
        --output .rotwatch/metrics
"""
from __future__ import annotations

import argparse
import logging

__all__ = ["register"]

_LOGGER = logging.getLogger(__name__)

RUN_EPILOG = """rotwatch options (defaults in pipelines/options.py):
  --window_size_s 300 --window_period_s 60   sliding event-time windows
  --allowed_lateness_s 300 --late_firing_s 5 late feedback still counts
  --min_n 50 --tolerance 0.05 --consecutive 3 the windowed accuracy rule
  --drift_threshold 0.2 --drift_min_n 100     input drift (PSI) per feature
  --cooldown_s 3600                           quiet time per version and rot kind
  --feedback_subscription projects/<p>/subscriptions/<s>
  --deadletter_topic / --rot_topic projects/<p>/topics/<t>
Beam options: --runner, --project, --region, --temp_location, --setup_file, ...
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="the Beam pipelines (streaming rot watch, batch recompute)",
        description="Run rotwatch's Beam pipelines; options after the command are "
                    "Beam pipeline options.")
    commands = parser.add_subparsers(dest="pipeline_command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run", help="the streaming pipeline: feedback -> Datastore, metrics, rot events",
        description="Streaming pipeline; the local bundle-based DirectRunner unless "
                    "--runner is given. Any Beam or rotwatch pipeline option may follow.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.set_defaults(func=run_command, accepts_extra_args=True)
    recompute = commands.add_parser(
        "recompute", help="batch: recompute window metrics from stored Feedback",
        description="Batch job over stored Feedback: --start, --end, --output and/or "
                    "--write_metrics true, plus any Beam option.")
    recompute.set_defaults(func=recompute_command, accepts_extra_args=True)


def run_command(args: argparse.Namespace) -> int:
    from pipelines.feedback_pipeline import main
    try:
        return main(list(args.extra_args))
    except ValueError as exc:   # a bad option: say which, no traceback
        print(f"error: {exc}")
        return 2


def recompute_command(args: argparse.Namespace) -> int:
    from pipelines.batch_metrics import run
    try:
        run(list(args.extra_args))
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    return 0
