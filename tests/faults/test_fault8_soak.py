"""Fault 8 — soak: steady traffic through ``rotwatch up``.

Invariant: memory flat, no growth in open files or threads, every event accounted
for. The short version: 30 s of traffic at 20 predictions+feedback/s after the stack
is up; ``bench/faults.py --soak-seconds`` runs the long one (600 s by default). See
``faultkit/soak.py``.
"""
from __future__ import annotations

import pytest

from faultkit.procs import log_of
from faultkit.soak import COMPONENTS, Limits, soak

pytestmark = pytest.mark.slow

LIMITS = Limits()


@pytest.fixture(scope="module")
def soaked(fault_dir, tmp_path_factory):
    return soak(str(tmp_path_factory.mktemp("fault8")), seconds=30.0, warmup_s=8.0,
                rate=20.0, limits=LIMITS, log_path=log_of(fault_dir, "soak"))


def test_every_component_survives_and_every_event_is_accounted_for(soaked):
    """Invariant: all four components alive; accepted feedback = stored +
    dead-lettered; no failed request."""
    c = soaked.counts
    assert sorted(c["alive"]) == sorted(COMPONENTS) and all(c["alive"].values())
    assert c["request_errors"] == 0 and c["feedback_accepted"] == 600, soaked.summary()
    assert c["stored"] + c["dead_lettered"] == c["feedback_accepted"], soaked.summary()


def test_memory_stays_flat(soaked):
    """Invariant: per component, RSS growth after the warm-up and its trend stay
    within the limits."""
    growth = soaked.counts["growth_after_warmup"]
    for name in COMPONENTS:
        g = growth[name]
        assert g is not None, soaked.summary()
        assert g["rss_mib"] <= LIMITS.rss_growth_mib, soaked.summary()
        assert g["rss_slope_mib_per_min"] <= LIMITS.rss_slope_mib_per_min, \
            soaked.summary()


def test_open_files_and_threads_do_not_grow(soaked):
    """Invariant: per component, open files and threads at the end <= after the
    warm-up, plus a small allowance for pools."""
    growth = soaked.counts["growth_after_warmup"]
    for name in COMPONENTS:
        g = growth[name]
        assert g["fds"] <= LIMITS.fds_growth, soaked.summary()
        assert g["threads"] <= LIMITS.threads_growth, soaked.summary()
