"""Read the feedback subscription: Beam's ``ReadFromPubSub``, plus a local booster.

On Dataflow, ``ReadFromPubSub`` reads the named subscription with attributes, takes
event time from ``event_ts`` (what :meth:`FeedbackEvent.attributes` sets, ms since the
epoch; Dataflow estimates the watermark from it) and deduplicates by ``event_id``
(``id_label``; only Dataflow supports it).

On the local bundle-based DirectRunner, Beam's read pulls 10 messages per call, and
every such 10-message bundle then pays each step's per-bundle cost (the runner
unpickles and sets up every DoFn per bundle): ~80 events/s through this pipeline
(``bench/pipeline_throughput.py --compare-beam-read``). Beam has no
option for it. :class:`PullBacklog` is the way past it with public API only: Beam's
read stays the driver (and the watermark, which on this runner is the wall clock
anyway), and whenever it hands over a bundle, this step pulls up to
``max_per_bundle`` more messages from the same subscription with the official client,
``batch`` per Pull, acks them and emits them in the same bundle. Two consumers of one
subscription is ordinary Pub/Sub; each message still goes to one of them. The local
read sets no ``timestamp_attribute``: a malformed ``event_ts`` would make the runner's
reader raise and stall; :class:`~pipelines.parse.ParseFeedback` stamps event time
itself and dead-letters a bad ``event_ts``.

Acks wait for the end of the bundle (after everything pulled was handed on), and a
Pull that fails (a message over a gRPC size limit, an RPC error) ends this bundle's
extra pulls instead of failing the bundle: a failed bundle is retried without having
acked what it pulled, so those messages come again. A crash can still lose what is
in flight (acked, not yet stored) — as with Beam's own read, which acks on pull —
and the checkpoint-and-seek on restart (:mod:`pipelines.checkpoint`) brings it back.
"""
from __future__ import annotations

import datetime as dt
import logging

import apache_beam as beam
from google.pubsub_v1.types import PullResponse
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

__all__ = ["PullBacklog", "ReadFeedbackMessages", "to_beam_message",
           "TIMESTAMP_ATTRIBUTE", "ID_ATTRIBUTE"]

_LOGGER = logging.getLogger(__name__)

TIMESTAMP_ATTRIBUTE = "event_ts"
ID_ATTRIBUTE = "event_id"
# Pub/Sub answers an empty Pull within this; the emulator at once.
PULL_TIMEOUT_S = 10.0
# Ack ids per Acknowledge request: well inside Pub/Sub's 512 KB request limit.
ACK_BATCH = 2500
# FULL: a Pull answer can be short of ``max_messages`` with more waiting — the local
# emulator cuts answers near 4 MiB, so that a message over gRPC's default receive
# limit comes alone. So after a short answer this read pulls once more before it
# calls the backlog drained (two short answers in a row, or an empty one), and takes
# such a big message itself: its client has no limit, so the message is dead-lettered
# with its reason at once instead of failing Beam's own (4 MiB) read until the
# subscription's dead-letter policy gives up on it.


def to_beam_message(message) -> tuple[PubsubMessage, Timestamp | None]:
    """A raw protobuf ``google.pubsub.v1.PubsubMessage`` as Beam's ``PubsubMessage``,
    and its publish time as a Beam timestamp."""
    out = PubsubMessage(message.data, dict(message.attributes))
    out.message_id = message.message_id or None
    when = None
    if message.HasField("publish_time"):
        out.publish_time = message.publish_time.ToDatetime(tzinfo=dt.timezone.utc)
        when = Timestamp(seconds=message.publish_time.seconds,
                         micros=message.publish_time.nanos // 1000)
    return out, when


class PullBacklog(beam.DoFn):
    """Pass each message through; once per bundle, pull up to ``max_per_bundle``
    more from ``subscription`` (``batch`` per Pull) and emit them too."""

    def __init__(self, subscription: str, batch: int = 500, max_per_bundle: int = 20000):
        if not 0 < batch <= 1000:
            raise ValueError(f"batch={batch} must be in 1..1000 (Pub/Sub's Pull limit)")
        if max_per_bundle < batch:
            raise ValueError(f"max_per_bundle={max_per_bundle} must be >= batch={batch}")
        self._subscription = subscription
        self._batch = batch
        self._max = max_per_bundle
        self._pulled = Metrics.counter("rotwatch.source", "backlog_pulled")
        self._failed = Metrics.counter("rotwatch.source", "backlog_pull_errors")

    def setup(self):
        from pipelines.clients import subscriber_client
        self._subscriber = subscriber_client()

    def start_bundle(self):
        self._drained = False
        self._ack_ids = []

    def process(self, message):
        from google.api_core import exceptions as gexc
        yield message
        if self._drained:
            return
        self._drained = True
        short = 0
        while len(self._ack_ids) < self._max:
            try:
                response = self._subscriber.pull(
                    subscription=self._subscription, timeout=PULL_TIMEOUT_S,
                    max_messages=min(self._batch, self._max - len(self._ack_ids)))
            except gexc.GoogleAPICallError as exc:
                self._failed.inc()
                _LOGGER.warning("backlog pull failed, Beam's read goes on "
                                "subscription=%s error=%s", self._subscription, exc)
                break
            # The raw protobuf: proto-plus wrappers cost more than the rest of this step.
            received = PullResponse.pb(response).received_messages
            for item in received:
                msg, when = to_beam_message(item.message)
                self._ack_ids.append(item.ack_id)
                yield beam.window.TimestampedValue(msg, when) if when else msg
            self._pulled.inc(len(received))
            # Drained: an empty answer, or a second short one in a row (one short
            # answer alone does not say so, see FULL; under steady traffic every
            # answer is short, and the bundle must end).
            short = 0 if len(received) >= self._batch else short + 1
            if not received or short >= 2:
                break

    def finish_bundle(self):
        # Everything pulled has been emitted into this bundle: now it may be acked.
        ack_ids, self._ack_ids = self._ack_ids, []
        for i in range(0, len(ack_ids), ACK_BATCH):
            self._subscriber.acknowledge(subscription=self._subscription,
                                         ack_ids=ack_ids[i:i + ACK_BATCH])


class ReadFeedbackMessages(beam.PTransform):
    """PBegin -> PubsubMessage (with attributes) from the feedback subscription."""

    def __init__(self, subscription: str, local: bool, pull_batch: int = 500,
                 pull_max: int = 20000, label: str | None = None):
        super().__init__(label)
        self._subscription = subscription
        self._local = local
        self._pull_batch = pull_batch
        self._pull_max = pull_max

    def expand(self, pbegin):
        if not self._local:
            return pbegin | "ReadFromPubSub" >> ReadFromPubSub(
                subscription=self._subscription, with_attributes=True,
                timestamp_attribute=TIMESTAMP_ATTRIBUTE, id_label=ID_ATTRIBUTE)
        messages = pbegin | "ReadFromPubSub" >> ReadFromPubSub(
            subscription=self._subscription, with_attributes=True)
        if self._pull_batch > 0:
            messages = messages | "PullBacklog" >> beam.ParDo(PullBacklog(
                self._subscription, self._pull_batch,
                max(self._pull_max, self._pull_batch)))
        return messages
