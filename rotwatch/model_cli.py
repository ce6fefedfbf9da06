"""``rotwatch model train|list|show|set-default``: the model registry by hand.

``train`` is how a user bootstraps v1 from their own data: a CSV file with a header
(``--label`` names the label column, every other column is a numeric feature) or a
NumPy ``.npz`` with arrays ``x`` (rows x features) and ``y``. A shuffled, stratified
holdout scores the model; that holdout accuracy becomes the version's baseline.
``set-default`` also rolls back: point the default at any earlier ready version.

    rotwatch model train --model zombies --data zombies.csv --label label --set-default
    rotwatch model list
    rotwatch model list --model zombies
    rotwatch model show --model zombies --version v2
    rotwatch model set-default --model zombies --version v1 --reason "v2 misbehaves"
"""
from __future__ import annotations

import argparse
import csv
import getpass
import logging
import os
import textwrap

from rotwatch.config import add_settings_flags, settings_from_args
from rotwatch.estimators import DEFAULT_ESTIMATOR, ESTIMATORS

__all__ = ["register", "read_training_file"]

_LOGGER = logging.getLogger(__name__)

# The share of a user's file held out to measure the baseline accuracy; 20% is the
# customary split and gives a tight estimate from a few thousand rows.
HOLDOUT_SHARE = 0.2
# Too few rows and the holdout accuracy (the live baseline) is noise.
MIN_TRAIN_ROWS = 20
# `model show` wraps values wider than this: a table stays readable in 100 columns.
VALUE_WIDTH = 80


def _registry(args, publish: bool = True):
    from rotwatch.registry import Registry
    from rotwatch.report import ReportError, make_client

    settings = settings_from_args(args)
    try:  # fails in seconds, naming the fix, if no emulator or credentials are there
        client = make_client(settings)
    except ReportError as exc:
        raise SystemExit(f"rotwatch model: {exc}") from None
    return Registry(settings, client=client, publish=publish)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model", help="train, list, show and set default model versions",
        description="The model registry: versions v1..vN and the default pointer.")
    commands = parser.add_subparsers(dest="model_command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train and register a version from a file")
    add_settings_flags(train)
    train.add_argument("--model", required=True, help="model name, e.g. zombies")
    train.add_argument("--data", required=True,
                       help="CSV with a header row, or .npz with arrays x and y")
    train.add_argument("--label", help="the label column of a CSV (required for CSV)")
    train.add_argument("--estimator", choices=list(ESTIMATORS), default=DEFAULT_ESTIMATOR,
                       help=f"default {DEFAULT_ESTIMATOR}")
    train.add_argument("--set-default", action="store_true",
                       help="make the new version the model's default")
    train.add_argument("--created-by", help="who trains it (default person:<login>)")
    train.add_argument("--seed", type=int, default=0, help="holdout shuffle seed")
    train.add_argument("--no-publish", action="store_true",
                       help="do not publish the default change to model-updates")
    train.set_defaults(func=train_command)

    lst = commands.add_parser("list", help="models, or the versions of one model")
    add_settings_flags(lst)
    lst.add_argument("--model", help="list this model's versions")
    lst.set_defaults(func=list_command)

    show = commands.add_parser("show", help="one version in full, and default history")
    add_settings_flags(show)
    show.add_argument("--model", required=True)
    show.add_argument("--version", help="default: the model's default version")
    show.set_defaults(func=show_command)

    setdef = commands.add_parser("set-default", help="point the default at a version "
                                 "(also how to roll back)")
    add_settings_flags(setdef)
    setdef.add_argument("--model", required=True)
    setdef.add_argument("--version", required=True, help="e.g. v1")
    setdef.add_argument("--reason", default="", help="why (kept in the history)")
    setdef.add_argument("--by", help="who (default person:<login>)")
    setdef.add_argument("--no-publish", action="store_true",
                        help="do not publish the change to model-updates")
    setdef.set_defaults(func=set_default_command)


# -- reading a user's file -------------------------------------------------------------
def _labels(values: list[str]):
    import numpy as np
    try:
        return np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.asarray(values, dtype=object)


def read_training_file(path: str, label: str | None) -> tuple:
    """``(X, y, feature_names)`` from a CSV (header + ``label`` column) or ``.npz``."""
    import numpy as np
    if not os.path.exists(path):
        raise ValueError(f"--data {path!r} does not exist")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            missing = {"x", "y"} - set(data.files)
            if missing:
                raise ValueError(f"{path} has arrays {sorted(data.files)}; it needs x "
                                 "(rows x features) and y (labels)")
            X, y = np.asarray(data["x"], dtype=float), np.asarray(data["y"])
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"{path}: x must be 2-D with one row per label; got x "
                             f"{X.shape} and y {y.shape}")
        if y.dtype.kind in "iub":
            y = y.astype(np.int64)
        else:
            y = y.astype(str).astype(object)
        return X, y, [f"x{i}" for i in range(X.shape[1])]
    if not label:
        raise ValueError("--label COLUMN is required for a CSV file (the label column)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path} is empty; it needs a header row")
        header = [h.strip() for h in header]
        if label not in header:
            raise ValueError(f"--label {label!r} is not a column of {path}; columns: "
                             f"{', '.join(header)}")
        li = header.index(label)
        names = [h for i, h in enumerate(header) if i != li]
        X, y = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path} line {line_no}: {len(row)} fields, header "
                                 f"has {len(header)}")
            features = []
            for i, cell in enumerate(row):
                if i == li:
                    continue
                try:
                    features.append(float(cell))
                except ValueError:
                    raise ValueError(f"{path} line {line_no}, column {header[i]!r}: "
                                     f"{cell!r} is not a number; features must be "
                                     "numeric") from None
            X.append(features)
            y.append(row[li].strip())
    return np.asarray(X, dtype=float).reshape(len(X), len(names)), _labels(y), names


def _split(X, y, seed: int):
    import numpy as np
    from sklearn.model_selection import train_test_split
    _, counts = np.unique(y.astype(str), return_counts=True)
    stratify = y.astype(str) if counts.min() >= 2 else None
    return train_test_split(X, y, test_size=HOLDOUT_SHARE, random_state=seed,
                            stratify=stratify)


def _me() -> str:
    try:
        return f"person:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in some containers
        return "person:unknown"


# -- commands --------------------------------------------------------------------------
def train_command(args: argparse.Namespace) -> int:
    from rotwatch.estimators import holdout_metrics, make_estimator
    from rotwatch.registry import UpdateNotPublished
    from rotwatch.tables import format_table

    try:
        X, y, names = read_training_file(args.data, args.label)
    except ValueError as exc:
        raise SystemExit(f"rotwatch model train: {exc}")
    if len(y) < MIN_TRAIN_ROWS or len(set(y.tolist())) < 2:
        raise SystemExit(f"rotwatch model train: {args.data} has {len(y)} rows and "
                         f"{len(set(y.tolist()))} classes; need at least {MIN_TRAIN_ROWS} "
                         "rows and 2 classes")
    registry = _registry(args, publish=not args.no_publish)
    X_train, X_hold, y_train, y_hold = _split(X, y, args.seed)
    fitted = make_estimator(args.estimator).fit(X_train, y_train)
    metrics = holdout_metrics(fitted, X_hold, y_hold)
    metrics.update(data=os.path.basename(args.data), features=names,
                   holdout_share=HOLDOUT_SHARE, seed=args.seed)
    who = args.created_by or _me()
    record = registry.register_version(
        args.model, fitted, estimator=args.estimator, X_reference=X_train,
        baseline_accuracy=metrics["accuracy"], metrics=metrics, train_rows=len(y_train),
        created_by=who)
    print(format_table(["model", "version", "estimator", "train rows", "holdout rows",
                        "holdout accuracy"],
                       [[args.model, record.version, args.estimator, len(y_train),
                         len(y_hold), f"{metrics['accuracy']:.4f}"]]))
    if args.set_default:
        try:
            registry.set_default(args.model, record.version, changed_by=who,
                                 reason=f"trained from {os.path.basename(args.data)}")
        except UpdateNotPublished as exc:
            print(f"warning: {exc}")
            return 1
        print(f"{args.model} default is now {record.version}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from rotwatch.registry import RegistryError
    from rotwatch.tables import format_table

    registry = _registry(args)
    if not args.model:
        rows = [[m.name, m.default_version or "-", len(registry.list_versions(m.name)),
                 m.updated_at.isoformat(timespec="seconds") if m.updated_at else ""]
                for m in registry.list_models()]
        print(format_table(["model", "default", "versions", "updated"], rows))
        return 0
    try:
        default = registry.get_model(args.model).default_version
    except RegistryError as exc:
        raise SystemExit(f"rotwatch model list: {exc}")
    rows = [[("* " if v.version == default else "  ") + v.version, v.status, v.estimator,
             v.train_rows, "" if v.baseline_accuracy is None else f"{v.baseline_accuracy:.4f}",
             v.parent_version or "", v.created_at.isoformat(timespec="seconds"),
             v.created_by] for v in registry.list_versions(args.model)]
    print(format_table(["version", "status", "estimator", "train rows", "baseline acc",
                        "parent", "created", "created by"], rows))
    print("(* = default)")
    return 0


def show_command(args: argparse.Namespace) -> int:
    from rotwatch.registry import RegistryError, describe
    from rotwatch.tables import format_table

    registry = _registry(args)
    try:
        record = registry.get_version(args.model, args.version)
        history = registry.history(args.model)
    except RegistryError as exc:
        raise SystemExit(f"rotwatch model show: {exc}")
    rows = []
    for field, value in describe(record):
        # long JSON (params, metrics) wraps under itself instead of widening the table
        lines = textwrap.wrap(value, VALUE_WIDTH, break_on_hyphens=False) or ["-"]
        rows.extend([[field, lines[0]]] + [["", line] for line in lines[1:]])
    print(format_table(["field", "value"], rows))
    print()
    print(format_table(["changed at", "default", "previous", "by", "reason"],
                       [[c.changed_at.isoformat(timespec="seconds"), c.version,
                         c.previous_version or "-", c.changed_by, c.reason]
                        for c in history]))
    return 0


def set_default_command(args: argparse.Namespace) -> int:
    from rotwatch.artifacts import ArtifactError
    from rotwatch.registry import RegistryError, UpdateNotPublished

    registry = _registry(args, publish=not args.no_publish)
    try:
        update = registry.set_default(args.model, args.version,
                                      changed_by=args.by or _me(), reason=args.reason)
    except UpdateNotPublished as exc:
        print(f"warning: {exc}")
        return 1
    except (RegistryError, ArtifactError, ValueError) as exc:
        raise SystemExit(f"rotwatch model set-default: {exc}")
    if update is None:
        print(f"{args.model} default already is {args.version}; nothing changed")
    else:
        print(f"{args.model} default: {update.previous_version or '-'} -> "
              f"{update.default_version}")
    return 0
