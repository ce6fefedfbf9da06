"""What the fault suite (``tests/faults/``) and ``bench/faults.py`` share.

Each fault is a scenario function that drives the real local stack — the emulators,
``rotwatch`` CLI processes, the streaming pipeline — and returns a :class:`Outcome`:
the counts it observed and the invariant checks made from them. The tests run a
scenario at a small size and assert on its counts; the benchmark runs the long
versions and prints the table of checks.

Helper modules:

* :mod:`faultkit.procs` — ``rotwatch`` commands as child processes (logs kept,
  ready lines awaited, SIGKILL / SIGTERM by process group).
* :mod:`faultkit.stores` — read what the stack stored and published.
* :mod:`faultkit.outcome` — :class:`Outcome` and :class:`Check`.
"""
from faultkit.outcome import Check, Outcome

__all__ = ["Check", "Outcome"]
