"""``rotwatch trainer run|jobs``: the rot-event trainer service and its job list.

``run`` subscribes to ``model-rot-trainer`` (create it with ``rotwatch setup``) and
handles one rot event at a time until Ctrl-C or SIGTERM; ``jobs`` lists recent
training jobs and their outcomes.

    rotwatch trainer run --min-rows 200 --margin 0.02
    rotwatch trainer jobs --model zombies
"""
from __future__ import annotations

import argparse
import signal
import threading

from rotwatch.config import Settings, add_settings_flags, settings_from_args
from rotwatch.estimators import ESTIMATORS

__all__ = ["register"]


def register(subparsers) -> None:
    from trainer.config import DATASET_SOURCES, TrainerConfig
    defaults = TrainerConfig()
    parser = subparsers.add_parser(
        "trainer", help="the rot-event trainer service",
        description="Retrain, gate and promote model versions when they rot.")
    commands = parser.add_subparsers(dest="trainer_command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="subscribe to model-rot and handle rot events")
    add_settings_flags(run)
    run.add_argument("--min-rows", type=int, default=defaults.min_rows,
                     help=f"usable feedback rows needed to train (default {defaults.min_rows})")
    run.add_argument("--margin", type=float, default=defaults.margin,
                     help="accuracy the candidate must gain over the current default on "
                          f"the holdout to be promoted (default {defaults.margin})")
    run.add_argument("--holdout-share", type=float, default=defaults.holdout_share,
                     help=f"newest share of rows held out (default {defaults.holdout_share})")
    run.add_argument("--time-limit", type=float, default=defaults.time_limit_s,
                     help=f"seconds a training may take (default {defaults.time_limit_s:g})")
    run.add_argument("--lease", type=float, default=defaults.lease_s,
                     help="seconds a job stays claimed without renewal; must exceed "
                          f"--time-limit (default {defaults.lease_s:g})")
    run.add_argument("--older-share", type=float, default=defaults.older_share,
                     help="add this share of pre-change-point rows (default 0)")
    run.add_argument("--estimator", choices=list(ESTIMATORS),
                     help="estimator for new versions (default: the current version's)")
    run.add_argument("--dataset-source", choices=DATASET_SOURCES,
                     default=defaults.dataset_source,
                     help="read feedback with the Datastore client, or with a Beam batch "
                          "pipeline (ReadFromDatastore) for large datasets")
    run.add_argument("--retry-insufficient", type=float,
                     default=defaults.retry_insufficient_s,
                     help="seconds before an insufficient-data job is checked again "
                          f"(default {defaults.retry_insufficient_s:g})")
    run.add_argument("--sweep-interval", type=float, default=defaults.sweep_interval_s,
                     help=f"seconds between sweeps (default {defaults.sweep_interval_s:g})")
    run.set_defaults(func=run_command)

    jobs = commands.add_parser("jobs", help="list recent training jobs")
    add_settings_flags(jobs)
    jobs.add_argument("--model", help="only this model")
    jobs.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    jobs.set_defaults(func=jobs_command)


def _client(settings: Settings):
    from rotwatch.report import ReportError, make_client
    try:  # fails in seconds, naming the fix, if no emulator or credentials are there
        return make_client(settings)
    except ReportError as exc:
        raise SystemExit(f"rotwatch trainer: {exc}") from None


def run_command(args: argparse.Namespace) -> int:
    from trainer.config import TrainerConfig
    from trainer.service import ServiceError, TrainerService
    try:
        config = TrainerConfig(
            min_rows=args.min_rows, margin=args.margin, holdout_share=args.holdout_share,
            time_limit_s=args.time_limit, lease_s=args.lease,
            older_share=args.older_share, estimator=args.estimator,
            dataset_source=args.dataset_source,
            retry_insufficient_s=args.retry_insufficient,
            sweep_interval_s=args.sweep_interval)
    except ValueError as exc:
        raise SystemExit(f"rotwatch trainer run: {exc}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = settings_from_args(args)
    try:
        TrainerService(settings, config, client=_client(settings)).run(stop)
    except ServiceError as exc:
        raise SystemExit(f"rotwatch trainer run: {exc}")
    return 0


def jobs_command(args: argparse.Namespace) -> int:
    from rotwatch.tables import format_table
    from trainer.jobs import JobStore

    rows = []
    for job in JobStore(_client(settings_from_args(args))).list(args.model, args.limit):
        rows.append([job.rot_id, job.state, job.produced_version or "",
                     "" if job.candidate_accuracy is None else f"{job.candidate_accuracy:.4f}",
                     "" if job.current_accuracy is None else f"{job.current_accuracy:.4f}",
                     "" if job.rows is None else str(job.rows), str(job.attempts),
                     (job.error or "")[:60]])
    print(format_table(["rot event", "state", "produced", "candidate", "current", "rows",
                        "attempts", "note"], rows))
    return 0
