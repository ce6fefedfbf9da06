"""Events/s through the whole streaming pipeline on the local runner, against the raw
emulator publish+pull rate measured in the same run, and its memory over a run.

The emulators run in their own process and so does the pipeline (as ``rotwatch up``
runs them). Three phases:

1. raw: publish ``--messages`` feedback messages with the official client and pull
   them back 500 at a time with acks (no pipeline): the ceiling on this machine.
2. throughput: with one pipeline process running (bundle-based DirectRunner,
   PullBacklog on), publish ``--messages`` events as fast as the client goes and time
   until every one is a stored ``Feedback`` entity, and until the pipeline has done
   all its work on them (its CPU falls quiet: the runner may run the Datastore branch
   of a bundle before the windows'); events/s is the latter; also with
   ``--local_pull_batch 0`` (Beam's own 10-message read only) when
   ``--compare-beam-read`` is given.

Phases 1 and 2 alternate for ``--rounds`` rounds (default 3; after one raw warm-up
round): a shared 2-core machine's speed drifts by a fifth within minutes, so each
pipeline round is compared with the raw round just before it, and the figure is the
median of those ratios (every round is printed).

3. memory: publish at ``--load`` x the measured throughput for ``--duration`` seconds,
   sampling the pipeline's resident memory every second; then check that everything
   published was stored.

    .venv/bin/python bench/pipeline_throughput.py [--messages 20000] [--duration 60] \\
        [--rounds 3] [--compare-beam-read] [--json FILE]
    .venv/bin/python bench/pipeline_throughput.py --duration 600   # the 10-minute run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulators.grpcserver import free_port  # noqa: E402

PROJECT = "local-project"
PULL_BATCH = 500   # what a fast consumer asks per Pull (Pub/Sub allows 1000)
STORE_TIMEOUT_S = 600


def start_emulators():
    ps, ds = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "start", "--in-memory",
         "--pubsub-port", str(ps), "--datastore-port", str(ds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Ctrl-C" in line:
            break
    else:
        raise SystemExit("emulators did not start")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    os.environ.update({"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps}",
                       "DATASTORE_EMULATOR_HOST": f"127.0.0.1:{ds}",
                       "GOOGLE_CLOUD_PROJECT": PROJECT})
    return proc


def make_events(n: int, rng):
    from rotwatch.events import FeedbackEvent
    return [FeedbackEvent.create(model="zombies", version="v1",
                                 features=rng.normal(size=4).round(4).tolist(),
                                 prediction=1, was_correct=bool(rng.random() < 0.9))
            for _ in range(n)]


def publish(publisher, topic, events) -> float:
    started = time.monotonic()
    futures = [publisher.publish(topic, e.to_json(), **e.attributes()) for e in events]
    for future in futures:
        future.result(timeout=120)
    return time.monotonic() - started


def bench_raw(publisher, subscriber, topic, subscription, events) -> dict:
    publish_s = publish(publisher, topic, events)
    started, got = time.monotonic(), 0
    while got < len(events):
        response = subscriber.pull(subscription=subscription, max_messages=PULL_BATCH,
                                   timeout=30)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[
                m.ack_id for m in response.received_messages])
            got += len(response.received_messages)
    pull_s = time.monotonic() - started
    return {"messages": len(events), "publish_per_s": len(events) / publish_s,
            "pull_per_s": len(events) / pull_s,
            "publish_pull_per_s": len(events) / (publish_s + pull_s)}


def stored_count(ds) -> int:
    from rotwatch import kinds
    query = ds.aggregation_query(ds.query(kind=kinds.FEEDBACK)).count(alias="n")
    return next(iter(query.fetch()))[0].value


class Pipeline:
    """The streaming pipeline as its own process; RSS sampled with psutil."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.feedback_pipeline", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.lines = []
        self.running = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.running.wait(120):
            self.stop()
            raise SystemExit("pipeline did not start:\n" + "".join(self.lines[-30:]))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if "pipeline running" in line:
                self.running.set()

    def cpu_s(self) -> float:
        import psutil
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def rss_mib(self) -> float:
        import psutil
        proc = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]
                   ) / 2 ** 20

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_stored(ds, expected: int, timeout=STORE_TIMEOUT_S, every=0.25) -> float:
    """When ``expected`` Feedback entities are stored (polled every ``every`` s: a
    count query costs the emulator a scan, so not much more often)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if stored_count(ds) >= expected:
            return time.monotonic()
        time.sleep(every)
    raise SystemExit(f"only {stored_count(ds)} of {expected} events stored in {timeout} s")


def pipeline_argv(subscription, deadletter, rot, namespace, extra=()):
    return [f"--project={PROJECT}", f"--feedback_subscription={subscription}",
            f"--deadletter_topic={deadletter}", f"--rot_topic={rot}",
            f"--datastore_namespace={namespace}", "--window_size_s=10",
            "--window_period_s=5", "--allowed_lateness_s=120", "--late_firing_s=2",
            "--min_n=50", *extra]


def cpu_s(proc) -> float:
    import psutil
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def runqueue_s(pid: int) -> float:
    """Seconds the threads of ``pid`` have waited for a CPU while runnable (Linux
    schedstat; 0 elsewhere): how much other load on the machine held it back."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def wait_quiet(pipeline, since: float, quiet_cores: float = 0.2, hold_s: float = 1.0,
               every: float = 0.2, timeout: float = STORE_TIMEOUT_S) -> float:
    """When the pipeline last worked: the end of its last interval above
    ``quiet_cores`` once it has stayed below for ``hold_s`` (idle it uses ~0.02 cores;
    CPU times tick in 10 ms, so a sample resolves 0.05 cores)."""
    last_busy, prev_t, prev = since, time.monotonic(), pipeline.cpu_s()
    while time.monotonic() - since < timeout:
        time.sleep(every)
        now, cpu = time.monotonic(), pipeline.cpu_s()
        if (cpu - prev) / (now - prev_t) >= quiet_cores:
            last_busy = now
        elif now - last_busy >= hold_s:
            return last_busy
        prev_t, prev = now, cpu
    raise SystemExit(f"the pipeline did not fall quiet in {timeout} s")


def _round(ds, publisher, topic, pipeline, events, emulators) -> dict:
    """Publish ``events`` to the running ``pipeline``; time until all are stored and
    until the pipeline has done all its work on them."""
    before = stored_count(ds)
    cpu0, emu0 = pipeline.cpu_s(), cpu_s(emulators)
    waited0 = runqueue_s(pipeline.proc.pid)
    started = time.monotonic()
    publish_s = publish(publisher, topic, events)
    stored = wait_stored(ds, before + len(events))
    done = wait_quiet(pipeline, stored)
    wall = done - started
    pipeline_cpu, emulator_cpu = pipeline.cpu_s() - cpu0, cpu_s(emulators) - emu0
    return {"messages": len(events), "publish_s": round(publish_s, 2),
            # every event stored, and every event through the whole pipeline
            "stored_per_s": len(events) / (stored - started),
            "events_per_s": len(events) / wall,
            # CPU seconds per wall second: 1.0 = one core busy all along
            "pipeline_cores": round(pipeline_cpu / wall, 2),
            "emulator_cores": round(emulator_cpu / wall, 2),
            "pipeline_cpu_us_per_event": round(pipeline_cpu / len(events) * 1e6),
            "emulator_cpu_us_per_event": round(emulator_cpu / len(events) * 1e6),
            # a busy machine: the pipeline waited this share of the run for a CPU
            "pipeline_cpu_wait_share": round(
                (runqueue_s(pipeline.proc.pid) - waited0) / wall, 2),
            "load_1min": round(os.getloadavg()[0], 2),
            "rss_mib": round(pipeline.rss_mib(), 1)}


def median_round(rounds: list[dict], key: str) -> dict:
    """The round with the median ``key`` (the middle one of an odd number), with
    every round's ``key`` beside it."""
    ordered = sorted(rounds, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2],
            f"rounds_{key}": [round(r[key]) for r in rounds]}


def pipeline_rounds(ds, publisher, topic, argv, make_round, emulators, rounds: int,
                    before_round=None) -> list[dict]:
    """``rounds`` rounds of ``make_round()`` events through one pipeline process, each
    after ``before_round()`` if given."""
    pipeline = Pipeline(argv)
    try:
        runs = []
        for _ in range(rounds):
            if before_round is not None:
                before_round()
            runs.append(_round(ds, publisher, topic, pipeline, make_round(), emulators))
        return runs
    finally:
        pipeline.stop()


def run_memory_phase(ds, publisher, topic, argv, rate: float, duration: float, rng):
    from rotwatch.events import FeedbackEvent
    pipeline = Pipeline(argv)
    samples, published = [], 0
    try:
        before = stored_count(ds)
        started = time.monotonic()
        next_sample = started
        futures = []
        while time.monotonic() - started < duration:
            second = time.monotonic()
            batch = [FeedbackEvent.create(model="zombies", version="v1",
                                          features=rng.normal(size=4).round(4).tolist(),
                                          prediction=1, was_correct=True)
                     for _ in range(int(rate))]
            futures.extend(publisher.publish(topic, e.to_json(), **e.attributes())
                           for e in batch)
            published += len(batch)
            for future in futures[:-len(batch) or None]:   # last second's may be pending
                future.result(timeout=120)
            futures = futures[-len(batch):]
            if second >= next_sample:
                samples.append((round(second - started, 1), round(pipeline.rss_mib(), 1)))
                next_sample += 1.0
            time.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
        for future in futures:
            future.result(timeout=120)
        wait_stored(ds, before + published, every=1.0)
        caught_up_s = time.monotonic() - started - duration
    finally:
        pipeline.stop()
    rss = [m for _, m in samples]
    warm = rss[len(rss) // 5:] or rss
    half = len(warm) // 2
    return {"duration_s": duration, "rate_per_s": rate, "published": published,
            "all_stored": True, "caught_up_after_s": round(caught_up_s, 1),
            "rss_mib_first": rss[0], "rss_mib_max": max(rss), "rss_mib_last": rss[-1],
            # growth between the first and second half of the run after warm-up
            "rss_mib_growth_second_half": round(
                (sum(warm[half:]) / max(1, len(warm[half:])))
                - (sum(warm[:half]) / max(1, half)), 1) if half else 0.0,
            "samples": samples}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000,
                        help="messages for the raw and throughput phases")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating raw and pipeline rounds; the median ratio "
                             "counts (default 3)")
    parser.add_argument("--duration", type=float, default=60,
                        help="seconds of steady load for the memory phase (600 = 10 min)")
    parser.add_argument("--load", type=float, default=0.5,
                        help="memory phase rate as a fraction of measured throughput")
    parser.add_argument("--compare-beam-read", action="store_true",
                        help="also time the pipeline with Beam's 10-message read only")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import numpy as np
    from google.cloud import datastore, pubsub_v1

    from rotwatch import kinds, stats
    emulators = start_emulators()
    results = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    try:
        rng = np.random.default_rng(0)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        rid = uuid.uuid4().hex[:6]
        topic = publisher.create_topic(
            name=f"projects/{PROJECT}/topics/feedback-{rid}").name
        subscription = subscriber.create_subscription(request={
            "name": f"projects/{PROJECT}/subscriptions/feedback-{rid}", "topic": topic,
            "ack_deadline_seconds": 60}).name
        raw_topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/raw-{rid}").name
        raw_sub = subscriber.create_subscription(request={
            "name": f"projects/{PROJECT}/subscriptions/raw-{rid}", "topic": raw_topic,
            "ack_deadline_seconds": 60}).name
        deadletter = publisher.create_topic(name=f"projects/{PROJECT}/topics/dl-{rid}").name
        rot = publisher.create_topic(name=f"projects/{PROJECT}/topics/rot-{rid}").name
        namespace = f"bench-{rid}"
        ds = datastore.Client(project=PROJECT, namespace=namespace)
        version = datastore.Entity(
            ds.key(kinds.MODEL, "zombies", kinds.MODEL_VERSION, "v1"),
            exclude_from_indexes=("reference_stats",))
        version.update({"version": "v1", "number": 1, "n_features": 4, "status": "ready",
                        "baseline_accuracy": 0.9, "reference_stats": json.dumps(
                            stats.reference_statistics(rng.normal(size=(2000, 4))))})
        ds.put(version)

        # Raw and pipeline rounds alternate (raw, pipeline, raw, pipeline, ...): this
        # machine's speed drifts by a fifth within minutes, and a ratio is only fair
        # between figures taken at the same time. The figure is the median ratio.
        events = make_events(args.messages, rng)
        bench_raw(publisher, subscriber, raw_topic, raw_sub, events)   # warm-up
        argv = pipeline_argv(subscription, deadletter, rot, namespace)
        raws = []
        runs = pipeline_rounds(
            ds, publisher, topic, argv, lambda: make_events(args.messages, rng),
            emulators, args.rounds, before_round=lambda: raws.append(
                bench_raw(publisher, subscriber, raw_topic, raw_sub, events)))
        for raw, run in zip(raws, runs):
            run["fraction_of_raw"] = round(run["events_per_s"]
                                           / raw["publish_pull_per_s"], 3)
        results["raw"] = median_round(raws, "publish_pull_per_s")
        results["pipeline"] = median_round(runs, "events_per_s")
        ratio = sorted(r["fraction_of_raw"] for r in runs)[(len(runs) - 1) // 2]
        results["fraction_of_raw"] = {"median": ratio,
                                      "rounds": [r["fraction_of_raw"] for r in runs]}
        r_, p_ = results["raw"], results["pipeline"]
        print(f"raw emulator (median of {args.rounds}): publish {r_['publish_per_s']:,.0f}"
              f"/s, pull {r_['pull_per_s']:,.0f}/s, publish+pull "
              f"{r_['publish_pull_per_s']:,.0f}/s (rounds: "
              f"{', '.join(f'{x:,}' for x in r_['rounds_publish_pull_per_s'])})",
              flush=True)
        print(f"pipeline (PullBacklog, median of {args.rounds}): "
              f"{p_['events_per_s']:,.0f} events/s through the pipeline (all stored at "
              f"{p_['stored_per_s']:,.0f}/s); pipeline {p_['pipeline_cores']} cores "
              f"({p_['pipeline_cpu_us_per_event']} us CPU/event), emulators "
              f"{p_['emulator_cores']} cores ({p_['emulator_cpu_us_per_event']} us "
              f"CPU/event); pipeline waited for a CPU "
              f"{p_['pipeline_cpu_wait_share']:.0%} of the time, load "
              f"{p_['load_1min']} (rounds: "
              f"{', '.join(f'{x:,}' for x in p_['rounds_events_per_s'])} events/s)",
              flush=True)
        print(f"pipeline / raw publish+pull, round by round: "
              f"{', '.join(f'{x:.0%}' for x in results['fraction_of_raw']['rounds'])}; "
              f"median {ratio:.0%} (target: at least 33%)", flush=True)
        if args.compare_beam_read:
            [beam_only] = pipeline_rounds(
                ds, publisher, topic, pipeline_argv(subscription, deadletter, rot,
                                                    namespace, ["--local_pull_batch=0"]),
                lambda: make_events(min(args.messages, 2000), rng), emulators, 1)
            results["pipeline_beam_read_only"] = beam_only
            print(f"pipeline (Beam's 10-message read only): "
                  f"{beam_only['events_per_s']:,.0f} events/s", flush=True)

        rate = max(10.0, round(results["pipeline"]["events_per_s"] * args.load))
        results["memory"] = run_memory_phase(ds, publisher, topic, argv, rate,
                                             args.duration, rng)
        m = results["memory"]
        print(f"memory over {args.duration:.0f} s at {rate:.0f} events/s: RSS first "
              f"{m['rss_mib_first']} MiB, max {m['rss_mib_max']} MiB, last "
              f"{m['rss_mib_last']} MiB, growth 2nd half {m['rss_mib_growth_second_half']}"
              f" MiB; all {m['published']} stored", flush=True)
    finally:
        emulators.terminate()
        emulators.wait(10)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
