"""``rotwatch setup``: create the topics and subscriptions rotwatch needs.

Against the local emulators (``PUBSUB_EMULATOR_HOST`` set) or a Google Cloud project
(``--project`` / ``ROTWATCH_PROJECT`` and application-default credentials).

    rotwatch setup [--project local-project]
"""
from __future__ import annotations

import argparse

from rotwatch.config import Settings
from rotwatch.resources import ensure_pubsub_resources

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "setup", help="create missing topics and subscriptions (idempotent)",
        description="Create rotwatch's Pub/Sub topics and subscriptions, with "
                    "dead-letter policies, where they are missing.")
    parser.add_argument("--project", help="Google Cloud project (default: "
                        "ROTWATCH_PROJECT, GOOGLE_CLOUD_PROJECT, or local-project)")
    parser.set_defaults(func=setup_command)


def setup_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env(project=args.project)
    result = ensure_pubsub_resources(settings)
    for name in result["created"]:
        print(f"created  {name}")
    for name in result["existing"]:
        print(f"exists   {name}")
    return 0
