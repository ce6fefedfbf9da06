"""Faults 1, 4 and 9 in one run of the streaming pipeline against the emulators.

One stream exercises the three input faults at once, so the pipeline starts once
(the costly part) and each fault is judged on its own counts:

* **1 — duplicate delivery.** ``dup_share`` of the valid events are published twice
  (same event id: half right after their originals, half in a later burst), and
  Pub/Sub redelivers for real: the pipeline's subscription gets the shortest ack
  deadline (10 s) and a competing consumer takes ``lease_share`` of the messages and
  lets their leases expire (redelivered with ``delivery_attempt`` 2); then, mid-run,
  the subscription is seeked back to before the first publish (it retains acked
  messages), so every message already handled is delivered again.
* **4 — poison.** ``poison_share`` of the messages are poison, cycling through bad
  JSON, wrong types, NaN, wrong feature count, unknown version, oversize and binary
  garbage; each carries a ``fault_id`` attribute to find its dead letter by.
* **9 — clock and order.** The valid events are published in shuffled event-time
  order; ``late_share`` are 2-4 minutes old (inside the 300 s allowed lateness) and
  ``too_late_share`` are 10-15 minutes old (beyond it).

The subscription and topics are made by ``ensure_pubsub_resources`` (what ``rotwatch
setup`` does) in a project of the run's own; the pipeline is ``pipelines.
feedback_pipeline.run`` on the bundle-based DirectRunner, as ``rotwatch pipeline run``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
import uuid

import numpy as np

from faultkit.feedback_stream import (EXPECTED_DEADLETTER, make_events, make_poison,
                                      publish_all)
from faultkit.outcome import Outcome
from faultkit.stores import (compare_windows, feedback_ids, pull_all, true_window_counts,
                             wait_for_all, wait_until, window_metrics, window_starts)

__all__ = ["DeliveryRun", "run_delivery", "duplicates_outcome", "poison_outcome",
           "clock_outcome", "big_poison", "INVARIANTS", "WINDOW_S", "PERIOD_S",
           "LATENESS_S"]

WINDOW_S, PERIOD_S = 4, 2
LATENESS_S = 300
# The shortest ack deadline Pub/Sub allows: a message held longer is redelivered.
SHORT_ACK_DEADLINE_S = 10
INVARIANTS = {
    1: ("With 10% of feedback published twice and Pub/Sub redelivering (expired "
        "leases, a seek back), the stored Feedback count and every window's (n, "
        "correct) are exactly those of the stream without duplicates."),
    4: ("Every poison message (bad JSON, wrong types, NaN, wrong feature count, "
        "unknown version, oversize, binary garbage) is in the dead-letter topic with "
        "a reason; valid + dead-lettered = published; the pipeline never stalls."),
    9: ("Out-of-order and minutes-late feedback is counted in the right windows, or "
        "explicitly reported late; never silently lost."),
}


@dataclasses.dataclass
class DeliveryRun:
    """What was published and what the pipeline made of it."""

    valid: list            # unique valid events (on time, late and too late)
    on_time: list
    late: list
    too_late: list
    duplicates: list       # events published a second time
    poison: list
    leased_away: set       # ids of messages a competing consumer let expire
    leased_before_seek: set   # of those, stored before the seek (lease expiry)
    seeked: bool
    stored: set
    metrics: dict
    metrics_settled: dict  # read again after a pause: must not have moved
    deadletters: list
    counters: dict
    state: str
    catch_up_s: float
    published_messages: int


def _counter(result, name: str) -> int:
    # Informational only: on the bundle-based DirectRunner a step's counters hold
    # only its first bundle (the runner's StateSampler caches the step's scoped
    # state with the first bundle's metrics container; README, "Beam counters"), so
    # no check relies on them.
    from apache_beam.metrics.metric import MetricsFilter
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(max(c.committed or 0, c.attempted or 0) for c in found)


def _late_counters(result) -> dict[str, int]:
    """Any pipeline counter whose name says it counted late or dropped feedback."""
    out = {}
    for c in result.metrics().query()["counters"]:
        name = c.key.metric.name
        if any(w in name.lower() for w in ("late", "drop", "expired_window")):
            out[name] = out.get(name, 0) + (c.committed or 0)
    return out


def _argv(settings) -> list[str]:
    return [f"--project={settings.project}", f"--window_size_s={WINDOW_S}",
            f"--window_period_s={PERIOD_S}", f"--allowed_lateness_s={LATENESS_S}",
            "--late_firing_s=1", "--min_n=1000000", "--consecutive=3",
            "--checkpoint_interval_s=1", "--checkpoint_margin_s=5"]


def run_delivery(n_valid: int = 1500, dup_share: float = 0.10,
                 poison_share: float = 0.01, late_share: float = 0.03,
                 too_late_share: float = 0.01, lease_share: float = 0.05,
                 seed: int = 7, timeout_s: float = 120.0,
                 settle_s: float = 4.0) -> DeliveryRun:
    from google.cloud import datastore, pubsub_v1
    from google.protobuf import timestamp_pb2

    from pipelines.feedback_pipeline import run
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    rng = np.random.default_rng(seed)
    settings = Settings(project=f"fd-{uuid.uuid4().hex[:10]}")
    ensure_pubsub_resources(settings)
    sub = settings.subscription("pipeline")
    subscriber, publisher = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    subscriber.update_subscription(request={
        "subscription": {"name": sub, "ack_deadline_seconds": SHORT_ACK_DEADLINE_S,
                         "retain_acked_messages": True},
        "update_mask": {"paths": ["ack_deadline_seconds", "retain_acked_messages"]}})
    client = datastore.Client(project=settings.project)
    register_zombies(Registry(settings, client=client, publish=False))

    now = dt.datetime.now(dt.timezone.utc)
    on_time = make_events(n_valid, now, rng, spread_s=30.0, prefix="t")
    late = make_events(max(1, int(n_valid * late_share)), now, rng, ago_s=(120, 240),
                       prefix="l")
    too_late = make_events(max(1, int(n_valid * too_late_share)), now, rng,
                           ago_s=(600, 900), prefix="x")
    valid = on_time + late + too_late
    random.Random(seed).shuffle(valid)                 # out of event-time order
    picks = rng.choice(len(valid), int(len(valid) * dup_share), replace=False)
    duplicates = [valid[i] for i in sorted(picks)]
    poison = make_poison(max(len(EXPECTED_DEADLETTER), int(len(valid) * poison_share)),
                         now, rng)
    # originals, with poison spread through them and half the duplicates right after
    first = [(e.to_json(), e.attributes()) for e in valid]
    for k, p in enumerate(poison):
        first.insert((k + 1) * len(first) // (len(poison) + 1), (p.data, p.attributes))
    early_dups = duplicates[::2]
    first += [(e.to_json(), e.attributes()) for e in early_dups]
    late_dups = duplicates[1::2]

    seek_to = timestamp_pb2.Timestamp()
    seek_to.FromDatetime(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                         - dt.timedelta(seconds=1))
    published = publish_all(publisher, settings.topic("feedback"), first)
    # a competing consumer takes some messages and lets the short leases expire
    lease = subscriber.pull(subscription=sub, max_messages=max(1, int(published
                                                                   * lease_share)),
                            timeout=10)
    leased_ids = {m.message.attributes.get("event_id") or m.message.attributes.get(
        "fault_id") for m in lease.received_messages}

    started = time.monotonic()
    result = run(_argv(settings))
    valid_ids = {e.event_id for e in valid}
    try:
        wait_until(lambda: len(feedback_ids(client)) >= len(valid_ids) // 2, timeout_s)
        published += publish_all(publisher, settings.topic("feedback"),
                                 [(e.to_json(), e.attributes()) for e in late_dups])
        # every event stored, the leased-away ones only after their leases expired
        wait_until(lambda: feedback_ids(client) >= valid_ids, timeout_s)
        leased_before_seek = leased_ids & feedback_ids(client)
        subscriber.seek(request={"subscription": sub, "time": seek_to})  # redeliver all
        countable = on_time + late
        truth = true_window_counts(countable, WINDOW_S, PERIOD_S)
        deadletters: list = []

        def converged():
            deadletters.extend(pull_all(subscriber, settings.subscription("deadletter"),
                                        timeout=1.0))
            copies = _copies(deadletters)
            # every poison message twice: the seek's replay has gone through
            return (feedback_ids(client) >= valid_ids
                    and all(copies.get(p.fault_id, 0) >= 2 for p in poison)
                    and _window_subset(window_metrics(client, "zombies", "v1"), truth))
        wait_until(converged, timeout_s, every=1.0)
        catch_up = time.monotonic() - started
        metrics = window_metrics(client, "zombies", "v1")
        time.sleep(settle_s)     # late panes, leased-away redeliveries, replays
        deadletters.extend(pull_all(subscriber, settings.subscription("deadletter"),
                                    timeout=1.0))
        stored = feedback_ids(client)
        settled = window_metrics(client, "zombies", "v1")
        counters = {name: _counter(result, name) for name in (
            "feedback_valid", "feedback_invalid", "duplicates", "backlog_pulled",
            "empty_panes", "window_panes")}
        counters.update(_late_counters(result))
        state = str(result.state)
    finally:
        result.cancel()
    return DeliveryRun(valid=valid, on_time=on_time, late=late, too_late=too_late,
                       duplicates=duplicates, poison=poison, leased_away=leased_ids,
                       leased_before_seek=leased_before_seek,
                       seeked=True, stored=stored, metrics=metrics,
                       metrics_settled=settled, deadletters=deadletters,
                       counters=counters, state=state, catch_up_s=round(catch_up, 1),
                       published_messages=published)


def _copies(letters) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in letters:
        key = m.attributes.get("fault_id")
        out[key] = out.get(key, 0) + 1
    return out


def _window_subset(stored: dict, truth: dict) -> bool:
    return all(stored.get(start) == counts for start, counts in truth.items())


# -- judging the run -------------------------------------------------------------------
def duplicates_outcome(r: DeliveryRun) -> Outcome:
    out = Outcome("1 duplicate delivery", INVARIANTS[1])
    c = out.counts
    valid_ids = {e.event_id for e in r.valid}
    truth = true_window_counts(r.on_time + r.late, WINDOW_S, PERIOD_S)
    diff = compare_windows({k: v for k, v in r.metrics_settled.items() if k in truth},
                           truth)
    replays = min(_copies(r.deadletters).get(p.fault_id, 0) for p in r.poison)
    leased_stored = len(r.leased_away & r.leased_before_seek)
    leased_valid = len(r.leased_away & valid_ids)
    c.update(unique_valid=len(valid_ids), published_twice=len(r.duplicates),
             leased_away=len(r.leased_away), leased_valid_redelivered=leased_stored,
             stream_replayed_times=replays, stored=len(r.stored),
             stored_unexpected=len(r.stored - valid_ids),
             stored_missing=len(valid_ids - r.stored), windows=len(truth),
             windows_over=len(diff["over"]), windows_under=len(diff["under"]),
             windows_missing=len(diff["missing"]),
             windows_moved_after_settling=sum(
                 1 for k in truth if r.metrics.get(k) != r.metrics_settled.get(k)))
    out.check("duplicates and redeliveries happened",
              len(r.duplicates) > 0 and replays >= 2 and leased_valid > 0
              and leased_stored == leased_valid,
              f"{len(r.duplicates)} events published twice; {leased_valid} messages "
              f"leased away by another consumer and redelivered after their "
              f"{SHORT_ACK_DEADLINE_S} s deadline ({leased_stored} of them stored "
              "before the seek); the "
              f"subscription seeked back: every poison message dead-lettered {replays}+ "
              "times")
    out.check("feedback stored once per event",
              c["stored"] == len(valid_ids) and not c["stored_unexpected"],
              f"{c['stored']} Feedback entities for {len(valid_ids)} unique events "
              f"({c['stored_missing']} missing, {c['stored_unexpected']} unexpected)")
    out.check("windows counted exactly once",
              not (diff["over"] or diff["under"] or diff["missing"])
              and not c["windows_moved_after_settling"],
              f"{len(truth)} windows: {len(diff['over'])} over-counted "
              f"{diff['over'][:2]}, {len(diff['under'])} under-counted "
              f"{diff['under'][:2]}, {len(diff['missing'])} missing; "
              f"{c['windows_moved_after_settling']} changed after settling")
    return out


def poison_outcome(r: DeliveryRun) -> Outcome:
    out = Outcome("4 poison messages", INVARIANTS[4])
    c = out.counts
    by_id = {p.fault_id: p for p in r.poison}
    letters = {}
    for m in r.deadletters:
        letters.setdefault(m.attributes.get("fault_id"), m)
    wrong = []
    for fault_id, p in by_id.items():
        m = letters.get(fault_id)
        if m is None:
            continue
        got = (m.attributes.get("rotwatch_stage"), m.attributes.get("rotwatch_field"))
        if (got != EXPECTED_DEADLETTER[p.kind] or not m.attributes.get("rotwatch_reason")
                or m.data != p.data):
            wrong.append((p.kind, got))
    valid_ids = {e.event_id for e in r.valid}
    # A late report (rotwatch_stage=late) is about a valid, stored event: not a refusal.
    valid_dead = [m for m in r.deadletters if m.attributes.get("fault_id") is None
                  and m.attributes.get("rotwatch_stage") != "late"]
    found = len(set(letters) & set(by_id))
    c.update(published_logical=len(valid_ids) + len(r.poison), poison=len(r.poison),
             dead_lettered=found, dead_letter_messages=len(r.deadletters),
             valid_dead_lettered=len(valid_dead), stored_valid=len(r.stored & valid_ids),
             wrong_reason=wrong, pipeline_state=r.state, catch_up_s=r.catch_up_s)
    out.check("every poison message dead-lettered with its reason",
              found == len(by_id) and not wrong,
              f"{found} of {len(by_id)} poison messages in feedback-deadletter with "
              f"payload and reason; wrong stage/field/payload: {wrong or 'none'}")
    out.check("valid + dead-lettered = published",
              c["stored_valid"] + found == c["published_logical"] and not valid_dead,
              f"{c['stored_valid']} valid stored + {found} dead-lettered = "
              f"{c['stored_valid'] + found} of {c['published_logical']} published "
              f"(duplicates counted once); valid events dead-lettered: {len(valid_dead)}")
    out.check("pipeline never stalls", r.state == "RUNNING" and c["stored_valid"]
              == len(valid_ids),
              f"state {r.state}; caught up with everything in {r.catch_up_s} s")
    return out


def clock_outcome(r: DeliveryRun) -> Outcome:
    out = Outcome("9 clock and order", INVARIANTS[9])
    c = out.counts
    on_time_truth = true_window_counts(r.on_time, WINDOW_S, PERIOD_S)
    late_windows = {s for e in r.late for s in window_starts(e.event_time, WINDOW_S,
                                                              PERIOD_S)}
    truth = true_window_counts(r.on_time + r.late, WINDOW_S, PERIOD_S)
    late_diff = compare_windows({k: v for k, v in r.metrics_settled.items()
                                 if k in late_windows}, {k: truth[k] for k in late_windows})
    order_diff = compare_windows({k: v for k, v in r.metrics_settled.items()
                                  if k in on_time_truth and k not in late_windows},
                                 {k: v for k, v in on_time_truth.items()
                                  if k not in late_windows})
    too_late_truth = true_window_counts(r.too_late, WINDOW_S, PERIOD_S)
    too_late_ids = {e.event_id for e in r.too_late}
    counted = [e for e in r.too_late if all(
        r.metrics_settled.get(s, (0, 0))[0] >= too_late_truth[s][0]
        for s in window_starts(e.event_time, WINDOW_S, PERIOD_S))]
    reported_letters = {m.attributes.get("event_id") for m in r.deadletters
                        if m.attributes.get("rotwatch_stage") == "late"
                        and m.attributes.get("rotwatch_reason")}
    reported = too_late_ids & reported_letters
    # Each event by name: a counter alone cannot say which events it counted.
    accounted = len({e.event_id for e in counted} | reported)
    c.update(out_of_order_windows=len(on_time_truth),
             out_of_order_wrong=len(order_diff["over"]) + len(order_diff["under"])
             + len(order_diff["missing"]),
             late_windows_wrong=len(late_diff["over"]) + len(late_diff["under"])
             + len(late_diff["missing"]),
             too_late_unaccounted=len(too_late_ids) - accounted, late_events=len(r.late),
             late_windows=len(late_windows), too_late_events=len(too_late_ids),
             too_late_stored=len(r.stored & too_late_ids),
             too_late_counted=len(counted), too_late_reported_as_dead_letters=len(reported),
             late_counters={k: v for k, v in r.counters.items()
                            if "late" in k.lower() or "drop" in k.lower()})
    out.check("out-of-order feedback counted in its windows",
              not (order_diff["over"] or order_diff["under"] or order_diff["missing"]),
              f"{len(on_time_truth)} windows of shuffled events: {len(order_diff['over'])}"
              f" over, {len(order_diff['under'])} under, {len(order_diff['missing'])} "
              "missing")
    out.check("late feedback (2-4 min, within lateness) counted in its windows",
              not (late_diff["over"] or late_diff["under"] or late_diff["missing"]),
              f"{len(r.late)} late events in {len(late_windows)} windows: "
              f"{len(late_diff['over'])} over, {len(late_diff['under'])} under, "
              f"{len(late_diff['missing'])} missing")
    out.check("feedback beyond the allowed lateness counted or reported late",
              accounted == len(too_late_ids),
              f"{len(too_late_ids)} events 10-15 min late (allowed lateness "
              f"{LATENESS_S} s): {len(r.stored & too_late_ids)} stored as Feedback, "
              f"{len(counted)} counted in their windows, {len(reported)} dead-lettered "
              f"as late, late/drop counters {c['late_counters'] or 'none'}; "
              f"{len(too_late_ids) - accounted} silently left out of the metrics")
    return out


# -- a poison message bigger than a gRPC client takes ---------------------------------
BIG_POISON_BYTES = 5_000_000   # under Pub/Sub's 10 MB, over gRPC's 4 MiB default
# The fewest delivery attempts a dead-letter policy may ask for.
MIN_DELIVERY_ATTEMPTS = 5
# What Pub/Sub adds to a message its subscription's dead-letter policy forwards.
POLICY_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"


def big_poison(n_valid: int = 1500, at: int | tuple[int, ...] = 500,
               window_s: float = 15.0, dead_letter_timeout_s: float = 90.0) -> Outcome:
    """Fault 4, the transport-sized kind: a ``BIG_POISON_BYTES`` message (legal for
    Pub/Sub) published among ``n_valid`` valid events, ``at`` of them before it (one
    big message per position when ``at`` is a tuple; fault id ``big-<position>``).

    Locally the official client keeps gRPC's 4 MiB receive limit, and so does Beam's
    own read (``Pull(max_messages=10)``); the pipeline's other reads use a client
    without it. The valid events must all be stored within ``window_s`` of the start
    (the pipeline does ~1,000 events/s here), and each big one must reach the
    dead-letter topic with its payload and a reason: the pipeline's
    ``rotwatch_reason`` if one of its unlimited reads took it, else Pub/Sub's
    ``CloudPubSubDeadLetterSource*`` attributes once Beam's read failed on it for
    every delivery attempt. For the second way to finish in about 50 s rather than
    10 minutes, the pipeline's subscription gets the shortest ack deadline (10 s) and
    the fewest delivery attempts (5) Pub/Sub allows. Counted: ``stored_s`` and, per
    big message, ``dead_lettered_s``: seconds from the pipeline's start."""
    from google.cloud import datastore, pubsub_v1

    from pipelines.clients import subscriber_client
    from pipelines.feedback_pipeline import run
    from publishers.gateway.testing import register_zombies
    from rotwatch.config import Settings
    from rotwatch.registry import Registry
    from rotwatch.resources import ensure_pubsub_resources

    out = Outcome("4 poison message over the gRPC receive limit", INVARIANTS[4])
    c = out.counts
    positions = sorted(set(at if isinstance(at, tuple) else (at,)))
    settings = Settings(project=f"fp-{uuid.uuid4().hex[:10]}")
    ensure_pubsub_resources(settings)
    client = datastore.Client(project=settings.project)
    register_zombies(Registry(settings, client=client, publish=False))
    # The inspector must take a 5 MB message too (see pipelines/clients.py).
    publisher, subscriber = pubsub_v1.PublisherClient(), subscriber_client()
    subscriber.update_subscription(request={
        "subscription": {"name": settings.subscription("pipeline"),
                         "ack_deadline_seconds": SHORT_ACK_DEADLINE_S,
                         "dead_letter_policy": {
                             "dead_letter_topic": settings.topic("deadletter"),
                             "max_delivery_attempts": MIN_DELIVERY_ATTEMPTS}},
        "update_mask": {"paths": ["ack_deadline_seconds", "dead_letter_policy"]}})
    events = make_events(n_valid, dt.datetime.now(dt.timezone.utc),
                         np.random.default_rng(4), prefix="g")
    topic = settings.topic("feedback")
    big_data = b"\xff" * BIG_POISON_BYTES
    for start, end in zip([0] + positions, positions + [n_valid]):
        publish_all(publisher, topic, [(e.to_json(), e.attributes())
                                       for e in events[start:end]])
        if end in positions:
            publish_all(publisher, topic, [(big_data, {"fault_id": f"big-{end}"})])
    valid_ids = {e.event_id for e in events}
    started = time.monotonic()
    result = run(_argv(settings))
    letters: dict[str, tuple[float, object]] = {}

    def all_big_dead_lettered():
        for m in pull_all(subscriber, settings.subscription("deadletter"), timeout=1.0):
            fault_id = m.attributes.get("fault_id", "")
            if fault_id.startswith("big-") and fault_id not in letters:
                letters[fault_id] = (time.monotonic() - started, m)
        return len(letters) == len(positions)

    try:
        stored = wait_for_all(lambda: feedback_ids(client), valid_ids, window_s,
                              quiet_s=window_s)
        stored_s = time.monotonic() - started
        wait_until(all_big_dead_lettered, dead_letter_timeout_s, every=0.5)
        state = str(result.state)
    finally:
        result.cancel()
    big = {position: _big_letter(letters.get(f"big-{position}"), big_data)
           for position in positions}
    c.update(valid=len(valid_ids), stored=len(stored & valid_ids),
             stored_s=round(stored_s, 1), state=state, big=big)
    out.check("the pipeline does not stall behind it",
              c["stored"] == len(valid_ids) and state == "RUNNING",
              f"{c['stored']} of {len(valid_ids)} valid events stored in "
              f"{c['stored_s']:g} s (window {window_s:g} s), with a "
              f"{BIG_POISON_BYTES:,}-byte message after the first {positions}; "
              f"state {state}")
    out.check("it is dead-lettered with its payload and a reason",
              all(b["reason"] and b["payload_intact"] for b in big.values()),
              "; ".join(f"after {p} events: dead-lettered after {b['dead_lettered_s']} s "
                        f"by the {b['via']} (reason {b['reason']!r}, payload intact "
                        f"{b['payload_intact']})" for p, b in big.items()))
    return out


def _big_letter(found, big_data: bytes) -> dict:
    """How a big message reached the dead-letter topic: when, by whom, why."""
    if found is None:
        return {"dead_lettered_s": None, "via": None, "reason": None,
                "payload_intact": False}
    seconds, message = found
    via = reason = None
    if message.attributes.get("rotwatch_reason"):
        via, reason = "pipeline", message.attributes["rotwatch_reason"]
    elif message.attributes.get(POLICY_ATTRIBUTE):
        via = "subscription's dead-letter policy"
        reason = (f"not acknowledged after {message.attributes[POLICY_ATTRIBUTE]} "
                  "deliveries")
    return {"dead_lettered_s": round(seconds, 1), "via": via, "reason": reason,
            "payload_intact": message.data == big_data}
