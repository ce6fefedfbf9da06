"""``rotwatch demo``: the zombie story end to end on a private local stack, measured.

Starts its own stack (free ports, data under ``<out>/stack``, so it never touches a
running ``rotwatch up``), trains v1 on population A, simulates traffic that mutates
into population B, and waits for the pipeline to detect the rot and the trainer to
promote v2. Prints progress, ends with a table, writes ``summary.json``,
``accuracy.png`` and ``inputs.png`` to ``--out``. Exit code 0 when every target of
the story was met, 1 when the loop did not close or a target was missed, 2 on bad
arguments.

    rotwatch demo [--events 1000] [--mutate-at 300] [--out .rotwatch/demo] [--seed 0]
"""
from __future__ import annotations

import argparse
import logging
import sys

from rotwatch.demo import DemoConfig

__all__ = ["register", "demo_command"]


def register(subparsers) -> None:
    d = DemoConfig()
    parser = subparsers.add_parser(
        "demo", help="the zombie story end to end on a private local stack, measured",
        description="Train v1 on population A, send predictions and feedback through "
                    "the gateway, mutate the population, and measure how the stack "
                    "detects the rot, retrains, promotes v2 and recovers. Writes "
                    "summary.json, accuracy.png and inputs.png to --out.")
    parser.add_argument("--events", type=int, default=d.events,
                        help=f"predictions to simulate (default {d.events})")
    parser.add_argument("--mutate-at", type=int, default=None, metavar="K",
                        help=f"event where population B starts (default {d.mutate_at}, "
                             "or 30%% of --events when that is given)")
    parser.add_argument("--out", default=d.out_dir, metavar="DIR",
                        help=f"where results and the stack's data go (default {d.out_dir})")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="simulation seed: same seed, same traffic (default 0)")
    tuning = parser.add_argument_group("tuning (defaults meet the demo's targets)")
    tuning.add_argument("--rate", type=float, default=d.rate,
                        help=f"predictions per second (default {d.rate:g})")
    tuning.add_argument("--width", type=int, default=d.width,
                        help="0: abrupt mutation; N: B's share rises over N events")
    tuning.add_argument("--window", type=int, default=d.window_size_s, metavar="S",
                        help=f"pipeline window length, seconds (default {d.window_size_s})")
    tuning.add_argument("--period", type=int, default=d.window_period_s, metavar="S",
                        help=f"a new window every S seconds (default {d.window_period_s})")
    tuning.add_argument("--min-n", type=int, default=d.min_n,
                        help=f"fewest events for a window to count (default {d.min_n})")
    tuning.add_argument("--consecutive", type=int, default=d.consecutive,
                        help="bad windows in a row that make rot "
                             f"(default {d.consecutive})")
    tuning.add_argument("--tolerance", type=float, default=d.tolerance,
                        help="accuracy below a version's baseline still accepted "
                             f"(default {d.tolerance:g})")
    tuning.add_argument("--detector-threshold", type=float, default=d.detector_threshold,
                        help="alarm level of the error-rate detector "
                             f"(default {d.detector_threshold:g})")
    tuning.add_argument("--detector-min-error", type=float, default=d.detector_min_error,
                        help="smallest baseline error the detector tests against "
                             f"(default {d.detector_min_error:g})")
    tuning.add_argument("--min-rows", type=int, default=d.min_rows,
                        help=f"feedback rows the trainer needs (default {d.min_rows})")
    tuning.add_argument("--margin", type=float, default=d.margin,
                        help=f"accuracy gain the gate demands (default {d.margin:g})")
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from rotwatch.demo import DemoError, run_demo, summary_table

    mutate_at = args.mutate_at
    if mutate_at is None:
        d = DemoConfig()
        mutate_at = d.mutate_at if args.events == d.events else int(args.events * 0.3)
    try:
        config = DemoConfig(events=args.events, mutate_at=mutate_at, seed=args.seed,
                            out_dir=args.out, rate=args.rate, width=args.width,
                            window_size_s=args.window, window_period_s=args.period,
                            min_n=args.min_n, consecutive=args.consecutive,
                            tolerance=args.tolerance,
                            detector_threshold=args.detector_threshold,
                            detector_min_error=args.detector_min_error,
                            min_rows=args.min_rows,
                            margin=args.margin)
    except ValueError as exc:
        print(f"rotwatch demo: {exc}", file=sys.stderr)
        return 2
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        # their INFO lines would only repeat what the progress and the table say
        for name in ("rotwatch.report", "rotwatch.report_cli", "rotwatch.plots",
                     "rotwatch.resources"):
            logging.getLogger(name).setLevel(logging.WARNING)
    print(f"rotwatch demo: the zombie story on a private local stack (seed {config.seed}, "
          f"{config.events} events at {config.rate:g}/s, mutation at event "
          f"{config.mutate_at}); results in {config.out_dir}", flush=True)
    try:
        summary, targets = run_demo(config)
    except DemoError as exc:
        print(f"rotwatch demo: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rotwatch demo: interrupted; the stack was stopped", file=sys.stderr)
        return 130
    print()
    print(summary_table(summary, targets))
    print()
    for name in ("summary.json", "accuracy.png", "inputs.png"):
        path = summary.get("files", {}).get(name)
        if path:
            print(f"wrote {path}")
    if summary.get("success"):
        print("the loop closed: rot detected, v2 trained, gated, promoted and serving")
        return 0
    missed = ", ".join(t.name for t in targets if not t.met)
    print(f"rotwatch demo: targets missed: {missed}", file=sys.stderr)
    return 1
