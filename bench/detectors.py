"""Benchmark: rotwatch's error-rate detector against River's drift detectors.

Every detector reads the same binary error streams (1 = the prediction was wrong) in
one run, with its default settings (rotwatch's: one setting for every stream, and no
``baseline_error``: like River's detectors it learns the error level from the stream).

Streams (the change point is known in each):

1. *Error streams*: Bernoulli errors with the rate stepping up at event
   :data:`CHANGE_AT`, abrupt or as a linear ramp over :data:`RAMP` events, for
   0.1 -> 0.2, 0.1 -> 0.3 and 0.2 -> 0.5, several seeds.
2. *Concept changes*: a decision tree trained on one concept of River's synthetic
   generators (SEA, Agrawal, STAGGER, Sine, Mixed; generated locally) and on the
   "zombie" population (``make_classification(n_features=4, n_redundant=1)``,
   random_state 99), then fed concept A until :data:`CHANGE_AT` and concept B after
   (the zombie's B is random_state 16). The error stream is ``prediction != label``.

Scoring, per stream: the first detection in ``[change, change + ACCEPT_WINDOW)`` is a
hit, and its delay is ``detection - change``; every other detection (before the
change, a second one inside the window, or after the window) is a false alarm.
River's detectors and rotwatch's all reset themselves after a detection.

Run it::

    .venv/bin/python bench/detectors.py                 # full run (2-3 min, 2 cores)
    .venv/bin/python bench/detectors.py --quick         # one seed (under a minute)
    .venv/bin/python bench/detectors.py --json results.json
    .venv/bin/python bench/detectors.py --quick --stationary 2000000   # + false alarms
                                                                       # on long streams
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import os
import statistics
import sys
import time
from typing import Callable, Iterable

import numpy as np

# Run as a script from a checkout: make the repository importable without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.detector import ErrorRateDetector  # noqa: E402

__all__ = ["error_streams", "concept_streams", "detectors", "run_detector", "score",
           "evaluate", "chance_hits", "paired_delays", "stationary_alarms", "main"]

_LOGGER = logging.getLogger(__name__)

# Stationary events before each change: long enough that false alarms on the
# stationary part dominate the false-alarm rate, as they do in production.
CHANGE_AT = 3000
# Events after the change: the acceptance window plus as much again, so detectors
# that keep firing on the new (stable) level are counted.
AFTER = 1500
# A hit must come within this many events of the change (a few windows of feedback).
ACCEPT_WINDOW = 500
# Gradual changes ramp linearly from the old to the new error rate over this many
# events (inside the acceptance window, so a hit is possible before the ramp ends).
RAMP = 300
# Error-rate changes: a doubling from a good model, a tripling, and a bad model
# getting worse.
MAGNITUDES = ((0.1, 0.2), (0.1, 0.3), (0.2, 0.5))
SEEDS = (1, 2, 3, 4, 5)
QUICK_SEEDS = (1,)
# Rows of concept A the model is trained on (a usual first training set).
TRAIN_ROWS = 2000


# -- streams -----------------------------------------------------------------------------
def _error_stream(p0: float, p1: float, ramp: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    t = np.arange(CHANGE_AT + AFTER)
    if ramp:
        frac = np.clip((t - CHANGE_AT) / ramp, 0.0, 1.0)
    else:
        frac = (t >= CHANGE_AT).astype(float)
    rate = p0 + (p1 - p0) * frac
    return (rng.random(t.size) < rate).astype(int).tolist()


def error_streams(seeds: Iterable[int]) -> list[tuple[str, list[int]]]:
    """``(name, errors)`` for every magnitude, abrupt and gradual, and seed."""
    out = []
    for p0, p1 in MAGNITUDES:
        for kind, ramp in (("abrupt", 0), ("gradual", RAMP)):
            for seed in seeds:
                name = f"err {p0:.1f}->{p1:.1f} {kind}"
                # a distinct stream per magnitude, kind and seed
                stream_seed = seed * 1000 + round(p0 * 100) * 10 + round(p1 * 10) + ramp
                out.append((name, _error_stream(p0, p1, ramp, stream_seed)))
    return out


def _rows(generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = [], []
    for x, label in generator.take(n):
        X.append([float(v) for v in x.values()])
        y.append(int(label))
    return np.asarray(X), np.asarray(y)


def _concepts() -> dict[str, Callable[[int], tuple]]:
    """Stream name -> seed -> (X_train, y_train, X_stream, y_stream) with the change
    at CHANGE_AT. Concept pairs give changes from subtle (SEA) to total (Mixed)."""
    from river.datasets import synth
    from sklearn.datasets import make_classification

    def river_pair(make_a, make_b):
        def build(seed):
            X_a, y_a = _rows(make_a(seed), TRAIN_ROWS + CHANGE_AT)
            X_b, y_b = _rows(make_b(seed + 7919), AFTER)
            return (X_a[:TRAIN_ROWS], y_a[:TRAIN_ROWS],
                    np.vstack([X_a[TRAIN_ROWS:], X_b]), np.concatenate([y_a[TRAIN_ROWS:], y_b]))
        return build

    def zombies(seed):
        rows = TRAIN_ROWS + CHANGE_AT + AFTER
        X_a, y_a = make_classification(n_samples=rows, n_features=4, n_redundant=1,
                                       random_state=99)
        X_b, y_b = make_classification(n_samples=rows, n_features=4, n_redundant=1,
                                       random_state=16)
        order = np.random.default_rng(seed)
        ia, ib = order.permutation(rows), order.permutation(rows)
        X_a, y_a, X_b, y_b = X_a[ia], y_a[ia], X_b[ib][:AFTER], y_b[ib][:AFTER]
        return (X_a[:TRAIN_ROWS], y_a[:TRAIN_ROWS],
                np.vstack([X_a[TRAIN_ROWS:TRAIN_ROWS + CHANGE_AT], X_b]),
                np.concatenate([y_a[TRAIN_ROWS:TRAIN_ROWS + CHANGE_AT], y_b]))

    return {
        "SEA 0->3 (10% noise)": river_pair(lambda s: synth.SEA(variant=0, noise=0.1, seed=s),
                                           lambda s: synth.SEA(variant=3, noise=0.1, seed=s)),
        "Agrawal 1->3": river_pair(
            lambda s: synth.Agrawal(classification_function=1, perturbation=0.05, seed=s),
            lambda s: synth.Agrawal(classification_function=3, perturbation=0.05, seed=s)),
        "STAGGER 0->1": river_pair(lambda s: synth.STAGGER(classification_function=0, seed=s),
                                   lambda s: synth.STAGGER(classification_function=1, seed=s)),
        "Sine 0->2": river_pair(lambda s: synth.Sine(classification_function=0, seed=s),
                                lambda s: synth.Sine(classification_function=2, seed=s)),
        "Mixed 0->1": river_pair(lambda s: synth.Mixed(classification_function=0, seed=s),
                                 lambda s: synth.Mixed(classification_function=1, seed=s)),
        "zombies 99->16": zombies,
    }


def concept_streams(seeds: Iterable[int]) -> list[tuple[str, list[int]]]:
    """``(name, errors)`` of a decision tree trained on concept A, fed A then B."""
    from sklearn.tree import DecisionTreeClassifier

    out = []
    for name, build in _concepts().items():
        for seed in seeds:
            X_train, y_train, X, y = build(seed)
            # min_samples_leaf: a tree that does not memorise the training noise, like
            # a model one would deploy.
            model = DecisionTreeClassifier(min_samples_leaf=5, random_state=seed)
            model.fit(X_train, y_train)
            out.append((name, (model.predict(X) != y).astype(int).tolist()))
    return out


# -- detectors ---------------------------------------------------------------------------
def detectors() -> dict[str, Callable[[], object]]:
    """Name -> factory; every detector with its library's default settings."""
    from river import drift
    from river.drift import binary

    return {
        "rotwatch": ErrorRateDetector,
        "ADWIN": drift.ADWIN,
        "DDM": binary.DDM,
        "EDDM": binary.EDDM,
        "HDDM_A": binary.HDDMA,
        "HDDM_W": binary.HDDMW,
        "PageHinkley": drift.PageHinkley,
        "KSWIN": lambda: drift.KSWIN(seed=42),
    }


def run_detector(factory: Callable[[], object], errors: list[int]) -> list[int]:
    """Stream indices (0-based) of the events after which the detector fired."""
    detector = factory()
    found = []
    for i, x in enumerate(errors):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


def score(detections: list[int], change: int = CHANGE_AT,
          window: int = ACCEPT_WINDOW) -> tuple[int | None, int]:
    """(delay of the hit or None, number of false alarms) for one stream."""
    delay, false_alarms = None, 0
    for i in detections:
        if delay is None and change <= i < change + window:
            delay = i - change
        else:
            false_alarms += 1
    return delay, false_alarms


def _outcomes(factory: Callable[[], object], streams: list[tuple[str, list[int]]],
              indices: Iterable[int]) -> tuple[list[tuple[int, int | None, int]], float]:
    """``(stream index, delay or None, false alarms)`` per stream, and the seconds."""
    started = time.perf_counter()
    out = [(i, *score(run_detector(factory, streams[i][1]))) for i in indices]
    return out, time.perf_counter() - started


def _outcomes_named(name: str, streams, indices):
    return _outcomes(detectors()[name], streams, indices)


def _summary(outcomes, streams, seconds: float) -> dict:
    events = sum(len(errors) for _, errors in streams)
    delays, false_alarms, families, by_stream = [], 0, {}, {}
    for i, delay, fa in sorted(outcomes, key=lambda o: o[0]):
        by_stream[i] = delay
        fam = families.setdefault(streams[i][0], {"hits": 0, "streams": 0, "fa": 0,
                                                  "delays": []})
        fam["streams"] += 1
        fam["fa"] += fa
        false_alarms += fa
        if delay is not None:
            delays.append(delay)
            fam["hits"] += 1
            fam["delays"].append(delay)
    return {
        "hits": len(delays),
        "drifts": len(streams),
        "false_alarms_per_10k": round(false_alarms * 10000 / events, 2),
        "median_delay": float(statistics.median(delays)) if delays else None,
        "_families": families,
        "_delays": by_stream,  # stream index -> delay of its hit, or None
        "_seconds": seconds,
    }


def evaluate(streams: list[tuple[str, list[int]]],
             factories: dict[str, Callable[[], object]] | None = None,
             jobs: int = 1) -> dict:
    """Per detector (default: :func:`detectors`): hits, false alarms per 10k events,
    median delay, per-family rows and compute seconds. With ``jobs > 1`` the default
    detectors run in that many processes (looked up there by name)."""
    everything = range(len(streams))
    if factories is not None or jobs <= 1:
        results = {}
        for name, factory in (factories or detectors()).items():
            outcomes, seconds = _outcomes(factory, streams, everything)
            results[name] = _summary(outcomes, streams, seconds)
        return results
    names = list(detectors())
    # KSWIN runs a KS test per event and costs as much as all the others together:
    # its streams are split over the processes, and its parts are queued first.
    tasks = [("KSWIN", range(k, len(streams), jobs)) for k in range(jobs)]
    tasks += [(name, everything) for name in names if name != "KSWIN"]
    parts: dict[str, list] = {name: [] for name in names}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [(name, pool.submit(_outcomes_named, name, streams, list(indices)))
                   for name, indices in tasks]
        for name, future in futures:
            parts[name].append(future.result())
    return {name: _summary([o for outcomes, _ in parts[name] for o in outcomes], streams,
                           sum(seconds for _, seconds in parts[name]))
            for name in names}


# -- report ------------------------------------------------------------------------------
def _table(results: dict, events: int) -> str:
    lines = [f"{'detector':<12} {'hits':>9} {'false alarms/10k':>17} {'median delay':>13}"
             f" {'seconds':>8}"]
    for name, r in results.items():
        delay = "-" if r["median_delay"] is None else f"{r['median_delay']:.1f}"
        lines.append(f"{name:<12} {r['hits']:>4}/{r['drifts']:<4} "
                     f"{r['false_alarms_per_10k']:>17.2f} {delay:>13} {r['_seconds']:>8.1f}")
    lines.append(f"({events} events; hit = first detection within {ACCEPT_WINDOW} events "
                 f"after the change at {CHANGE_AT}; any other detection is a false alarm)")
    return "\n".join(lines)


def _family_table(results: dict) -> str:
    names = list(results)
    families = list(results[names[0]]["_families"])
    lines = ["hits/streams, false alarms, median delay per stream family:",
             f"{'stream':<22}" + "".join(f" {n:>15}" for n in names)]
    for fam in families:
        cells = []
        for n in names:
            f = results[n]["_families"][fam]
            med = f"{statistics.median(f['delays']):.0f}" if f["delays"] else "-"
            cells.append(f" {f['hits']}/{f['streams']} {f['fa']:>2} {med:>5}".rjust(16))
        lines.append(f"{fam:<22}" + "".join(cells))
    return "\n".join(lines)


def chance_hits(result: dict, window: int = ACCEPT_WINDOW) -> float:
    """Hits a detector would score from its false alarms alone: alarms at its
    false-alarm rate, at random, land in a stream's acceptance window with
    probability ``1 - exp(-rate * window)``."""
    rate = result["false_alarms_per_10k"] / 10000
    return result["drifts"] * (1.0 - math.exp(-rate * window))


def paired_delays(mine: dict, theirs: dict) -> tuple[int, int, int, float | None]:
    """On the streams both detectors hit: (how many, ours earlier, theirs earlier,
    median of ours minus theirs). Unlike the two medians, this compares the same
    changes: a detector that finds only the easy ones has a short median delay."""
    both = [(mine["_delays"][i], d) for i, d in theirs["_delays"].items()
            if d is not None and mine["_delays"].get(i) is not None]
    if not both:
        return 0, 0, 0, None
    return (len(both), sum(o < t for o, t in both), sum(t < o for o, t in both),
            float(statistics.median(o - t for o, t in both)))


def _verdict(results: dict, ours: str = "rotwatch") -> str:
    """Against each River detector: which of the three figures ``ours`` wins, and
    the two figures that say whether a loss is real (chance hits, paired delays)."""
    mine = results[ours]
    lines = [f"{ours} against each River detector (wins = more hits, fewer false "
             "alarms, shorter median delay; theirs vs ours where it does not win):"]
    for name, r in results.items():
        if name == ours:
            continue
        # (figure, theirs, ours, sign): sign > 0 when a larger value is better
        figures = (("hits", r["hits"], mine["hits"], 1),
                   ("false alarms", r["false_alarms_per_10k"], mine["false_alarms_per_10k"], -1),
                   ("delay", r["median_delay"], mine["median_delay"], -1))
        wins, other = [], []
        for label, theirs, own, sign in figures:
            if theirs is None or (own is not None and (own - theirs) * sign > 0):
                wins.append(label)
            else:
                word = "tie" if own == theirs else "loses"
                other.append(f"{word} on {label} ({theirs} vs {own})")
        text = "wins on all three" if len(wins) == 3 else \
            "; ".join((["wins on " + ", ".join(wins)] if wins else []) + other)
        lines.append(f"  {name:<12} {text}")
        n, ours_first, theirs_first, diff = paired_delays(mine, r)
        paired = "no change found by both" if diff is None else (
            f"on the {n} changes both found: {ours} first on {ours_first}, "
            f"{name} on {theirs_first}, median difference {diff:+.0f} events")
        lines.append(f"  {'':<12} {paired}; its false alarms alone would "
                     f"hit {chance_hits(r):.0f} of {r['drifts']}")
    return "\n".join(lines)


STATIONARY_ERRORS = (0.02, 0.05, 0.1, 0.2, 0.3)


def stationary_alarms(n: int, errors: Iterable[float] = STATIONARY_ERRORS,
                      seed: int = 11) -> dict:
    """rotwatch's false alarms on stationary Bernoulli error streams of ``n`` events,
    with the baseline known (as the pipeline runs it: from the registry) and learnt;
    after an alarm the detector starts over as for a new version. Returns
    ``{"known": {p: alarms}, "learnt": {p: alarms}}``."""
    out: dict = {"known": {}, "learnt": {}}
    for p in errors:
        for mode in ("known", "learnt"):
            rng = np.random.default_rng(seed + round(p * 1000))
            stream = (rng.random(n) < p).astype(int).tolist()
            baseline = p if mode == "known" else None
            detector, alarms = ErrorRateDetector(baseline_error=baseline), 0
            for x in stream:
                detector.update(x)
                if detector.drift_detected:
                    alarms += 1
                    detector = ErrorRateDetector(baseline_error=baseline)  # a new version
            out[mode][p] = alarms
    return out


def _stationary_table(alarms: dict, n: int) -> str:
    lines = [f"rotwatch on stationary streams of {n:,} events (false alarms; events per "
             "false alarm):"]
    for mode, by_p in alarms.items():
        cells = [f"p={p}: {a} ({n / a:,.0f})" if a else f"p={p}: 0"
                 for p, a in by_p.items()]
        lines.append(f"  baseline {mode:<6} " + "; ".join(cells))
    return "\n".join(lines)


def _error_rates(streams) -> str:
    seen = {}
    for name, errors in streams:
        before = sum(errors[:CHANGE_AT]) / CHANGE_AT
        after = sum(errors[CHANGE_AT + RAMP:]) / (len(errors) - CHANGE_AT - RAMP)
        seen.setdefault(name, []).append((before, after))
    return "\n".join(f"  {name:<22} error {np.mean([b for b, _ in v]):.3f} -> "
                     f"{np.mean([a for _, a in v]):.3f}" for name, v in seen.items())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed instead of five")
    parser.add_argument("--json", metavar="FILE", help="write the totals as JSON to FILE")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes running detectors side by side (default 2)")
    parser.add_argument("--stationary", type=int, default=0, metavar="N",
                        help="also count rotwatch's false alarms on stationary streams "
                             "of N events per error rate, baseline known and learnt "
                             "(e.g. 2000000; ~3 s per million events)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    seeds = QUICK_SEEDS if args.quick else SEEDS
    streams = error_streams(seeds) + concept_streams(seeds)
    events = sum(len(e) for _, e in streams)
    print(f"{len(streams)} streams, {events} events; observed error rates "
          f"(before -> after the change):")
    print(_error_rates(streams))
    results = evaluate(streams, jobs=args.jobs)
    print()
    print(_table(results, events))
    print()
    print(_verdict(results))
    print()
    print(_family_table(results))
    stationary = None
    if args.stationary:
        stationary = stationary_alarms(args.stationary)
        print()
        print(_stationary_table(stationary, args.stationary))
    elapsed = time.perf_counter() - started
    print(f"\nran in {elapsed:.0f} s")
    if args.json:
        public = {"detectors": {n: {k: v for k, v in r.items() if not k.startswith("_")}
                                for n, r in results.items()},
                  "streams": len(streams), "events": events,
                  "accept_window": ACCEPT_WINDOW, "change_at": CHANGE_AT}
        if stationary is not None:
            public["stationary"] = {"events": args.stationary, "false_alarms": {
                mode: {str(p): a for p, a in by_p.items()}
                for mode, by_p in stationary.items()}}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(public, fh, indent=2)
        _LOGGER.info("wrote %s", args.json)
    return results


if __name__ == "__main__":
    main()
