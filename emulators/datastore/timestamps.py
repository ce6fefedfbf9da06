"""Times in the emulator are integer microseconds; protos take Timestamps."""
from __future__ import annotations

import time

__all__ = ["set_timestamp", "now_us"]


def now_us() -> int:
    return int(time.time() * 1_000_000)


def set_timestamp(target, micros: int) -> None:
    """Write ``micros`` into the ``google.protobuf.Timestamp`` field ``target``."""
    seconds, rest = divmod(micros, 1_000_000)
    target.seconds = seconds
    target.nanos = rest * 1000
