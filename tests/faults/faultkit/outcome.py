"""The result of one fault scenario: what was counted, and which invariants held."""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Check", "Outcome"]


@dataclasses.dataclass(frozen=True)
class Check:
    """One invariant, checked: ``held`` and the counts that decided it."""

    name: str
    held: bool
    detail: str


@dataclasses.dataclass
class Outcome:
    """A scenario's counts (``counts``) and its checks, in the order they were made."""

    fault: str
    invariant: str
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    checks: list[Check] = dataclasses.field(default_factory=list)

    def check(self, name: str, held: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(held), detail))
        return bool(held)

    @property
    def held(self) -> bool:
        return bool(self.checks) and all(c.held for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.held]

    def summary(self) -> str:
        """``name: detail`` of every check, failures first."""
        ordered = self.failed() + [c for c in self.checks if c.held]
        return "; ".join(f"{'OK' if c.held else 'FAILED'} {c.name}: {c.detail}"
                         for c in ordered)

    def row(self) -> dict:
        """The ``bench/faults.py --json`` row."""
        return {"name": self.fault, "invariant": self.invariant, "held": self.held,
                "detail": self.summary()}
