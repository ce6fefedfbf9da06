"""Fault 3: the emulators are SIGKILLed and restarted on the same ports and data dir.

``rotwatch emulators start --data-dir D`` runs as a child process. A model (two
versions, artifacts, default history) and ``Feedback`` rows are written through the
official clients; then the process group gets SIGKILL — no handler runs, SQLite gets
no chance to close. While it is down, a read is started on the same Datastore client
(its default retry covers UNAVAILABLE) and a write is tried (commits are not retried:
it must fail loudly, not vanish). The emulators start again on the same ports and
data dir, and the clients made *before* the crash are used again, unchanged.

Pub/Sub's emulator keeps its state in memory, like Google's own: topics and
subscriptions are gone after a restart and are made again by ``rotwatch setup``
(``ensure_pubsub_resources``); the scenario checks that the old publisher and
subscriber objects work against the new server.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time

from faultkit.outcome import Outcome
from faultkit.procs import CliProcess, emulators_cmd
from faultkit.stores import feedback_ids, put_entities

from rotwatch.environ import scoped_environ

__all__ = ["emulator_restart", "INVARIANT"]

PROJECT = "fault-emulators"
MODEL = "survivor"
INVARIANT = ("After SIGKILL and a restart on the same data dir and ports, every "
             "Datastore entity written before is intact (Feedback, models, versions, "
             "default history, artifacts load sha256-checked) and the official clients "
             "created before the crash work again without being recreated; a commit "
             "during the outage fails loudly, a read during it completes after it.")
READY_TIMEOUT_S = 60.0


def _feedback(client, n: int, start: dt.datetime) -> list:
    from google.cloud import datastore
    from rotwatch import kinds
    rows = []
    for i in range(n):
        entity = datastore.Entity(client.key(kinds.FEEDBACK, f"survivor-{i:06d}"),
                                  exclude_from_indexes=("features",))
        entity.update({"model": MODEL, "version": "v1",
                       "features": [float(i), 1.5, -2.0, i / 7.0], "prediction": i % 2,
                       "was_correct": i % 3 != 0, "label": None, "correct": i % 3 != 0,
                       "event_time": start + dt.timedelta(milliseconds=10 * i),
                       "stored_at": start})
        rows.append(entity)
    return rows


def _snapshot(client) -> dict:
    from rotwatch import kinds
    out = {}
    for kind in (kinds.FEEDBACK, kinds.MODEL, kinds.MODEL_VERSION, kinds.DEFAULT_CHANGE):
        for entity in client.query(kind=kind).fetch():
            out[entity.key.flat_path] = dict(entity)
    return out


def _commit_stream(client, stop: threading.Event, record: dict,
                   batch: int = 50) -> threading.Thread:
    """Commit batches of ``batch`` entities until one fails; ``record`` gets the
    numbers of the commits that returned OK (``ok``) and the one that failed."""
    from google.cloud import datastore

    def run():
        i = 0
        while not stop.is_set():
            entities = [datastore.Entity(client.key("FaultCommit", f"c{i:05d}-{j:03d}"))
                        for j in range(batch)]
            for e in entities:
                e["commit"] = i
            try:
                client.put_multi(entities)
            except Exception as exc:  # noqa: BLE001 - the outage: recorded, stop
                record["failed"] = (i, type(exc).__name__)
                return
            record.setdefault("ok", []).append(i)
            i += 1
    thread = threading.Thread(target=run, daemon=True, name="fault3-commits")
    thread.start()
    return thread


def _commits_after(client, attempted: int, batch: int = 50) -> dict[int, int]:
    query = client.query(kind="FaultCommit")
    query.keys_only()
    present: dict[int, int] = {}
    for entity in query.fetch():
        number = int(entity.key.name[1:6])
        present[number] = present.get(number, 0) + 1
    return {i: present.get(i, 0) for i in range(attempted)}


def _timed(call, results: dict, name: str) -> threading.Thread:
    def run():
        t0 = time.monotonic()
        try:
            results[name] = ("ok", call(), time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 - recorded: the scenario reports it
            results[name] = ("error", f"{type(exc).__name__}: {exc}"[:300],
                             time.monotonic() - t0)
    thread = threading.Thread(target=run, daemon=True, name=f"fault3-{name}")
    thread.start()
    return thread


def _until_ok(call, timeout: float) -> tuple[bool, float, int, str]:
    """Retry ``call`` (our own loop, on top of the client's) until it works."""
    t0, attempts, last = time.monotonic(), 0, ""
    while time.monotonic() - t0 < timeout:
        attempts += 1
        try:
            call()
            return True, time.monotonic() - t0, attempts, last
        except Exception as exc:  # noqa: BLE001 - retried, the last one is reported
            last = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(0.5)
    return False, time.monotonic() - t0, attempts, last


def emulator_restart(workdir: str, feedback_rows: int = 2000, outage_s: float = 2.0,
                     recover_timeout_s: float = 60.0, log_path: str | None = None
                     ) -> Outcome:
    from google.cloud import datastore, pubsub_v1

    from emulators.grpcserver import free_port
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    out = Outcome("3 emulator restart", INVARIANT)
    c = out.counts
    ps_port, ds_port = free_port(), free_port()
    data_dir = os.path.join(workdir, "emulators")
    env = {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps_port}",
           "DATASTORE_EMULATOR_HOST": f"127.0.0.1:{ds_port}",
           "PUBSUB_PROJECT_ID": PROJECT, "DATASTORE_PROJECT_ID": PROJECT}
    argv = emulators_cmd(ps_port, ds_port, data_dir, PROJECT)

    def start():
        proc = CliProcess("emulators", argv, os.environ, log_path)
        proc.wait_for("Ctrl-C", READY_TIMEOUT_S)
        return proc

    emu = start()
    try:
        with scoped_environ(env):
            settings = Settings(project=PROJECT, model_root=os.path.join(workdir, "models"))
            ensure_pubsub_resources(settings)
            client = datastore.Client(project=PROJECT)
            publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            registry = Registry(settings, client=client, publisher=publisher)
            register_zombies(registry, model=MODEL)
            put_entities(client, _feedback(client, feedback_rows,
                                           dt.datetime.now(dt.timezone.utc)))
            before = _snapshot(client)
            c["entities_before"] = len(before)
            c["feedback_before"] = len(feedback_ids(client, MODEL))

            # commits keep going while the process is killed
            commits: dict = {}
            stop_commits = threading.Event()
            committer = _commit_stream(client, stop_commits, commits)
            wait_until_commits = time.monotonic() + 10
            while len(commits.get("ok", ())) < 20 and time.monotonic() < wait_until_commits:
                time.sleep(0.05)
            emu.kill()
            stop_commits.set()
            committer.join(30)
            c["killed_with"] = "SIGKILL"
            results: dict = {}
            probe_key = client.key("Feedback", "survivor-000000")
            reader = _timed(lambda: client.get(probe_key) is not None, results, "read")
            writer = _timed(lambda: client.put(datastore.Entity(
                client.key("FaultProbe", "during-outage"))), results, "write")
            time.sleep(outage_s)
            emu = start()
            reader.join(recover_timeout_s)
            writer.join(recover_timeout_s)
            c["read_during_outage"] = results.get("read", ("pending",))[:2]
            c["write_during_outage"] = results.get("write", ("pending",))[:2]

            ok, seconds, attempts, last = _until_ok(
                lambda: client.get(probe_key), recover_timeout_s)
            c["datastore_recovered_s"] = round(seconds, 2)
            after = _snapshot(client)
            c["entities_after"] = len(after)
            c["feedback_after"] = len(feedback_ids(client, MODEL))
            changed = [k for k in before if after.get(k) != before[k]]
            c["entities_lost_or_changed"] = len(changed)
            acked = commits.get("ok", [])
            attempted = len(acked) + (1 if "failed" in commits else 0)
            present = _commits_after(client, attempted)
            c["commits_acknowledged"] = len(acked)
            c["acknowledged_commits_missing"] = sum(1 for i in acked if present[i] != 50)
            c["torn_commits"] = sum(1 for n in present.values() if n not in (0, 50))
            try:
                loaded = registry.load_model(MODEL)
                c["default_loads_as"] = loaded.info.version
            except Exception as exc:  # noqa: BLE001 - a failed check, reported
                c["default_loads_as"] = f"{type(exc).__name__}: {exc}"[:200]
            write_ok, _, _, write_last = _until_ok(lambda: client.put(datastore.Entity(
                client.key("FaultProbe", "after-restart"))), recover_timeout_s)
            c["write_after_restart"] = write_ok

            created = ensure_pubsub_resources(settings)["created"]
            c["pubsub_resources_recreated"] = len(created)
            probe_sub = f"projects/{PROJECT}/subscriptions/fault3-probe"
            subscriber.create_subscription(name=probe_sub, topic=settings.topic("feedback"))
            publish_ok, publish_s, _, publish_last = _until_ok(
                lambda: publisher.publish(settings.topic("feedback"), b"after-restart",
                                          event_id="probe").result(timeout=30),
                recover_timeout_s)
            pulled = subscriber.pull(subscription=probe_sub, max_messages=10, timeout=10)
            c["pubsub_publish_after_restart"] = publish_ok
            c["pubsub_pulled_after_restart"] = len(pulled.received_messages)

        out.check("datastore data intact", not changed and len(after) >= len(before),
                  f"{len(before)} entities before the SIGKILL, {len(after)} after the "
                  f"restart, {len(changed)} lost or changed "
                  f"(Feedback {c['feedback_before']} -> {c['feedback_after']})")
        out.check("acknowledged commits durable and atomic",
                  c["commits_acknowledged"] > 0 and c["acknowledged_commits_missing"] == 0
                  and c["torn_commits"] == 0,
                  f"{c['commits_acknowledged']} commits of 50 entities acknowledged while "
                  f"the emulator was killed: {c['acknowledged_commits_missing']} missing "
                  f"after the restart, {c['torn_commits']} partly stored")
        out.check("artifacts still load", c["default_loads_as"] == "v1",
                  f"default of {MODEL} loads as {c['default_loads_as']!r}")
        out.check("datastore client recovers", ok and write_ok,
                  f"same client read again {seconds:.1f} s after the restart "
                  f"({attempts} attempts{'; last error ' + last if last else ''}), "
                  f"write after restart {'ok' if write_ok else 'failed: ' + write_last}")
        out.check("read in flight completes", c["read_during_outage"][0] == "ok",
                  f"a lookup started during the outage ended {c['read_during_outage']}")
        out.check("write in outage fails loudly", c["write_during_outage"][0] == "error",
                  f"a commit during the outage ended {c['write_during_outage']}")
        out.check("pubsub clients recover",
                  publish_ok and c["pubsub_pulled_after_restart"] == 1,
                  f"topics/subscriptions recreated: {len(created)} (the Pub/Sub emulator "
                  f"keeps them in memory); old publisher published in {publish_s:.1f} s"
                  f"{'; last error ' + publish_last if publish_last else ''}; old "
                  f"subscriber pulled {c['pubsub_pulled_after_restart']}")
    finally:
        emu.stop()
    return out
