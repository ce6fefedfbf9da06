"""The ``rotwatch`` command line: one entry point for every role.

This is the one module of the shared core that knows every role. Each command group
lives in its own module, which exposes ``register(subparsers)``; it is imported only
when the CLI starts, never at package import, so ``import rotwatch`` stays cheap.

Run ``rotwatch --help`` to list the commands.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "build_parser"]

# Command groups, in the order ``--help`` lists them: (module, attribute). Only
# commands that work are listed here.
COMMAND_MODULES = (
    "emulators.cli",
    "rotwatch.stack_cli",
    "rotwatch.report_cli",
    "rotwatch.deadletter_cli",
    "rotwatch.model_cli",
    "pipelines.cli",
    "trainer.cli",
    "publishers.gateway_cli",
    "publishers.publish_cli",
    "publishers.simulate_cli",
    "rotwatch.demo_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotwatch",
        description="Watch deployed ML models for rot, retrain and promote them.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_args", False):
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "accepts_extra_args", False):
        args.extra_args = extra
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
