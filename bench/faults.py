"""The fault suite's long versions: the nine faults of ``tests/faults/`` at full size.

Each fault runs the same scenario code as its test (``tests/faults/faultkit/``),
against the real local stack — emulators in this process (as the tests' session
fixture), ``rotwatch`` commands as child processes — with bigger streams, longer
floods and a 10-minute soak. One row per fault: its invariant, whether it held, and
the counts that decided it (every check of the fault, failures first). A fault with
several scenarios (fault 2: killed mid-stream and before the first checkpoint;
fault 4: the poison mix and a message over the gRPC limit; fault 7: abuse and a
fuzz over HTTP) holds only if all of them do.

    .venv/bin/python bench/faults.py [--soak-seconds 600] [--only 1,4,9] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (_ROOT, os.path.join(_ROOT, "tests"), os.path.join(_ROOT, "tests", "faults")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from faultkit import Outcome  # noqa: E402
from faultkit.procs import log_of  # noqa: E402
from rotwatch.environ import scoped_environ  # noqa: E402

FAULTS = tuple(range(1, 10))
NAMES = {1: "1 duplicate delivery", 2: "2 pipeline SIGKILL and restart",
         3: "3 emulators SIGKILL and restart", 4: "4 poison messages",
         5: "5 duplicate rot events, racing and killed trainers",
         6: "6 altered model artifact", 7: "7 gateway fuzzed and abused",
         8: "8 soak through rotwatch up", 9: "9 clock and order"}


def _merge(fault: int, outcomes: list[Outcome]) -> Outcome:
    """One row from a fault's scenarios: every check, the first one's invariant."""
    merged = Outcome(NAMES[fault], outcomes[0].invariant)
    for o in outcomes:
        for check in o.checks:
            label = check.name if len(outcomes) == 1 else f"[{o.fault}] {check.name}"
            merged.check(label, check.held, check.detail)
        merged.counts[o.fault] = o.counts
    return merged


class Bench:
    def __init__(self, workdir: str, soak_seconds: float):
        self.workdir = workdir
        self.soak_seconds = soak_seconds
        self._delivery = None
        self._gateway = None

    def folder(self, name: str) -> str:
        path = os.path.join(self.workdir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def delivery(self):
        if self._delivery is None:
            from faultkit.pipeline_delivery import run_delivery
            self._delivery = run_delivery(n_valid=20_000, timeout_s=300.0, settle_s=8.0)
        return self._delivery

    def gateway(self):
        if self._gateway is None:
            from google.cloud import datastore

            from faultkit.gateway_proc import start_gateway
            from publishers.gateway.testing import register_zombies
            from rotwatch.config import Settings
            from rotwatch.registry import Registry
            from rotwatch.resources import ensure_pubsub_resources

            folder = self.folder("gateway")
            settings = Settings(project="fault-gateway",
                                model_root=os.path.join(folder, "models"))
            ensure_pubsub_resources(settings)
            client = datastore.Client(project=settings.project)
            register_zombies(Registry(settings, client=client), model="zombies")
            self._gateway = (start_gateway(settings.project, settings.model_root, folder,
                                           log_path=log_of(self.workdir, "gateway")),
                             settings, client)
        return self._gateway

    def close(self):
        if self._gateway is not None:
            self._gateway[0].stop()

    # -- the faults ----------------------------------------------------------------
    def fault_1(self):
        from faultkit.pipeline_delivery import duplicates_outcome
        return [duplicates_outcome(self.delivery())]

    def fault_2(self):
        from faultkit.pipeline_kill import pipeline_kill
        return [pipeline_kill(self.folder("kill"), rate=500.0, kill_after_s=15.0,
                              run_after_restart_s=15.0, timeout_s=180.0,
                              log_path=log_of(self.workdir, "pipeline-kill")),
                pipeline_kill(self.folder("kill-early"), early=True, backlog=10_000,
                              rate=200.0, run_after_restart_s=10.0, timeout_s=120.0,
                              log_path=log_of(self.workdir, "pipeline-kill-early"))]

    def fault_3(self):
        from faultkit.emulator_restart import emulator_restart
        return [emulator_restart(self.folder("restart"), feedback_rows=20_000,
                                 outage_s=5.0,
                                 log_path=log_of(self.workdir, "emulators-restart"))]

    def fault_4(self):
        from faultkit.pipeline_delivery import big_poison, poison_outcome
        return [poison_outcome(self.delivery()),
                big_poison(n_valid=3000, at=1000, window_s=30.0)]

    def fault_5(self):
        from faultkit.trainer_race import trainer_race
        return [trainer_race(self.folder("trainers"), lease_s=10.0, time_limit_s=8.0,
                             rows=5000, log_path=log_of(self.workdir, "trainers"))]

    def fault_6(self):
        from faultkit.tampering import artifact_tampering
        gateway, settings, client = self.gateway()
        return [artifact_tampering(gateway, settings, client)]

    def fault_7(self):
        from faultkit.gateway_abuse import gateway_abuse
        from faultkit.gateway_fuzz import fuzz_gateway
        gateway, _, _ = self.gateway()
        return [gateway_abuse(gateway, "zombies", flood_requests=4000, flood_threads=16),
                fuzz_gateway(gateway, examples=200)]

    def fault_8(self):
        from faultkit.soak import Limits, soak
        # Over 10 minutes a leak of a few MiB a minute shows; a warm-up of a minute
        # lets caches and pools reach their size first.
        return [soak(self.folder("soak"), seconds=self.soak_seconds,
                     warmup_s=min(60.0, self.soak_seconds / 5), rate=20.0,
                     sample_s=5.0, limits=Limits(rss_growth_mib=40.0,
                                                 rss_slope_mib_per_min=3.0),
                     log_path=log_of(self.workdir, "soak"))]

    def fault_9(self):
        from faultkit.pipeline_delivery import clock_outcome
        return [clock_outcome(self.delivery())]


def run(faults, workdir: str, soak_seconds: float) -> list[Outcome]:
    from emulators.local import LocalEmulators

    bench = Bench(workdir, soak_seconds)
    rows = []
    with LocalEmulators(in_memory=True) as stack, scoped_environ(stack.env):
        try:
            for fault in faults:
                started = time.monotonic()
                print(f"fault {fault} ...", flush=True)
                try:
                    outcome = _merge(fault, getattr(bench, f"fault_{fault}")())
                except Exception as exc:  # noqa: BLE001 - a fault that cannot run fails
                    outcome = Outcome(NAMES[fault], "")
                    outcome.check("scenario ran", False,
                                  f"{type(exc).__name__}: {exc}"[:600])
                    traceback.print_exc()
                outcome.counts["seconds"] = round(time.monotonic() - started, 1)
                print(f"fault {fault}: {'held' if outcome.held else 'FAILED'} in "
                      f"{outcome.counts['seconds']} s", flush=True)
                rows.append(outcome)
        finally:
            bench.close()
    return rows


def print_table(rows: list[Outcome]) -> None:
    print()
    print(f"{'fault':52s} {'held':5s} {'s':>6s}")
    for row in rows:
        print(f"{row.fault[:52]:52s} {'yes' if row.held else 'NO':5s} "
              f"{row.counts.get('seconds', 0):6.0f}")
        for check in row.failed() + [c for c in row.checks if c.held]:
            print(f"    {'ok  ' if check.held else 'FAIL'} {check.name}: "
                  f"{check.detail[:300]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-seconds", type=float, default=600.0,
                        help="seconds of steady traffic in the soak (default 600)")
    parser.add_argument("--only", default="",
                        help="comma-separated fault numbers to run (default all 9)")
    parser.add_argument("--json", metavar="FILE",
                        help='write [{"name", "invariant", "held", "detail"}, ...]')
    parser.add_argument("--workdir", help="where logs and data go (default: a temp dir)")
    args = parser.parse_args(argv)
    faults = tuple(int(x) for x in args.only.split(",") if x.strip()) or FAULTS
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"--only {sorted(unknown)}: faults are numbered 1..9")
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = args.workdir or tempfile.mkdtemp(prefix="rotwatch-faults-")
    os.makedirs(workdir, exist_ok=True)
    print(f"logs and data in {workdir}")
    rows = run(faults, workdir, args.soak_seconds)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([row.row() for row in rows], handle, indent=2)
            handle.write("\n")
        print(f"wrote {args.json}")
    return 0 if all(row.held for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
