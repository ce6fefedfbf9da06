"""``rotwatch`` commands as child processes: started in their own process group, their
output kept (in memory and in a log file), ready lines awaited, killed by group.

Every process is started with ``start_new_session=True``, so a SIGKILL reaches the
children it spawned (the trainer's training process, Beam's workers) and nothing of
the test runner. Processes are only ever signalled by the id this module started.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Iterable, Mapping

__all__ = ["CliProcess", "cli", "emulators_cmd", "stack_env",
           "ProcessFailed", "log_of"]

# After SIGTERM, how long a process may take to stop before it is killed.
STOP_GRACE_S = 15.0
# Lines kept in memory per process (the log file keeps them all).
KEEP_LINES = 20_000


class ProcessFailed(RuntimeError):
    """A child process exited, or never printed the line it was waited for."""


def log_of(folder: str, name: str) -> str:
    """Where a scenario's child processes log: ``<folder>/<name>.log``."""
    return os.path.join(folder, f"{name}.log")


def cli(*args: str) -> list[str]:
    """argv of ``rotwatch <args>`` with this interpreter."""
    return [sys.executable, "-m", "rotwatch.cli", *args]


def emulators_cmd(pubsub_port: int, datastore_port: int, data_dir: str | None,
                  project: str = "local-project") -> list[str]:
    """argv of ``rotwatch emulators start`` (``data_dir=None``: in memory)."""
    store = ["--data-dir", data_dir] if data_dir else ["--in-memory"]
    return [sys.executable, "-m", "emulators", "start", "--pubsub-port", str(pubsub_port),
            "--datastore-port", str(datastore_port), "--project", project, *store]


def stack_env(project: str, model_root: str, home: str | None = None,
              pubsub: str | None = None, datastore: str | None = None) -> dict[str, str]:
    """The environment of a child: this one's, pointed at ``project`` and the emulators
    (``pubsub`` / ``datastore`` as ``host:port``; default: this process's)."""
    env = dict(os.environ)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.update({
        "ROTWATCH_PROJECT": project, "GOOGLE_CLOUD_PROJECT": project,
        "PUBSUB_PROJECT_ID": project, "DATASTORE_PROJECT_ID": project,
        "ROTWATCH_MODEL_ROOT": model_root, "PYTHONUNBUFFERED": "1",
    })
    if home:
        env["ROTWATCH_HOME"] = home
    if pubsub:
        env["PUBSUB_EMULATOR_HOST"] = pubsub
    if datastore:
        env["DATASTORE_EMULATOR_HOST"] = datastore
    return env


class CliProcess:
    """One child process; ``lines`` is what it printed so far (stdout + stderr)."""

    def __init__(self, name: str, argv: Iterable[str], env: Mapping[str, str],
                 log_path: str | None = None):
        self.name = name
        self.argv = list(argv)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        # kept open for the life of the process, closed by stop()
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=dict(env),
                                     start_new_session=True, errors="replace")
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._pump, daemon=True,
                                        name=f"fault-{name}")
        self._reader.start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if self._log:
                self._log.write(f"[{self.name}] {line}\n")
                self._log.flush()
            with self._cond:
                self.lines.append(line)
                if len(self.lines) > KEEP_LINES:
                    del self.lines[:len(self.lines) - KEEP_LINES]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 25) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines if regex.search(line)]

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> str:
        """The first line from index ``start`` on that matches ``pattern``.

        Raises :class:`ProcessFailed` (with the process's last lines) if it exits or
        the time runs out first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = max(seen, len(self.lines))
                if not self.alive and not self._reader.is_alive():
                    raise ProcessFailed(f"{self.name} exited with code "
                                        f"{self.proc.returncode} before printing "
                                        f"{pattern!r}; last lines:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessFailed(f"{self.name} did not print {pattern!r} within "
                                        f"{timeout:.0f} s; last lines:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group this object started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, at once: no handler runs, nothing is flushed."""
        if self.alive:
            self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after ``grace``; the exit code."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def __enter__(self) -> "CliProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
