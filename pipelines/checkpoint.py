"""Restart safety: remember how far input is durably handled; replay from there.

The unit is the source's element time, which is what ``Seek`` understands: on the
local runners messages are stamped with their Pub/Sub publish time (the read sets no
timestamp attribute); on Dataflow with ``event_ts``, a little before publish time.

While running, :class:`RecordCheckpoint` takes one probe per bundle of *read
messages* (the newest message time in it) and flattens the probes with the outputs
of the sinks that must be durable (the ``Feedback`` write, the dead-letter publish).
Those sinks emit nothing, but their output watermark passes a time only once every
element stamped earlier that reached them has been committed. An event-time timer
set from a probe fires when that joint watermark passes it and writes a
``PipelineCheckpoint`` entity (key: the subscription id) with that time, at most
every ``interval_s``. Probing the *read* messages matters on the DirectRunner, whose
Pub/Sub watermark is the wall clock even with a backlog: a message not pulled yet
can't be in a probe, and messages are delivered roughly in publish order.

On start, :func:`restore_position` reads the checkpoint and ``Seek`` s the
subscription back to it minus ``margin_s`` (the margin covers out-of-order delivery
and feedback stamped earlier than it was published). Messages published since are
delivered again; ``Feedback`` keys are event ids and the dedupe step runs before
counting, so nothing is stored or counted twice. Windows that start before the seek
point were stored complete before the restart and would now see only part of their
events, so the run is told to leave them alone (``PipelineConfig.replay_from``).

A first start has no checkpoint yet, and a crash before the first one would lose
what was pulled and acked. So a start without a checkpoint first takes a Pub/Sub
*snapshot* of the subscription (``<subscription>-start``: its unacked backlog and all
that follows); a restart that still finds no checkpoint seeks to that snapshot. Once
a checkpoint exists, a restart seeks by time and deletes the snapshot.

Seek replays acknowledged messages only if the subscription retains them
(``retain_acked_messages``); :func:`restore_position` warns when it does not. In
Google Cloud the pipeline's service account needs ``pubsub.snapshots.create`` and
``pubsub.subscriptions.consume`` (roles/pubsub.editor covers both).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from rotwatch import kinds
from rotwatch.events import format_time, from_millis
from pipelines.store import make_entity

__all__ = ["checkpoint_entity", "read_checkpoint", "restore_position",
           "start_snapshot_name", "RecordCheckpoint", "ProbeEventTime"]

_LOGGER = logging.getLogger(__name__)


def checkpoint_entity(subscription: str, stored_through: dt.datetime, project: str,
                      namespace: str | None = None):
    return make_entity(kinds.PIPELINE_CHECKPOINT, subscription.rsplit("/", 1)[-1], {
        "subscription": subscription, "stored_through": stored_through,
        "updated_at": dt.datetime.now(dt.timezone.utc),
    }, project, namespace)


def read_checkpoint(client, subscription: str) -> dt.datetime | None:
    entity = client.get(client.key(kinds.PIPELINE_CHECKPOINT,
                                   subscription.rsplit("/", 1)[-1]))
    if entity is None or entity.get("stored_through") is None:
        return None
    value = entity["stored_through"]
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def start_snapshot_name(subscription: str) -> str:
    """``projects/<p>/snapshots/<subscription id>-start``."""
    _, project, _, name = subscription.split("/")
    return f"projects/{project}/snapshots/{name}-start"


def _from_start_snapshot(subscriber, subscription: str) -> None:
    """No checkpoint: seek to the start snapshot if a crashed start left one, else
    take it now, before anything is pulled."""
    from google.api_core import exceptions as gexc
    snapshot = start_snapshot_name(subscription)
    try:
        subscriber.get_snapshot(snapshot=snapshot)
    except gexc.NotFound:
        subscriber.create_snapshot(name=snapshot, subscription=subscription)
        _LOGGER.info("no checkpoint subscription=%s: reading from where it is; "
                     "snapshot=%s taken so a restart before the first checkpoint "
                     "replays from here", subscription, snapshot)
        return
    subscriber.seek(request={"subscription": subscription, "snapshot": snapshot})
    _LOGGER.info("subscription seeked subscription=%s snapshot=%s (no checkpoint yet: "
                 "replaying from the first start)", subscription, snapshot)


def restore_position(config, datastore=None, subscriber=None) -> dt.datetime | None:
    """Seek the subscription to the checkpoint minus the margin; the seek time, or
    ``None`` when there is no checkpoint (then the start snapshot is taken or, after
    a crashed first start, sought)."""
    from google.api_core import exceptions as gexc
    from pipelines.clients import datastore_client, subscriber_client
    datastore = datastore or datastore_client(config.project, config.namespace)
    subscriber = subscriber or subscriber_client()
    stored_through = read_checkpoint(datastore, config.subscription)
    if stored_through is None:
        _from_start_snapshot(subscriber, config.subscription)
        return None
    seek_to = stored_through - dt.timedelta(seconds=config.checkpoint_margin_s)
    subscription = subscriber.get_subscription(subscription=config.subscription)
    if not subscription.retain_acked_messages:
        _LOGGER.warning(
            "subscription=%s does not retain acked messages: a seek cannot replay what "
            "was acked but not stored. Fix: gcloud pubsub subscriptions update %s "
            "--retain-acked-messages", config.subscription, config.subscription_id)
    from google.protobuf import timestamp_pb2
    target = timestamp_pb2.Timestamp()
    target.FromDatetime(seek_to.astimezone(dt.timezone.utc).replace(tzinfo=None))
    subscriber.seek(request={"subscription": config.subscription, "time": target})
    _LOGGER.info("subscription seeked subscription=%s stored_through=%s seek_to=%s",
                 config.subscription, format_time(stored_through), format_time(seek_to))
    try:   # the checkpoint supersedes the start snapshot
        subscriber.delete_snapshot(snapshot=start_snapshot_name(config.subscription))
    except gexc.NotFound:
        pass
    return seek_to


class ProbeEventTime(beam.DoFn):
    """One ``(key, newest element time in ms)`` per bundle: cheap to watch."""

    def __init__(self, key: str):
        self._key = key

    def start_bundle(self):
        self._newest = None

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        if self._newest is None or timestamp > self._newest:
            self._newest = timestamp

    def finish_bundle(self):
        if self._newest is not None:
            yield WindowedValue((self._key, self._newest.micros // 1000), self._newest,
                                [window.GlobalWindow()])


class _CheckpointTimerFn(beam.DoFn):
    NEWEST = ReadModifyWriteStateSpec("newest_ms", VarIntCoder())
    PENDING = ReadModifyWriteStateSpec("pending_ms", VarIntCoder())
    LAST = ReadModifyWriteStateSpec("last_ms", VarIntCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, subscription: str, project: str, namespace: str | None,
                 interval_s: int):
        self._subscription = subscription
        self._project = project
        self._namespace = namespace
        self._interval_ms = interval_s * 1000
        self._written = Metrics.counter("rotwatch.checkpoint", "checkpoints")

    def _arm(self, newest_ms, pending, last, flush):
        target = max(newest_ms, (last.read() or 0) + self._interval_ms)
        pending.write(target)
        flush.set(Timestamp(micros=target * 1000))

    def process(self, element, newest=beam.DoFn.StateParam(NEWEST),
                pending=beam.DoFn.StateParam(PENDING), last=beam.DoFn.StateParam(LAST),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, probe_ms = element
        newest_ms = max(probe_ms, newest.read() or 0)
        newest.write(newest_ms)
        if pending.read() is None:
            # Not moved while waiting: under steady load a timer pushed forward by
            # every probe would never fire.
            self._arm(newest_ms, pending, last, flush)

    @on_timer(FLUSH)
    def on_flush(self, newest=beam.DoFn.StateParam(NEWEST),
                 pending=beam.DoFn.StateParam(PENDING), last=beam.DoFn.StateParam(LAST),
                 flush=beam.DoFn.TimerParam(FLUSH)):
        target = pending.read()
        pending.clear()
        if target is None:
            return
        last.write(target)
        newest_ms = newest.read() or 0
        if newest_ms > target:
            self._arm(newest_ms, pending, last, flush)  # newer probes came meanwhile
        self._written.inc()
        _LOGGER.debug("checkpoint stored_through=%s", format_time(from_millis(target)))
        yield checkpoint_entity(self._subscription, from_millis(target), self._project,
                                self._namespace)


class RecordCheckpoint(beam.PTransform):
    """(read messages, *outputs of durable sinks) -> PipelineCheckpoint entities."""

    def __init__(self, subscription: str, project: str, namespace: str | None = None,
                 interval_s: int = 10, label: str | None = None):
        super().__init__(label)
        self._subscription = subscription
        self._project = project
        self._namespace = namespace
        self._interval_s = interval_s

    def expand(self, inputs):
        messages, *sinks = inputs
        key = self._subscription.rsplit("/", 1)[-1]
        probes = (messages | "ProbeEventTime" >> beam.ParDo(ProbeEventTime(key))
                  .with_output_types(Tuple[str, int]))
        # The flattened watermark is the slowest of them: the sinks', as long as they
        # lag the read (and a probe is never later than what it probed).
        return ((probes, *sinks)
                | "JoinWriteWatermark" >> beam.Flatten().with_output_types(Tuple[str, int])
                | "WaitForStoredThrough" >> beam.ParDo(_CheckpointTimerFn(
                    self._subscription, self._project, self._namespace,
                    self._interval_s)))
