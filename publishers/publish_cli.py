"""``rotwatch publish --file events.jsonl``: send a file of feedback events.

One JSON object per line, in the wire format of :class:`rotwatch.events.FeedbackEvent`
(``model``, ``version``, ``features``, ``prediction``, ``was_correct`` and/or
``label``; ``event_id`` and ``event_time`` are filled in when absent). The whole file
is checked first: a bad line stops the command before anything is sent (or is
skipped and listed with ``--skip-invalid``). Then every event is published with
:class:`publishers.feedback_client.FeedbackPublisher`, with a progress line, and the
command ends with the count published; it exits non-zero if any event failed.

    rotwatch publish --file events.jsonl [--project local-project] [--skip-invalid]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
import uuid
from typing import Iterator

from rotwatch.config import add_settings_flags, settings_from_args
from rotwatch.events import FeedbackEvent, InvalidEvent, format_time

__all__ = ["register", "publish_command", "read_events", "publish_file"]

_LOGGER = logging.getLogger(__name__)

# How many bad lines are printed before "... and N more".
MAX_ERRORS_SHOWN = 20


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish", help="send a file of feedback events (JSON lines) to Pub/Sub",
        description="Check, then publish, one feedback event per line of a JSON-lines "
                    "file to the feedback topic.")
    parser.add_argument("--file", required=True, metavar="FILE",
                        help="JSON lines, one event per line ('-' for standard input)")
    add_settings_flags(parser, "project")
    parser.add_argument("--topic", metavar="projects/<p>/topics/<t>",
                        help="topic to publish to (default: the project's feedback topic)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="publish the valid lines and list the invalid ones "
                             "(default: send nothing if any line is invalid)")
    parser.set_defaults(func=publish_command)


def _complete(data) -> dict:
    """Fill in ``event_id`` (fresh) and ``event_time`` (now) when a line has none."""
    if not isinstance(data, dict):
        raise InvalidEvent("<event>", f"expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    if data.get("event_id") is None:
        data["event_id"] = uuid.uuid4().hex
    if data.get("event_time") is None:
        data["event_time"] = format_time(dt.datetime.now(dt.timezone.utc))
    return data


def read_events(lines) -> Iterator[tuple[int, FeedbackEvent | None, str | None]]:
    """``(line number, event, None)`` or ``(line number, None, reason)`` per line."""
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
            yield line_no, FeedbackEvent.from_dict(_complete(data)), None
        except json.JSONDecodeError as exc:
            yield line_no, None, f"not JSON: {exc.msg} at column {exc.colno}"
        except InvalidEvent as exc:
            yield line_no, None, str(exc)


def publish_file(lines: list[str], publisher, skip_invalid: bool = False,
                 out=None, progress_stream=None) -> dict:
    """Check all lines, then publish; returns counts. Raises nothing for bad lines."""
    out = out or sys.stdout
    from publishers.feedback_client import PublishError
    from publishers.progress import Progress

    events, errors = [], []
    for line_no, event, reason in read_events(lines):
        if event is None:
            errors.append((line_no, reason))
        else:
            events.append(event)
    for line_no, reason in errors[:MAX_ERRORS_SHOWN]:
        print(f"line {line_no}: {reason}", file=out)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more invalid lines", file=out)
    result = {"valid": len(events), "invalid": len(errors), "published": 0, "failed": 0}
    if errors and not skip_invalid:
        print(f"{len(errors)} invalid line(s): nothing sent. Fix them, or pass "
              f"--skip-invalid to send the {len(events)} valid ones.", file=out)
        return result
    progress = Progress(len(events), "events", stream=progress_stream)
    start = time.monotonic()
    for event in events:
        publisher.publish(event)   # futures are tracked by the publisher; flush() waits
        progress.update(1)
    try:
        publisher.flush()
    except PublishError as exc:
        result["failed"] = len(exc.failures)
        for event_id, error in exc.failures[:MAX_ERRORS_SHOWN]:
            print(f"not published: {event_id}: {error}", file=out)
    progress.close()
    result["published"] = len(events) - result["failed"]
    elapsed = time.monotonic() - start
    print(f"published {result['published']} of {len(events)} events to "
          f"{publisher.topic} in {elapsed:.1f} s ({result['failed']} failed, "
          f"{len(errors)} invalid lines skipped)", file=out)
    return result


def publish_command(args: argparse.Namespace) -> int:
    from publishers.feedback_client import FeedbackPublisher, PublishError

    settings = settings_from_args(args)
    try:
        if args.file == "-":
            lines = sys.stdin.readlines()
        else:
            with open(args.file, encoding="utf-8") as handle:
                lines = handle.readlines()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"{args.file} is not UTF-8 text ({exc.reason} at byte {exc.start})",
              file=sys.stderr)
        return 2
    publisher = FeedbackPublisher(settings, topic=args.topic)
    try:
        result = publish_file(lines, publisher, skip_invalid=args.skip_invalid)
    finally:
        try:
            publisher.close()
        except (PublishError, TimeoutError) as exc:  # counted by publish_file already
            _LOGGER.error("step=close outcome=%s", exc)
    if result["invalid"] and not args.skip_invalid:
        return 2
    return 1 if result["failed"] else 0
