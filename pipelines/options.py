"""The streaming pipeline's settings: Beam options in, a checked frozen config out.

:class:`RotwatchOptions` is the ``PipelineOptions`` subclass (``--window_size_s 10``
and friends, next to Beam's own ``--runner``, ``--project`` ...). The transforms never
read ``PipelineOptions``; they take a :class:`PipelineConfig`, a frozen dataclass
checked in ``__post_init__``, so tests build one directly and a bad value fails
before any worker starts, with the value and the fix in the message.

Defaults are for production (minutes); a demo passes seconds::

    rotwatch pipeline run --window_size_s 20 --window_period_s 5 --min_n 30
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from rotwatch.config import SUBSCRIPTIONS, TOPICS, Settings

__all__ = ["RotwatchOptions", "PipelineConfig", "LOCAL_RUNNERS", "is_local_runner",
           "config_from_options"]

_LOGGER = logging.getLogger(__name__)

# Runners that execute in this process (Beam's own list, plus its test runner).
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                 "FnApiRunner", "TestDirectRunner", "PrismRunner")

# Local runners: most messages PullBacklog adds to one bundle. The bundle-based
# DirectRunner pays a fixed cost per bundle in every step (DoFn unpickling, setup and
# signature checks, watermark updates): 5000 -> 20000 took ~50 µs of CPU off each
# event of a backlog (~400 -> ~350 µs, ~10% more events/s through the pipeline) for
# ~15 MiB more resident memory at the peak (bench/pipeline_throughput.py).
LOCAL_PULL_MAX = 20000

_SUBSCRIPTION_RE = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC_RE = re.compile(r"^projects/[^/]+/topics/[^/]+$")


def is_local_runner(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return not name or name.split(".")[-1] in LOCAL_RUNNERS


class RotwatchOptions(PipelineOptions):
    """rotwatch's own flags; Beam's (``--runner``, ``--project``, ...) sit beside them."""

    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("rotwatch")
        g.add_argument("--feedback_subscription", default=None,
                       help="subscription to read, projects/<p>/subscriptions/<s> "
                            f"(default: projects/<project>/subscriptions/"
                            f"{SUBSCRIPTIONS['pipeline']})")
        g.add_argument("--deadletter_topic", default=None,
                       help="invalid feedback goes here, projects/<p>/topics/<t> "
                            f"(default: .../topics/{TOPICS['deadletter']})")
        g.add_argument("--rot_topic", default=None,
                       help=f"rot events, projects/<p>/topics/<t> (default: "
                            f".../topics/{TOPICS['rot']})")
        g.add_argument("--datastore_namespace", default=None,
                       help="Datastore namespace (default: ROTWATCH_NAMESPACE or none)")
        g.add_argument("--window_size_s", type=int, default=300,
                       help="sliding window length in seconds (default 300)")
        g.add_argument("--window_period_s", type=int, default=60,
                       help="a new window starts every this many seconds (default 60)")
        g.add_argument("--allowed_lateness_s", type=int, default=300,
                       help="feedback this late still updates its windows (default 300)")
        g.add_argument("--late_firing_s", type=int, default=5,
                       help="processing-time delay that gathers late feedback into "
                            "one late pane (default 5)")
        g.add_argument("--early_firing_s", type=int, default=0,
                       help="early panes this often before a window closes; 0 = none")
        g.add_argument("--min_n", type=int, default=50,
                       help="fewest events for a window to count in the rot rule")
        g.add_argument("--tolerance", type=float, default=0.05,
                       help="accuracy below baseline still accepted (default 0.05)")
        g.add_argument("--consecutive", type=int, default=3,
                       help="bad windows in a row that make rot (default 3)")
        g.add_argument("--z", type=float, default=1.96,
                       help="normal quantile of the Wilson interval (default 1.96)")
        g.add_argument("--drift_threshold", type=float, default=0.2,
                       help="PSI above which a feature drifted (default 0.2)")
        g.add_argument("--drift_min_n", type=int, default=100,
                       help="fewest rows in a window for the drift test (default 100)")
        g.add_argument("--drift_consecutive", type=int, default=2,
                       help="drifted windows in a row that make input-drift")
        g.add_argument("--drift_sample", type=int, default=1000,
                       help="rows kept per window for the drift test (default 1000)")
        g.add_argument("--detector_warmup", type=int, default=None,
                       help="events before the sequential detector may fire "
                            "(default: the detector's own)")
        g.add_argument("--detector_delta", type=float, default=None,
                       help="rise of the error rate the sequential detector is tuned to "
                            "(default: the detector's own, 0.1)")
        g.add_argument("--detector_threshold", type=float, default=None,
                       help="alarm level of the detector's log-likelihood sum; lower is "
                            "faster and noisier (default: the detector's own, 8.0)")
        g.add_argument("--detector_min_error", type=float, default=None,
                       help="smallest baseline error the detector tests against, e.g. "
                            "0.05 when holdouts are ~60 rows (default: the detector's "
                            "own floor, 0.01)")
        g.add_argument("--cooldown_s", type=int, default=3600,
                       help="event-time seconds a version/kind stays silent after a "
                            "rot event (default 3600)")
        g.add_argument("--registry_ttl_s", type=float, default=60.0,
                       help="how long a ModelVersion read is trusted (default 60)")
        g.add_argument("--dedupe_ttl_s", type=int, default=None,
                       help="event-time seconds an event_id is remembered (default and "
                            "minimum: window_size_s + allowed_lateness_s)")
        g.add_argument("--max_future_s", type=int, default=600,
                       help="event times further ahead of the clock are invalid")
        g.add_argument("--checkpoint_interval_s", type=int, default=10,
                       help="event-time seconds between PipelineCheckpoint writes")
        g.add_argument("--checkpoint_margin_s", type=int, default=120,
                       help="seek this much before the checkpoint on start")
        g.add_argument("--seek_on_start", default="true", choices=["true", "false"],
                       help="seek the subscription back to the checkpoint on start")
        g.add_argument("--throttle_rampup", default="auto",
                       choices=["auto", "true", "false"],
                       help="WriteToDatastore ramp-up throttling; auto = off on local "
                            "runners, on elsewhere")
        g.add_argument("--local_pull_batch", type=int, default=500,
                       help="local runners: messages per extra Pull (0 = only Beam's "
                            "10-message read)")
        g.add_argument("--local_pull_max", type=int, default=LOCAL_PULL_MAX,
                       help="local runners: most extra messages per bundle (bigger "
                            "bundles spread the runner's per-bundle cost over more "
                            f"events; default {LOCAL_PULL_MAX})")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the transforms need, checked once."""

    project: str = "local-project"
    namespace: str | None = None
    subscription: str = f"projects/local-project/subscriptions/{SUBSCRIPTIONS['pipeline']}"
    deadletter_topic: str = f"projects/local-project/topics/{TOPICS['deadletter']}"
    rot_topic: str = f"projects/local-project/topics/{TOPICS['rot']}"
    window_size_s: int = 300
    window_period_s: int = 60
    allowed_lateness_s: int = 300
    late_firing_s: int = 5   # whole seconds: Beam's trigger proto holds ms as an integer
    early_firing_s: int = 0
    min_n: int = 50
    tolerance: float = 0.05
    consecutive: int = 3
    z: float = 1.96
    drift_threshold: float = 0.2
    drift_min_n: int = 100
    drift_consecutive: int = 2
    drift_sample: int = 1000
    detector_warmup: int | None = None
    detector_delta: float | None = None
    detector_threshold: float | None = None
    detector_min_error: float | None = None
    cooldown_s: int = 3600
    registry_ttl_s: float = 60.0
    dedupe_ttl_s: int | None = None  # None: window_size_s + allowed_lateness_s
    max_future_s: int = 600
    checkpoint_interval_s: int = 10
    checkpoint_margin_s: int = 120
    seek_on_start: bool = True
    throttle_rampup: bool = False
    local_pull_batch: int = 500
    local_pull_max: int = LOCAL_PULL_MAX
    # Windows that start before this were stored before a restart; a replay from a
    # seek would only see part of them, so they are neither stored nor judged again.
    replay_from: dt.datetime | None = None
    # Report feedback too late for any window (by the wall clock: the watermark of the
    # local runners). None = on local runners only; tests with a TestStream say False.
    report_too_late: bool | None = None

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(what)
        need(_SUBSCRIPTION_RE.match(self.subscription or ""),
             f"feedback_subscription={self.subscription!r} must look like "
             "projects/<project>/subscriptions/<subscription>")
        for name in ("deadletter_topic", "rot_topic"):
            value = getattr(self, name)
            need(_TOPIC_RE.match(value or ""),
                 f"{name}={value!r} must look like projects/<project>/topics/<topic>")
        need(self.window_size_s > 0 and self.window_period_s > 0,
             f"window_size_s={self.window_size_s} and window_period_s="
             f"{self.window_period_s} must be positive seconds")
        need(self.window_size_s % self.window_period_s == 0,
             f"window_size_s={self.window_size_s} must be a multiple of window_period_s="
             f"{self.window_period_s} so consecutive windows line up, e.g. 300 and 60")
        need(self.allowed_lateness_s >= 0, f"allowed_lateness_s={self.allowed_lateness_s} "
                                           "must be >= 0")
        need(self.late_firing_s >= 0 and self.early_firing_s >= 0,
             "late_firing_s and early_firing_s must be >= 0 seconds")
        need(self.min_n >= 1, f"min_n={self.min_n} must be >= 1")
        need(0 <= self.tolerance < 1, f"tolerance={self.tolerance} must be in [0, 1)")
        need(self.consecutive >= 1 and self.drift_consecutive >= 1,
             "consecutive and drift_consecutive must be >= 1 windows")
        need(self.z > 0, f"z={self.z} must be > 0, e.g. 1.96")
        need(self.drift_threshold > 0,
             f"drift_threshold={self.drift_threshold} must be > 0, e.g. 0.2")
        need(self.drift_sample >= self.drift_min_n >= 1,
             f"drift_sample={self.drift_sample} must be >= drift_min_n={self.drift_min_n}"
             " >= 1: the sample is what the drift test sees")
        need(self.detector_delta is None or 0 < self.detector_delta < 1,
             f"detector_delta={self.detector_delta} must be in (0, 1), e.g. 0.1")
        need(self.detector_threshold is None or self.detector_threshold > 0,
             f"detector_threshold={self.detector_threshold} must be > 0, e.g. 8.0")
        need(self.detector_min_error is None or 0 <= self.detector_min_error < 1,
             f"detector_min_error={self.detector_min_error} must be in [0, 1), e.g. 0.05")
        need(self.cooldown_s >= 0, f"cooldown_s={self.cooldown_s} must be >= 0")
        need(self.registry_ttl_s > 0, f"registry_ttl_s={self.registry_ttl_s} must be > 0")
        if self.dedupe_ttl_s is None:
            object.__setattr__(self, "dedupe_ttl_s",
                               self.window_size_s + self.allowed_lateness_s)
        need(self.dedupe_ttl_s >= self.window_size_s + self.allowed_lateness_s,
             f"dedupe_ttl_s={self.dedupe_ttl_s} must be >= window_size_s + "
             f"allowed_lateness_s = {self.window_size_s + self.allowed_lateness_s}: a "
             "duplicate that can still reach a window must still be caught")
        need(self.max_future_s > 0, f"max_future_s={self.max_future_s} must be > 0")
        need(self.checkpoint_interval_s > 0 and self.checkpoint_margin_s >= 0,
             "checkpoint_interval_s must be > 0 and checkpoint_margin_s >= 0")
        need(self.local_pull_batch >= 0 and self.local_pull_max >= 0,
             "local_pull_batch and local_pull_max must be >= 0")

    @property
    def subscription_id(self) -> str:
        return self.subscription.rsplit("/", 1)[-1]


def config_from_options(options: PipelineOptions, settings: Settings | None = None,
                        **overrides) -> PipelineConfig:
    """A checked :class:`PipelineConfig` from Beam options (flags win over env)."""
    o = options.view_as(RotwatchOptions)
    project = options.view_as(GoogleCloudOptions).project
    settings = settings or Settings.from_env(project=project,
                                             namespace=o.datastore_namespace)
    throttle = {"true": True, "false": False}.get(o.throttle_rampup,
                                                   not is_local_runner(options))
    values = dict(
        project=settings.project, namespace=settings.namespace,
        subscription=o.feedback_subscription or settings.subscription("pipeline"),
        deadletter_topic=o.deadletter_topic or settings.topic("deadletter"),
        rot_topic=o.rot_topic or settings.topic("rot"),
        window_size_s=o.window_size_s, window_period_s=o.window_period_s,
        allowed_lateness_s=o.allowed_lateness_s, late_firing_s=o.late_firing_s,
        early_firing_s=o.early_firing_s, min_n=o.min_n, tolerance=o.tolerance,
        consecutive=o.consecutive, z=o.z, drift_threshold=o.drift_threshold,
        drift_min_n=o.drift_min_n, drift_consecutive=o.drift_consecutive,
        drift_sample=o.drift_sample, detector_warmup=o.detector_warmup,
        detector_delta=o.detector_delta, detector_threshold=o.detector_threshold,
        detector_min_error=o.detector_min_error,
        cooldown_s=o.cooldown_s, registry_ttl_s=o.registry_ttl_s,
        dedupe_ttl_s=o.dedupe_ttl_s, max_future_s=o.max_future_s,
        checkpoint_interval_s=o.checkpoint_interval_s,
        checkpoint_margin_s=o.checkpoint_margin_s,
        seek_on_start=o.seek_on_start == "true", throttle_rampup=throttle,
        local_pull_batch=o.local_pull_batch, local_pull_max=o.local_pull_max)
    values.update(overrides)
    return PipelineConfig(**values)
