"""The streaming rot pipeline: feedback in; stored feedback, window metrics and rot
events out.

Steps (each a labelled composite transform in its own module)::

    ReadFeedback        ReadFromPubSub (+ PullBacklog on local runners)   source.py
    ParseFeedback       valid FeedbackEvent | DeadLetter                   parse.py
      PublishDeadLetters  original payload + reason -> feedback-deadletter
      StoreFeedback       Feedback entities keyed by event_id               store.py
      RecordCheckpoint    how far input is durably handled (for restarts)   checkpoint.py
    DedupeByEventId     first delivery of each event_id only               dedupe.py
    WindowedAccuracy    sliding windows per version: n, accuracy, Wilson,  metrics.py
                        PSI drift -> WindowMetric entities; (local) too
                        late for any window: stored, reported late
                        (feedback-deadletter, stage=late), counted
    DecideRot           accuracy / input-drift / error-rate-change rules   rot.py
    PublishRotEvents    model-rot topic, then RotEvent entities            publish.py

:func:`build_pipeline` wires them onto a pipeline and returns the named output
collections (tests hand in a ``TestStream`` as ``source`` and ``write=False``);
:func:`run` parses options, seeks the subscription back to the last checkpoint and
starts the job.

Locally (emulators from ``rotwatch emulators start``; the bundle-based DirectRunner
is the default)::

    rotwatch pipeline run --window_size_s 20 --window_period_s 5 --min_n 30
    python -m pipelines.feedback_pipeline --window_size_s 20 --window_period_s 5

On Dataflow (``make run-dataflow PROJECT=... REGION=... TEMP_LOCATION=gs://...``)::

    python -m pipelines.feedback_pipeline --runner DataflowRunner --project P \\
        --region R --temp_location gs://B/tmp --setup_file ./setup.py --streaming
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import signal
import threading

import apache_beam as beam
from apache_beam.io.gcp.pubsub import WriteToPubSub
from apache_beam.options.pipeline_options import (PipelineOptions, StandardOptions,
                                                  TestOptions)
from apache_beam.transforms import window

from pipelines.checkpoint import RecordCheckpoint, restore_position
from pipelines.dedupe import DedupeByEventId
from pipelines.metrics import WindowedAccuracy, prefer_fuller, window_metric_entity
from pipelines.options import PipelineConfig, config_from_options, is_local_runner
from pipelines.parse import DEADLETTER, ParseFeedback
from pipelines.publish import PublishRotEvent
from pipelines.rot import DecideRot
from pipelines.source import ReadFeedbackMessages
from pipelines.store import WriteEntities, feedback_entity
from pipelines.versions import RegistryCatalog

__all__ = ["build_pipeline", "run", "make_options", "preflight", "LOCAL_RUNNER"]

_LOGGER = logging.getLogger(__name__)

# The streaming-capable local runner; "DirectRunner" would first try to download
# the Prism runner (DESIGN.md).
LOCAL_RUNNER = "BundleBasedDirectRunner"


def build_pipeline(p: beam.Pipeline, options: PipelineOptions, source=None,
                   catalog=None, write: bool = True,
                   config: PipelineConfig | None = None) -> dict:
    """Add the rot pipeline to ``p``; returns its named output collections.

    ``source``: a PTransform (e.g. ``TestStream``) or PCollection of
    ``PubsubMessage``; default the feedback subscription. ``catalog``: where version
    facts come from (default the registry, cached). ``write=False`` leaves out every
    sink (Pub/Sub, Datastore), for tests that only look at the collections. The
    output ``unique_events`` holds the first deliveries per version and bundle, as
    ``((model, version), [events])``.
    """
    config = config or config_from_options(options)
    catalog = catalog or RegistryCatalog(config.project, config.namespace,
                                         config.registry_ttl_s)
    if source is None:
        messages = p | "ReadFeedback" >> ReadFeedbackMessages(
            config.subscription, local=is_local_runner(options),
            pull_batch=config.local_pull_batch, pull_max=config.local_pull_max)
    elif isinstance(source, beam.PTransform):
        messages = p | "ReadFeedback" >> source
    else:
        messages = source
    parsed = (messages
              | "ParseFeedback" >> beam.ParDo(ParseFeedback(catalog, config.max_future_s))
              .with_outputs(DEADLETTER, main="events"))
    events, deadletters = parsed.events, parsed[DEADLETTER]
    unique = events | "DedupeByEventId" >> DedupeByEventId(config.dedupe_ttl_s)
    report_too_late = (config.report_too_late if config.report_too_late is not None
                       else is_local_runner(options))
    window_stats, too_late = unique | "WindowedAccuracy" >> WindowedAccuracy(
        config, catalog, report_too_late)
    if not report_too_late:
        too_late = None
    rot_events = (window_stats, unique) | "DecideRot" >> DecideRot(config, catalog)
    outputs = {"messages": messages, "events": events, "deadletters": deadletters,
               "unique_events": unique, "too_late": too_late,
               "window_stats": window_stats, "rot_events": rot_events}
    if not write:
        return outputs

    project, namespace = config.project, config.namespace
    reports = deadletters
    if too_late is not None:   # late reports ride with the dead letters
        reports = (deadletters, too_late) | "WithLateReports" >> beam.Flatten()
    deadletters_published = (
        reports
        | "ToDeadLetterMessage" >> beam.Map(lambda d: d.to_message())
        | "PublishDeadLetters" >> WriteToPubSub(config.deadletter_topic,
                                                with_attributes=True))
    feedback_written = (events
                        # entities made as the write encodes them (no step of its own)
                        | "StoreFeedback" >> WriteEntities(
                            project, config.throttle_rampup,
                            to_entity=functools.partial(feedback_entity, project=project,
                                                        namespace=namespace),
                            key_fn=operator.attrgetter("event_id")))
    checkpoints = ((messages, feedback_written, deadletters_published)
                   | "RecordCheckpoint" >> RecordCheckpoint(
                       config.subscription, project, namespace,
                       config.checkpoint_interval_s))
    metric_entities = (window_stats
                       | "ToWindowMetricEntity" >> beam.Map(
                           lambda s: window_metric_entity(s, project, namespace))
                       | "UnwindowMetrics" >> beam.WindowInto(window.GlobalWindows()))
    rot_entities = rot_events | "PublishRotEvents" >> beam.ParDo(PublishRotEvent(
        config.rot_topic, project, namespace, config.cooldown_s))
    state_written = ((metric_entities, rot_entities, checkpoints)
                     | "MergeStateEntities" >> beam.Flatten()
                     | "StoreState" >> WriteEntities(project, config.throttle_rampup,
                                                     prefer=prefer_fuller))
    outputs.update(feedback_written=feedback_written, checkpoints=checkpoints,
                   rot_entities=rot_entities, state_written=state_written)
    return outputs


def make_options(argv=None) -> PipelineOptions:
    """Beam options from ``argv``, streaming, the local runner unless one is named."""
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    return options


def preflight(config: PipelineConfig) -> None:
    """Fail fast, with the fix, if the subscription or topics are missing."""
    from google.api_core import exceptions as gexc
    from pipelines.clients import publisher_client, subscriber_client
    try:
        subscriber_client().get_subscription(subscription=config.subscription)
    except gexc.NotFound:
        raise SystemExit(f"subscription {config.subscription} does not exist; create "
                         "the topics and subscriptions with: rotwatch setup") from None
    for topic in (config.deadletter_topic, config.rot_topic):
        try:
            publisher_client().get_topic(topic=topic)
        except gexc.NotFound:
            raise SystemExit(f"topic {topic} does not exist; create it with: "
                             "rotwatch setup") from None


def run(argv=None, catalog=None):
    """Parse options, seek back to the checkpoint, start the job; the running result.

    With ``--dry_run=True`` (Dataflow) nothing is contacted: no preflight, no seek.
    """
    options = make_options(argv)
    config = config_from_options(options)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if not dry_run:
        preflight(config)
        if config.seek_on_start:
            config = dataclasses.replace(config, replay_from=restore_position(config))
    _LOGGER.info("pipeline starting window=%ss/%ss lateness=%ss min_n=%d "
                 "consecutive=%d tolerance=%s cooldown=%ss", config.window_size_s,
                 config.window_period_s, config.allowed_lateness_s, config.min_n,
                 config.consecutive, config.tolerance, config.cooldown_s)
    p = beam.Pipeline(options=options)
    build_pipeline(p, options, catalog=catalog, config=config)
    result = p.run()
    # `rotwatch up` waits for this line.
    _LOGGER.info("pipeline running runner=%s subscription=%s replay_from=%s",
                 options.view_as(StandardOptions).runner, config.subscription,
                 config.replay_from.isoformat() if config.replay_from else None)
    return result


def main(argv=None) -> int:
    """Run; on a local runner stay in the foreground until Ctrl-C, on a service
    (Dataflow) return once the job is submitted."""
    result = run(argv)
    if not is_local_runner(make_options(argv)):
        _LOGGER.info("job submitted state=%s", result.state)
        return 0
    def _interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)   # `rotwatch up` stops with SIGTERM
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        _LOGGER.info("pipeline stopping")
        result.cancel()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
