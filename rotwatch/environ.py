"""Environment variables set for a while: where the official clients look for the
emulators (``PUBSUB_EMULATOR_HOST``, ``DATASTORE_EMULATOR_HOST``) and credentials."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping, Sequence

__all__ = ["scoped_environ"]


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str] | None = None, drop: Sequence[str] = (),
                   keep: Sequence[str] = ()) -> Iterator[None]:
    """``values`` set and ``drop`` unset in ``os.environ`` inside the block; these and
    the ``keep`` variables (which code inside the block may set) are restored (or
    removed again) after it, even on an error."""
    values = values or {}
    saved = {k: os.environ.get(k) for k in (*values, *drop, *keep)}
    for key in drop:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
