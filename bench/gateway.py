"""Predict latency and throughput of the gateway, against bare in-process ``predict``.

Starts the emulators (own process), registers the article's zombie model (v1, a
depth-5 decision tree on population A), runs ``rotwatch gateway run`` in a
subprocess (uvicorn, one worker, as in the container) and drives it over HTTP/1.1
keep-alive connections with single-instance requests, the article's body:
``{"instances": [[2.0, 3.4, 5.1, 1.0]], "model": "zombies"}``.

It prints, in the same run:

* bare: the registry's verified estimator called in this process —
  ``estimator.predict`` on one row (what an app embedding the model does), and the
  gateway's own call (:meth:`LoadedVersion.predict` on a float array);
* HTTP: p50/p99 latency at 1 connection (requests one after another) and at
  ``--connections`` (throughput), with the gateway process's CPU seconds, so the
  rate per core of the gateway compares with the bare rate per core.

The client is a minimal asyncio HTTP/1.1 client (fixed request, Content-Length
framed answers): a general client such as httpx spends more CPU per request than the
server does, and on a 2-core machine would measure itself.

    .venv/bin/python bench/gateway.py [--requests 20000] [--connections 4] [--json FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._emulators import start_emulators  # noqa: E402

from emulators.grpcserver import free_port  # noqa: E402

PROJECT = "local-project"
BODY = json.dumps({"instances": [[2.0, 3.4, 5.1, 1.0]], "model": "zombies"}).encode()
# Targets from the issue.
P99_TARGET_MS = 10.0
RATE_SHARE_TARGET = 0.5
# Requests sent and discarded first: connections open, caches warm.
WARMUP_REQUESTS = 500




def register_model(model_root: str):
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    settings = Settings(project=PROJECT, model_root=model_root)
    ensure_pubsub_resources(settings)
    registry = Registry(settings)
    register_zombies(registry)
    return registry


def bench_bare(registry, seconds: float = 3.0) -> dict:
    """Single-row predictions in this process, timed in CPU seconds (one core), so
    other processes on the machine do not count against them."""
    import numpy as np

    from publishers.gateway.models import ModelCache

    loaded = ModelCache(registry).resolve("zombies")
    row = [[2.0, 3.4, 5.1, 1.0]]
    out = {}
    for name, call in (
            ("estimator.predict(list)", lambda: loaded.estimator.predict(row)),
            ("LoadedVersion.predict(array)",
             lambda: loaded.predict(np.asarray(row, dtype=np.float64)))):
        for _ in range(200):
            call()
        n, start = 0, time.process_time()
        while time.process_time() - start < seconds:
            for _ in range(100):
                call()
            n += 100
        elapsed = time.process_time() - start
        out[name] = {"rate_per_core": n / elapsed, "mean_us": elapsed / n * 1e6}
    return out


def start_gateway(model_root: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, ROTWATCH_MODEL_ROOT=model_root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotwatch.cli", "--log-level", "WARNING", "gateway", "run",
         "--port", str(port), "--no-updates"], env=env)
    import urllib.request
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if json.loads(r.read())["serving"].get("zombies"):
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the gateway did not start")


async def _drive(port: int, total: int, connections: int) -> tuple[list[float], float]:
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: "
               + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    latencies: list[float] = []

    async def worker(n: int):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    per = max(1, total // connections)
    start = time.perf_counter()
    await asyncio.gather(*(worker(per) for _ in range(connections)))
    return latencies, time.perf_counter() - start


def bench_http(port: int, pid: int, total: int, connections: int) -> dict:
    import psutil

    server = psutil.Process(pid)
    asyncio.run(_drive(port, WARMUP_REQUESTS, connections))
    cpu_before = sum(server.cpu_times()[:2])
    latencies, elapsed = asyncio.run(_drive(port, total, connections))
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    latencies.sort()
    n = len(latencies)
    return {"connections": connections, "requests": n,
            "rate_per_s": n / elapsed,
            "p50_ms": latencies[n // 2] * 1e3,
            "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3,
            "server_cpu_s": cpu,
            "rate_per_server_core": n / cpu if cpu > 0 else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    emulators = start_emulators()
    gateway = None
    try:
        with tempfile.TemporaryDirectory() as model_root:
            registry = register_model(model_root)
            bare = bench_bare(registry)
            port = free_port()
            gateway = start_gateway(model_root, port)
            serial = bench_http(port, gateway.pid, min(args.requests, 5000), 1)
            loaded = bench_http(port, gateway.pid, args.requests, args.connections)
    finally:
        for proc in (gateway, emulators):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)

    server = {"http": "httptools" if _has("httptools") else "h11",
              "loop": "uvloop" if _has("uvloop") else "asyncio"}
    sklearn_rate = bare["estimator.predict(list)"]["rate_per_core"]
    own_rate = bare["LoadedVersion.predict(array)"]["rate_per_core"]
    http_rate = loaded["rate_per_server_core"]
    share = http_rate / sklearn_rate
    load = os.getloadavg()[0]
    print(f"gateway predict, single-instance requests (uvicorn {server['http']} / "
          f"{server['loop']}, 1 worker; {os.cpu_count()} cores, load average {load:.1f})")
    for name, row in bare.items():
        print(f"  bare {name:30s} {row['rate_per_core']:8,.0f}/s per core "
              f"({row['mean_us']:.1f} us CPU)")
    for row in (serial, loaded):
        print(f"  HTTP {row['connections']:2d} connection(s) {row['rate_per_s']:8,.0f}/s  "
              f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  server CPU "
              f"{row['server_cpu_s']:.1f} s -> {row['rate_per_server_core']:,.0f}/s per "
              "server core")
    print(f"  p99 at 1 connection {serial['p99_ms']:.2f} ms, at {loaded['connections']} "
          f"{loaded['p99_ms']:.2f} ms (target < {P99_TARGET_MS:g} ms)")
    print(f"  per-core HTTP rate = {share:.2f} x bare estimator.predict "
          f"(target >= {RATE_SHARE_TARGET}: {'met' if share >= RATE_SHARE_TARGET else 'NOT met'})"
          f", {http_rate / own_rate:.2f} x the gateway's own in-process predict")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"server": server, "load_average": load, "bare": bare,
                       "http_serial": serial, "http_loaded": loaded,
                       "per_core_share_of_bare": share,
                       "per_core_share_of_own_predict": http_rate / own_rate},
                      handle, indent=1)
    return 0


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
