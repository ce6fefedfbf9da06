"""`rotwatch emulators start` as a user runs it: a real process, real ports."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys


from emulators.grpcserver import free_port
from proc_lines import read_until
from rotwatch.environ import scoped_environ

ROTWATCH = [sys.executable, "-m", "rotwatch.cli"]


def _start(*args, env=None):
    return subprocess.Popen([*ROTWATCH, "emulators", "start", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)




def _stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=20)
    return out


def test_help_lists_only_working_commands():
    out = subprocess.run([*ROTWATCH, "--help"], capture_output=True, text=True, check=True)
    assert "emulators" in out.stdout
    sub = subprocess.run([*ROTWATCH, "emulators", "--help"], capture_output=True,
                         text=True, check=True)
    assert "start" in sub.stdout


def test_start_prints_exports_persists_data_and_stops_on_sigterm(tmp_path):
    from google.cloud import datastore

    ps, ds = free_port(), free_port()
    data_dir = str(tmp_path / "data")
    args = ["--pubsub-port", str(ps), "--datastore-port", str(ds), "--data-dir", data_dir]
    proc = _start(*args)
    banner = read_until(proc, "Ctrl-C")
    assert f"export PUBSUB_EMULATOR_HOST=127.0.0.1:{ps}" in banner
    assert f"export DATASTORE_EMULATOR_HOST=127.0.0.1:{ds}" in banner
    try:
        with scoped_environ({"DATASTORE_EMULATOR_HOST": f"127.0.0.1:{ds}"}):
            client = datastore.Client(project="local-project")
            entity = datastore.Entity(client.key("Note", "kept"))
            entity["text"] = "survives a restart"
            client.put(entity)
            assert "emulators stopped" in _stop(proc)
            assert proc.returncode == 0

            proc = _start(*args)
            read_until(proc, "Ctrl-C")
            client = datastore.Client(project="local-project")
            assert client.get(client.key("Note", "kept"))["text"] == "survives a restart"
    finally:
        out = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out


def test_a_taken_port_is_refused_not_shared():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proc = _start("--pubsub-port", str(taken), "--datastore-port", str(free_port()),
                      "--in-memory")
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"127.0.0.1:{taken}" in out and "in use" in out
