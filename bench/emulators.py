"""Rates of the local emulators, driven by the official clients.

Starts the emulators in their own process (as users run them), then measures with
``google-cloud-pubsub`` and ``google-cloud-datastore``:

* publish rate (msg/s) with the client's default batching,
* streaming-pull rate (msg/s) with ``subscriber.subscribe`` and acks,
* unary Pull rate with 10 messages a pull (what Beam's DirectRunner does) and 500,
* Datastore put rate (entities/s, ``put_multi`` of 500) and query rate (entities/s,
  a full kind scan in pages, and a filtered query),
* the memory one retained acknowledged message costs the Pub/Sub emulator (bytes per
  message, ``--retained`` of them): feedback-sized messages (~300 bytes of data and
  rotwatch's four attributes), each published alone as the gateway does, pulled and
  acked 500 at a time on a subscription with ``retain_acked_messages``. It is the
  growth of the emulator process's resident memory over a second batch of that size,
  after a first batch has warmed up its allocator, divided by the batch size, so it
  includes the allocator's own overhead.

    .venv/bin/python bench/emulators.py [--messages 20000] [--entities 20000]
                                        [--retained 20000] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._emulators import start_emulators  # noqa: E402


PROJECT = "local-project"
# Retained-memory run: publish this many, pull and ack them, and again.
RETAINED_CHUNK = 500


def bench_retained(n: int, pid: int) -> dict:
    """Bytes of resident memory per retained acked message in process ``pid``."""
    import psutil
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "bench-retained")
    sub = subscriber.subscription_path(PROJECT, "bench-retained")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": sub, "topic": topic,
                                            "retain_acked_messages": True})
    data = b'{"event_id": "%08d", "model": "zombies", "version": "v1", ' \
           b'"features": [0.1, 0.2, 0.3, 0.4], "prediction": 1, "was_correct": true, ' \
           b'"event_time": "2025-01-01T00:00:00+00:00", "note": "' + b"x" * 105 + b'"}'

    def batch(first: int) -> int:
        for start in range(first, first + n, RETAINED_CHUNK):   # steady traffic
            futures = [publisher.publish(topic, data % i, event_id=f"e-{i:08d}",
                                         event_ts="1735689600000", model="zombies",
                                         version="v1")
                       for i in range(start, min(start + RETAINED_CHUNK, first + n))]
            for future in futures:
                future.result(timeout=60)
            acked = 0
            while acked < len(futures):
                response = subscriber.pull(subscription=sub, max_messages=500,
                                           timeout=30)
                if not response.received_messages:
                    break
                subscriber.acknowledge(subscription=sub, ack_ids=[
                    m.ack_id for m in response.received_messages])
                acked += len(response.received_messages)
        time.sleep(0.5)
        return psutil.Process(pid).memory_info().rss

    warm = batch(0)
    grown = batch(n)
    return {"retained_messages": 2 * n, "message_data_bytes": len(data % 0),
            "retained_acked_bytes_per_message": round((grown - warm) / n)}


def bench_pubsub(n: int) -> dict:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "bench")
    publisher.create_topic(name=topic)
    subs = {}
    for name in ("stream", "pull10", "pull500"):
        subs[name] = subscriber.subscription_path(PROJECT, f"bench-{name}")
        subscriber.create_subscription(name=subs[name], topic=topic, ack_deadline_seconds=60)

    payload = b"x" * 200
    start = time.perf_counter()
    futures = [publisher.publish(topic, payload, event_id=str(i)) for i in range(n)]
    for future in futures:
        future.result(timeout=60)
    publish_s = time.perf_counter() - start

    received = 0
    done = threading.Event()
    lock = threading.Lock()

    def callback(message):
        nonlocal received
        message.ack()
        with lock:
            received += 1
            if received >= n:
                done.set()

    start = time.perf_counter()
    future = subscriber.subscribe(
        subs["stream"], callback,
        flow_control=pubsub_v1.types.FlowControl(max_messages=1000))
    done.wait(timeout=300)
    stream_s = time.perf_counter() - start
    future.cancel()
    try:
        future.result(timeout=10)
    except Exception:  # noqa: BLE001 - cancellation surfaces as an exception here
        pass

    def pull_rate(sub, batch):
        got, start = 0, time.perf_counter()
        while got < n:
            response = subscriber.pull(subscription=sub, max_messages=batch, timeout=30)
            if not response.received_messages:
                break
            subscriber.acknowledge(subscription=sub,
                                   ack_ids=[m.ack_id for m in response.received_messages])
            got += len(response.received_messages)
        return got / (time.perf_counter() - start)

    return {
        "messages": n,
        "publish_msg_s": round(n / publish_s),
        "streaming_pull_msg_s": round(received / stream_s),
        "streaming_pull_received": received,
        "pull_10_msg_s": round(pull_rate(subs["pull10"], 10)),
        "pull_500_msg_s": round(pull_rate(subs["pull500"], 500)),
    }


def bench_datastore(n: int) -> dict:
    from google.cloud import datastore

    client = datastore.Client(project=PROJECT)
    entities = []
    for i in range(n):
        entity = datastore.Entity(client.key("Bench", f"e{i:07d}"),
                                  exclude_from_indexes=("features",))
        entity.update({"model": "m", "version": f"v{i % 3 + 1}", "n": i,
                       "features": [0.1, 0.2, 0.3, 0.4]})
        entities.append(entity)
    start = time.perf_counter()
    for i in range(0, n, 500):
        client.put_multi(entities[i:i + 500])
    put_s = time.perf_counter() - start

    start = time.perf_counter()
    scanned = sum(1 for _ in client.query(kind="Bench").fetch())
    scan_s = time.perf_counter() - start

    start = time.perf_counter()
    query = client.query(kind="Bench")
    query.add_filter(filter=datastore.query.PropertyFilter("version", "=", "v2"))
    query.add_filter(filter=datastore.query.PropertyFilter("n", ">=", n // 2))
    filtered = sum(1 for _ in query.fetch())
    filter_s = time.perf_counter() - start
    return {
        "entities": n,
        "put_entities_s": round(n / put_s),
        "scan_entities_s": round(scanned / scan_s),
        "scanned": scanned,
        "filtered_query_s": round(filter_s, 3),
        "filtered_matches": filtered,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--entities", type=int, default=20000)
    parser.add_argument("--retained", type=int, default=20000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    proc = start_emulators()
    try:
        # First, while the emulator's memory holds nothing else.
        retained = bench_retained(args.retained, proc.pid)
        results = {"pubsub": bench_pubsub(args.messages), "retained": retained,
                   "datastore": bench_datastore(args.entities)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print("Pub/Sub emulator (official client, 200-byte messages)")
    for key, value in results["pubsub"].items():
        print(f"  {key:26s} {value}")
    print(f"  retained acked: {retained['retained_acked_bytes_per_message']} "
          f"bytes/message ({retained['message_data_bytes']}-byte data + 4 attributes, "
          f"{retained['retained_messages']} messages)")
    print("Datastore emulator (official client)")
    for key, value in results["datastore"].items():
        print(f"  {key:26s} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
