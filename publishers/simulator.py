"""Zombie traffic: apps asking the gateway for predictions and sending feedback.

The article's story. Friendly zombies come from population A
(``make_classification(n_features=4, n_redundant=1, random_state=99)``); at
``mutation_start`` they begin to mutate into population B (``random_state=16``) —
abruptly, or gradually over ``mutation_width`` events. Each simulated app asks the
gateway ``POST /v1/predict`` for one zombie, and for a share of them the user answers
thumbs-up/down later: ``POST /v1/feedback`` with the ``prediction_id`` and
``was_correct`` (wrong on purpose for ``feedback_noise`` of them), exactly as a real
client would. Rows are drawn with replacement from a seeded pool of each population,
so a run never runs out and the same seed gives the same traffic.

>>> config = SimulationConfig(gateway_url="http://127.0.0.1:8080", events=200,
...                           mutation_start=100, rate=0)           # doctest: +SKIP
>>> summary = Simulator(config).run()                                # doctest: +SKIP
>>> summary.accuracy["before_mutation"], summary.versions            # doctest: +SKIP

Plain HTTP/1.1 with keep-alive from the standard library (one connection per worker
thread), so the simulator needs nothing the product does not already have.

    rotwatch simulate --gateway http://127.0.0.1:8080 --events 2000 --mutate-at 1000
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import heapq
import http.client
import json
import logging
import threading
import time
import urllib.parse
from typing import Any, Callable

import numpy as np

__all__ = [
    "SimulationConfig", "SimulationSummary", "EventRecord", "Simulator", "ZombieStream",
    "population", "POPULATION_SEEDS", "POOL_SIZE",
]

_LOGGER = logging.getLogger(__name__)

# The article's populations: friendly zombies (A) and the mutated ones (B).
POPULATION_SEEDS = {"A": 99, "B": 16}
# Rows per population, then resampled with replacement: make_classification's default
# of 100 — the article's exact call. (Its draws depend on n_samples, so another size
# is another, similar population; with 100, a tree trained on A scores ~0.55 on B.)
POOL_SIZE = 100
# Accuracy is reported per window of this many answered predictions.
WINDOW_EVENTS = 50
# A failed request is tried this many times in all (feedback by id is idempotent).
ATTEMPTS = 3
# Give up when this many requests in a row fail: the gateway is down, not flaky.
MAX_CONSECUTIVE_ERRORS = 20


def population(name: str, n_samples: int = POOL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of population ``"A"`` or ``"B"`` (4 features, classes 0/1)."""
    from sklearn.datasets import make_classification

    if name not in POPULATION_SEEDS:
        raise ValueError(f"population {name!r} is unknown; use one of "
                         f"{', '.join(POPULATION_SEEDS)}")
    return make_classification(n_samples=n_samples, n_features=4, n_redundant=1,
                               random_state=POPULATION_SEEDS[name])


class ZombieStream:
    """Endless, seeded draws of ``(population, features, label)`` with a mutation.

    Event ``i`` comes from B with probability :meth:`share_b` — 0 before
    ``mutation_start``, then 1 (abrupt, ``width=0``) or rising linearly to 1 over
    ``width`` events (gradual).
    """

    def __init__(self, mutation_start: int, width: int = 0, seed: int = 0,
                 pool_size: int = POOL_SIZE):
        if mutation_start < 0:
            raise ValueError(f"mutation_start={mutation_start} must be >= 0")
        if width < 0:
            raise ValueError(f"width={width} must be >= 0 (0 = abrupt)")
        self.mutation_start = mutation_start
        self.width = width
        self.seed = seed
        self.pool_size = pool_size
        self._pools = {name: population(name, pool_size) for name in POPULATION_SEEDS}
        self._rng = np.random.default_rng(seed)

    def share_b(self, i: int) -> float:
        if i < self.mutation_start:
            return 0.0
        if self.width == 0:
            return 1.0
        return min(1.0, (i - self.mutation_start + 1) / self.width)

    def draw(self, i: int) -> tuple[str, list[float], int]:
        name = "B" if self._rng.random() < self.share_b(i) else "A"
        X, y = self._pools[name]
        row = int(self._rng.integers(len(y)))
        return name, [float(x) for x in X[row]], int(y[row])


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; checked on construction."""

    gateway_url: str = "http://127.0.0.1:8080"
    model: str = "zombies"
    events: int = 1000             # predictions to ask for
    mutation_start: int = 500      # first event that may come from population B
    mutation_width: int = 0        # 0: abrupt; N: B's share rises over N events
    rate: float = 50.0             # predictions per second; 0 = as fast as possible
    feedback_share: float = 1.0    # share of predictions whose user answers
    feedback_noise: float = 0.0    # share of answers that are wrong on purpose
    feedback_delay_s: float = 0.0  # seconds from a prediction to its feedback
    concurrency: int = 4           # requests in flight at most
    seed: int = 0
    pool_size: int = POOL_SIZE
    token: str | None = None       # the gateway's bearer token, if it has one
    timeout_s: float = 10.0

    def __post_init__(self):
        url = urllib.parse.urlsplit(self.gateway_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"gateway_url {self.gateway_url!r} is not an http(s) URL; "
                             "use e.g. http://127.0.0.1:8080")
        if self.events < 1:
            raise ValueError(f"events={self.events} must be at least 1")
        if self.mutation_start < 0 or self.mutation_width < 0:
            raise ValueError(f"mutation_start={self.mutation_start} and mutation_width="
                             f"{self.mutation_width} must be >= 0")
        if self.rate < 0:
            raise ValueError(f"rate={self.rate} must be >= 0 (0 = as fast as possible)")
        for name in ("feedback_share", "feedback_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be between 0 and 1")
        if self.feedback_delay_s < 0:
            raise ValueError(f"feedback_delay_s={self.feedback_delay_s} must be >= 0")
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency={self.concurrency} must be 1..256")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s} must be positive")


@dataclasses.dataclass
class EventRecord:
    """One simulated prediction and what became of it."""

    index: int
    population: str
    features: list[float]
    truth: int
    prediction: Any = None
    version: str | None = None
    prediction_id: str | None = None
    feedback: bool | None = None       # what the user said (was_correct), None: nothing
    feedback_sent: bool = False        # the gateway answered 202
    error: str | None = None
    sent_at: float = 0.0               # seconds since the start

    @property
    def correct(self) -> bool | None:
        return None if self.prediction is None else self.prediction == self.truth


@dataclasses.dataclass
class SimulationSummary:
    """What a run sent and saw; :meth:`to_dict` is JSON-ready."""

    config: SimulationConfig
    records: list[EventRecord]
    duration_s: float
    stopped_early: str | None = None

    @property
    def answered(self) -> list[EventRecord]:
        return [r for r in self.records if r.prediction is not None]

    @property
    def predictions(self) -> int:
        return len(self.answered)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.records if r.error)

    @property
    def feedback_sent(self) -> int:
        return sum(1 for r in self.records if r.feedback_sent)

    @property
    def feedback_planned(self) -> int:
        return sum(1 for r in self.records if r.feedback is not None)

    @property
    def noisy_feedback(self) -> int:
        return sum(1 for r in self.records if r.feedback is not None and r.correct
                   is not None and r.feedback != r.correct)

    @property
    def versions(self) -> dict[str, int]:
        return dict(collections.Counter(r.version for r in self.answered))

    @property
    def first_event_by_version(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for r in sorted(self.answered, key=lambda r: r.index):
            first.setdefault(r.version, r.index)
        return first

    @property
    def accuracy(self) -> dict[str, float | None]:
        def acc(rows):
            rows = [r for r in rows if r.correct is not None]
            return round(sum(r.correct for r in rows) / len(rows), 4) if rows else None
        answered = self.answered
        start = self.config.mutation_start
        out = {"overall": acc(answered),
               "before_mutation": acc(r for r in answered if r.index < start),
               "after_mutation": acc(r for r in answered if r.index >= start),
               "population_A": acc(r for r in answered if r.population == "A"),
               "population_B": acc(r for r in answered if r.population == "B")}
        for version in sorted(self.versions, key=lambda v: (len(v or ""), v or "")):
            out[f"version_{version}"] = acc(r for r in answered if r.version == version)
        return out

    def windows(self, size: int = WINDOW_EVENTS) -> list[dict]:
        """Accuracy per window of ``size`` events, in event order."""
        out = []
        answered = sorted(self.answered, key=lambda r: r.index)
        for start in range(0, len(answered), size):
            rows = answered[start:start + size]
            out.append({"first_event": rows[0].index, "last_event": rows[-1].index,
                        "n": len(rows),
                        "accuracy": round(sum(r.correct for r in rows) / len(rows), 4),
                        "versions": sorted({r.version for r in rows}),
                        "share_b": round(sum(r.population == "B" for r in rows)
                                         / len(rows), 4)})
        return out

    def to_dict(self, with_records: bool = False) -> dict:
        out = {
            "config": {k: v for k, v in dataclasses.asdict(self.config).items()
                       if k != "token"},
            "events": len(self.records), "predictions": self.predictions,
            "errors": self.errors, "feedback_planned": self.feedback_planned,
            "feedback_sent": self.feedback_sent, "noisy_feedback": self.noisy_feedback,
            "versions": self.versions, "first_event_by_version": self.first_event_by_version,
            "accuracy": self.accuracy, "windows": self.windows(),
            "duration_s": round(self.duration_s, 3), "stopped_early": self.stopped_early,
        }
        if with_records:
            out["records"] = [dataclasses.asdict(r) for r in self.records]
        return out


class _GatewayError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class _Http:
    """One keep-alive connection per thread to the gateway."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float):
        url = urllib.parse.urlsplit(base_url)
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        conn = self._connection()
        try:
            conn.request("POST", self.prefix + path, body=data, headers=self.headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()               # reconnect on the next request
            self._local.conn = None
            raise
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = {"error": {"message": payload[:200].decode("utf-8", "replace")}}
        if response.status >= 300:
            message = (parsed.get("error") or {}).get("message", "") if isinstance(
                parsed, dict) else str(parsed)
            raise _GatewayError(response.status, message)
        return parsed


class Simulator:
    """Runs one simulation; :meth:`run` returns a :class:`SimulationSummary`.

    ``on_progress(done, total, summary_so_far_text)`` is called from worker threads
    after each prediction.
    """

    def __init__(self, config: SimulationConfig,
                 on_progress: Callable[[int, int, str], None] | None = None):
        self.config = config
        self.on_progress = on_progress
        self._http = _Http(config.gateway_url, config.token, config.timeout_s)
        self._lock = threading.Lock()
        self._done = 0
        self._correct = 0
        self._consecutive_errors = 0
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._feedback_heap: list = []
        self._feedback_ready = threading.Condition()
        self._draining = False
        self._feedback_pool = None

    # -- planning ---------------------------------------------------------------------
    def plan(self) -> list[tuple[EventRecord, bool | None]]:
        """Every event and its user's answer-to-be, decided up front from the seed
        (so threads and timing cannot change what is sent)."""
        cfg = self.config
        stream = ZombieStream(cfg.mutation_start, cfg.mutation_width, cfg.seed,
                              cfg.pool_size)
        rng = np.random.default_rng([cfg.seed, 1])
        plan = []
        for i in range(cfg.events):
            name, features, truth = stream.draw(i)
            answers = bool(rng.random() < cfg.feedback_share)
            lies = bool(rng.random() < cfg.feedback_noise)
            plan.append((EventRecord(i, name, features, truth), lies if answers else None))
        return plan

    # -- running ----------------------------------------------------------------------
    def run(self) -> SimulationSummary:
        """Send the planned traffic; returns when every prediction and every feedback
        due has been sent (or the gateway stopped answering)."""
        cfg = self.config
        self._done = self._correct = self._consecutive_errors = 0
        self._stop.clear()
        self._stop_reason = None
        self._draining = False
        plan = self.plan()
        start = time.monotonic()
        feedback_thread = threading.Thread(target=self._feedback_loop, name="feedback",
                                           daemon=True)
        feedback_pool = concurrent.futures.ThreadPoolExecutor(
            cfg.concurrency, thread_name_prefix="sim-feedback")
        self._feedback_pool = feedback_pool
        feedback_thread.start()
        slots = threading.BoundedSemaphore(cfg.concurrency)
        records = []
        with concurrent.futures.ThreadPoolExecutor(
                cfg.concurrency, thread_name_prefix="sim-predict") as pool:
            for record, lies in plan:
                if self._stop.is_set():
                    break
                if cfg.rate > 0:
                    delay = start + record.index / cfg.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                slots.acquire()
                record.sent_at = time.monotonic() - start
                records.append(record)
                future = pool.submit(self._predict, record, lies)
                future.add_done_callback(lambda _f: slots.release())
        with self._feedback_ready:
            self._draining = True
            self._feedback_ready.notify()
        feedback_thread.join()
        feedback_pool.shutdown(wait=True)
        summary = SimulationSummary(cfg, records, time.monotonic() - start,
                                    self._stop_reason)
        _LOGGER.info("step=simulate predictions=%d feedback=%d errors=%d duration_s=%.1f",
                     summary.predictions, summary.feedback_sent, summary.errors,
                     summary.duration_s)
        return summary

    def _predict(self, record: EventRecord, lies: bool | None) -> None:
        body = {"instances": [record.features], "model": self.config.model}
        try:
            answer = self._post("/v1/predict", body)
            record.prediction = answer["predictions"][0]
            record.version = answer["version"]
            record.prediction_id = answer["prediction_ids"][0]
        except (_GatewayError, OSError, http.client.HTTPException, KeyError,
                IndexError, TypeError) as exc:
            record.error = f"predict: {exc}"
            self._failed(record.error)
            return
        with self._lock:
            self._done += 1
            self._correct += record.correct
            self._consecutive_errors = 0
            done, correct = self._done, self._correct
        if lies is not None:
            record.feedback = record.correct != lies   # a liar clicks the other button
            due = time.monotonic() + self.config.feedback_delay_s
            with self._feedback_ready:
                heapq.heappush(self._feedback_heap, (due, record.index, record))
                self._feedback_ready.notify()
        if self.on_progress is not None:
            self.on_progress(done, self.config.events,
                             f"accuracy {correct / done:.3f} version {record.version}")

    def _feedback_loop(self) -> None:
        """Send each feedback when it is due (``feedback_delay_s`` after its
        prediction); after the last prediction, send what is left, then return."""
        while True:
            with self._feedback_ready:
                while True:
                    if self._feedback_heap:
                        due, _, record = self._feedback_heap[0]
                        wait = due - time.monotonic()
                        if wait <= 0:
                            heapq.heappop(self._feedback_heap)
                            break
                        self._feedback_ready.wait(timeout=wait)
                    elif self._draining:
                        return
                    else:
                        self._feedback_ready.wait()
            self._feedback_pool.submit(self._send_feedback, record)

    def _send_feedback(self, record: EventRecord) -> None:
        body = {"prediction_id": record.prediction_id, "was_correct": record.feedback}
        try:
            self._post("/v1/feedback", body)
            record.feedback_sent = True
        except (_GatewayError, OSError, http.client.HTTPException) as exc:
            record.error = f"feedback: {exc}"
            self._failed(record.error)

    def _post(self, path: str, body: dict) -> dict:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._http.post(path, body)
            except _GatewayError as exc:
                if exc.status < 500 or attempt == ATTEMPTS:
                    raise
            except (OSError, http.client.HTTPException):
                if attempt == ATTEMPTS:
                    raise
            time.sleep(0.1 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _failed(self, message: str) -> None:
        _LOGGER.warning("step=simulate outcome=error %s", message)
        with self._lock:
            self._consecutive_errors += 1
            if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS and not self._stop.is_set():
                self._stop_reason = (f"{MAX_CONSECUTIVE_ERRORS} requests in a row failed "
                                     f"(last: {message}); is the gateway at "
                                     f"{self.config.gateway_url} up?")
                self._stop.set()
