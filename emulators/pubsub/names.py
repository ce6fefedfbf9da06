"""Resource names as Pub/Sub checks them: ``projects/{p}/topics|subscriptions|snapshots/{id}``.

An id is 3-255 characters, starts with a letter, holds only letters, digits and
``- _ . ~ + %``, and does not start with ``goog`` (Google's rules for topic,
subscription and snapshot ids).
"""
from __future__ import annotations

import re

from emulators.pubsub.errors import invalid

__all__ = ["DELETED_TOPIC", "topic_name", "subscription_name", "snapshot_name",
           "project_name", "project_of"]

# What a subscription's topic reads after its topic was deleted (as in Pub/Sub).
DELETED_TOPIC = "_deleted-topic_"

_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
# Project ids are 6-30 characters in Google Cloud, but emulators accept any simple
# id (`local-project`, `test-project`, numbers): only the path structure is checked.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.:]*")

_RULE = ("an id is 3-255 characters, starts with a letter, uses only letters, digits "
         "and - _ . ~ + %, and does not start with 'goog'")


def _check(name: str, collection: str) -> str:
    parts = name.split("/") if name else []
    if (len(parts) != 4 or parts[0] != "projects" or parts[2] != collection
            or not _PROJECT.fullmatch(parts[1])):
        raise invalid(f"Invalid [{collection}] name: {name!r}. Expected "
                      f"'projects/<project>/{collection}/<id>'.")
    ident = parts[3]
    if not _ID.fullmatch(ident) or ident.lower().startswith("goog"):
        raise invalid(f"Invalid [{collection}] name: {name!r} ({_RULE}).")
    return name


def topic_name(name: str) -> str:
    """``name`` if it is a valid topic name, else INVALID_ARGUMENT."""
    return _check(name, "topics")


def subscription_name(name: str) -> str:
    return _check(name, "subscriptions")


def snapshot_name(name: str) -> str:
    return _check(name, "snapshots")


def project_name(name: str) -> str:
    """``projects/{p}`` as used by the List calls."""
    parts = name.split("/") if name else []
    if len(parts) != 2 or parts[0] != "projects" or not _PROJECT.fullmatch(parts[1]):
        raise invalid(f"Invalid project: {name!r}. Expected 'projects/<project>'.")
    return name


def project_of(name: str) -> str:
    """``projects/{p}`` of a full resource name."""
    return "/".join(name.split("/")[:2])
