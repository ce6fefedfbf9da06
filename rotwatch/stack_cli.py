"""``rotwatch setup`` and ``rotwatch up``.

``setup`` creates the topics and subscriptions rotwatch needs and brings existing
subscriptions' settings up to date (idempotent), against the emulators
(``PUBSUB_EMULATOR_HOST`` set) or a Google Cloud project. ``up`` runs the whole local
stack in the foreground.

    rotwatch setup [--project local-project]
    rotwatch up [--gateway-port 8080] [--home .rotwatch]
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from rotwatch.config import add_settings_flags, settings_from_args
from rotwatch.resources import SubscriptionTopicMismatch, ensure_pubsub_resources

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "setup", help="create missing topics and subscriptions, update their settings "
                      "(idempotent)",
        description="Create rotwatch's Pub/Sub topics and subscriptions, with "
                    "dead-letter policies, where they are missing, and bring existing "
                    "subscriptions' ack deadline, dead-letter policy and retention "
                    "to rotwatch's settings.")
    add_settings_flags(parser, "project")
    parser.set_defaults(func=setup_command)

    up = subparsers.add_parser(
        "up", help="run the whole local stack in the foreground",
        description="Emulators, topics, gateway, streaming pipeline and trainer, "
                    "supervised as one. Ctrl-C stops everything.")
    add_up_arguments(up)
    up.set_defaults(func=up_command)


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", default=".rotwatch",
                        help="local data folder: emulator data, model artifacts "
                             "(default .rotwatch)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--gateway-port", type=int, default=8080, help="default 8080")
    parser.add_argument("--pubsub-port", type=int, default=8085, help="default 8085")
    parser.add_argument("--datastore-port", type=int, default=8081, help="default 8081")
    parser.add_argument("--pipeline-args", default="",
                        help="extra arguments for `rotwatch pipeline run`, quoted, e.g. "
                             "\"--window-size 60 --window-period 10\"")
    parser.add_argument("--trainer-args", default="",
                        help="extra arguments for `rotwatch trainer run`, quoted")
    parser.add_argument("--gateway-args", default="",
                        help="extra arguments for `rotwatch gateway run`, quoted")


def stack_config(args: argparse.Namespace, project: str = "local-project"):
    from rotwatch.stack import StackConfig
    return StackConfig(home=args.home, host=args.host, pubsub_port=args.pubsub_port,
                       datastore_port=args.datastore_port, gateway_port=args.gateway_port,
                       project=project,
                       pipeline_args=tuple(shlex.split(args.pipeline_args)),
                       trainer_args=tuple(shlex.split(args.trainer_args)),
                       gateway_args=tuple(shlex.split(args.gateway_args)))


def setup_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        result = ensure_pubsub_resources(settings)
    except SubscriptionTopicMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in result["created"]:
        print(f"created  {name}")
    for name in result["existing"]:
        changes = result["updated"].get(name)
        if changes:
            print(f"updated  {name}: " + "; ".join(
                f"{field} {old} -> {new}" for field, (old, new) in sorted(changes.items())))
        else:
            print(f"exists   {name}")
    return 0


def up_command(args: argparse.Namespace) -> int:
    from rotwatch.stack import start_stack, status_text
    from rotwatch.supervisor import ComponentFailed

    config = stack_config(args)
    stop = threading.Event()

    def _stop(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        supervisor = start_stack(config)
    except ComponentFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(status_text(config), flush=True)
    failure = supervisor.watch(stop)
    print("stopping the stack ...", flush=True)
    supervisor.stop()
    print("stack stopped", flush=True)
    return 1 if failure else 0
