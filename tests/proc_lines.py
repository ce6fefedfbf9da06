"""Test helper: read a child process's output until a line says it is ready."""
from __future__ import annotations

import time


def read_until(proc, marker: str, timeout: float = 30.0) -> str:
    """Lines up to and including the first holding ``marker``; kills ``proc`` and
    fails with the last lines if it never comes."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    proc.kill()
    raise AssertionError(f"{marker!r} never printed:\n{''.join(lines[-60:])}")
