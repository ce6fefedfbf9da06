"""Run several processes as one: prefixed logs, loud failures, clean stop.

``rotwatch up`` uses it to run the local stack. Each component is a child process;
its output is copied line by line with a ``[name]`` prefix. If any component exits
while the stack is running, the supervisor says so loudly and stops the rest (a
half-running stack that looks healthy is worse than a stopped one). Stopping sends
SIGTERM in reverse start order, then SIGKILL after a grace period.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence, TextIO

__all__ = ["Component", "Supervisor", "ComponentFailed"]

_LOGGER = logging.getLogger(__name__)

# How long a component may take to shut down after SIGTERM before it is killed;
# the pipeline drains a bundle and the trainer finishes recording a job.
STOP_GRACE_S = 15.0
# How long to wait for a component's ready line: Beam and sklearn imports alone take
# ~5 s on this class of machine, a cold start of the pipeline up to ~30 s.
READY_TIMEOUT_S = 120.0


class ComponentFailed(RuntimeError):
    """A component exited on its own, or never became ready."""


@dataclasses.dataclass
class Component:
    name: str
    argv: Sequence[str]
    ready_marker: str | None = None  # a line fragment that says "I am serving"
    env: dict | None = None
    ready_check: Callable[[], bool] | None = None  # or a probe, e.g. an HTTP health check
    # Infrastructure (the emulators) stops last, after the services that talk to it
    # have finished their own shutdown (deleting subscriptions, recording jobs).
    infrastructure: bool = False


class _Running:
    def __init__(self, spec: Component, proc: subprocess.Popen):
        self.spec = spec
        self.proc = proc
        self.ready = threading.Event()
        self.tail: list[str] = []


class Supervisor:
    def __init__(self, out: TextIO | None = None, env: dict | None = None,
                 on_line: Callable[[str, str], None] | None = None):
        self.out = out or sys.stdout
        self.env = dict(os.environ if env is None else env)
        self.on_line = on_line
        self._running: list[_Running] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.failure: str | None = None

    def _print(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def _pump(self, running: _Running) -> None:
        name = running.spec.name
        for raw in running.proc.stdout:
            line = raw.rstrip("\n")
            running.tail = (running.tail + [line])[-20:]
            self._print(f"[{name:9s}] {line}")
            if self.on_line:
                self.on_line(name, line)
            marker = running.spec.ready_marker
            if marker and marker in line:
                running.ready.set()

    def start(self, spec: Component, timeout: float = READY_TIMEOUT_S) -> None:
        """Start one component and wait for its ready line (if it has one)."""
        env = dict(self.env)
        env.update(spec.env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(list(spec.argv), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        running = _Running(spec, proc)
        self._running.append(running)
        threading.Thread(target=self._pump, args=(running,), daemon=True,
                         name=f"pump-{spec.name}").start()
        if spec.ready_marker is None and spec.ready_check is None:
            return
        deadline = time.monotonic() + timeout
        while not running.ready.wait(0.2):
            if spec.ready_check is not None and spec.ready_check():
                break
            if proc.poll() is not None:
                raise ComponentFailed(
                    f"{spec.name} exited with code {proc.returncode} before it was "
                    f"ready; its last lines:\n  " + "\n  ".join(running.tail))
            if time.monotonic() > deadline:
                raise ComponentFailed(f"{spec.name} was not ready after {timeout:.0f} s "
                                      f"(waiting for {spec.ready_marker!r})")

    def watch(self, stop: threading.Event, poll_s: float = 0.5) -> str | None:
        """Block until ``stop`` is set or a component dies; returns the failure."""
        while not stop.wait(poll_s):
            for running in self._running:
                code = running.proc.poll()
                if code is not None:
                    self.failure = (f"{running.spec.name} exited unexpectedly with code "
                                    f"{code}")
                    self._print("!" * 72)
                    self._print(f"!! {self.failure}; stopping the stack.")
                    self._print("!! its last lines:")
                    for line in running.tail[-10:]:
                        self._print(f"!!   {line}")
                    self._print("!" * 72)
                    return self.failure
        return None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        services = [r for r in self._running if not r.spec.infrastructure]
        infrastructure = [r for r in self._running if r.spec.infrastructure]
        self._stop_group(services, grace)
        self._stop_group(infrastructure, grace)
        self._running.clear()

    def _stop_group(self, group: list, grace: float) -> None:
        for running in reversed(group):
            proc = running.proc
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + grace
        for running in reversed(group):
            proc = running.proc
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                self._print(f"[{running.spec.name:9s}] did not stop in {grace:.0f} s; killing")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
