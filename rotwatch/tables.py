"""Plain-text tables for the CLI: left-aligned columns, a rule under the header.

>>> print(format_table(["version", "accuracy"], [["v1", "0.9100"], ["v2", "0.9300"]]))
version  accuracy
-------  --------
v1       0.9100
v2       0.9300
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["format_table"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r]
                                          for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()

    out = [line(cells[0]), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells[1:])
    if not rows:
        out.append("(none)")
    return "\n".join(out)
