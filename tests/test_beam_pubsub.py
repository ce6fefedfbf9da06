"""Apache Beam's own Pub/Sub connectors against the emulator, in a streaming pipeline.

``ReadFromPubSub(subscription=..., with_attributes=True)`` -> Map -> ``WriteToPubSub``
on the BundleBasedDirectRunner (the plain DirectRunner would try to download Prism).
Messages go in and come out through the official client; every one must arrive once
with its attributes. Beam's Pub/Sub IO builds plain ``google.cloud.pubsub`` clients,
which go anonymous under PUBSUB_EMULATOR_HOST, so no credential lookup is made.
"""
from __future__ import annotations

import time
import uuid

import apache_beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState
from google.cloud import pubsub_v1

from emulators.pubsub import PubSubEmulator
from rotwatch.environ import scoped_environ

PROJECT = "local-project"
MESSAGES = 200
# Upper bound for the pipeline to move every message (it takes a few seconds).
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def emulator():
    with PubSubEmulator() as server, scoped_environ(
            {"PUBSUB_EMULATOR_HOST": server.address, "PUBSUB_PROJECT_ID": PROJECT}):
        yield server


def tag_message(message: PubsubMessage) -> PubsubMessage:
    """The pipeline's one step: upper-case the data, mark the message as seen."""
    return PubsubMessage(message.data.upper(), dict(message.attributes, seen="beam"))


def _build(pipeline, subscription: str, topic: str) -> None:
    _ = (pipeline
         | "ReadFeedback" >> ReadFromPubSub(subscription=subscription,
                                            with_attributes=True)
         | "TagMessage" >> apache_beam.Map(tag_message)
         | "WriteTagged" >> WriteToPubSub(topic=topic, with_attributes=True))


def test_streaming_pipeline_moves_every_message_with_attributes(emulator):
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    run_id = uuid.uuid4().hex[:8]
    source = publisher.create_topic(
        name=publisher.topic_path(PROJECT, f"beam-in-{run_id}")).name
    source_sub = subscriber.create_subscription(
        name=subscriber.subscription_path(PROJECT, f"beam-in-{run_id}"),
        topic=source).name
    sink = publisher.create_topic(
        name=publisher.topic_path(PROJECT, f"beam-out-{run_id}")).name
    sink_sub = subscriber.create_subscription(
        name=subscriber.subscription_path(PROJECT, f"beam-out-{run_id}"),
        topic=sink).name

    futures = [publisher.publish(source, b"zombie-%d" % i, event_id=str(i),
                                 model="friendly-zombie") for i in range(MESSAGES)]
    for future in futures:
        future.result(timeout=10)

    options = PipelineOptions(runner="BundleBasedDirectRunner", project=PROJECT)
    options.view_as(StandardOptions).streaming = True
    pipeline = apache_beam.Pipeline(options=options)
    _build(pipeline, source_sub, sink)
    result = pipeline.run()          # returns at once; the runner works in threads
    received = {}
    try:
        give_up = time.monotonic() + DEADLINE_S
        while len(received) < MESSAGES and time.monotonic() < give_up:
            response = subscriber.pull(subscription=sink_sub, max_messages=100)
            for item in response.received_messages:
                event_id = item.message.attributes["event_id"]
                assert event_id not in received, f"duplicate event_id={event_id}"
                received[event_id] = item.message
            if response.received_messages:
                subscriber.acknowledge(subscription=sink_sub, ack_ids=[
                    m.ack_id for m in response.received_messages])
    finally:
        result.cancel()
    assert result.state == PipelineState.CANCELLED
    assert len(received) == MESSAGES
    for i in range(MESSAGES):
        message = received[str(i)]
        assert message.data == b"ZOMBIE-%d" % i
        assert dict(message.attributes) == {"event_id": str(i),
                                            "model": "friendly-zombie",
                                            "seen": "beam"}
    # Beam acked everything it read from the source subscription.
    assert emulator.state.backlog(source_sub) == {"unacked": 0, "leased": 0}
    subscriber.close()
