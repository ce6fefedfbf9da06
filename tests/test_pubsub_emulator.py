"""The Pub/Sub emulator, driven through the official ``google-cloud-pubsub`` client.

Every test talks to a real in-process emulator over gRPC via PUBSUB_EMULATOR_HOST,
exactly as the product does, and asserts the values the client gets back.
"""
from __future__ import annotations

import gc
import os
import queue
import threading
import time
import tracemalloc
import uuid

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.protobuf import timestamp_pb2
from google.pubsub_v1.types import DeadLetterPolicy, PubsubMessage, StreamingPullRequest

from emulators.pubsub import PubSubEmulator
from emulators.pubsub import retained
from emulators.pubsub.queue import Entry, SubscriptionQueue

PROJECT = "local-project"
# How long a test waits for something that should take milliseconds.
WAIT_S = 10.0


@pytest.fixture(scope="module")
def emulator():
    """A Pub/Sub emulator of this module's own, with PUBSUB_EMULATOR_HOST pointing at it
    (independent of the shared conftest stack, so it needs no other emulator)."""
    with PubSubEmulator() as server:
        saved = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = server.address
        try:
            yield server
        finally:
            if saved is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = saved


@pytest.fixture(scope="module")
def publisher(emulator):
    return pubsub_v1.PublisherClient()


@pytest.fixture(scope="module")
def subscriber(emulator):
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(publisher):
    name = publisher.topic_path(PROJECT, _unique("topic"))
    publisher.create_topic(name=name)
    return name


def _subscription(subscriber, topic, **settings) -> str:
    name = subscriber.subscription_path(PROJECT, _unique("sub"))
    subscriber.create_subscription(request={"name": name, "topic": topic, **settings})
    return name


def _publish(publisher, topic, count, **attributes) -> list[str]:
    futures = [publisher.publish(topic, b"m%d" % i, **attributes) for i in range(count)]
    return [f.result(timeout=WAIT_S) for f in futures]


def _pull(subscriber, subscription, max_messages=100, immediately=False):
    request = {"subscription": subscription, "max_messages": max_messages}
    if immediately:
        request["return_immediately"] = True
    return list(subscriber.pull(request=request).received_messages)


def _drain(subscriber, subscription, expected: int, ack=True):
    """Pull until ``expected`` messages came (or WAIT_S passed)."""
    got = []
    give_up = time.monotonic() + WAIT_S
    while len(got) < expected and time.monotonic() < give_up:
        batch = _pull(subscriber, subscription)
        if batch and ack:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in batch])
        got.extend(batch)
    return got


# -- topics ------------------------------------------------------------------------
def test_topic_create_get_list_delete(publisher, subscriber):
    name = publisher.topic_path(PROJECT, _unique("crud"))
    created = publisher.create_topic(request={"name": name, "labels": {"team": "ml"}})
    assert created.name == name and dict(created.labels) == {"team": "ml"}
    assert publisher.get_topic(topic=name).name == name
    listed = [t.name for t in publisher.list_topics(project=f"projects/{PROJECT}")]
    assert name in listed
    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=name)
    sub = _subscription(subscriber, name)
    assert list(publisher.list_topic_subscriptions(topic=name)) == [sub]

    publisher.delete_topic(topic=name)
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=name)
    with pytest.raises(exceptions.NotFound):
        publisher.delete_topic(topic=name)
    assert subscriber.get_subscription(subscription=sub).topic == "_deleted-topic_"


def test_list_topics_pages(publisher):
    project = "paging-project"
    made = sorted(publisher.create_topic(
        name=publisher.topic_path(project, f"page-{i:02d}")).name for i in range(5))
    pages = list(publisher.list_topics(request={"project": f"projects/{project}",
                                                "page_size": 2}).pages)
    assert [len(page.topics) for page in pages] == [2, 2, 1]
    assert [t.name for page in pages for t in page.topics] == made


@pytest.mark.parametrize("topic_id", [
    "ab",                  # shorter than 3
    "1topic",              # must start with a letter
    "goog-topic",          # reserved prefix
    "has space",           # character not allowed
    "x" * 256,             # longer than 255
])
def test_bad_topic_names_are_invalid_argument(publisher, topic_id):
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"projects/{PROJECT}/topics/{topic_id}")


def test_unknown_topic_is_not_found(publisher, subscriber):
    missing = publisher.topic_path(PROJECT, "never-made")
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=missing)
    with pytest.raises(exceptions.NotFound):
        publisher.publish(missing, b"x").result(timeout=WAIT_S)
    with pytest.raises(exceptions.NotFound):
        _subscription(subscriber, missing)


# -- publishing --------------------------------------------------------------------
@pytest.mark.parametrize("case", ["too_many_attributes", "long_attribute_value",
                                  "goog_attribute_key"])
def test_publish_attribute_limits(publisher, topic, case):
    attributes = {
        "too_many_attributes": {f"k{i}": "v" for i in range(101)},
        "long_attribute_value": {"k": "v" * 1025},
        "goog_attribute_key": {"googKey": "v"},
    }[case]
    with pytest.raises(exceptions.InvalidArgument):
        publisher.publish(topic, b"data", **attributes).result(timeout=WAIT_S)


def test_publish_request_limits(publisher, topic):
    api = publisher.api   # the official GAPIC client: lets one request break the limits
    with pytest.raises(exceptions.InvalidArgument):
        api.publish(topic=topic, messages=[PubsubMessage(data=b"x")] * 1001)
    with pytest.raises(exceptions.InvalidArgument):
        api.publish(topic=topic, messages=[PubsubMessage(data=b"x" * 10_000_001)])
    with pytest.raises(exceptions.InvalidArgument):
        api.publish(topic=topic, messages=[PubsubMessage()])   # no data, no attributes
    # At the limits is fine.
    ids = api.publish(topic=topic, messages=[PubsubMessage(data=b"x")] * 1000).message_ids
    assert len(set(ids)) == 1000
    at_limit = {f"k{i}": "v" * 1024 for i in range(100)}
    assert publisher.publish(topic, b"", **at_limit).result(timeout=WAIT_S)


def test_publish_pull_ack(emulator, publisher, subscriber, topic):
    sub = _subscription(subscriber, topic)
    ordered = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    before = time.time()
    ids = [ordered.publish(topic, b"m%d" % i, event_id=str(i), ordering_key="zombie-1")
           .result(timeout=WAIT_S) for i in range(3)]
    received = _pull(subscriber, sub)
    assert [m.message.message_id for m in received] == ids
    assert [m.message.data for m in received] == [b"m0", b"m1", b"m2"]
    assert [dict(m.message.attributes) for m in received] == [
        {"event_id": "0"}, {"event_id": "1"}, {"event_id": "2"}]
    assert {m.message.ordering_key for m in received} == {"zombie-1"}
    assert all(before - 1 <= m.message.publish_time.timestamp() <= time.time() + 1
               for m in received)
    assert {m.delivery_attempt for m in received} == {0}   # no dead-letter policy
    subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in received])
    assert _pull(subscriber, sub, immediately=True) == []
    assert emulator.state.backlog(sub) == {"unacked": 0, "leased": 0}


def test_empty_pull_returns_promptly(subscriber, topic):
    sub = _subscription(subscriber, topic)
    started = time.monotonic()
    assert _pull(subscriber, sub) == []
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert _pull(subscriber, sub, immediately=True) == []
    assert time.monotonic() - started < 1.0


def test_pull_wakes_when_a_message_arrives(publisher, subscriber, topic):
    sub = _subscription(subscriber, topic)
    result = {}
    puller = threading.Thread(target=lambda: result.update(got=_pull(subscriber, sub)))
    puller.start()
    time.sleep(0.05)
    _publish(publisher, topic, 1)
    puller.join(WAIT_S)
    # The waiting Pull normally gets it; if the publish beat the Pull, pull again.
    got = result["got"] or _drain(subscriber, sub, 1)
    assert [m.message.data for m in got] == [b"m0"]


# -- redelivery and dead letters ---------------------------------------------------
def test_nack_redelivers_at_once(publisher, subscriber, topic):
    sub = _subscription(subscriber, topic)
    (message_id,) = _publish(publisher, topic, 1)
    (first,) = _pull(subscriber, sub)
    subscriber.modify_ack_deadline(subscription=sub, ack_ids=[first.ack_id],
                                   ack_deadline_seconds=0)
    (again,) = _pull(subscriber, sub, immediately=True)
    assert again.message.message_id == message_id
    assert again.ack_id != first.ack_id


def test_expired_deadline_redelivers_with_attempt_count(emulator, publisher, subscriber,
                                                        topic):
    dead_letters = publisher.topic_path(PROJECT, _unique("dlq"))
    publisher.create_topic(name=dead_letters)
    sub = _subscription(subscriber, topic, dead_letter_policy=DeadLetterPolicy(
        dead_letter_topic=dead_letters, max_delivery_attempts=5))
    (message_id,) = _publish(publisher, topic, 1)
    (first,) = _pull(subscriber, sub)
    assert first.delivery_attempt == 1
    # Shorten the lease to 1 s (a subscription's own minimum is 10 s).
    subscriber.modify_ack_deadline(subscription=sub, ack_ids=[first.ack_id],
                                   ack_deadline_seconds=1)
    assert _pull(subscriber, sub, immediately=True) == []   # still leased
    time.sleep(1.1)
    (second,) = _pull(subscriber, sub)
    assert second.message.message_id == message_id
    assert second.delivery_attempt == 2
    # The first lease's late ack no longer counts: the message was leased again.
    subscriber.acknowledge(subscription=sub, ack_ids=[first.ack_id])
    assert emulator.state.backlog(sub)["unacked"] == 1


def test_dead_letter_after_max_attempts(publisher, subscriber, topic):
    dead_letters = publisher.topic_path(PROJECT, _unique("dlq"))
    publisher.create_topic(name=dead_letters)
    dlq_sub = _subscription(subscriber, dead_letters)
    sub = _subscription(subscriber, topic, dead_letter_policy=DeadLetterPolicy(
        dead_letter_topic=dead_letters, max_delivery_attempts=5))
    message_id = publisher.publish(topic, b"poison", reason="bad").result(timeout=WAIT_S)
    for attempt in range(1, 6):
        (received,) = _pull(subscriber, sub)
        assert received.delivery_attempt == attempt
        subscriber.modify_ack_deadline(subscription=sub, ack_ids=[received.ack_id],
                                       ack_deadline_seconds=0)
    assert _pull(subscriber, sub, immediately=True) == []
    (forwarded,) = _drain(subscriber, dlq_sub, 1)
    assert forwarded.message.data == b"poison"
    assert forwarded.message.message_id != message_id     # a new message of the DLQ
    # Pub/Sub adds where it came from, e.g. ...PublishTime "2022-08-12T15:56:29.732+00:00"
    published = received.message.publish_time.isoformat(timespec="milliseconds")
    assert dict(forwarded.message.attributes) == {
        "reason": "bad",
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": sub.rsplit("/", 1)[1],
        "CloudPubSubDeadLetterSourceSubscriptionProject": PROJECT,
        "CloudPubSubDeadLetterSourceTopicPublishTime": published}


# -- subscriptions -----------------------------------------------------------------
def test_subscription_settings_are_checked(publisher, subscriber, topic):
    for bad in ({"ack_deadline_seconds": 5}, {"ack_deadline_seconds": 601},
                {"message_retention_duration": {"seconds": 60}},
                {"dead_letter_policy": {"dead_letter_topic": topic,
                                        "max_delivery_attempts": 4}}):
        with pytest.raises(exceptions.InvalidArgument):
            _subscription(subscriber, topic, **bad)
    with pytest.raises(exceptions.NotFound):
        _subscription(subscriber, topic, dead_letter_policy={
            "dead_letter_topic": publisher.topic_path(PROJECT, "no-such-dlq")})
    with pytest.raises(exceptions.InvalidArgument):
        _subscription(subscriber, "projects/local-project/topics/x")
    sub = _subscription(subscriber, topic)
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(name=sub, topic=topic)


def test_subscription_defaults_update_list_delete(subscriber, topic):
    sub = _subscription(subscriber, topic, labels={"role": "trainer"})
    got = subscriber.get_subscription(subscription=sub)
    assert got.ack_deadline_seconds == 10
    assert got.message_retention_duration.total_seconds() == 7 * 24 * 3600
    assert dict(got.labels) == {"role": "trainer"}

    updated = subscriber.update_subscription(request={
        "subscription": {"name": sub, "ack_deadline_seconds": 30,
                         "retain_acked_messages": True, "labels": {"role": "x"}},
        "update_mask": {"paths": ["ack_deadline_seconds", "retain_acked_messages"]}})
    assert updated.ack_deadline_seconds == 30 and updated.retain_acked_messages
    assert dict(updated.labels) == {"role": "trainer"}   # not in the mask
    assert subscriber.get_subscription(subscription=sub).ack_deadline_seconds == 30
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.update_subscription(request={
            "subscription": {"name": sub, "topic": topic},
            "update_mask": {"paths": ["topic"]}})

    listed = [s.name for s in subscriber.list_subscriptions(project=f"projects/{PROJECT}")]
    assert sub in listed
    subscriber.delete_subscription(subscription=sub)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=sub)
    with pytest.raises(exceptions.NotFound):
        _pull(subscriber, sub)


def test_update_topic_and_detach_subscription(publisher, subscriber, topic):
    updated = publisher.update_topic(request={
        "topic": {"name": topic, "labels": {"stage": "dev"}},
        "update_mask": {"paths": ["labels"]}})
    assert dict(updated.labels) == {"stage": "dev"}
    sub = _subscription(subscriber, topic)
    _publish(publisher, topic, 1)
    publisher.detach_subscription(request={"subscription": sub})
    assert subscriber.get_subscription(subscription=sub).detached
    assert list(publisher.list_topic_subscriptions(topic=topic)) == []
    with pytest.raises(exceptions.FailedPrecondition):
        _pull(subscriber, sub)


def test_unsupported_features_say_so(publisher, subscriber, topic):
    with pytest.raises(exceptions.MethodNotImplemented, match="[Ss]chema"):
        publisher.create_topic(request={
            "name": publisher.topic_path(PROJECT, _unique("schema")),
            "schema_settings": {"schema": f"projects/{PROJECT}/schemas/s"}})
    with pytest.raises(exceptions.MethodNotImplemented, match="[Pp]ush"):
        _subscription(subscriber, topic,
                      push_config={"push_endpoint": "http://localhost:1/push"})
    sub = _subscription(subscriber, topic)
    _publish(publisher, topic, 1)
    (received,) = _pull(subscriber, sub)
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.modify_ack_deadline(subscription=sub, ack_ids=[received.ack_id],
                                       ack_deadline_seconds=601)
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.acknowledge(subscription=sub, ack_ids=["not-an-ack-id"])


def test_fan_out_to_every_subscription(publisher, subscriber, topic):
    first = _subscription(subscriber, topic)
    second = _subscription(subscriber, topic)
    ids = _publish(publisher, topic, 10)
    late = _subscription(subscriber, topic)   # made after: gets none of them
    for sub in (first, second):
        assert sorted(m.message.message_id for m in _drain(subscriber, sub, 10)) == \
            sorted(ids)
    assert _pull(subscriber, late, immediately=True) == []


# -- response size: gRPC's default 4 MiB receive limit -----------------------------
def _unlimited_subscriber():
    """A client without gRPC's 4 MiB receive limit (as Google's own transport)."""
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
    channel = grpc.insecure_channel(os.environ["PUBSUB_EMULATOR_HOST"],
                                    options=[("grpc.max_receive_message_length", -1)])
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def test_a_message_over_the_receive_limit_comes_alone(publisher, subscriber, topic):
    """The official client under PUBSUB_EMULATOR_HOST (and Beam's DirectRunner read,
    ``Pull(max_messages=10)``) keeps gRPC's 4 MiB limit: a legal 5 MB message fails its
    own Pull only; a client without the limit gets it alone and intact."""
    limited, unlimited = _subscription(subscriber, topic), _subscription(subscriber, topic)
    big = bytes(range(256)) * 19_532                       # 5,000,192 bytes
    for data in (b"a0", b"a1", big, b"b0", b"b1"):        # one publish each, in order
        publisher.publish(topic, data).result(timeout=WAIT_S)

    assert [m.message.data for m in _pull(subscriber, limited, 10)] == [b"a0", b"a1"]
    with pytest.raises(exceptions.ResourceExhausted, match="larger than max"):
        _pull(subscriber, limited, 10)
    assert [m.message.data for m in _pull(subscriber, limited, 10)] == [b"b0", b"b1"]

    client = _unlimited_subscriber()
    try:
        batches = [[m.message.data for m in _pull(client, unlimited, 10)]
                   for _ in range(3)]
    finally:
        client.close()
    assert batches == [[b"a0", b"a1"], [big], [b"b0", b"b1"]]


def test_responses_stay_under_the_receive_limit(emulator, publisher, subscriber, topic):
    """Three 1.5 MB messages (4.5 MB together) reach a limited client by Pull (2 + 1)
    and by StreamingPull, where one 4.5 MB response would fail and be retried forever."""
    pulled, streamed = _subscription(subscriber, topic), _subscription(subscriber, topic)
    ids = [publisher.publish(topic, b"%d" % i * 1_500_000).result(timeout=WAIT_S)
           for i in range(3)]
    first, second = _pull(subscriber, pulled, 10), _pull(subscriber, pulled, 10)
    assert [[m.message.message_id for m in batch] for batch in (first, second)] == \
        [ids[:2], ids[2:]]

    seen: list[str] = []
    all_in = threading.Event()

    def callback(message):
        seen.append(message.message_id)
        message.ack()
        if len(seen) == 3:
            all_in.set()

    future = subscriber.subscribe(streamed, callback)
    try:
        assert all_in.wait(WAIT_S), f"received {len(seen)} of 3"
    finally:
        future.cancel()
        future.result(timeout=WAIT_S)
    assert sorted(seen) == sorted(ids)


# -- streaming pull ----------------------------------------------------------------
def test_streaming_pull_delivers_each_message_once(emulator, publisher, subscriber,
                                                   topic):
    sub = _subscription(subscriber, topic)
    count = 300
    ids = _publish(publisher, topic, count)
    seen: list[str] = []
    all_in = threading.Event()

    def callback(message):
        seen.append(message.message_id)
        message.ack()
        if len(seen) >= count:
            all_in.set()

    future = subscriber.subscribe(
        sub, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=50))
    try:
        assert all_in.wait(WAIT_S)
        give_up = time.monotonic() + WAIT_S
        while emulator.state.backlog(sub)["unacked"] and time.monotonic() < give_up:
            time.sleep(0.05)
        time.sleep(0.3)   # room for a wrong redelivery to show up
    finally:
        future.cancel()
        future.result(timeout=WAIT_S)
    assert sorted(seen) == sorted(ids)          # each exactly once
    assert emulator.state.backlog(sub) == {"unacked": 0, "leased": 0}
    assert _pull(subscriber, sub, immediately=True) == []


def test_streaming_pull_honours_max_outstanding(publisher, subscriber, topic):
    sub = _subscription(subscriber, topic)
    ids = _publish(publisher, topic, 20)
    held = []
    five_in = threading.Event()

    def callback(message):        # holds messages without acking them
        held.append(message)
        if len(held) >= 5:
            five_in.set()

    future = subscriber.subscribe(
        sub, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=5))
    try:
        assert five_in.wait(WAIT_S)
        time.sleep(0.3)
        # The server leased only 5 to the stream: the other 15 are free for a Pull.
        pulled = _drain(subscriber, sub, 15)
        assert len(held) == 5
        assert len(pulled) == 15
        assert sorted([m.message_id for m in held] +
                      [m.message.message_id for m in pulled]) == sorted(ids)
        for message in held:
            message.ack()
    finally:
        future.cancel()
        future.result(timeout=WAIT_S)


def test_streaming_pull_requests_ack_nack_and_flow_control(emulator, publisher,
                                                           subscriber, topic):
    """The raw bidirectional stream (the client's GAPIC method): acks and nacks sent
    on the stream itself, and max_outstanding_messages as a hard cap."""
    sub = _subscription(subscriber, topic)
    ids = _publish(publisher, topic, 3)
    outbox: queue.Queue = queue.Queue()
    outbox.put(StreamingPullRequest(subscription=sub, stream_ack_deadline_seconds=10,
                                    max_outstanding_messages=2))

    def requests():
        while (request := outbox.get()) is not None:
            yield request

    responses = subscriber.api.streaming_pull(requests=requests())
    try:
        first = list(next(responses).received_messages)
        assert [m.message.message_id for m in first] == ids[:2]   # capped at 2
        outbox.put(StreamingPullRequest(ack_ids=[first[0].ack_id],
                                        modify_deadline_ack_ids=[first[1].ack_id],
                                        modify_deadline_seconds=[0]))
        later = []
        while len(later) < 2:
            later.extend(next(responses).received_messages)
        assert sorted(m.message.message_id for m in later) == sorted(ids[1:])
        outbox.put(StreamingPullRequest(ack_ids=[m.ack_id for m in later],
                                        stream_ack_deadline_seconds=30))
        give_up = time.monotonic() + WAIT_S
        while emulator.state.backlog(sub)["unacked"] and time.monotonic() < give_up:
            time.sleep(0.02)
        assert emulator.state.backlog(sub) == {"unacked": 0, "leased": 0}
    finally:
        outbox.put(None)                     # the client closes its side ...
    assert list(responses) == []             # ... and the server ends the stream


def test_streaming_pull_ends_when_subscription_is_deleted(subscriber, topic):
    sub = _subscription(subscriber, topic)
    future = subscriber.subscribe(sub, lambda message: message.ack())
    time.sleep(0.2)
    subscriber.delete_subscription(subscription=sub)
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=WAIT_S)


def test_stop_ends_open_streams_quickly(monkeypatch):
    with PubSubEmulator() as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.address)
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name=publisher.topic_path(PROJECT, "stop-me")).name
        sub = _subscription(subscriber, topic)
        future = subscriber.subscribe(sub, lambda message: message.ack())
        time.sleep(0.3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        # The stream ended with UNAVAILABLE, which the client retries: only the
        # subscriber's own cancel ends it (closing the client would wait ~9 s for
        # its reconnecting thread, which is the client's business, not the server's).
        future.cancel()
        future.result(timeout=WAIT_S)


# -- seek and snapshots ------------------------------------------------------------
def test_seek_to_time_replays_acked_messages_when_retained(publisher, subscriber, topic):
    retained = _subscription(subscriber, topic, retain_acked_messages=True)
    plain = _subscription(subscriber, topic)
    # One request each, so the three messages get distinct publish times.
    ids = [publisher.publish(topic, b"m%d" % i).result(timeout=WAIT_S) for i in range(3)]
    received = {m.message.message_id: m.message for m in _drain(subscriber, retained, 3)}
    assert len(_drain(subscriber, plain, 3)) == 3
    for sub in (retained, plain):                            # all acked now
        assert _pull(subscriber, sub, immediately=True) == []

    # Seek to the second message's publish time: it and the later one come back.
    middle = received[ids[1]].publish_time
    subscriber.seek(request={"subscription": retained, "time": middle})
    assert sorted(m.message.message_id for m in _drain(subscriber, retained, 2)) == \
        sorted(ids[1:])
    assert _pull(subscriber, retained, immediately=True) == []

    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 60)
    subscriber.seek(request={"subscription": plain, "time": start})
    assert _pull(subscriber, plain, immediately=True) == []  # acked and not retained

    # Seeking to the future marks everything acked.
    subscriber.seek(request={"subscription": retained, "time": start})
    future_time = timestamp_pb2.Timestamp()
    future_time.FromSeconds(int(time.time()) + 60)
    subscriber.seek(request={"subscription": retained, "time": future_time})
    assert _pull(subscriber, retained, immediately=True) == []


def test_snapshot_create_seek_delete(publisher, subscriber, topic):
    sub = _subscription(subscriber, topic)
    before = _publish(publisher, topic, 2)
    snapshot = subscriber.snapshot_path(PROJECT, _unique("snap"))
    created = subscriber.create_snapshot(request={"name": snapshot, "subscription": sub})
    assert created.name == snapshot and created.topic == topic
    assert created.expire_time.timestamp() > time.time() + 6 * 24 * 3600
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_snapshot(request={"name": snapshot, "subscription": sub})
    assert subscriber.get_snapshot(snapshot=snapshot).name == snapshot
    assert snapshot in [s.name for s in subscriber.list_snapshots(
        project=f"projects/{PROJECT}")]
    assert list(publisher.list_topic_snapshots(topic=topic)) == [snapshot]

    assert len(_drain(subscriber, sub, 2)) == 2             # acked after the snapshot
    after = _publish(publisher, topic, 1)
    assert len(_drain(subscriber, sub, 1)) == 1
    subscriber.seek(request={"subscription": sub, "snapshot": snapshot})
    replayed = sorted(m.message.message_id for m in _drain(subscriber, sub, 3))
    assert replayed == sorted(before + after)

    subscriber.delete_snapshot(snapshot=snapshot)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_snapshot(snapshot=snapshot)
    with pytest.raises(exceptions.NotFound):
        subscriber.seek(request={"subscription": sub, "snapshot": snapshot})


# -- the queue underneath (paths too slow to reach through the client) ---------------
def test_queue_drops_messages_past_retention():
    messages = SubscriptionQueue()
    for seq in range(1, 4):
        messages.add(seq, b"m", publish_us=seq * 1_000_000)
    (leased,) = messages.take(1, 100, deadline_us=10_000_000)
    messages.prune(cutoff_us=2_500_000)   # messages 1 and 2 are too old
    assert (messages.unacked, messages.leased) == (1, 0)
    assert [e.seq for e in messages.take(10, 100, deadline_us=10_000_000)] == [3]
    assert not messages.ack(messages.ack_id(leased))


def test_queue_drops_expired_acked_messages_even_when_acked_out_of_order():
    messages = SubscriptionQueue(retain_acked=True)
    for seq in range(1, 5):
        messages.add(seq, b"m%d" % seq, publish_us=seq * 1_000_000)
    leased = {e.seq: e for e in messages.take(10, 100, deadline_us=10_000_000)}
    for seq in (1, 3, 2, 4):
        assert messages.ack(messages.ack_id(leased[seq]))
    messages.prune(cutoff_us=2_500_000)            # 1 and 2 are past retention
    assert len(messages.acked) == 3                # 2 waits behind 3 (acked earlier)...
    messages.seek_time(0, cutoff_us=2_500_000)     # ...but is never replayed
    assert [e.wire for e in messages.take(10, 100, deadline_us=1)] == [b"m3", b"m4"]


def test_queue_keeps_acked_messages_compactly():
    """An ack drops the message's delivery bookkeeping (its Entry); what a seek needs
    (seq, publish time, bytes) costs about 24 bytes besides the bytes, which are one
    object shared by every subscription."""
    wires = [b"%06d" % i * 50 for i in range(2000)]      # 300-byte messages
    queues = [SubscriptionQueue(retain_acked=True) for _ in range(2)]
    tracemalloc.start()
    try:
        for messages in queues:
            for seq, wire in enumerate(wires, 1):
                messages.add(seq, wire, publish_us=seq)
            for entry in messages.take(len(wires), 1 << 30, deadline_us=1):
                assert messages.ack(messages.ack_id(entry))
        del entry
        kept = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, retained.__file__)])
    finally:
        tracemalloc.stop()
    per_message = sum(t.size for t in kept.traces) / len(wires) / len(queues)
    assert per_message < 40, per_message
    ours = {id(w) for w in wires}
    assert not [o for o in gc.get_objects() if isinstance(o, Entry) and id(o.wire) in ours]
    assert [(q.unacked, len(q.acked)) for q in queues] == [(0, 2000), (0, 2000)]
    first, second = ([w for _, _, w in q.acked.items()] for q in queues)
    assert all(a is b is w for a, b, w in zip(first, second, wires))


def test_queue_lease_heap_stays_bounded_under_lease_extensions():
    messages = SubscriptionQueue()
    messages.add(1, b"m", publish_us=0)
    (entry,) = messages.take(1, 100, deadline_us=1)
    ack_id = messages.ack_id(entry)
    for deadline in range(2, 30_000):        # a client extending one lease many times
        messages.modify(ack_id, deadline)
        messages.expire(now_us=0)
    assert len(messages.leases) < 15_000
    assert messages.expire(now_us=29_998) == [] and messages.leased == 1
    messages.expire(now_us=30_000)
    assert (messages.leased, messages.unacked) == (0, 1)
