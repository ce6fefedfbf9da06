"""Every benchmark script starts: its imports resolve and its options parse.

The benchmarks are not run by ``make test`` (they take minutes), so a renamed helper
would otherwise break one silently until someone needs its figures."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_is_listed():
    assert {"detectors.py", "emulators.py", "faults.py", "gateway.py",
            "pipeline_throughput.py", "trainer.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json" in done.stdout, f"{script} has no --json option:\n{done.stdout}"
