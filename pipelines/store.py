"""Datastore writes: entities keyed so that a rewrite overwrites, one key per commit.

* :func:`make_entity` / :func:`feedback_entity` build Beam ``Entity`` objects per the
  property contract in :mod:`rotwatch.kinds` (``Feedback`` keyed by ``event_id``).
* :class:`DedupeKeysInBundle` keeps one entity per key per bundle: Datastore refuses a
  commit holding two mutations of one key, and a redelivered event (or two panes of
  one window) can land in the same bundle. ``WriteToDatastore`` commits within its
  bundle, and with fusion its bundles are this step's bundles.
* :class:`WriteEntities` = dedupe + Beam's ``WriteToDatastore``. Ramp-up throttling
  (about 1 entity/s per assumed worker for the first minutes) protects a cold
  Datastore from a 500-worker job; it is off for local runners (see options).
* :class:`EncodingWriteToDatastore` is that ``WriteToDatastore`` (Beam's batching,
  batch sizing, retries, throttling and metrics; the official client's ``Batch``
  and commit) with one step done directly: each Beam ``Entity`` becomes its upsert's
  protobuf in one go (:func:`entity_pb`, ~20 µs), instead of Beam ``Entity`` ->
  client ``Entity`` -> the client's proto-plus encoding (~150-200 µs per entity,
  about 40% of the local pipeline's CPU). The protobuf is the one the client would
  build (tests compare them); any value it does not know goes the client's way.
  And it commits each full batch on a thread of its own while the bundle encodes
  the next (one commit in flight; the bundle ends when its last commit has): the
  local runner has one worker thread, which otherwise waits out every commit.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping

import apache_beam as beam
from apache_beam.io.gcp.datastore.v1new import helper, util
from apache_beam.io.gcp.datastore.v1new.datastoreio import WriteToDatastore
from apache_beam.io.gcp.datastore.v1new.types import Entity, Key
from apache_beam.metrics import Metrics
from apache_beam.utils import retry
from apache_beam.utils.windowed_value import WindowedValue
from google.api_core.exceptions import ClientError, GoogleAPICallError
from google.cloud.datastore_v1.types import entity as entity_types

from rotwatch import kinds
from rotwatch.events import FeedbackEvent

__all__ = ["make_entity", "feedback_entity", "entity_key_id", "DedupeKeysInBundle",
           "WriteEntities", "EncodingWriteToDatastore", "entity_pb",
           "direct_encoding_supported"]

_LOGGER = logging.getLogger(__name__)

# Seconds a throttled commit waits before asking again (Beam's choice).
THROTTLE_DELAY_S = util.WRITE_BATCH_TARGET_LATENCY_MS // 1000


def make_entity(kind: str, name: str, properties: Mapping, project: str,
                namespace: str | None = None, unindexed: Iterable[str] = (),
                parent: tuple = ()) -> Entity:
    """A Beam Datastore entity with a complete key ``parent + (kind, name)``."""
    key = Key(list(parent) + [kind, name], project=project, namespace=namespace)
    entity = Entity(key, exclude_from_indexes=tuple(unindexed))
    entity.set_properties(dict(properties))
    return entity


def feedback_entity(event: FeedbackEvent, project: str, namespace: str | None = None,
                    stored_at: dt.datetime | None = None) -> Entity:
    """``Feedback`` keyed by ``event_id``: a redelivery overwrites, never duplicates."""
    return make_entity(kinds.FEEDBACK, event.event_id, {
        "model": event.model,
        "version": event.version,
        "features": list(event.features),
        "prediction": event.prediction,
        "was_correct": event.was_correct,
        "label": event.label,
        "correct": event.correct,
        "event_time": event.event_time,
        "stored_at": stored_at or dt.datetime.now(dt.timezone.utc),
    }, project, namespace, unindexed=("features",))


def entity_key_id(entity: Entity) -> tuple:
    key = entity.key
    return (key.project, key.namespace, tuple(key.path_elements))


class DedupeKeysInBundle(beam.DoFn):
    """One element per key (``key_fn``) per bundle; ``prefer(old, new)`` picks the
    survivor (default: the later one)."""

    def __init__(self, key_fn: Callable = entity_key_id, prefer: Callable | None = None):
        self._key_fn = key_fn
        self._prefer = prefer
        self._dropped = Metrics.counter("rotwatch.store", "duplicate_keys_in_bundle")

    def start_bundle(self):
        self._pending = {}

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        key = self._key_fn(element)
        old = self._pending.get(key)
        if old is not None:
            self._dropped.inc()
            if self._prefer is not None and self._prefer(old[0], element) is old[0]:
                return
        self._pending[key] = (element, timestamp, window)

    def finish_bundle(self):
        pending, self._pending = self._pending, {}
        for element, timestamp, window in pending.values():
            yield WindowedValue(element, timestamp, [window])


_EntityPb = entity_types.Entity.pb()
_NULL_VALUE = 0  # google.protobuf.NullValue.NULL_VALUE
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _timestamp(value: dt.datetime) -> tuple[int, int]:
    """``(seconds, nanos)`` as google.cloud._helpers computes them for the client
    (naive = UTC; ``int(whole seconds * 1e6) + microsecond``, to the digit)."""
    if not value.tzinfo:
        value = value.replace(tzinfo=dt.timezone.utc)
    elif value.utcoffset() is None:   # a tzinfo that knows no offset: as the client
        value = value.astimezone(dt.timezone.utc)
    since = value - _EPOCH
    seconds, micros = divmod(int((since.days * 86400 + since.seconds) * 1e6)
                             + since.microseconds, 10 ** 6)
    return seconds, micros * 1000


_TIMESTAMP, _NULL = "timestamp_value", "null_value"
_FIELD_OF_TYPE = {str: "string_value", float: "double_value", int: "integer_value",
                  bool: "boolean_value", bytes: "blob_value", dt.datetime: _TIMESTAMP,
                  type(None): _NULL}
# The client's order of type tests, for subclasses: datetime, (Key,) bool, float, int,
# str, bytes.
_SUBCLASS_FIELDS = ((dt.datetime, _TIMESTAMP), (bool, "boolean_value"),
                    (float, "double_value"), (int, "integer_value"),
                    (str, "string_value"), (bytes, "blob_value"))


def _set_value(value_pb, value, exclude: bool) -> bool:
    """Put ``value`` into ``value_pb`` as the client's ``_set_protobuf_value`` does;
    False for what only the client encodes (keys, entities, dicts, geo points,
    lists inside lists)."""
    field = _FIELD_OF_TYPE.get(type(value))
    if field is None:
        for base, field in _SUBCLASS_FIELDS:
            if isinstance(value, base):
                break
        else:
            return False
    if field is _TIMESTAMP:
        stamp = value_pb.timestamp_value
        stamp.seconds, stamp.nanos = _timestamp(value)
    elif field is _NULL:
        value_pb.null_value = _NULL_VALUE
    else:
        setattr(value_pb, field, value)
    if exclude:
        value_pb.exclude_from_indexes = True
    return True


def entity_pb(entity: Entity, project: str | None = None):
    """The raw ``google.datastore.v1.Entity`` protobuf of a Beam ``Entity`` with a
    complete key and no parent, equal to what ``google-cloud-datastore`` makes of
    ``entity.to_client_entity()``; ``None`` when the entity holds anything else
    (the caller then takes the client's path, which also raises its errors)."""
    key = entity.key
    path = key.path_elements
    project = key.project or project
    namespace = key.namespace
    if (key.parent is not None or type(project) is not str or not project or not path
            or len(path) % 2 or (namespace and type(namespace) is not str)):
        return None
    pb = _EntityPb()
    key_pb = pb.key
    key_pb.partition_id.project_id = project
    if namespace:
        key_pb.partition_id.namespace_id = namespace
    elements = key_pb.path
    for i in range(0, len(path), 2):
        kind, ident = path[i], path[i + 1]
        if type(kind) is not str:
            return None
        if type(ident) is str:
            elements.add(kind=kind, name=ident)
        elif type(ident) is int and ident > 0:
            elements.add(kind=kind, id=ident)
        else:
            return None
    unindexed = entity.exclude_from_indexes
    properties = pb.properties
    for name, value in entity.properties.items():
        value_pb = properties[name]
        if type(value) is list:
            # The client marks the elements of an unindexed list, not the list.
            exclude = name in unindexed
            array = value_pb.array_value
            array.SetInParent()
            add = array.values.add
            for item in value:
                if type(item) is list or not _set_value(add(), item, exclude):
                    return None
        elif not _set_value(value_pb, value, name in unindexed):
            return None
    return pb


def direct_encoding_supported() -> bool:
    """Whether the Beam and client internals :class:`EncodingWriteToDatastore` hooks
    into are there (both libraries are pinned to ranges that have them; a version
    without them makes :class:`WriteEntities` use the plain ``WriteToDatastore``)."""
    from google.cloud.datastore.batch import Batch
    write_fn = getattr(WriteToDatastore, "_DatastoreWriteFn", None)
    return (write_fn is not None
            and all(hasattr(write_fn, n) for n in (
                "element_to_client_batch_item", "add_to_batch", "_flush_batch",
                "_init_batch", "_update_rpc_stats", "start_bundle", "finish_bundle"))
            and hasattr(Batch, "_add_complete_key_entity_pb"))


_BaseWriteFn = getattr(WriteToDatastore, "_DatastoreWriteFn", beam.DoFn)


class _EncodingWriteFn(_BaseWriteFn):
    """Beam's write DoFn; its two per-element hooks encode straight to protobuf
    (after ``to_entity``, if given, made the element an entity)."""

    def __init__(self, project, to_entity: Callable | None = None):
        super().__init__(project)
        self._to_entity = to_entity

    def element_to_client_batch_item(self, element):
        if self._to_entity is not None:
            element = self._to_entity(element)
        if not isinstance(element, Entity):
            raise ValueError('apache_beam.io.gcp.datastore.v1new.datastoreio.Entity'
                             f' expected, got: {type(element)}')
        if not element.key.project:
            element.key.project = self._project
        encoded = entity_pb(element)
        if encoded is None:   # something only the client encodes (or refuses)
            return super().element_to_client_batch_item(element)
        return encoded

    def add_to_batch(self, item):
        _put(self._batch, item)

    # -- commits off the bundle's thread ------------------------------------------------
    # Beam's DoFn commits each full batch where it stands, so the bundle (and, on the
    # local runner, the whole pipeline: one worker thread) waits for Datastore: about
    # a fifth of the local pipeline's time. Here a full batch commits on a thread of
    # its own while the bundle goes on encoding the next one; at most one commit is in
    # flight (bounded memory; Beam's batch sizing still sees each latency; and Beam's
    # adaptive throttler counts a commit still in flight as unanswered, so with two
    # in flight it throttles itself, and every throttled try counts again), and
    # the bundle finishes only when its last commit has (a bundle's output means its
    # entities are stored: the checkpoint relies on it). Retries, backoff, throttling
    # and counters are Beam's (``write_mutations``'s policy, applied per batch).

    def start_bundle(self):
        super().start_bundle()
        self._committing = None
        self._committer = None   # the bundle's commit thread, started on first use

    def _flush_batch(self):
        self._await_commit()
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="datastore-commit")
        commit = _BatchCommit(self._batch, self._batch_elements, self._throttler)
        self._committing = commit, self._committer.submit(commit.run)
        self._init_batch()

    def finish_bundle(self):
        try:
            if self._batch_elements:
                self._flush_batch()
            self._await_commit()
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=False)
                self._committer = None

    def _await_commit(self):
        if self._committing is None:
            return
        (commit, done), self._committing = self._committing, None
        done.result()
        self._update_rpc_stats(successes=1 if commit.error is None else 0,
                               errors=commit.errors, throttled_secs=commit.throttled_s)
        if commit.error is not None:
            raise commit.error
        _LOGGER.debug("wrote %d mutations in %d ms", commit.size, commit.latency_ms)
        now = time.time() * 1000
        self._batch_sizer.report_latency(now, commit.latency_ms, commit.size)
        self._target_batch_size = self._batch_sizer.get_batch_size(now)


def _put(batch, item) -> None:
    """Add an upsert of ``item`` (an entity protobuf from :func:`entity_pb`, or a
    client ``Entity``) to a client ``Batch``."""
    if not isinstance(item, _EntityPb):
        batch.put(item)
        return
    if item.key.partition_id.project_id != batch.project:
        raise ValueError("Key must be from same project as batch")
    # What Batch.put does once it has the protobuf: a new upsert mutation.
    batch._add_complete_key_entity_pb()._pb.CopyFrom(item)


class _BatchCommit:
    """One batch committed (:meth:`run`, on the commit thread) with the policy of
    Beam's ``write_mutations`` (which works on the DoFn's one current batch, so it
    cannot run beside the next): client-side adaptive throttling, up to 5 retries of
    a retryable error with exponential backoff, each retry on a fresh batch rebuilt
    from the elements (a failed commit may have applied part of the batch; upserts
    make that harmless)."""

    def __init__(self, batch, elements: list, throttler):
        self._batch, self._elements, self._throttler = batch, elements, throttler
        self._client = batch._client
        self.size = len(elements)
        self.error: BaseException | None = None
        self.errors = 0
        self.throttled_s = 0
        self.latency_ms = 0

    def run(self):
        try:
            self._commit()
        except BaseException as exc:  # noqa: BLE001 - handed to the bundle's thread
            self.error = exc

    @retry.with_exponential_backoff(num_retries=5, retry_filter=helper.retry_on_rpc_error)
    def _commit(self):
        while self._throttler.throttle_request(time.time() * 1000):
            _LOGGER.info("delaying a Datastore commit %d s after earlier failures",
                         THROTTLE_DELAY_S)
            time.sleep(THROTTLE_DELAY_S)
            self.throttled_s += THROTTLE_DELAY_S
        if self._batch is None:   # a retry: the failed batch cannot commit again
            self._batch = self._client.batch()
            self._batch.begin()
            for item in self._elements:
                _put(self._batch, item)
        started = time.time()
        try:
            self._batch.commit()
        except (ClientError, GoogleAPICallError):
            self._batch = None
            self.errors += 1
            raise
        self._throttler.successful_request(started * 1000)
        self.latency_ms = int((time.time() - started) * 1000)


class EncodingWriteToDatastore(WriteToDatastore):
    """Beam's ``WriteToDatastore``, encoding each entity directly to protobuf."""

    def __init__(self, project, throttle_rampup=True,
                 hint_num_workers=WriteToDatastore._DEFAULT_HINT_NUM_WORKERS,
                 to_entity: Callable | None = None):
        super().__init__(project, throttle_rampup=throttle_rampup,
                         hint_num_workers=hint_num_workers)
        self._mutate_fn = _EncodingWriteFn(project, to_entity)


class WriteEntities(beam.PTransform):
    """Dedupe keys per bundle, then ``WriteToDatastore``; returns the write's output
    (empty, but its watermark says how far the writes have got).

    With ``to_entity`` the input is anything that callable turns into an entity
    (e.g. ``functools.partial(feedback_entity, project=..., namespace=...)``) and
    ``key_fn`` names its key: the write converts each element as it encodes it, while
    its previous batch commits (CPU that would otherwise be a step of its own)."""

    def __init__(self, project: str, throttle_rampup: bool = True,
                 prefer: Callable | None = None, to_entity: Callable | None = None,
                 key_fn: Callable | None = None, label: str | None = None):
        super().__init__(label)
        if (to_entity is None) != (key_fn is None):
            raise ValueError("to_entity and key_fn go together: key_fn gives the key of "
                             "an element before to_entity makes it an entity")
        self._project = project
        self._throttle_rampup = throttle_rampup
        self._prefer = prefer
        self._to_entity = to_entity
        self._key_fn = key_fn or entity_key_id

    def expand(self, elements):
        deduped = elements | "DedupeKeys" >> beam.ParDo(DedupeKeysInBundle(
            key_fn=self._key_fn, prefer=self._prefer))
        if _DIRECT_ENCODING:
            return deduped | "WriteToDatastore" >> EncodingWriteToDatastore(
                self._project, throttle_rampup=self._throttle_rampup,
                to_entity=self._to_entity)
        if self._to_entity is not None:  # pragma: no cover - see _DIRECT_ENCODING
            deduped = deduped | "ToEntity" >> beam.Map(self._to_entity)
        return deduped | "WriteToDatastore" >> WriteToDatastore(
            self._project, throttle_rampup=self._throttle_rampup)


_DIRECT_ENCODING = direct_encoding_supported()
if not _DIRECT_ENCODING:  # pragma: no cover - library versions outside setup.py's
    _LOGGER.warning("Beam/Datastore client internals changed: writing through the "
                    "plain WriteToDatastore (slower entity encoding)")
