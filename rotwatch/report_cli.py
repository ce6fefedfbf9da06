"""``rotwatch report``: plots, a table and JSON from whatever is stored for a model.

Reads the local emulators (``DATASTORE_EMULATOR_HOST`` set, as ``rotwatch up``
prints) or a Google Cloud project (``--project`` / ``ROTWATCH_PROJECT`` and
application-default credentials), and writes to ``--out``:

* ``accuracy.png`` — windowed accuracy per version, rot events and promotions marked;
* ``inputs.png``   — inputs before / after the first rot event's change point (or,
  without one, its decision time, or the first promotion), correct vs incorrect;
* ``report.json``  — :meth:`rotwatch.report.Report.to_dict`;

and prints :func:`rotwatch.report.summary_table`.

    rotwatch report --out .rotwatch/report [--model zombies] \\
        [--since 2026-12-03T10:00:00Z] [--until 2026-12-03T11:00:00Z]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from rotwatch.config import add_settings_flags, settings_from_args
from rotwatch.events import InvalidEvent, format_time, parse_time

__all__ = ["register", "report_command", "write_report", "split_point"]

_LOGGER = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="plots, a table and JSON from what is stored for a model",
        description="Read what rotwatch stored for one model (window metrics, rot "
                    "events, versions, promotions, feedback, training jobs) and write "
                    "accuracy.png, inputs.png and report.json to --out; print a table.")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write into (created if missing)")
    parser.add_argument("--model", metavar="NAME",
                        help="model name (default: the only stored model)")
    parser.add_argument("--since", metavar="RFC3339",
                        help="first event time to include, e.g. 2026-12-03T10:00:00Z")
    parser.add_argument("--until", metavar="RFC3339",
                        help="event time to stop before (exclusive)")
    add_settings_flags(parser, "project", "namespace")
    parser.add_argument("--max-feedback", type=int, default=None, metavar="N",
                        help="newest feedback rows to read for inputs.png and counts "
                             "(default 20000)")
    parser.set_defaults(func=report_command)


def split_point(report):
    """Where ``inputs.png`` splits "before" and "after", and what that moment is.

    The store does not know when the population mutated; the best stored evidence is
    the first rot event's change point, else its decision time, else the first
    promotion, else the middle of the feedback sample.
    """
    if report.rot_events:
        first = report.rot_events[0]
        if first.change_point is not None:
            return first.change_point, "change point"
        return first.decided_at, "first rot event"
    promotions = report.promotions()
    if promotions:
        return promotions[0].changed_at, "first promotion"
    times = report.feedback.times
    if times:
        return times[len(times) // 2], "middle of sample"
    return None, ""


def write_report(report, out_dir: str, mutation_time=None) -> dict[str, str]:
    """Write ``accuracy.png``, ``inputs.png`` and ``report.json``; return their paths."""
    from rotwatch.plots import plot_accuracy, plot_inputs
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name)
             for name in ("accuracy.png", "inputs.png", "report.json")}
    plot_accuracy(report, paths["accuracy.png"], mutation_time=mutation_time)
    if mutation_time is not None:
        split, label = mutation_time, "mutation"
    else:
        split, label = split_point(report)
    feedback = report.feedback
    plot_inputs(feedback.features, feedback.correct, feedback.times, paths["inputs.png"],
                split_time=split if split is not None else report.generated_at,
                split_label=label or "report time",
                title=f"inputs of stored feedback for {report.model}: correct vs "
                      "incorrect predictions")
    data = report.to_dict()
    data["inputs_split"] = {"time": format_time(split) if split is not None else None,
                            "basis": label or None}
    with open(paths["report.json"], "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    _LOGGER.info("wrote report model=%s out=%s split=%s basis=%s", report.model, out_dir,
                 data["inputs_split"]["time"], label or None)
    return paths


def report_command(args: argparse.Namespace) -> int:
    from rotwatch.report import MAX_FEEDBACK_ROWS, ReportError, load_report, summary_table
    try:
        since = parse_time(args.since, "--since") if args.since else None
        until = parse_time(args.until, "--until") if args.until else None
    except InvalidEvent as exc:
        print(f"rotwatch report: {exc}", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"rotwatch report: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        print(f"rotwatch report: --out {out_dir!r} is a file; give a folder",
              file=sys.stderr)
        return 2
    try:
        report = load_report(args.model, since=since, until=until, settings=settings,
                             max_feedback=args.max_feedback or MAX_FEEDBACK_ROWS)
    except ReportError as exc:
        print(f"rotwatch report: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"rotwatch report: {exc}", file=sys.stderr)
        return 2
    paths = write_report(report, out_dir)
    print(summary_table(report))
    print()
    for name, path in paths.items():
        print(f"wrote {path}")
    return 0
