"""``rotwatch simulate``: zombie traffic against a running gateway.

Asks the gateway for predictions on population A, mutating into population B at
``--mutate-at`` (abruptly, or over ``--width`` events), and sends thumbs-up/down
feedback by ``prediction_id`` for ``--feedback-share`` of them (wrong on purpose for
``--noise``), ``--delay`` seconds later. Shows progress, then prints what it sent
and the accuracy it saw, per phase and per version; ``--out FILE`` writes the summary
and every event as JSON.

    rotwatch simulate --gateway http://127.0.0.1:8080 --events 2000 --mutate-at 1000 \\
        [--width 200] [--rate 50] [--feedback-share 1.0] [--noise 0.05] [--delay 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["register", "simulate_command", "print_summary"]


def register(subparsers) -> None:
    defaults = _defaults()
    parser = subparsers.add_parser(
        "simulate", help="zombie traffic: predictions and feedback through the gateway",
        description="Simulate apps asking the gateway for predictions on a zombie "
                    "population that mutates, and users sending feedback.")
    parser.add_argument("--gateway", default=defaults.gateway_url, metavar="URL",
                        help=f"the gateway's base URL (default {defaults.gateway_url})")
    parser.add_argument("--model", default=defaults.model,
                        help=f"model to ask (default {defaults.model})")
    parser.add_argument("--events", type=int, default=defaults.events,
                        help=f"predictions to ask for (default {defaults.events})")
    parser.add_argument("--mutate-at", type=int, default=None, metavar="K",
                        help="event where population B starts (default: half-way)")
    parser.add_argument("--width", type=int, default=0, metavar="N",
                        help="0: abrupt mutation; N: B's share rises over N events")
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help=f"predictions per second, 0 = as fast as possible "
                             f"(default {defaults.rate:g})")
    parser.add_argument("--feedback-share", type=float, default=defaults.feedback_share,
                        metavar="P", help="share of predictions that get feedback "
                                          f"(default {defaults.feedback_share:g})")
    parser.add_argument("--noise", type=float, default=defaults.feedback_noise,
                        metavar="P", help="share of feedback that is wrong on purpose "
                                          f"(default {defaults.feedback_noise:g})")
    parser.add_argument("--delay", type=float, default=defaults.feedback_delay_s,
                        metavar="S", help="seconds between a prediction and its feedback "
                                          f"(default {defaults.feedback_delay_s:g})")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help=f"requests in flight (default {defaults.concurrency})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed: same seed, same traffic")
    parser.add_argument("--out", metavar="FILE",
                        help="write the summary and every event as JSON to FILE")
    parser.set_defaults(func=simulate_command)


def _defaults():
    from publishers.simulator import SimulationConfig
    return SimulationConfig()


def print_summary(summary, out=None) -> None:
    out = out or sys.stdout
    data = summary.to_dict()
    cfg = summary.config
    mode = "abrupt" if cfg.mutation_width == 0 else f"gradual over {cfg.mutation_width}"
    lines = [
        f"sent {data['events']} predict requests to {cfg.gateway_url} "
        f"(model {cfg.model}, mutation at event {cfg.mutation_start}, {mode})",
        f"  answered            {data['predictions']}",
        f"  errors              {data['errors']}",
        f"  feedback sent       {data['feedback_sent']} of {data['feedback_planned']} "
        f"planned ({data['noisy_feedback']} wrong on purpose)",
        "  versions answering  " + ", ".join(
            f"{v}: {n} (from event {data['first_event_by_version'][v]})"
            for v, n in sorted(data["versions"].items())),
        "  accuracy            " + ", ".join(
            f"{k} {v:.3f}" for k, v in data["accuracy"].items() if v is not None),
        f"  duration            {data['duration_s']:.1f} s",
    ]
    if summary.stopped_early:
        lines.append(f"  STOPPED EARLY: {summary.stopped_early}")
    print("\n".join(lines), file=out)


def simulate_command(args: argparse.Namespace) -> int:
    from publishers.gateway.service import TOKEN_ENV
    from publishers.progress import Progress
    from publishers.simulator import SimulationConfig, Simulator

    try:
        config = SimulationConfig(
            gateway_url=args.gateway, model=args.model, events=args.events,
            mutation_start=args.mutate_at if args.mutate_at is not None
            else args.events // 2,
            mutation_width=args.width, rate=args.rate, feedback_share=args.feedback_share,
            feedback_noise=args.noise, feedback_delay_s=args.delay,
            concurrency=args.concurrency, seed=args.seed,
            token=os.environ.get(TOKEN_ENV) or None)
    except ValueError as exc:
        print(f"rotwatch simulate: {exc}", file=sys.stderr)
        return 2
    progress = Progress(config.events, "predictions")
    simulator = Simulator(config, on_progress=lambda done, total, text:
                          progress.update(1, text))
    summary = simulator.run()
    progress.close()
    print_summary(summary)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(summary.to_dict(with_records=True), handle, indent=1)
        print(f"  wrote               {args.out}")
    return 1 if summary.stopped_early or summary.predictions == 0 else 0
