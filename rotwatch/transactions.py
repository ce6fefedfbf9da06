"""Run a function in a Datastore transaction, retrying when another writer wins.

Datastore transactions are optimistic: when two transactions touch the same entity,
the first commit wins and the other gets ``ABORTED`` (``Conflict`` on some paths).
The loser must re-read and try again, which is what :func:`run_in_transaction` does.

>>> run_in_transaction(client, lambda: client.get(key))     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from google.api_core import exceptions as gexc

__all__ = ["run_in_transaction", "TransactionFailed", "MAX_ATTEMPTS"]

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

# Contention here is a handful of trainers or CLI users on one model: a few retries
# with jittered backoff settle it; more would only hide a stuck writer.
MAX_ATTEMPTS = 8
# First backoff; doubles each attempt (50 ms .. 6.4 s), with full jitter so racing
# writers do not retry in lock step.
BASE_BACKOFF_S = 0.05


class TransactionFailed(RuntimeError):
    """Every attempt lost to a concurrent writer."""


def run_in_transaction(client, fn: Callable[[], T], *, what: str = "transaction",
                       attempts: int = MAX_ATTEMPTS) -> T:
    """Call ``fn()`` inside ``client.transaction()`` and commit; retry on conflicts.

    ``fn`` reads with ``client.get`` and writes with ``client.put`` (the client routes
    both through the current transaction). It may run more than once, so it must not
    have side effects outside Datastore. An exception other than a conflict aborts
    the transaction and propagates.
    """
    if attempts < 1:
        raise ValueError(f"attempts={attempts!r} must be >= 1")
    for attempt in range(1, attempts + 1):
        try:
            with client.transaction():
                result = fn()
            return result
        except (gexc.Aborted, gexc.Conflict) as exc:
            if attempt == attempts:
                raise TransactionFailed(
                    f"{what} lost to concurrent writers {attempts} times in a row "
                    f"(last error: {exc.message}); try again later") from exc
            pause = random.uniform(0, BASE_BACKOFF_S * 2 ** (attempt - 1))
            _LOGGER.debug("step=transaction what=%s outcome=conflict attempt=%d "
                          "retry_in_s=%.3f", what, attempt, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")
