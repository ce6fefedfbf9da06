"""Shared by the benchmarks: the emulators in their own process, as users run them.

Running them in a separate process keeps the server's work off the benchmark's GIL,
so the figures measure the client side the way an app would see it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

from emulators.grpcserver import free_port

__all__ = ["start_emulators", "PROJECT"]

PROJECT = "local-project"


def start_emulators(project: str = PROJECT) -> subprocess.Popen:
    """Start both emulators (Datastore in memory) and point this process at them."""
    ps, ds = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "start", "--in-memory",
         "--pubsub-port", str(ps), "--datastore-port", str(ds), "--project", project],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Ctrl-C" in line:
            break
    else:
        raise SystemExit("emulators did not start: " + str(proc.wait()))
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    os.environ.update({"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps}",
                       "DATASTORE_EMULATOR_HOST": f"127.0.0.1:{ds}",
                       "GOOGLE_CLOUD_PROJECT": project,
                       "ROTWATCH_PROJECT": project})
    return proc
