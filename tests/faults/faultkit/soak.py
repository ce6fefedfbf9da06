"""Fault 8: a soak — steady traffic through ``rotwatch up`` for a while.

``rotwatch up`` runs as users run it (its own process, free ports, data under a
private home); v1 of ``zombies`` is registered, and the project's own simulator
(:class:`publishers.simulator.Simulator`) asks the gateway for predictions and sends
feedback by ``prediction_id`` at a steady rate, population A only (nothing rots, so
nothing trains mid-soak). Every ``sample_s`` the resident memory, open files and
threads of each component process (emulators, gateway, pipeline, trainer) are read
with psutil. After ``warmup_s`` of traffic the first samples are the baseline.

Judged at the end: no component died; memory is flat (growth from the baseline to
the end, and the trend over the measured part, within bounds); open files and
threads do not grow; every feedback the gateway accepted (202) is stored as
``Feedback`` or dead-lettered.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time

from faultkit.outcome import Outcome
from faultkit.procs import CliProcess, cli
from faultkit.stores import feedback_ids, pull_all, wait_until

from rotwatch.environ import scoped_environ

__all__ = ["soak", "INVARIANT", "Limits"]

INVARIANT = ("Under steady traffic through `rotwatch up`, memory stays flat, open files "
             "and threads do not grow, and every feedback event accepted is accounted "
             "for (stored or dead-lettered).")
COMPONENTS = ("emulators", "gateway", "pipeline", "trainer")
MiB = 1024 * 1024
START_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a component may grow after the warm-up and still count as flat."""

    rss_growth_mib: float = 40.0      # baseline -> end
    rss_slope_mib_per_min: float = 20.0   # least-squares trend over the measured part
    fds_growth: int = 8
    threads_growth: int = 6


def _component(cmdline: list[str]) -> str | None:
    text = " ".join(cmdline)
    if " emulators " in f" {text} " or "-m emulators" in text:
        return "emulators"
    for name in ("gateway", "pipeline", "trainer"):
        if f"rotwatch.cli {name}" in text:
            return name
    return None


class _Sampler(threading.Thread):
    def __init__(self, processes: dict, every_s: float):
        super().__init__(daemon=True, name="fault8-sampler")
        self.processes = processes
        self.every_s = every_s
        self.samples: dict[str, list[tuple[float, int, int, int]]] = {
            name: [] for name in processes}
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic() - self.t0
            for name, proc in self.processes.items():
                try:
                    with proc.oneshot():
                        self.samples[name].append(
                            (now, proc.memory_info().rss, proc.num_fds(),
                             proc.num_threads()))
                except Exception:  # noqa: BLE001 - a dead component: judged by alive
                    pass
            self.stop.wait(self.every_s)


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 60.0 * sum((x - mx) * (y - my)
                                           for x, y in zip(xs, ys)) / var


def soak(workdir: str, seconds: float = 40.0, warmup_s: float = 12.0, rate: float = 20.0,
         sample_s: float = 2.0, limits: Limits = Limits(),
         log_path: str | None = None) -> Outcome:
    import psutil

    from emulators.grpcserver import free_port
    from publishers.gateway.testing import register_zombies
    from publishers.simulator import SimulationConfig, Simulator
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.stack import StackConfig, stack_env

    out = Outcome(f"8 soak ({seconds:g} s of traffic through rotwatch up)", INVARIANT)
    c = out.counts
    home = os.path.join(workdir, "stack")
    gw, ps, ds = free_port(), free_port(), free_port()
    stack = StackConfig(home=home, pubsub_port=ps, datastore_port=ds, gateway_port=gw)
    argv = cli("up", "--home", home, "--gateway-port", str(gw), "--pubsub-port", str(ps),
               "--datastore-port", str(ds),
               "--pipeline-args=--window_size_s 10 --window_period_s 5 --min_n 1000000 "
               "--checkpoint_interval_s 5",
               "--trainer-args=--sweep-interval 10")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    up = CliProcess("up", argv, env, log_path)
    sampler = None
    try:
        up.wait_for("rotwatch is up", START_TIMEOUT_S)
        processes = {}
        for child in psutil.Process(up.pid).children():
            name = _component(child.cmdline())
            if name:
                processes[name] = child
        c["components"] = sorted(processes)
        with scoped_environ(stack_env(stack)):
            settings = Settings(project=stack.project, model_root=stack.model_root,
                                home=home)
            register_zombies(Registry(settings), model="zombies", set_default=True)

            events = max(1, int(rate * seconds))
            simulator = Simulator(SimulationConfig(
                gateway_url=stack.gateway_url, model="zombies", events=events,
                mutation_start=events, rate=rate, concurrency=4, seed=8))
            sampler = _Sampler(processes, sample_s)
            sampler.start()
            summary = simulator.run()
            traffic_s = time.monotonic() - sampler.t0
            sent = {r.prediction_id for r in summary.records if r.feedback_sent}
            from google.cloud import datastore, pubsub_v1
            client = datastore.Client(project=stack.project)
            wait_until(lambda: feedback_ids(client, "zombies") >= sent, 90.0, every=1.0)
            stored = feedback_ids(client, "zombies")
            letters = [m for m in pull_all(pubsub_v1.SubscriberClient(),
                                           settings.subscription("deadletter"),
                                           timeout=2.0)
                       # a late report is about a stored event, not a refusal
                       if m.attributes.get("rotwatch_stage") != "late"]
        sampler.stop.set()
        sampler.join(10)
        alive = {name: p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                 for name, p in processes.items()}
        c.update(predictions=summary.predictions, request_errors=summary.errors,
                 feedback_accepted=len(sent), stored=len(sent & stored),
                 dead_lettered=len(letters), traffic_s=round(traffic_s, 1),
                 alive=alive)
    finally:
        if sampler is not None:
            sampler.stop.set()
        up.stop(grace=60)

    growth = {}
    for name, series in sampler.samples.items():
        measured = [s for s in series if s[0] >= warmup_s]
        if len(measured) < 4:
            growth[name] = None
            continue
        base, end = measured[:2], measured[-2:]
        growth[name] = {
            "rss_mib": round((max(s[1] for s in end) - min(s[1] for s in base)) / MiB, 1),
            "rss_start_mib": round(min(s[1] for s in base) / MiB, 1),
            "rss_slope_mib_per_min": round(_slope_per_min(
                [(s[0], s[1] / MiB) for s in measured]), 1),
            "fds": max(s[2] for s in end) - min(s[2] for s in base),
            "threads": max(s[3] for s in end) - min(s[3] for s in base),
            "samples": len(measured)}
    c["growth_after_warmup"] = growth
    lost = len(sent) - c["stored"] - c["dead_lettered"]
    out.check("every component alive",
              len(alive) == len(COMPONENTS) and all(alive.values()),
              f"alive after the soak: {alive}")
    out.check("every event accounted for",
              lost <= 0 and c["request_errors"] == 0 and len(sent) == events,
              f"{c['predictions']} predictions ({c['request_errors']} failed requests); "
              f"{len(sent)} feedback accepted = {c['stored']} stored + "
              f"{c['dead_lettered']} dead-lettered ({max(lost, 0)} unaccounted)")
    measured = {k: v for k, v in growth.items() if v}
    flat = all(v["rss_mib"] <= limits.rss_growth_mib
               and v["rss_slope_mib_per_min"] <= limits.rss_slope_mib_per_min
               for v in measured.values())
    out.check("memory flat", flat and len(measured) == len(COMPONENTS),
              "; ".join(f"{k} {v['rss_start_mib']} MiB {v['rss_mib']:+} MiB (trend "
                        f"{v['rss_slope_mib_per_min']:+} MiB/min)"
                        for k, v in measured.items())
              + f" (limits +{limits.rss_growth_mib} MiB, "
                f"{limits.rss_slope_mib_per_min} MiB/min)")
    out.check("no growth in open files or threads",
              all(v["fds"] <= limits.fds_growth and v["threads"] <= limits.threads_growth
                  for v in measured.values()) and len(measured) == len(COMPONENTS),
              "; ".join(f"{k} files {v['fds']:+}, threads {v['threads']:+}"
                        for k, v in measured.items())
              + f" (limits +{limits.fds_growth} files, +{limits.threads_growth} threads)")
    return out
