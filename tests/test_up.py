"""`rotwatch up` as a user runs it: one command, the whole stack, Ctrl-C, resume.

The README's newcomer path: start the stack, register a model, ask the gateway for a
prediction, stop with Ctrl-C, start again and find the same data.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from emulators.grpcserver import free_port
from proc_lines import read_until

ROTWATCH = [sys.executable, "-m", "rotwatch.cli"]


def _up(home, ports):
    gw, ps, ds = ports
    return subprocess.Popen(
        [*ROTWATCH, "up", "--home", str(home), "--gateway-port", str(gw),
         "--pubsub-port", str(ps), "--datastore-port", str(ds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)




def _stop(proc):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def _predict(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_up_serves_stops_on_ctrl_c_and_resumes_with_the_same_data(tmp_path):
    home = tmp_path / "home"
    ports = (free_port(), free_port(), free_port())
    gw, ps, ds = ports
    data = tmp_path / "zombies.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d", "y"])
        for i in range(120):
            x = (i % 7) - 3.0
            writer.writerow([x, x * 0.5, 1.0, -x, int(x > 0)])

    proc = _up(home, ports)
    try:
        banner = read_until(proc, "Ctrl-C stops everything", timeout=180)
        assert f"http://127.0.0.1:{gw}" in banner
        assert f"export PUBSUB_EMULATOR_HOST=127.0.0.1:{ps}" in banner
        assert f"export DATASTORE_EMULATOR_HOST=127.0.0.1:{ds}" in banner
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps}",
               "DATASTORE_EMULATOR_HOST": f"127.0.0.1:{ds}",
               "ROTWATCH_PROJECT": "local-project",
               "ROTWATCH_MODEL_ROOT": str(home / "models")}
        subprocess.run([*ROTWATCH, "model", "train", "--model", "zombies", "--data",
                        str(data), "--label", "y", "--set-default"],
                       env=env, check=True, capture_output=True, text=True, timeout=120)
        answer = _predict(gw, {"instances": [[2.0, 1.0, 1.0, -2.0]], "model": "zombies"})
        assert answer["predictions"] == [1]
        assert answer["version"] == "v1"
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "stack stopped" in out
    assert "killing" not in out  # every component stopped within its grace period
    for prefix in ("[emulators", "[gateway", "[pipeline", "[trainer"):
        assert prefix in out

    proc = _up(home, ports)
    try:
        read_until(proc, "Ctrl-C stops everything", timeout=180)
        answer = _predict(gw, {"instances": [[-2.0, -1.0, 1.0, 2.0]],
                               "model": "zombies/versions/v1"})
        assert answer["predictions"] == [0]
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out[-3000:]
