"""The feedback publisher apps import: build, validate and publish feedback events.

An app that served a prediction tells rotwatch whether it was right::

    from publishers.feedback_client import FeedbackPublisher

    with FeedbackPublisher() as feedback:            # settings from the environment
        future = feedback.send(model="zombies", version="v1",
                               features=[2.0, 3.4, 5.1, 1.0], prediction=1,
                               was_correct=False)
        print(future.result(timeout=30))             # the Pub/Sub message id
    # leaving the block flushes: every event is published or an error is raised

Every event is checked by :class:`rotwatch.events.FeedbackEvent` — the schema the
pipeline parses — before it is sent, so a bad event fails here, in the app, with the
field named, instead of landing in the dead-letter topic. Events are published with
the official ``google.cloud.pubsub_v1.PublisherClient`` (batching, flow control and
retries spelled out below) and carry the attributes the pipeline reads (``event_id``,
``event_ts``, ``model``, ``version``).

Nothing is lost silently: each failed publish is logged with its ``event_id``, handed
to ``on_error`` if given, and raised by the next :meth:`FeedbackPublisher.flush` /
:meth:`~FeedbackPublisher.close` as :class:`PublishError` listing every failed id.

Locally it talks to the emulator when ``PUBSUB_EMULATOR_HOST`` is set
(``rotwatch emulators start``); with it unset, to Google Cloud Pub/Sub.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

from rotwatch.config import Settings
from rotwatch.events import MAX_FEEDBACK_BYTES, FeedbackEvent, InvalidEvent

__all__ = [
    "FeedbackPublisher", "PublishError", "default_batch_settings",
    "default_flow_control", "default_retry", "PUBLISH_TIMEOUT_S", "RETRY_DEADLINE_S",
]

_LOGGER = logging.getLogger(__name__)

# Per-RPC timeout of one Publish call: the GAPIC default, long enough for a 1 MB batch
# over a slow link.
PUBLISH_TIMEOUT_S = 60.0
# How long transient errors are retried before a publish is reported failed: ten
# minutes rides out a Pub/Sub incident or an emulator restart (the GAPIC default).
RETRY_DEADLINE_S = 600.0
# flush()/close() wait this long by default for outstanding publishes.
FLUSH_TIMEOUT_S = RETRY_DEADLINE_S + PUBLISH_TIMEOUT_S


class PublishError(RuntimeError):
    """Some events could not be published; ``failures`` lists ``(event_id, error)``."""

    def __init__(self, failures: Sequence[tuple[str, BaseException]]):
        self.failures = list(failures)
        shown = ", ".join(f"{eid} ({type(err).__name__}: {err})"
                          for eid, err in self.failures[:5])
        more = f" and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        super().__init__(
            f"{len(self.failures)} feedback event(s) were not published: {shown}{more}. "
            "Check that the topic exists and Pub/Sub (or PUBSUB_EMULATOR_HOST) is "
            "reachable, then send these events again (same event_id: the pipeline "
            "stores each id once).")


def default_batch_settings(max_latency_s: float = 0.02):
    """How events are grouped into Publish requests."""
    from google.cloud import pubsub_v1

    return pubsub_v1.types.BatchSettings(
        # 1 MB: a tenth of Pub/Sub's 10 MB request limit, and ~3,000 typical events.
        max_bytes=1_000_000,
        # A feedback click can wait 20 ms; under load that fills batches, idle it
        # costs one round trip. The gateway waits for the publish before answering.
        max_latency=max_latency_s,
        # 100 messages: the client default, a good size for Pub/Sub's throughput.
        max_messages=100,
    )


def default_flow_control():
    """How much may wait unpublished before :meth:`FeedbackPublisher.publish` blocks."""
    from google.cloud import pubsub_v1

    return pubsub_v1.types.PublishFlowControl(
        # 10 full batches in flight: enough to keep Pub/Sub busy, bounded in memory.
        message_limit=1000,
        # 10 MB outstanding: 10 full batches by bytes.
        byte_limit=10_000_000,
        # Block the caller instead of growing memory (IGNORE) or failing (ERROR):
        # a producer faster than Pub/Sub slows down, and nothing is dropped.
        limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.BLOCK,
    )


def default_retry(deadline_s: float = RETRY_DEADLINE_S):
    """Retry the transient Publish errors, with exponential backoff, for ``deadline_s``."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        # First retry after 100 ms, then x4 each time up to a minute between tries
        # (the GAPIC defaults for Publish).
        initial=0.1, maximum=60.0, multiplier=4.0,
        # The errors Google documents as retryable for Publish; anything else
        # (NotFound: no topic, InvalidArgument, PermissionDenied) fails at once.
        predicate=retry.if_exception_type(
            exceptions.Aborted, exceptions.Cancelled, exceptions.DeadlineExceeded,
            exceptions.InternalServerError, exceptions.ResourceExhausted,
            exceptions.ServiceUnavailable, exceptions.Unknown),
        timeout=deadline_s,
    )


class FeedbackPublisher:
    """Publishes :class:`FeedbackEvent` s to the ``feedback`` topic.

    Parameters
    ----------
    settings:
        Where to publish (project); ``Settings.from_env()`` if omitted.
    topic:
        A full topic name ``projects/<p>/topics/<t>``; defaults to the settings'
        ``feedback`` topic.
    max_latency_s, retry_deadline_s:
        Batching delay and how long transient errors are retried.
    on_error:
        Called as ``on_error(event, exception)`` for each event that failed for good
        (from a client thread). Failures are also logged and raised by ``flush()``.
    keep_failures:
        Keep failures for :meth:`flush` to raise (default). A caller that reports
        every failure itself — the gateway answers 503 listing them — passes False.
    client:
        A ready ``PublisherClient`` to use instead of creating one on first use.

    The Pub/Sub client is created on the first publish, not here, so a publisher can
    be made before a ``fork`` and at import time of an app without opening channels.
    """

    def __init__(self, settings: Settings | None = None, *, topic: str | None = None,
                 max_latency_s: float = 0.02, retry_deadline_s: float = RETRY_DEADLINE_S,
                 on_error: Callable[[FeedbackEvent, BaseException], Any] | None = None,
                 keep_failures: bool = True, client=None):
        self.settings = settings or Settings.from_env()
        self.topic = topic or self.settings.topic("feedback")
        if not self.topic.startswith("projects/") or "/topics/" not in self.topic:
            raise ValueError(f"topic {self.topic!r} is not a full topic name; "
                             "use projects/<project>/topics/<topic>")
        if not 0 <= max_latency_s <= 10:
            raise ValueError(f"max_latency_s={max_latency_s} is out of range; use 0..10 s")
        if retry_deadline_s <= 0:
            raise ValueError(f"retry_deadline_s={retry_deadline_s} must be positive")
        self.max_latency_s = max_latency_s
        self.retry_deadline_s = retry_deadline_s
        self.on_error = on_error
        self.keep_failures = keep_failures
        self._client = client
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)   # a publish has settled
        self._pending: set[concurrent.futures.Future] = set()
        self._failures: list[tuple[str, BaseException]] = []
        self._closed = False
        self.published = 0   # events Pub/Sub acknowledged
        self.failed = 0      # events that failed for good

    # -- the client, on first use -----------------------------------------------------
    @property
    def client(self):
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1

                self._client = pubsub_v1.PublisherClient(
                    batch_settings=default_batch_settings(self.max_latency_s),
                    publisher_options=pubsub_v1.types.PublisherOptions(
                        flow_control=default_flow_control(),
                        retry=default_retry(self.retry_deadline_s),
                        timeout=PUBLISH_TIMEOUT_S,
                    ),
                )
                _LOGGER.debug("publisher created topic=%s", self.topic)
            return self._client

    # -- building ---------------------------------------------------------------------
    @staticmethod
    def event(*, model: str, version: str, features: Sequence[float],
              prediction: int | str, was_correct: bool | None = None,
              label: int | str | None = None, event_id: str | None = None,
              event_time: dt.datetime | None = None) -> FeedbackEvent:
        """A valid event with a fresh ``event_id`` and ``event_time`` (now, UTC).

        Raises :class:`rotwatch.events.InvalidEvent` naming the bad field.
        """
        return FeedbackEvent.create(model=model, version=version, features=features,
                                    prediction=prediction, was_correct=was_correct,
                                    label=label, event_id=event_id, event_time=event_time)

    @staticmethod
    def coerce(event: FeedbackEvent | Mapping) -> FeedbackEvent:
        """An event, from a :class:`FeedbackEvent` or a dict in the wire format."""
        if isinstance(event, FeedbackEvent):
            return event
        if isinstance(event, Mapping):
            return FeedbackEvent.from_dict(event)
        raise InvalidEvent("<event>", f"expected a FeedbackEvent or a dict, got "
                                      f"{type(event).__name__}")

    # -- publishing -------------------------------------------------------------------
    def publish(self, event: FeedbackEvent | Mapping) -> concurrent.futures.Future:
        """Validate and publish one event; the future resolves to the message id.

        Raises :class:`InvalidEvent` for a bad event (nothing is sent) and
        ``RuntimeError`` after :meth:`close`. May block while flow control is full.
        """
        event = self.coerce(event)
        data = event.to_json()
        if len(data) > MAX_FEEDBACK_BYTES:
            raise InvalidEvent("<payload>", f"{len(data)} bytes is over the "
                                            f"{MAX_FEEDBACK_BYTES}-byte limit; send "
                                            "fewer features")
        if self._closed:
            raise RuntimeError("this FeedbackPublisher is closed; create a new one")
        future = self.client.publish(self.topic, data, **event.attributes())
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(lambda f, ev=event: self._done(ev, f))
        return future

    def send(self, **fields) -> concurrent.futures.Future:
        """Build (see :meth:`event`) and publish one event."""
        return self.publish(self.event(**fields))

    def publish_many(self, events: Iterable[FeedbackEvent | Mapping]
                     ) -> list[concurrent.futures.Future]:
        """Validate every event first, then publish them all (all or nothing checked)."""
        checked = [self.coerce(e) for e in events]
        return [self.publish(e) for e in checked]

    def _done(self, event: FeedbackEvent, future: concurrent.futures.Future) -> None:
        error = future.exception() if not future.cancelled() else \
            concurrent.futures.CancelledError("publish cancelled")
        if error is not None:
            _LOGGER.error("feedback not published event_id=%s model=%s version=%s "
                          "error=%r", event.event_id, event.model, event.version, error)
            if self.on_error is not None:
                try:
                    self.on_error(event, error)
                except Exception:  # the user's hook must not hide the failure itself
                    _LOGGER.exception("on_error hook failed event_id=%s", event.event_id)
        # Settled last: flush() returns once every publish it waits for got here, so
        # a failure it reports has been logged and handed to on_error already.
        with self._settled:
            if error is None:
                self.published += 1
            else:
                self.failed += 1
                if self.keep_failures:
                    self._failures.append((event.event_id, error))
            self._pending.discard(future)
            self._settled.notify_all()

    # -- stopping ---------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: float | None = FLUSH_TIMEOUT_S) -> int:
        """Wait for every outstanding publish; return how many were published so far.

        Raises :class:`PublishError` with the events that failed since the last flush,
        or ``TimeoutError`` if some are still outstanding after ``timeout`` seconds.
        """
        with self._settled:
            # Settled, not just done: a future is done before its callback has run.
            waiting = set(self._pending)
            if not self._settled.wait_for(lambda: not waiting & self._pending, timeout):
                raise TimeoutError(
                    f"{len(waiting & self._pending)} feedback event(s) still unpublished "
                    f"after {timeout} s; call flush() again or check Pub/Sub "
                    "connectivity")
            failures, self._failures = self._failures, []
            published = self.published
        if failures:
            raise PublishError(failures)
        return published

    def close(self, timeout: float | None = FLUSH_TIMEOUT_S) -> int:
        """Send what is batched, wait for it (see :meth:`flush`) and stop the client."""
        if self._closed:
            return self.published
        self._closed = True
        if self._client is not None:
            self._client.stop()   # commits open batches now instead of at max_latency
        try:
            return self.flush(timeout)
        finally:
            if self._client is not None:
                transport = getattr(self._client, "_transport", None)
                channel = getattr(transport, "grpc_channel", None)
                if channel is not None:
                    channel.close()

    def __enter__(self) -> "FeedbackPublisher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except (PublishError, TimeoutError) as err:  # keep the original error on top
            _LOGGER.error("while handling %s: %s", exc_type.__name__, err)
