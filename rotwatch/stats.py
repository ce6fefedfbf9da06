"""Pure statistics behind rot decisions: accuracy bounds, input drift, the window rule.

Nothing here knows Beam, Datastore or Pub/Sub; the pipeline and the trainer call
these functions on plain numbers, and the tests check them with exact values.

* :func:`wilson_interval` — a confidence interval for a window's accuracy.
* :func:`accuracy_rot` — the windowed rule: the last *K* windows are all clearly
  below the version's baseline accuracy.
* :func:`reference_statistics` — per-feature quantile bins of the training data,
  stored with each model version (``ModelVersion.reference_stats``).
* :func:`population_stability_index` / :func:`feature_drift` — how far a window's
  inputs moved away from that reference.

>>> lo, hi = wilson_interval(80, 100)
>>> round(lo, 4), round(hi, 4)
(0.7112, 0.8666)
>>> accuracy_rot([0.70, 0.71], [200, 200], baseline=0.9, tolerance=0.05,
...              min_n=100, consecutive=2)
True
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

__all__ = [
    "wilson_interval", "reference_statistics", "population_stability_index",
    "feature_drift", "accuracy_rot", "psi_noise_level", "PSI_SMOOTHING", "DEFAULT_BINS",
    "DRIFT_ALPHA",
]

_LOGGER = logging.getLogger(__name__)

# Ten quantile bins is the customary PSI layout: each bin holds 10% of the training
# rows, so a bin's share can move visibly with a few hundred rows.
DEFAULT_BINS = 10
# Pseudo-count per bin (Jeffreys' 0.5). The reference adds it to every bin, so each
# reference fraction is > 0. A window adds the same total (0.5 x bins) spread in the
# reference's proportions, i.e. its fractions shrink a little toward the reference:
# an empty bin never gives log(0), identical distributions give ~0, and a bin the
# reference almost never saw does not inflate the PSI of a small window.
PSI_SMOOTHING = 0.5
# A feature counts as drifted only if its PSI is also beyond what chance gives at
# this window size with probability DRIFT_ALPHA (n * PSI is about chi-square with
# bins - 1 degrees of freedom when nothing moved). Without this, a 30-row window
# over 10 bins shows PSI > 0.2 in most windows (null mean ~ 9/30). 0.1% because the
# test runs for every feature of every window.
DRIFT_ALPHA = 0.001
_Z_DRIFT_ALPHA = 3.090232306167813  # upper 0.1% point of N(0, 1)


# -- accuracy --------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (``correct`` successes out of ``n``).

    Unlike the normal approximation it stays inside [0, 1] and is honest for small
    ``n`` and for accuracies near 0 or 1, which is where rot decisions are made.

    Parameters
    ----------
    correct : int
        Number of correct predictions, ``0 <= correct <= n``.
    n : int
        Number of predictions with feedback. ``n == 0`` gives ``(0.0, 1.0)``:
        nothing is known.
    z : float
        Normal quantile of the two-sided level (1.96 for 95%).

    Returns
    -------
    (lower, upper) : tuple of float

    Examples
    --------
    >>> tuple(round(b, 4) for b in wilson_interval(8, 10))
    (0.4902, 0.9433)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if n < 0 or correct < 0:
        raise ValueError(f"correct={correct} and n={n} must both be >= 0; "
                         "pass counts of feedback events")
    if correct > n:
        raise ValueError(f"correct={correct} is more than n={n}; "
                         "correct counts a subset of the n events")
    if not z > 0:
        raise ValueError(f"z={z} must be > 0, e.g. 1.96 for a 95% interval")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp float noise at the ends (0/n and n/n give exact 0 and 1 in theory).
    return max(0.0, center - half), min(1.0, center + half)


def accuracy_rot(upper_bounds: Sequence[float], ns: Sequence[int], baseline: float,
                 tolerance: float, min_n: int, consecutive: int) -> bool:
    """The windowed rot rule over consecutive windows, oldest first.

    A version rots when each of the last ``consecutive`` windows has at least
    ``min_n`` events **and** an accuracy upper bound strictly below
    ``baseline - tolerance``: even the optimistic end of the interval is worse than
    the accuracy the version was promoted with. A window with too few events breaks
    the run (it neither proves nor disproves rot).

    Parameters
    ----------
    upper_bounds : sequence of float
        Upper confidence bound of each window's accuracy (e.g. Wilson), oldest first.
    ns : sequence of int
        Events in each window, same length as ``upper_bounds``.
    baseline : float
        The version's accuracy at training time.
    tolerance : float
        How much worse than ``baseline`` is still acceptable, ``>= 0``.
    min_n : int
        Fewest events for a window to count.
    consecutive : int
        How many windows in a row must be bad, ``>= 1``.

    Examples
    --------
    >>> accuracy_rot([0.80, 0.84], [100, 100], 0.9, 0.05, 50, 2)
    True
    >>> accuracy_rot([0.80, 0.85], [100, 100], 0.9, 0.05, 50, 2)   # equal: not rot
    False
    >>> accuracy_rot([0.80, 0.80], [100, 49], 0.9, 0.05, 50, 2)    # too few events
    False
    """
    if len(upper_bounds) != len(ns):
        raise ValueError(f"upper_bounds has {len(upper_bounds)} windows but ns has "
                         f"{len(ns)}; pass one n per window")
    if consecutive < 1:
        raise ValueError(f"consecutive={consecutive} must be >= 1")
    if min_n < 0:
        raise ValueError(f"min_n={min_n} must be >= 0")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0 (a margin below baseline)")
    if not 0.0 <= baseline <= 1.0:
        raise ValueError(f"baseline={baseline} must be an accuracy in [0, 1]")
    if len(ns) < consecutive:
        return False
    limit = baseline - tolerance
    return all(n >= min_n and upper < limit
               for upper, n in zip(upper_bounds[-consecutive:], ns[-consecutive:]))


# -- input drift -----------------------------------------------------------------------
def _as_matrix(X, what: str) -> np.ndarray:
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows x features), got shape {arr.shape}; "
                         "wrap a single row as [[x1, x2, ...]]")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or infinite values; drop or impute them first")
    return arr


def _edges(column: np.ndarray, bins: int) -> list[float]:
    """Inner quantile edges; a value that fills a whole quantile gets its own bin."""
    edges: list[float] = []
    for value in np.unique(np.quantile(column, np.arange(1, bins) / bins)).tolist():
        edges.append(value)
        # A value holding a whole quantile's share of rows is a point mass (a constant
        # or discrete feature). Bins are [edge_i, edge_i+1): adding the next float
        # above makes the point its own bin, so a move up *or* down is still seen.
        if np.count_nonzero(column == value) * bins >= column.size:
            edges.append(float(np.nextafter(value, np.inf)))
    return edges


def _bin_counts(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(float)


def reference_statistics(X, bins: int = DEFAULT_BINS) -> dict:
    """Per-feature quantile bins and moments of the training inputs (JSON-ready).

    Bins are ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` over the inner quantile
    edges; duplicate edges are merged, and a value that fills a whole quantile (a
    constant or discrete feature) gets a bin of its own. ``fractions`` are smoothed
    (see :data:`PSI_SMOOTHING`), so every bin is > 0 and sums to 1.

    Parameters
    ----------
    X : array-like, shape (rows, features)
        Training inputs, at least one row.
    bins : int
        Target number of quantile bins, ``>= 2``.

    Returns
    -------
    dict
        ``{"n", "bins", "features": [{"edges", "fractions", "mean", "std", "min",
        "max"}, ...]}``

    Examples
    --------
    >>> ref = reference_statistics([[float(i), 1.0] for i in range(100)], bins=4)
    >>> ref["features"][0]["edges"]
    [24.75, 49.5, 74.25]
    >>> len(ref["features"][1]["fractions"])     # constant: below / equal / above
    3
    """
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins={bins!r} must be an integer >= 2 (10 is customary)")
    arr = _as_matrix(X, "X")
    if arr.shape[0] == 0:
        raise ValueError("X has no rows: reference statistics need the training inputs")
    features = []
    for column in arr.T:
        edges = _edges(column, bins)
        counts = _bin_counts(edges, column) + PSI_SMOOTHING
        features.append({
            "edges": [float(e) for e in edges],
            "fractions": (counts / counts.sum()).tolist(),
            "mean": float(column.mean()),
            "std": float(column.std()),
            "min": float(column.min()),
            "max": float(column.max()),
        })
    return {"n": int(arr.shape[0]), "bins": bins, "features": features}


def population_stability_index(feature_ref: dict, values) -> float:
    """PSI of one feature's ``values`` against its reference entry.

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the reference bins, with ``e``
    the reference fractions and ``a`` the fractions of ``values``, smoothed toward
    ``e`` by :data:`PSI_SMOOTHING` pseudo-rows per bin. Rules of
    thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a real shift. Small samples inflate
    PSI (its null mean is about ``(bins - 1) / len(values)``), which is why
    :func:`feature_drift` wants a minimum number of rows.

    Parameters
    ----------
    feature_ref : dict
        One entry of ``reference_statistics(...)["features"]``.
    values : array-like of float
        The feature's values in the window, at least one.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = reference_statistics(rng.normal(size=(5000, 1)))["features"][0]
    >>> population_stability_index(ref, rng.normal(size=5000)) < 0.01
    True
    >>> population_stability_index(ref, rng.normal(1.0, size=5000)) > 0.2
    True
    """
    try:
        edges = feature_ref["edges"]
        expected = np.asarray(feature_ref["fractions"], dtype=float)
    except (KeyError, TypeError):
        raise ValueError("feature_ref must be one entry of reference_statistics(...)"
                         "['features'] with 'edges' and 'fractions'") from None
    if expected.size != len(edges) + 1 or np.any(expected <= 0):
        raise ValueError(f"feature_ref has {len(edges)} edges and {expected.size} "
                         "fractions; expected len(edges) + 1 positive fractions — "
                         "rebuild it with reference_statistics")
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("values is empty: PSI needs at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values holds NaN or infinite entries; drop or impute them first")
    expected = expected / expected.sum()
    prior = PSI_SMOOTHING * expected.size
    actual = (_bin_counts(edges, arr) + prior * expected) / (arr.size + prior)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_noise_level(n_bins: int, n: int, n_reference: int | None = None) -> float:
    """The PSI that chance alone exceeds with probability :data:`DRIFT_ALPHA`.

    With nothing moved, ``n_eff * PSI`` is close to chi-square with ``n_bins - 1``
    degrees of freedom, where ``1 / n_eff = 1 / n + 1 / n_reference`` (both samples
    are finite). The quantile uses the Wilson-Hilferty approximation (within 1% of the
    exact value for 2+ degrees of freedom), so no scipy is needed.

    Examples
    --------
    >>> round(psi_noise_level(10, 30), 3)      # a 30-row window: only big moves show
    0.935
    >>> round(psi_noise_level(10, 1000, 5000), 4)
    0.0337
    """
    if n < 1 or n_bins < 2:
        raise ValueError(f"n={n} and n_bins={n_bins} must be >= 1 and >= 2")
    inv = 1.0 / n + (1.0 / n_reference if n_reference else 0.0)
    k = n_bins - 1
    c = 2.0 / (9.0 * k)
    quantile = k * (1.0 - c + _Z_DRIFT_ALPHA * math.sqrt(c)) ** 3
    return quantile * inv


def feature_drift(reference: dict, X, threshold: float = 0.2,
                  min_n: int = 30) -> list[tuple[int, float]]:
    """Features whose PSI against ``reference`` is over ``threshold``.

    A feature is reported when its PSI is over ``threshold`` (the shift is big
    enough to matter) *and* over :func:`psi_noise_level` for this many rows (the
    shift is not sampling noise), so small windows do not raise false drift.

    Parameters
    ----------
    reference : dict
        The output of :func:`reference_statistics` for the model version.
    X : array-like, shape (rows, features)
        A window's inputs.
    threshold : float
        PSI above which a feature counts as drifted (0.2 is the customary line).
    min_n : int
        Fewer rows than this gives ``[]``: too little evidence.

    Returns
    -------
    list of (feature index, PSI), in feature order.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = reference_statistics(rng.normal(size=(2000, 3)))
    >>> window = rng.normal(size=(1000, 3)); window[:, 2] += 1.5
    >>> [(i, round(s, 2)) for i, s in feature_drift(ref, window)]
    [(2, 2.07)]
    """
    try:
        features = reference["features"]
    except (KeyError, TypeError):
        raise ValueError("reference must be the dict from reference_statistics "
                         "(with a 'features' list)") from None
    arr = _as_matrix(X, "X")
    if arr.shape[0] < min_n:
        return []
    if arr.shape[1] != len(features):
        raise ValueError(f"X has {arr.shape[1]} features but the reference has "
                         f"{len(features)}; compare a window with its own model "
                         "version's reference statistics")
    n_reference = reference.get("n")
    drifted = []
    for index, feature_ref in enumerate(features):
        score = population_stability_index(feature_ref, arr[:, index])
        noise = psi_noise_level(len(feature_ref["fractions"]), arr.shape[0], n_reference)
        if score > threshold and score > noise:
            drifted.append((index, score))
    return drifted
