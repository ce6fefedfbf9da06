"""A dependency-free progress line for the publishers' commands.

On a terminal it redraws one line (``[#####.....] 512/1000  480/s``); elsewhere (CI,
pipes) it logs a line at most every :data:`LOG_EVERY_S` seconds so logs stay short.
"""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]

# Redraw at most 10 times a second: smooth to the eye, negligible cost.
REDRAW_EVERY_S = 0.1
# Without a terminal, one line every 5 s.
LOG_EVERY_S = 5.0
_BAR_CHARS = 30


class Progress:
    def __init__(self, total: int | None, label: str = "events", stream=None):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.extra = ""
        self._start = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()   # updated from worker threads

    def update(self, n: int = 1, extra: str | None = None) -> None:
        with self._lock:
            self.done += n
            if extra is not None:
                self.extra = extra
            now = time.monotonic()
            if now - self._last >= (REDRAW_EVERY_S if self._tty else LOG_EVERY_S):
                self._last = now
                self._draw(now, final=False)

    def close(self) -> None:
        self._draw(time.monotonic(), final=True)

    def _draw(self, now: float, final: bool) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            filled = int(_BAR_CHARS * min(self.done / self.total, 1.0))
            bar = "[" + "#" * filled + "." * (_BAR_CHARS - filled) + "] "
            count = f"{self.done}/{self.total}"
        else:
            bar, count = "", str(self.done)
        line = f"{bar}{count} {self.label}  {rate:,.0f}/s  {elapsed:.1f}s  {self.extra}"
        if self._tty:
            self.stream.write("\r" + line.rstrip() + ("\n" if final else ""))
        elif not final or self.done:
            self.stream.write(line.rstrip() + "\n")
        self.stream.flush()
