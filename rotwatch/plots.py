"""The two plots of the zombie story, drawn from stored data (headless, Agg backend).

* :func:`plot_accuracy` — windowed accuracy per model version over event time, the
  95% Wilson band shaded, with the mutation, each rot event and each promotion marked
  by a labelled vertical line (the article's first plot, from live data).
* :func:`plot_inputs` — the inputs before and after a split time (usually the
  mutation), correct and incorrect predictions in different colours and markers
  (the article's second plot).

matplotlib is imported, and the Agg backend chosen, inside each function: importing
this module does no work and never changes the backend of a caller's session.

    rotwatch report --out .rotwatch/report     # writes accuracy.png and inputs.png
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["plot_accuracy", "plot_inputs", "project_2d", "FIGURE_DPI"]

_LOGGER = logging.getLogger(__name__)

# 110 dpi on 11x5.2..6.2 inch figures gives ~1210x570..680 px: sharp on a laptop screen and in a
# README, small on disk (~60-120 KB).
FIGURE_DPI = 110
# Marks closer than this share of the time axis share one label (a rot event decided
# by two detectors in the same window would otherwise print two labels on top of
# each other).
_LABEL_MERGE_FRACTION = 0.025
# Plotting more than this many points per class only hides the others.
_MAX_SCATTER_POINTS = 10_000

_MUTATION_COLOR = "#d62728"
_ROT_COLOR = "#ff7f0e"
_PROMOTION_COLOR = "#2ca02c"
_OK_COLOR = "#1f77b4"
_BAD_COLOR = "#d62728"
# Version lines: blue, purple, brown, ... (red/orange/green are taken by the marks).
_VERSION_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22",
                   "#e377c2", "#393b79")


def _pyplot():
    """pyplot on the Agg backend, chosen here and never at import."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _check_path(path) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"path {path!r} should name a .png file, e.g. 'accuracy.png'")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"folder {folder!r} for {path!r} does not exist; create it first")
    return path


def _time(value, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}={value!r} has no time zone; use an aware UTC "
                             "datetime (e.g. datetime.now(timezone.utc))")
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, str):
        from rotwatch.events import parse_time
        return parse_time(value, what)
    raise ValueError(f"{what}={value!r} is not a datetime or RFC 3339 text")


def _get(row, name: str, default=None):
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def _version_key(version: str):
    text = str(version)
    return (0, int(text[1:]), text) if text[1:].isdigit() else (1, 0, text)


# -- accuracy over time -----------------------------------------------------------------
def _marks_from_report(report) -> tuple[list, list]:
    rots = [(r.decided_at, f"rot: {r.version} {r.kind}") for r in report.rot_events]
    promos = [(c.changed_at, f"{c.default_version} default") for c in report.promotions()]
    return rots, promos


def _merge_marks(marks: list[tuple[dt.datetime, str]], span_s: float) -> list:
    """Group marks that are closer than a share of the axis into one labelled mark."""
    merged: list[list] = []
    for when, label in sorted(marks, key=lambda m: m[0]):
        last = merged[-1][2][-1] if merged else None
        if last is not None and (when - last).total_seconds() <= span_s * _LABEL_MERGE_FRACTION:
            if label not in merged[-1][1]:
                merged[-1][1].append(label)
            merged[-1][2].append(when)
        else:
            merged.append([when, [label], [when]])
    for group in merged:  # the label sits in the middle of its lines
        members = group[2]
        group[0] = members[0] + (members[-1] - members[0]) / 2
    return merged


def _join_labels(names: Sequence[str]) -> str:
    """``["rot: v1 accuracy", "rot: v1 input-drift"]`` → ``"rot: v1 accuracy, input-drift"``."""
    if len(names) > 1:
        heads = {name.rsplit(" ", 1)[0] for name in names}
        if len(heads) == 1 and all(" " in name for name in names):
            return heads.pop() + " " + ", ".join(name.rsplit(" ", 1)[1] for name in names)
    return ", ".join(names)


def plot_accuracy(report_or_rows, path, mutation_time=None, *,
                  rot_events: Sequence[tuple[Any, str]] | None = None,
                  promotions: Sequence[tuple[Any, str]] | None = None,
                  baselines: Mapping[str, float] | None = None,
                  title: str | None = None) -> str:
    """Windowed accuracy per version over time, with the story's moments marked.

    Parameters
    ----------
    report_or_rows : rotwatch.report.Report or sequence of rows
        A report, or window rows (objects or mappings) with ``version``,
        ``window_end``, ``accuracy`` and optionally ``lower``/``upper`` (the Wilson
        band) and ``n``. Rows with no accuracy (empty panes) are skipped.
    path : str or PathLike
        Where to write the PNG; its folder must exist.
    mutation_time : datetime or RFC 3339 text, optional
        When the population mutated (the simulator knows; the store does not).
    rot_events, promotions : sequence of (time, label), optional
        Extra marks; taken from the report when one is given and these are None.
    baselines : mapping of version to accuracy, optional
        Holdout accuracy per version, drawn as a dotted level over the version's
        windows; taken from the report's versions when None.

    Returns the path written.
    """
    path = _check_path(path)
    model = None
    baselines_override = baselines
    if hasattr(report_or_rows, "windows") and hasattr(report_or_rows, "rot_events"):
        report = report_or_rows
        model = report.model
        rows = list(report.windows)
        baselines = {v.version: v.holdout_accuracy for v in report.versions
                     if v.holdout_accuracy is not None}
        default_rots, default_promos = _marks_from_report(report)
        rot_events = default_rots if rot_events is None else rot_events
        promotions = default_promos if promotions is None else promotions
    else:
        rows = list(report_or_rows)
        baselines = {}
    if baselines_override is not None:
        baselines = dict(baselines_override)
    series: dict[str, list] = {}
    for row in rows:
        accuracy = _get(row, "accuracy")
        if accuracy is None or (_get(row, "n", 1) or 0) <= 0:
            continue
        end = _time(_get(row, "window_end"), "window_end")
        lower, upper = _get(row, "lower"), _get(row, "upper")
        series.setdefault(str(_get(row, "version")), []).append(
            (end, float(accuracy),
             float(accuracy if lower is None else lower),
             float(accuracy if upper is None else upper)))
    marks_rot = [(_time(t, "rot event time"), str(label)) for t, label in rot_events or ()]
    marks_promo = [(_time(t, "promotion time"), str(label)) for t, label in promotions or ()]
    mutation = None if mutation_time is None else _time(mutation_time, "mutation_time")

    plt = _pyplot()
    import matplotlib.dates as mdates
    import matplotlib.transforms as mtransforms
    fig, ax = plt.subplots(figsize=(11, 6.2), dpi=FIGURE_DPI)
    try:
        all_times = [p[0] for pts in series.values() for p in pts]
        all_times += [m[0] for m in marks_rot + marks_promo]
        if mutation is not None:
            all_times.append(mutation)
        if not series:
            ax.text(0.5, 0.5, "no windowed accuracy stored yet\n(run the pipeline: "
                    "`rotwatch up`, then send feedback)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=12, color="#555555")
        lowest = 1.0
        handles: list = []
        texts: list[str] = []
        for i, (version, pts) in enumerate(sorted(series.items(),
                                                  key=lambda kv: _version_key(kv[0]))):
            pts.sort(key=lambda p: p[0])
            color = _VERSION_COLORS[i % len(_VERSION_COLORS)]
            times = [p[0] for p in pts]
            acc = np.array([p[1] for p in pts])
            lo = np.array([p[2] for p in pts])
            hi = np.array([p[3] for p in pts])
            lowest = min(lowest, float(lo.min()))
            band = ax.fill_between(times, lo, hi, color=color, alpha=0.18, linewidth=0)
            (line,) = ax.plot(times, acc, color=color, linewidth=1.8, marker="o",
                              markersize=3 if len(pts) > 60 else 4.5)
            # one legend entry per version: the line drawn over its band
            handles.append((band, line))
            texts.append(f"{version} accuracy (95% Wilson band)")
            baseline = baselines.get(version)
            if baseline is not None:
                (base,) = ax.plot([times[0], times[-1]], [baseline, baseline],
                                  color=color, linestyle=(0, (1, 2)), linewidth=1.2,
                                  alpha=0.8)
                lowest = min(lowest, baseline)
                handles.append(base)
                texts.append(f"{version} holdout accuracy {baseline:.3f}")
        # a little headroom so windows at 100% are not drawn on the frame
        ax.set_ylim(max(0.0, min(0.5, lowest - 0.05)), 1.015)
        ax.set_ylabel("windowed accuracy")
        ax.set_xlabel("window end (event time, UTC)")
        ax.grid(True, alpha=0.3)

        span_s = ((max(all_times) - min(all_times)).total_seconds()
                  if len(all_times) > 1 else 1.0) or 1.0
        # Labels sit above the plot area (y in axes fraction), so they never cover data;
        # neighbouring labels alternate height so close marks stay readable.
        if len(all_times) > 1:
            pad = dt.timedelta(seconds=span_s * 0.02)
            ax.set_xlim(min(all_times) - pad, max(all_times) + pad)
            first_time, axis_s = min(all_times) - pad, span_s * 1.04
        else:
            first_time, axis_s = None, span_s
        label_transform = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        labels: list[tuple[dt.datetime, str, str]] = []
        if mutation is not None:
            handles.append(ax.axvline(mutation, color=_MUTATION_COLOR, linestyle="--",
                                      linewidth=1.6))
            texts.append("population mutates")
            labels.append((mutation, "mutation", _MUTATION_COLOR))
        for j, (when, names, members) in enumerate(_merge_marks(marks_rot, span_s)):
            for k, member in enumerate(members):
                mark = ax.axvline(member, color=_ROT_COLOR, linestyle=":", linewidth=1.8)
                if j == 0 and k == 0:
                    handles.append(mark)
                    texts.append("rot event")
            labels.append((when, _join_labels(names), _ROT_COLOR))
        for j, (when, names, members) in enumerate(_merge_marks(marks_promo, span_s)):
            for k, member in enumerate(members):
                mark = ax.axvline(member, color=_PROMOTION_COLOR, linestyle="-.",
                                  linewidth=1.6)
                if j == 0 and k == 0:
                    handles.append(mark)
                    texts.append("promotion (default change)")
            labels.append((when, _join_labels(names), _PROMOTION_COLOR))
        labels.sort(key=lambda item: item[0])
        previous = None
        level = top_level = 0
        for when, text, color in labels:
            close = (previous is not None and
                     (when - previous).total_seconds() <= span_s * 0.12)
            level = (level + 1) % 3 if close else 0
            top_level = max(top_level, level)
            # near an edge, align the label inwards so it stays inside the figure
            where = ((when - first_time).total_seconds() / axis_s
                     if first_time is not None else 0.5)
            align = "left" if where < 0.1 else "right" if where > 0.9 else "center"
            ax.text(when, 1.015 + 0.055 * level, text, transform=label_transform,
                    color=color, fontsize=8.5, ha=align, va="bottom",
                    clip_on=False, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                          "edgecolor": "none", "alpha": 0.85})
            previous = when

        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
        if handles:
            from matplotlib.legend_handler import HandlerTuple
            # below the plot, never over the curves
            ax.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                      fontsize=8.5, frameon=False, ncol=3,
                      handler_map={tuple: HandlerTuple(ndivide=1)})
        heading = title or ("windowed accuracy per version"
                            + (f" — model {model}" if model else ""))
        # room above the plot for the mark labels (one line per stagger level)
        ax.set_title(heading, pad=(10 + 16 * (top_level + 1)) if labels else 8,
                     fontsize=12)
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI)
    finally:
        plt.close(fig)
    _LOGGER.info("wrote accuracy plot path=%s versions=%d rot_marks=%d promotions=%d",
                 path, len(series), len(marks_rot), len(marks_promo))
    return path


# -- inputs before and after -----------------------------------------------------------
def project_2d(features: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """Two columns to plot: the features themselves if there are two (or one, padded
    with zeros), else the first two principal components (numpy SVD of the centred
    data; signs fixed so the largest loading of each component is positive)."""
    X = np.asarray(features, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D array (rows x features), "
                         f"got shape {X.shape}")
    if X.shape[1] == 1:
        return np.column_stack([X[:, 0], np.zeros(len(X))]), ("feature 0", "(none)")
    if X.shape[1] == 2:
        return X.copy(), ("feature 0", "feature 1")
    centred = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(np.sum(s ** 2)) or 1.0
    share = [float(s[i] ** 2) / total for i in range(2)]
    return centred @ components.T, (f"PC1 ({share[0]:.0%} of variance)",
                                    f"PC2 ({share[1]:.0%} of variance)")


def _thin(idx: np.ndarray, limit: int) -> np.ndarray:
    if len(idx) <= limit:
        return idx
    # Evenly spaced, deterministic: the same data always gives the same picture.
    return idx[np.linspace(0, len(idx) - 1, limit).astype(int)]


def plot_inputs(features, correct, times, path, split_time, *,
                projection: str = "auto", split_label: str = "mutation",
                title: str | None = None) -> str:
    """Input scatter before and after ``split_time``, correct vs incorrect.

    Parameters
    ----------
    features : (n, d) array-like
        Feature vectors of stored feedback.
    correct : (n,) bools
        The counted verdict of each prediction.
    times : (n,) aware datetimes
        Event times; rows before ``split_time`` go left, the others right.
    path : str or PathLike
        Where to write the PNG; its folder must exist.
    split_time : datetime or RFC 3339 text
        Usually the mutation time (or, from storage, the first rot event's change
        point).
    projection : ``"auto"``, ``"pca"`` or ``"first2"``
        ``auto`` plots the features if there are at most two, else a 2-D PCA of all
        rows (one projection for both panels, so they are comparable).
    split_label : str
        What the split is, for the panel titles.

    Returns the path written.
    """
    path = _check_path(path)
    if projection not in ("auto", "pca", "first2"):
        raise ValueError(f"projection={projection!r}: use 'auto', 'pca' or 'first2'")
    X = np.asarray(features, dtype=float)
    if X.size == 0:
        X = X.reshape(0, 2)  # nothing stored yet: draw the empty panels
    ok = np.asarray(correct, dtype=bool)
    times = [_time(t, "times[i]") for t in times]
    if X.ndim != 2 or not len(X) == len(ok) == len(times):
        raise ValueError(f"features (shape {X.shape}), correct ({len(ok)}) and times "
                         f"({len(times)}) must describe the same rows")
    split = _time(split_time, "split_time")

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), dpi=FIGURE_DPI,
                             sharex=True, sharey=True)
    try:
        if len(X) == 0:
            for ax in axes:
                ax.text(0.5, 0.5, "no feedback stored", ha="center", va="center",
                        transform=ax.transAxes, color="#555555")
            names = ("feature 0", "feature 1")
        else:
            if projection == "first2" or (projection == "auto" and X.shape[1] <= 2):
                XY = X[:, :2] if X.shape[1] >= 2 else np.column_stack([X[:, 0],
                                                                        np.zeros(len(X))])
                names = ("feature 0", "feature 1" if X.shape[1] >= 2 else "(none)")
            else:
                XY, names = project_2d(X)
            after = np.array([t >= split for t in times])
            split_text = split.strftime("%H:%M:%S UTC")
            for ax, mask, when in ((axes[0], ~after, "before"), (axes[1], after, "after")):
                n = int(mask.sum())
                n_ok = int((mask & ok).sum())
                good_all = np.flatnonzero(mask & ok)
                bad_all = np.flatnonzero(mask & ~ok)
                good = _thin(good_all, _MAX_SCATTER_POINTS)
                bad = _thin(bad_all, _MAX_SCATTER_POINTS)
                size = 9 if n > 3000 else 16
                ax.scatter(XY[good, 0], XY[good, 1], s=size, c=_OK_COLOR, marker="o",
                           alpha=0.45, linewidths=0, label=f"correct ({len(good_all)})")
                # incorrect on top, as crosses: they are the story
                ax.scatter(XY[bad, 0], XY[bad, 1], s=size * 1.6, c=_BAD_COLOR,
                           marker="x", alpha=0.85, linewidths=1.0,
                           label=f"incorrect ({len(bad_all)})")
                accuracy = f"{n_ok / n:.1%} correct" if n else "no rows"
                ax.set_title(f"{when} {split_label} ({split_text}): n={n}, {accuracy}",
                             fontsize=10.5)
                ax.set_xlabel(names[0])
                ax.grid(True, alpha=0.3)
                if n:
                    ax.legend(loc="upper right", fontsize=8.5, framealpha=0.9,
                              markerscale=1.5)
                else:
                    ax.text(0.5, 0.5, f"no feedback {when} the split", ha="center",
                            va="center", transform=ax.transAxes, color="#555555")
        axes[0].set_ylabel(names[1])
        fig.suptitle(title or "inputs of stored feedback: correct vs incorrect "
                     "predictions", fontsize=12)
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI)
    finally:
        plt.close(fig)
    _LOGGER.info("wrote inputs plot path=%s rows=%d", path, len(X))
    return path
