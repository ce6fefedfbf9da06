"""``rotwatch demo``: the zombie story end to end, on the real local stack, measured.

The article's story, for real: a private stack (``rotwatch up`` on free ports, its
data in ``<out>/stack``) runs emulators, gateway, streaming pipeline and trainer;
v1 — a decision tree — is trained on population A and made the default
(``rotwatch model train``); the simulator (``rotwatch simulate``) asks the gateway
for predictions and sends thumbs-up/down feedback; at ``mutate_at`` the zombies
mutate into population B; the pipeline publishes a rot event; the trainer builds v2
from the feedback, the gate passes it and it becomes the default; the gateway serves
v2 and accuracy recovers.

Every role runs as its own process through its own CLI command (the core imports no
role). Results are read back the way a user would: :mod:`rotwatch.report` for what
the stack stored, the Datastore client for each feedback row (to map event times to
event indices), the Pub/Sub client for dead letters, and the simulator's own record
of every event (``simulation.json``).

Measurements are pure functions (:class:`EventClock`, :func:`summarize`,
:func:`check_targets`, :func:`summary_table`), tested without the stack.

Written to ``<out>``: ``summary.json``, ``accuracy.png``, ``inputs.png``,
``report.json``, ``simulation.json``, ``stack.log``, ``population_a.csv``.

    rotwatch demo [--events 1000] [--mutate-at 300] [--out .rotwatch/demo] [--seed 0]
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Mapping, Sequence, TextIO

from rotwatch.environ import scoped_environ
from rotwatch.events import format_time

__all__ = [
    "DemoConfig", "DemoTargets", "SimEvent", "StoredFeedback", "RotMark", "EventClock",
    "summarize", "check_targets", "summary_table", "write_population_csv",
    "run_demo", "DemoError", "POPULATION_A",
]

_LOGGER = logging.getLogger(__name__)

MODEL = "zombies"
# The article's population A: make_classification's defaults (100 rows) with these
# settings; the simulator draws population A from exactly these rows.
POPULATION_A = {"n_features": 4, "n_redundant": 1, "random_state": 99}
# Who trains v1 (the registry records it); every later default change is the trainer's.
DEMO_ACTOR = "person:rotwatch-demo"
# After the last feedback is published, how long the pipeline may take to store it
# all (it stores a few hundred rows a second here; this covers a busy machine).
STORE_WAIT_S = 60.0
# Extra seconds after the last window closes for its pane to be stored.
WINDOW_SETTLE_S = 3.0
# Dead letters pulled per request while counting them.
DEADLETTER_PULL = 500


class DemoError(RuntimeError):
    """The demo could not run (a component failed, a step timed out)."""


# -- configuration ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DemoTargets:
    """What a successful demo must show (issue 6)."""

    max_detection_delay: int = 50        # events from the onset to the rot decision
    min_accuracy_after: float = 0.90     # accuracy of the promoted version on B
    max_duration_s: float = 300.0        # the whole demo, stack start to report


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's settings; the defaults meet :class:`DemoTargets` on 2 cores.

    Why these numbers (replayed offline over 400 seeds of the simulator's stream with
    the pipeline's own ``WindowRules`` and ``ErrorRateDetector``, v2 trained as the
    trainer does, then run on the real stack). v1 (holdout 0.90 on 20 rows) scores
    ~0.93 on A and ~0.63 on B, but the first 50 events of B are a small sample: in
    ~3% of seeds v1 is still right 76-80% of the time there, and no rule that stays
    silent on A separates that from A within 50 events. Detection is therefore
    bounded near 97-99%, whatever the settings:

    * The error-rate detector decides, per event: ``detector_threshold=4.5`` (the
      detector's 8.0 is for production streams) with its own ``delta`` 0.1 is the
      fastest setting with no more than ~0.5% of seeds alarming on A. A larger
      delta (testing 0.1 against 0.3-0.4, the size of the real jump) is *not*
      better: it is blind to the slow-starting seeds and noisier on A.
    * The accuracy rule backs it up and draws the plot: 2 s windows at 10 events/s
      (20 events, a decision every 10), ``min_n=15`` so a window one or two events
      short by timing still counts, ``consecutive=1``. ``tolerance=0.10``: at 0.08
      a 20-event window of A with 6-7 errors crossed the limit (a rot event before
      the onset in ~0.5% of seeds); 0.10 costs the detection nothing (the detector
      is first in ~90% of seeds).
    * ``detector_min_error=0.10``: v2's holdout (the newest 20% of 300 rows) is often
      a perfect 1.0, which the detector would take as a 1% error (its own floor),
      so v2's real ~5% made it alarm after promotion in ~30% of seeds (12% at 8.0). A
      holdout of tens of rows cannot vouch for less than ~10% error; with that floor
      the detector alarmed on v2 in <1% of seeds, and v1 (0.10 anyway) is unchanged.

    Measured (400 seeds; defaults / ``events=600, mutate_at=200, min_rows=200``):
    detected within 50 events 97% / 99% (median 21, 95th percentile ~44), a rot
    event before the onset 0.5% / 0.5%, a rot event on v2 1% / 2.5% (accuracy rule,
    on v2s truly below their holdout). The previous settings (detector 8.0, tolerance
    0.08, min_n 20): 94% / 92%, 0.5%, 15% / 10%.
    300 events before the mutation show v1 settled; ~300 served by v2 measure the
    recovery to about +-0.03.
    """

    events: int = 1000
    mutate_at: int = 300
    seed: int = 0
    out_dir: str = os.path.join(".rotwatch", "demo")
    rate: float = 10.0               # predictions per second
    width: int = 0                   # 0: abrupt mutation; N: gradual over N events
    # pipeline
    window_size_s: int = 2
    window_period_s: int = 1
    min_n: int = 15
    consecutive: int = 1
    tolerance: float = 0.10
    detector_threshold: float = 4.5
    detector_min_error: float = 0.10
    # trainer
    min_rows: int = 300
    margin: float = 0.02
    sweep_interval_s: float = 1.0
    host: str = "127.0.0.1"
    targets: DemoTargets = DemoTargets()

    def __post_init__(self):
        if self.events < 2:
            raise ValueError(f"events={self.events} must be at least 2")
        if not 0 < self.mutate_at < self.events:
            raise ValueError(f"mutate_at={self.mutate_at} must be inside (0, events="
                             f"{self.events}): some events before the mutation, some after")
        if not self.rate > 0:
            raise ValueError(f"rate={self.rate} must be > 0 events per second: the "
                             "pipeline's windows are in seconds")
        if self.width < 0:
            raise ValueError(f"width={self.width} must be >= 0 (0 = abrupt)")
        if self.window_size_s < 1 or self.window_period_s < 1 or \
                self.window_size_s % self.window_period_s:
            raise ValueError(f"window_size_s={self.window_size_s} must be a positive "
                             f"multiple of window_period_s={self.window_period_s}, e.g. 2 "
                             "and 1")
        if self.min_n < 1 or self.consecutive < 1:
            raise ValueError(f"min_n={self.min_n} and consecutive={self.consecutive} "
                             "must be >= 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance={self.tolerance} must be in [0, 1)")
        if not self.detector_threshold > 0 or not 0 <= self.detector_min_error < 1:
            raise ValueError(f"detector_threshold={self.detector_threshold} must be > 0 "
                             f"and detector_min_error={self.detector_min_error} in [0, 1)")
        if self.min_rows < 40:
            raise ValueError(f"min_rows={self.min_rows} must be >= 40 (the trainer "
                             "needs a training set and a 20-row holdout)")
        if self.margin < 0 or self.sweep_interval_s <= 0:
            raise ValueError(f"margin={self.margin} must be >= 0 and sweep_interval_s="
                             f"{self.sweep_interval_s} > 0")

    @property
    def stack_home(self) -> str:
        return os.path.join(self.out_dir, "stack")

    def pipeline_args(self) -> tuple[str, ...]:
        return ("--window_size_s", str(self.window_size_s),
                "--window_period_s", str(self.window_period_s),
                "--min_n", str(self.min_n), "--consecutive", str(self.consecutive),
                "--tolerance", str(self.tolerance),
                "--detector_threshold", str(self.detector_threshold),
                "--detector_min_error", str(self.detector_min_error))

    def trainer_args(self) -> tuple[str, ...]:
        # Feedback trickles in after the rot event: look again every sweep, not
        # after the production default of five minutes.
        return ("--min-rows", str(self.min_rows), "--margin", str(self.margin),
                "--sweep-interval", str(self.sweep_interval_s),
                "--retry-insufficient", str(self.sweep_interval_s))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- what was sent and what was stored ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class SimEvent:
    """One simulated prediction, from the simulator's ``--out`` records."""

    index: int
    population: str
    version: str | None           # the version that answered (None: no answer)
    prediction_id: str | None     # = the feedback's event_id
    truth_correct: bool | None    # prediction == true label
    feedback_sent: bool           # the gateway confirmed the feedback was published

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "SimEvent":
        prediction, truth = record.get("prediction"), record.get("truth")
        return cls(index=int(record["index"]), population=str(record.get("population")),
                   version=record.get("version"),
                   prediction_id=record.get("prediction_id"),
                   truth_correct=None if prediction is None else prediction == truth,
                   feedback_sent=bool(record.get("feedback_sent")))


@dataclasses.dataclass(frozen=True)
class StoredFeedback:
    """One ``Feedback`` entity as the pipeline stored it."""

    event_id: str
    event_time: dt.datetime
    version: str
    correct: bool                 # the verdict the pipeline counted


@dataclasses.dataclass(frozen=True)
class RotMark:
    """One stored rot event (a view of :class:`rotwatch.report.RotRecord`)."""

    version: str
    kind: str
    decided_at: dt.datetime
    change_point: dt.datetime | None = None
    published_at: dt.datetime | None = None


class EventClock:
    """Event times ↔ event indices, from the events whose feedback was stored.

    Events are sent concurrently, so their times are almost but not exactly in index
    order; the answers are therefore "the highest index seen by then" and "the lowest
    index at or after then".

    >>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> clock = EventClock({i: t0 + dt.timedelta(seconds=i) for i in range(10)})
    >>> clock.last_event_by(t0 + dt.timedelta(seconds=4.5)), \\
    ...     clock.first_event_from(t0 + dt.timedelta(seconds=4.5))
    (4, 5)
    """

    def __init__(self, times_by_index: Mapping[int, dt.datetime]):
        pairs = sorted((t, i) for i, t in times_by_index.items())
        self._times = [t for t, _ in pairs]
        self._prefix_max: list[int] = []
        for _, i in pairs:
            self._prefix_max.append(max(i, self._prefix_max[-1]) if self._prefix_max else i)
        self._suffix_min = [0] * len(pairs)
        low = None
        for k in range(len(pairs) - 1, -1, -1):
            low = pairs[k][1] if low is None else min(low, pairs[k][1])
            self._suffix_min[k] = low

    def __len__(self) -> int:
        return len(self._times)

    def last_event_by(self, when: dt.datetime | None) -> int | None:
        """The highest index among events with time ``<= when`` (None: none yet)."""
        if when is None:
            return None
        k = bisect.bisect_right(self._times, when)
        return self._prefix_max[k - 1] if k else None

    def first_event_from(self, when: dt.datetime | None) -> int | None:
        """The lowest index among events with time ``>= when`` (None: none after)."""
        if when is None:
            return None
        k = bisect.bisect_left(self._times, when)
        return self._suffix_min[k] if k < len(self._suffix_min) else None


# -- the measurements ---------------------------------------------------------------
def _accuracy(verdicts: Sequence[bool]) -> float | None:
    return round(sum(verdicts) / len(verdicts), 4) if verdicts else None


def _t(value: dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def summarize(events: Sequence[SimEvent], stored: Mapping[str, StoredFeedback],
              rots: Sequence[RotMark], versions: Sequence[Mapping[str, Any]],
              promotions: Sequence[Mapping[str, Any]], *, default_version: str | None,
              drift_onset_event: int, dead_lettered: int, feedback_stored: int,
              duration_s: float) -> dict:
    """The demo's ``summary.json`` from what was sent and what was stored.

    ``events``: the simulator's records. ``stored``: Feedback entities by event id.
    ``rots``: stored rot events. ``versions``: dicts with ``version``,
    ``holdout_accuracy`` (and optionally more). ``promotions``: default changes
    after the first default, dicts with ``default_version``, ``previous_version``,
    ``changed_at``. ``feedback_stored``: Feedback entities of the model in the store.

    Accuracies are the verdicts the pipeline stored (live feedback), by the version
    that served each event: ``v1_before_drift`` (the first version, events before
    the onset), ``v1_after_drift`` (same version, from the onset),
    ``after_promotion`` (any later version, from the onset).
    """
    events = sorted(events, key=lambda e: e.index)
    onset = drift_onset_event
    initial = next((e.version for e in events if e.version), None)
    clock = EventClock({e.index: stored[e.prediction_id].event_time for e in events
                        if e.prediction_id in stored})

    def verdict(e: SimEvent) -> bool | None:
        row = stored.get(e.prediction_id) if e.prediction_id else None
        return None if row is None else row.correct

    def acc(select) -> tuple[float | None, int]:
        got = [v for e in events if select(e) and (v := verdict(e)) is not None]
        return _accuracy(got), len(got)

    rot_rows = []
    for r in sorted(rots, key=lambda r: r.decided_at):
        rot_rows.append({
            "version": r.version, "kind": r.kind, "decided_at": _t(r.decided_at),
            "change_point": _t(r.change_point),
            "detected_after_event": clock.last_event_by(r.decided_at),
            "change_point_event": clock.first_event_from(r.change_point),
            "published_after_event": clock.last_event_by(r.published_at)})
    early = [r for r in rot_rows if r["version"] == initial
             and r["detected_after_event"] is not None
             and r["detected_after_event"] < onset]
    after = [r for r in rot_rows if r["version"] == initial
             and r["detected_after_event"] is not None
             and r["detected_after_event"] >= onset]
    first_rot = min(after, key=lambda r: r["detected_after_event"], default=None)

    promotion = next((p for p in sorted(promotions, key=lambda p: p["changed_at"])
                      if p.get("previous_version") == initial), None)
    promoted = promotion["default_version"] if promotion else None
    served = [e.index for e in events if promoted and e.version == promoted]
    first_served = min(served) if served else None

    before, n_before = acc(lambda e: e.version == initial and e.index < onset)
    v1_after, n_v1_after = acc(lambda e: e.version == initial and e.index >= onset)
    later, n_later = acc(lambda e: e.version not in (None, initial) and e.index >= onset)
    truth_later = [e.truth_correct for e in events if e.index >= onset
                   and e.version not in (None, initial) and e.truth_correct is not None]
    published = sum(e.feedback_sent for e in events)
    return {
        "model": MODEL,
        "events": len(events),
        "predictions": sum(e.version is not None for e in events),
        "events_published": published,
        "feedback_stored": feedback_stored,
        "dead_lettered": dead_lettered,
        "feedback_lost": published - dead_lettered - feedback_stored,
        "drift_onset_event": onset,
        "rot_events": rot_rows,
        "rot_events_before_onset": len(early),
        "detection_delay_events": (first_rot["detected_after_event"] - onset
                                   if first_rot else None),
        "first_rot": first_rot,
        "versions": [dict(v) for v in versions],
        "initial_version": initial,
        "promoted_version": promoted,
        "promoted_at": _t(promotion["changed_at"]) if promotion else None,
        "default_version": default_version,
        "first_event_served_by_promoted": first_served,
        "recovery_events": first_served - onset if first_served is not None else None,
        "accuracy": {"v1_before_drift": before, "v1_after_drift": v1_after,
                     "after_promotion": later},
        "accuracy_events": {"v1_before_drift": n_before, "v1_after_drift": n_v1_after,
                            "after_promotion": n_later},
        "accuracy_truth_after_promotion": _accuracy(truth_later),
        "duration_s": round(duration_s, 1),
    }


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    got: str
    met: bool


def check_targets(summary: Mapping[str, Any], targets: DemoTargets = DemoTargets()
                  ) -> list[Target]:
    """Each target of issue 6 with what this run got; the demo succeeds iff all met."""
    delay = summary.get("detection_delay_events")
    first = summary.get("first_rot") or {}
    promoted = summary.get("promoted_version")
    recovery = summary.get("recovery_events")
    after = (summary.get("accuracy") or {}).get("after_promotion")
    lost = summary.get("feedback_lost")
    duration = summary.get("duration_s")
    return [
        Target("rot event after the onset", f"<= {targets.max_detection_delay} events",
               "none" if delay is None else
               f"+{delay} (event {first.get('detected_after_event')}, "
               f"{first.get('version')} {first.get('kind')})",
               delay is not None and delay <= targets.max_detection_delay),
        Target("rot events before the onset", "0",
               str(summary.get("rot_events_before_onset")),
               summary.get("rot_events_before_onset") == 0),
        Target("new version promoted by the trainer", "yes",
               promoted or "no", promoted is not None),
        Target("promoted version serves", "yes",
               "no" if recovery is None else
               f"from event {summary.get('first_event_served_by_promoted')} "
               f"(+{recovery})", recovery is not None),
        Target("accuracy after promotion", f">= {targets.min_accuracy_after:.2f}",
               "-" if after is None else f"{after:.3f}",
               after is not None and after >= targets.min_accuracy_after),
        Target("feedback lost (published - dead-lettered - stored)", "0",
               str(lost), lost == 0),
        Target("duration", f"< {targets.max_duration_s:.0f} s",
               "-" if duration is None else f"{duration:.0f} s",
               duration is not None and duration < targets.max_duration_s),
    ]


def summary_table(summary: Mapping[str, Any], targets: Sequence[Target]) -> str:
    """The short table the demo ends with."""
    from rotwatch.tables import format_table

    acc = summary.get("accuracy") or {}
    n = summary.get("accuracy_events") or {}

    def pct(key):
        value = acc.get(key)
        return "-" if value is None else f"{value:.3f}  (n={n.get(key, 0)})"
    facts = [
        ["feedback events published", summary.get("events_published")],
        ["feedback stored / dead-lettered",
         f"{summary.get('feedback_stored')} / {summary.get('dead_lettered')}"],
        ["mutation (drift onset)", f"event {summary.get('drift_onset_event')}"],
        ["accuracy v1 before drift", pct("v1_before_drift")],
        ["accuracy v1 after drift", pct("v1_after_drift")],
        [f"accuracy after promotion ({summary.get('promoted_version') or '-'})",
         pct("after_promotion")],
        ["default version now", summary.get("default_version") or "-"],
    ]
    rots = [[r["version"], r["kind"], r["detected_after_event"], r["change_point_event"],
             r["published_after_event"]] for r in summary.get("rot_events") or ()]
    versions = [[v.get("version"), "-" if v.get("holdout_accuracy") is None
                 else f"{v['holdout_accuracy']:.3f}", v.get("train_rows") or "-",
                 v.get("created_by") or "-"] for v in summary.get("versions") or ()]
    lines = [format_table(["", ""], facts).split("\n", 2)[2], "",
             format_table(["rot event", "kind", "decided after event",
                           "change point event", "published after event"], rots), "",
             format_table(["version", "holdout acc", "train rows", "created by"],
                          versions), "",
             format_table(["target", "wanted", "got", "met"],
                          [[t.name, t.wanted, t.got, "ok" if t.met else "MISSED"]
                           for t in targets])]
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------
def write_population_csv(path: str) -> int:
    """Population A (the article's exact call) as a CSV with label column ``y``."""
    from sklearn.datasets import make_classification

    X, y = make_classification(**POPULATION_A)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join([f"x{i}" for i in range(X.shape[1])] + ["y"]) + "\n")
        for row, label in zip(X, y):
            handle.write(",".join([repr(float(v)) for v in row] + [str(int(label))]) + "\n")
    return len(y)


def _free_ports(host: str, count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class _Console:
    """Timestamped progress lines, safe from the supervisor's reader threads."""

    def __init__(self, out: TextIO, started: float):
        self.out = out
        self.started = started
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
            self.out.flush()


# Log lines of the roles worth showing while the demo runs (the measurements never
# depend on them: they come from the store).
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_FIELD = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|\S+)")


def _fields(line: str) -> dict[str, str]:
    return {k: v.strip("'\"") for k, v in _FIELD.findall(line)}


class _StackWatcher:
    def __init__(self, console: _Console):
        self.console = console
        self._reasons: dict[str, str] = {}
        self._errors = 0
        self.stopping = False   # once the stack is asked to stop, errors are expected

    def on_line(self, name: str, line: str) -> None:
        if self.stopping:
            return
        if name == "pipeline" and "rot event published" in line:
            f = _fields(line)
            self.console.say(f"pipeline: rot event published: {f.get('rot_id')}")
        elif name == "trainer" and "step=outcome" in line:
            f = _fields(line)
            rot_id, reason = f.get("rot_id", "?"), f.get("reason", "")
            if f.get("state") == "insufficient-data":
                if rot_id not in self._reasons:   # the sweep retries: say it once
                    self.console.say(f"trainer: {rot_id}: waiting for feedback "
                                     f"({reason.split(';')[0]})")
            self._reasons[rot_id] = reason
        elif name == "trainer" and "step=gate" in line:
            f = _fields(line)
            self.console.say(f"trainer: gate: candidate {f.get('candidate_accuracy')} vs "
                             f"current {f.get('current_accuracy')} on "
                             f"{f.get('holdout_rows')} newest rows: promote="
                             f"{f.get('promote')}")
        elif name == "trainer" and "step=done" in line:
            f = _fields(line)
            state, rot_id = f.get("state"), f.get("rot_id", "?")
            if state == "insufficient-data":
                return
            produced = f.get("produced_version")
            reason = self._reasons.get(rot_id, "") if state != "promoted" else ""
            self.console.say(f"trainer: {rot_id}: {state}"
                             + (f" -> {produced}" if produced not in (None, "None") else "")
                             + (f" ({reason[:100]})" if reason else ""))
        elif name == "gateway" and "step=receive-update" in line:
            f = _fields(line)
            self.console.say(f"gateway: default of {f.get('model')} is now "
                             f"{f.get('version')}")
        elif (" ERROR " in line or "Traceback" in line) and self._errors < 5:
            self._errors += 1
            self.console.say(f"{name}: {line.strip()[:200]}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rotwatch.cli", *args]


def _run_step(argv: Sequence[str], env: Mapping[str, str], console: _Console,
              prefix: str, log: TextIO, abort: threading.Event,
              echo=lambda line: True) -> int:
    """Run a CLI step; echo chosen lines; stop it if the stack fails meanwhile."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(env), start_new_session=True)

    def pump():
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            log.write(f"[{prefix}] {line}\n")
            log.flush()
            if line.strip() and echo(line):
                console.say(f"{prefix}: {line.strip()}")
    reader = threading.Thread(target=pump, daemon=True, name=f"demo-{prefix}")
    reader.start()
    try:
        while proc.poll() is None:
            if abort.wait(0.2):
                proc.terminate()
                proc.wait(10)
                raise DemoError(f"{prefix} stopped: a stack component failed "
                                "(see stack.log)")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise
    reader.join(5)
    return proc.returncode


def _read_feedback(client, model: str) -> dict[str, StoredFeedback]:
    from google.cloud.datastore.query import PropertyFilter
    from rotwatch import kinds

    query = client.query(kind=kinds.FEEDBACK)
    query.add_filter(filter=PropertyFilter("model", "=", model))
    out = {}
    for e in query.fetch():
        when = e.get("event_time")
        if when is None:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        correct = e.get("correct")
        if correct is None:
            was = e.get("was_correct")
            correct = was if was is not None else e.get("label") == e.get("prediction")
        out[str(e.key.name)] = StoredFeedback(str(e.key.name), when,
                                              e.get("version") or "?", bool(correct))
    return out


def _count_feedback(client, model: str) -> int:
    from google.cloud.datastore.query import PropertyFilter
    from rotwatch import kinds

    query = client.query(kind=kinds.FEEDBACK)
    query.add_filter(filter=PropertyFilter("model", "=", model))
    query.keys_only()
    return sum(1 for _ in query.fetch())


def _drain_deadletters(subscriber, subscription: str, sink: TextIO) -> int:
    """Pull (and ack) what waits in the dead-letter subscription into ``sink``;
    returns how many were refusals. Late reports (``rotwatch_stage=late``: a valid
    event, stored, too late for the streaming windows) are written, not counted."""
    from google.api_core import exceptions as gexc

    refused = 0
    while True:
        try:
            response = subscriber.pull(subscription=subscription,
                                       max_messages=DEADLETTER_PULL, timeout=10)
        except gexc.DeadlineExceeded:
            return refused
        received = list(response.received_messages)
        if not received:
            return refused
        for m in received:
            attributes = dict(m.message.attributes)
            sink.write(json.dumps({"data": m.message.data.decode("utf-8", "replace"),
                                   "attributes": attributes}) + "\n")
            refused += attributes.get("rotwatch_stage") != "late"
        subscriber.acknowledge(subscription=subscription,
                               ack_ids=[m.ack_id for m in received])


def _prepare(config: DemoConfig) -> dict[str, str]:
    os.makedirs(config.out_dir, exist_ok=True)
    if os.path.isdir(config.stack_home):
        shutil.rmtree(config.stack_home)   # the demo's own stack data: always fresh
    paths = {name: os.path.join(config.out_dir, name) for name in (
        "summary.json", "simulation.json", "population_a.csv", "stack.log",
        "deadletters.jsonl", "accuracy.png", "inputs.png", "report.json")}
    for name in ("summary.json", "simulation.json", "accuracy.png", "inputs.png",
                 "report.json"):
        if os.path.exists(paths[name]):
            os.remove(paths[name])         # never mistake an old run's file for this one's
    return paths


def run_demo(config: DemoConfig, out: TextIO | None = None) -> tuple[dict, list[Target]]:
    """Run the story on a private stack; returns ``(summary, targets)``.

    Raises :class:`DemoError` if the stack or a step fails outright (``summary.json``
    then holds the error); a run that completes but misses a target returns normally
    (see the targets).
    """
    started = time.monotonic()
    console = _Console(out or sys.stdout, started)
    paths = _prepare(config)
    try:
        summary, report = _run_story(config, paths, console)
    except DemoError as exc:
        _write_json(paths["summary.json"], {
            "success": False, "error": str(exc),
            "duration_s": round(time.monotonic() - started, 1),
            "config": config.to_dict()})
        raise
    summary["duration_s"] = round(time.monotonic() - started, 1)
    summary["config"] = config.to_dict()
    summary["files"] = {k: v for k, v in paths.items() if os.path.exists(v)}
    targets = check_targets(summary, config.targets)
    summary["targets"] = [dataclasses.asdict(t) for t in targets]
    summary["success"] = all(t.met for t in targets)
    _write_json(paths["summary.json"], summary)
    _LOGGER.debug("step=demo-done success=%s duration_s=%.1f out=%s", summary["success"],
                  summary["duration_s"], config.out_dir)
    return summary, targets


def _run_story(config: DemoConfig, paths: Mapping[str, str], console: _Console):
    """Stack up, v1, traffic, measurements, plots; the stack is stopped in any case."""
    from rotwatch.config import Settings
    from rotwatch.report_cli import write_report
    from rotwatch.stack import StackConfig, stack_env, start_stack
    from rotwatch.supervisor import ComponentFailed

    pubsub_port, datastore_port, gateway_port = _free_ports(config.host, 3)
    stack = StackConfig(home=config.stack_home, host=config.host, pubsub_port=pubsub_port,
                        datastore_port=datastore_port, gateway_port=gateway_port,
                        pipeline_args=config.pipeline_args(),
                        trainer_args=config.trainer_args())
    env = dict(os.environ)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.update(stack_env(stack))
    env["PYTHONUNBUFFERED"] = "1"
    settings = Settings(project=stack.project, model_root=stack.model_root,
                        home=stack.home)
    rows = write_population_csv(paths["population_a.csv"])
    abort, stop_watch = threading.Event(), threading.Event()
    supervisor = None
    watcher = _StackWatcher(console)
    with open(paths["stack.log"], "w", encoding="utf-8") as log:
        try:
            console.say(f"starting a private stack in {stack.home} (Pub/Sub "
                        f":{pubsub_port}, Datastore :{datastore_port}, gateway "
                        f":{gateway_port}); its log: {paths['stack.log']}")
            try:
                supervisor = start_stack(stack, out=log, on_line=watcher.on_line)
            except ComponentFailed as exc:
                raise DemoError(f"the stack did not start: {exc}") from None
            console.say("stack up: emulators, topics, gateway, pipeline, trainer")

            def watch():
                failure = supervisor.watch(stop_watch)
                if failure:
                    console.say(f"STACK FAILURE: {failure}")
                    abort.set()
            threading.Thread(target=watch, daemon=True, name="demo-watch").start()

            def step(name, argv, echo):
                code = _run_step(argv, env, console, name, log, abort, echo)
                if code != 0:
                    raise DemoError(f"`rotwatch {name}` exited with {code}; see "
                                    f"{paths['stack.log']}")

            step("model train", _cli("model", "train", "--model", MODEL, "--data",
                                     paths["population_a.csv"], "--label", "y",
                                     "--set-default", "--created-by", DEMO_ACTOR),
                 echo=lambda line: not _LOG_LINE.match(line))
            console.say(f"v1 trained on population A ({rows} rows, 20% held out) and "
                        "made the default")
            console.say(f"simulating {config.events} zombies at {config.rate:g}/s; the "
                        f"population mutates at event {config.mutate_at}")
            step("simulate", _cli(
                "simulate", "--gateway", stack.gateway_url, "--model", MODEL,
                "--events", str(config.events), "--mutate-at", str(config.mutate_at),
                "--width", str(config.width), "--rate", f"{config.rate:g}",
                "--seed", str(config.seed), "--out", paths["simulation.json"]),
                 echo=lambda line: "predictions" in line and "/" in line)
            with open(paths["simulation.json"], encoding="utf-8") as handle:
                events = [SimEvent.from_record(r) for r in json.load(handle)["records"]]
            published = sum(e.feedback_sent for e in events)
            console.say(f"simulation done: {len(events)} predictions, {published} "
                        "feedback events published; waiting for the pipeline to store "
                        "them")
            # a user's cloud credentials must not mix with the emulators
            with scoped_environ(stack_env(stack), drop=("GOOGLE_APPLICATION_CREDENTIALS",)):
                summary, report = _collect(config, settings, events, published, paths,
                                           console, abort)
            mutation_time = summary.pop("_mutation_time")
            write_report(report, config.out_dir, mutation_time=mutation_time)
            _story_plots(report, paths, mutation_time, summary["initial_version"],
                         config.min_n)
        finally:
            stop_watch.set()
            watcher.stopping = True
            if supervisor is not None:
                console.say("stopping the stack")
                supervisor.stop()
    return summary, report


def _story_plots(report, paths: Mapping[str, str], mutation_time, initial: str | None,
                 min_n: int) -> None:
    """Redraw the two plots as the story tells them.

    ``accuracy.png``: only windows with at least ``min_n`` events — the ones the rot
    rule judges (a window cut by a version switch may hold a single event, whose 0 or
    100% says nothing). ``inputs.png``: only the events the first version answered,
    so "after" shows why it fails on B rather than a mix of v1 and v2.
    ``report.json`` keeps everything.
    """
    from rotwatch.plots import plot_accuracy, plot_inputs

    judged = dataclasses.replace(report, windows=tuple(
        w for w in report.windows if (w.n or 0) >= min_n))
    plot_accuracy(judged, paths["accuracy.png"], mutation_time=mutation_time,
                  title=f"windowed accuracy per version — model {report.model} "
                        f"(windows with >= {min_n} events)")
    fb = report.feedback
    rows = [i for i, v in enumerate(fb.versions) if v == initial]
    if mutation_time is None or not rows:
        return
    plot_inputs([fb.features[i] for i in rows], [fb.correct[i] for i in rows],
                [fb.times[i] for i in rows], paths["inputs.png"], mutation_time,
                split_label="mutation",
                title=f"inputs answered by {initial}, before and after the mutation: "
                      "correct vs incorrect predictions")


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def _collect(config: DemoConfig, settings, events: Sequence[SimEvent], published: int,
             paths: Mapping[str, str], console: _Console, abort: threading.Event):
    """After the simulation: wait for storage, read everything back, measure."""
    from google.cloud import pubsub_v1

    from rotwatch.report import ReportError, load_report, make_client

    client = make_client(settings)
    subscriber = pubsub_v1.SubscriberClient()
    dead = 0
    deadline = time.monotonic() + STORE_WAIT_S
    deadletters = settings.subscription("deadletter")
    with open(paths["deadletters.jsonl"], "w", encoding="utf-8") as sink:
        while True:
            dead += _drain_deadletters(subscriber, deadletters, sink)
            stored_n = _count_feedback(client, MODEL)
            if (stored_n + dead >= published or time.monotonic() > deadline
                    or abort.is_set()):
                break
            time.sleep(1.0)
    subscriber.close()
    if abort.is_set():
        raise DemoError("a stack component failed while feedback was being stored "
                        f"(see {paths['stack.log']})")
    console.say(f"stored {stored_n} of {published} feedback events ({dead} dead-lettered)")
    stored = _read_feedback(client, MODEL)
    last = max((r.event_time for r in stored.values()), default=None)
    if last is not None:
        # let the last windows close (the watermark is the wall clock) and be stored
        settle = (last + dt.timedelta(seconds=config.window_size_s + config.window_period_s
                                      + WINDOW_SETTLE_S)
                  - dt.datetime.now(dt.timezone.utc)).total_seconds()
        if settle > 0:
            time.sleep(settle)
    try:
        report = load_report(MODEL, settings=settings, client=client)
    except ReportError as exc:
        raise DemoError(f"nothing to report: {exc}") from None
    onset = next((e.index for e in sorted(events, key=lambda e: e.index)
                  if e.population != "A"), config.mutate_at)
    onset_event = next((e for e in events if e.index == onset), None)
    mutation_time = (stored[onset_event.prediction_id].event_time
                     if onset_event and onset_event.prediction_id in stored else None)
    rots = [RotMark(r.version, r.kind, r.decided_at, r.change_point, r.published_at)
            for r in report.rot_events]
    versions = [{"version": v.version, "holdout_accuracy": v.holdout_accuracy,
                 "baseline_accuracy": v.baseline_accuracy, "train_rows": v.train_rows,
                 "created_by": v.created_by, "parent_version": v.parent_version}
                for v in report.versions]
    promotions = [{"default_version": c.default_version,
                   "previous_version": c.previous_version, "changed_at": c.changed_at,
                   "changed_by": c.changed_by} for c in report.promotions()]
    summary = summarize(events, stored, rots, versions, promotions,
                        default_version=report.default_version, drift_onset_event=onset,
                        dead_lettered=dead, feedback_stored=len(stored), duration_s=0.0)
    summary["mutation_time"] = _t(mutation_time)
    summary["training_jobs"] = [{"version": j.version, "state": j.state,
                                 "produced_version": j.produced_version,
                                 "candidate_accuracy": j.candidate_accuracy,
                                 "current_accuracy": j.current_accuracy, "rows": j.rows,
                                 "error": j.error} for j in report.training_jobs]
    summary["_mutation_time"] = mutation_time
    return summary, report
