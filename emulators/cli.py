"""``rotwatch emulators start``: local Pub/Sub and Datastore in the foreground.

Prints the ``export`` lines that point the official clients (and Beam) at them,
refuses a port that is taken, and stops cleanly on Ctrl-C or SIGTERM. Datastore's
data lives in SQLite under ``--data-dir`` and survives a restart.

    rotwatch emulators start --data-dir .rotwatch/emulators
    python -m emulators start --in-memory          # the same, without rotwatch's CLI
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from emulators.grpcserver import PortInUseError
from emulators.local import DEFAULT_DATA_DIR, DEFAULT_PROJECT, LocalEmulators

__all__ = ["register", "main"]

_LOGGER = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "emulators", help="local Pub/Sub and Datastore emulators",
        description="Local stand-ins for Pub/Sub and Datastore that speak Google's "
                    "gRPC APIs, for the official clients and Beam's connectors.")
    commands = parser.add_subparsers(dest="emulators_command", metavar="COMMAND")
    commands.required = True
    start = commands.add_parser("start", help="run both emulators in the foreground")
    add_start_arguments(start)
    start.set_defaults(func=start_command)


def add_start_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--pubsub-port", type=int, default=8085,
                        help="Pub/Sub port (default 8085; 0 = any free port)")
    parser.add_argument("--datastore-port", type=int, default=8081,
                        help="Datastore port (default 8081; 0 = any free port)")
    parser.add_argument("--project", default=DEFAULT_PROJECT,
                        help=f"project id printed in the exports (default {DEFAULT_PROJECT})")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                       help=f"where Datastore keeps its data (default {DEFAULT_DATA_DIR})")
    store.add_argument("--in-memory", action="store_true",
                       help="keep Datastore's data in memory only (lost on stop)")


def start_command(args: argparse.Namespace) -> int:
    stack = LocalEmulators(host=args.host, pubsub_port=args.pubsub_port,
                           datastore_port=args.datastore_port, data_dir=args.data_dir,
                           in_memory=args.in_memory, project=args.project)
    try:
        stack.start()
    except (PortInUseError, RuntimeError) as exc:  # port taken, or data dir in use
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def _stop(signum, _frame):
        _LOGGER.info("signal=%s stopping emulators", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    where = "in memory" if args.in_memory else f"in {args.data_dir}"
    print(f"Pub/Sub emulator on {stack.pubsub.address}, "
          f"Datastore emulator on {stack.datastore.address} (data {where}).")
    print("Point clients at them with:")
    for key, value in stack.env.items():
        print(f"  export {key}={value}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        stack.stop()
        print("emulators stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    register(subparsers)
    args = parser.parse_args(["emulators", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
