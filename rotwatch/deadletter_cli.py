"""``rotwatch deadletter``: look at dead letters, replay them once fixed, or discard.

    rotwatch deadletter show                         # counts by stage, then each letter
    rotwatch deadletter show --stage registry --json
    rotwatch deadletter replay --stage registry      # after registering the version
    rotwatch deadletter discard --stage schema       # acknowledge: gone for good
    rotwatch deadletter show --of rot                # rot events the trainer gave up on

``show`` leaves every letter where it was; ``replay`` and ``discard`` act only on the
stages named and leave the rest. See :mod:`rotwatch.deadletter`.
"""
from __future__ import annotations

import argparse
import collections
import json

from rotwatch.config import add_settings_flags, settings_from_args

__all__ = ["register"]

REASON_WIDTH = 100
DEFAULT_LIMIT = 1000


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "deadletter", help="show, replay or discard dead letters",
        description="Dead letters: feedback the pipeline refused (with stage, field "
                    "and reason), late reports, and messages a subscription gave up on.",
        epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="deadletter_command", metavar="COMMAND")
    commands.required = True
    helps = {"show": "list dead letters (leaves them in place)",
             "replay": "republish the letters of the stages named, then remove them",
             "discard": "acknowledge (remove) the letters of the stages named"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        add_settings_flags(sub, "project")
        sub.add_argument("--of", choices=("feedback", "rot"), default="feedback",
                         help="which dead-letter topic (default feedback)")
        sub.add_argument("--stage", action="append", metavar="STAGE",
                         required=name != "show",
                         help="only letters of this stage (repeatable): schema, "
                              "attributes, registry, late, delivery, unknown")
        sub.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help=f"letters to read at most (default {DEFAULT_LIMIT})")
        if name == "show":
            sub.add_argument("--json", action="store_true",
                             help="one JSON object per letter instead of a table")
        if name == "replay":
            sub.add_argument("--dry-run", action="store_true",
                             help="say what would be replayed; change nothing")
        sub.set_defaults(func=deadletter_command)


def _row(letter) -> str:
    reason = letter.reason.replace("\n", " ")
    if len(reason) > REASON_WIDTH:
        reason = reason[:REASON_WIDTH - 3] + "..."
    when = letter.published.strftime("%Y-%m-%d %H:%M:%S") if letter.published else "-"
    ident = letter.attributes.get("event_id") or letter.message_id
    return f"{when}  {letter.stage:<10} {letter.field:<12} {ident:<34} {reason}"


def deadletter_command(args: argparse.Namespace) -> int:
    from google.cloud import pubsub_v1

    from rotwatch import deadletter as dl

    settings = settings_from_args(args)
    try:
        subscription, topic = dl.subscription_and_topic(settings, args.of)
        subscriber = pubsub_v1.SubscriberClient()
        letters = dl.read_letters(subscriber, subscription, args.limit)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    stages = set(args.stage or ())
    chosen = [l for l in letters if not stages or l.stage in stages]
    others = [l for l in letters if stages and l.stage not in stages]
    command = args.deadletter_command
    if command == "show" or (command == "replay" and args.dry_run):
        dl.release(subscriber, subscription, letters)
        if command == "show" and args.json:
            for letter in chosen:
                print(json.dumps(letter.to_dict(), sort_keys=True))
            return 0
        counts = collections.Counter(l.stage for l in letters)
        print(f"{len(letters)} dead letter(s) read from {subscription}"
              + (f" (the first {args.limit}; --limit reads more)"
                 if len(letters) >= args.limit else "")
              + ": " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                        or "none"))
        for letter in chosen:
            print(_row(letter))
        if command == "replay":
            late = sum(1 for l in chosen if l.stage == dl.STAGE_LATE)
            print(f"would replay {len(chosen) - late} to {topic}"
                  + (f"; {late} late report(s) are never replayed" if late else ""))
        return 0
    dl.release(subscriber, subscription, others)
    if command == "discard":
        dl.acknowledge(subscriber, subscription, chosen)
        print(f"discarded {len(chosen)} dead letter(s) from {subscription}")
        return 0
    publisher = pubsub_v1.PublisherClient()
    counts = dl.replay(chosen, lambda data, attrs: publisher.publish(topic, data, **attrs),
                       subscriber, subscription)
    print(f"replayed {counts['replayed']} to {topic}; failed {counts['failed']} (kept); "
          f"late reports skipped {counts['skipped_late']} (their events are stored: "
          "rotwatch pipeline recompute counts them)")
    return 1 if counts["failed"] else 0
