"""Per-layer metrics of several analyses side by side (e.g. epochs of one run, or a
checkpoint before and after rewiring). Layers are aligned by name, never by position."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..analyses.roles import clean_pair, set_roles_
from ..errors import InvalidParameterError
from . import grouping

#: The partition of a graph's inputs: present in every model, so it does not make two related.
INPUT_LAYER = "input"

#: Per-layer columns compared by default (kept when the analyses have them).
DEFAULT_METRICS = ("strength_mean", "strength_var", "centrality_mean", "core_max")


def available_metrics(analyses: Mapping[str, object], wanted: Sequence[str] = DEFAULT_METRICS) -> list[str]:
    """The metrics of ``wanted`` present in every analysis's ``layers`` table."""
    return [m for m in wanted if all(m in a.layers.columns for a in analyses.values())]


def compare_layers_long(analyses: Mapping[str, object], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy table ``layer, size, checkpoint, <metrics>``: one row per (layer, checkpoint), in the
    layer order of the first analysis (layers that only later analyses have come last)."""
    metrics = list(metrics) if metrics is not None else available_metrics(analyses)
    frames = []
    for label, a in analyses.items():
        cols = ["layer"] + (["size"] if "size" in a.layers else []) + metrics
        f = a.layers[cols].copy()
        f["layer"] = f["layer"].astype(str)
        f.insert(2 if "size" in f else 1, "checkpoint", label)
        frames.append(f)
    long = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(long["layer"]))
    long["layer"] = pd.Categorical(long["layer"], categories=order, ordered=True)
    long = long.sort_values(["layer"], kind="stable").reset_index(drop=True)
    long["layer"] = long["layer"].astype(str)
    return long


def check_related(analyses: Mapping[str, object]) -> None:
    """Refuse to compare checkpoints of unrelated models: every analysis must share at least one
    layer name besides ``input`` with the first one (layers are aligned by name, so otherwise
    nothing would be compared), and layers of the same name must have the same number of neurons
    (otherwise their metrics describe different layers). Raises
    :class:`~graphnn.errors.InvalidParameterError`."""
    labels = list(analyses)
    if not labels:
        return
    first = _layer_names(analyses[labels[0]])
    first_sizes = _layer_sizes(analyses[labels[0]])
    for label in labels[1:]:
        names = _layer_names(analyses[label])
        if not (first & names) - {INPUT_LAYER}:
            raise InvalidParameterError(
                f"{labels[0]!r} and {label!r} share no layer name besides {INPUT_LAYER!r}: they look like "
                "different models, and layers are compared by name. Compare checkpoints of one model "
                f"(e.g. epochs of one run); layers of {labels[0]!r}: {_some(first)}; of {label!r}: {_some(names)}")
        sizes = _layer_sizes(analyses[label])
        differ = [f"{n} ({first_sizes[n]} vs {sizes[n]} neurons)" for n in first_sizes
                  if n in sizes and first_sizes[n] != sizes[n]]
        if differ:
            shown = ", ".join(differ[:6]) + (f", ... ({len(differ)} in all)" if len(differ) > 6 else "")
            raise InvalidParameterError(
                f"{labels[0]!r} and {label!r} have layers of the same name but different sizes: {shown}. They are "
                "different models (or differently shaped versions of one), and their per-layer metrics are not "
                "comparable; compare checkpoints of one architecture")


def _layer_sizes(analysis) -> dict[str, int]:
    layers = analysis.layers
    if "size" not in layers:
        return {}
    return {str(n): int(s) for n, s in zip(layers["layer"], layers["size"])}


def _layer_names(analysis) -> set[str]:
    return set(analysis.layers["layer"].astype(str))


def _some(names: set[str], k: int = 6) -> str:
    shown = sorted(names - {INPUT_LAYER})
    return ", ".join(shown[:k]) + (f", ... ({len(shown)} in all)" if len(shown) > k else "") if shown else "none"


def compare_layers(analyses: Mapping[str, object], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Wide table with one row per (layer, metric): columns ``layer, metric``, one column per
    checkpoint label (in the given order), then ``change`` (last minus first) and
    ``rel_change`` (change / |first|; NaN when first is 0 or missing), and last the layer's
    transformer ``layer_index`` (nullable ``Int64``) and ``role`` (:func:`layer_roles`; empty
    for names without a role). A layer missing from a
    checkpoint has NaN there. Fewer than two analyses, analyses of unrelated models (see
    :func:`check_related`) or no shared metric raise :class:`~graphnn.errors.InvalidParameterError`."""
    if len(analyses) < 2:
        raise InvalidParameterError("compare needs at least two analyses (checkpoints)")
    check_related(analyses)
    metrics = list(metrics) if metrics is not None else available_metrics(analyses)
    if not metrics:
        raise InvalidParameterError("the analyses share none of the metrics to compare "
                                    f"({', '.join(DEFAULT_METRICS)})")
    labels = list(analyses)
    long = compare_layers_long(analyses, metrics)
    order = list(dict.fromkeys(long["layer"]))
    wide = long.melt(id_vars=["layer", "checkpoint"], value_vars=metrics, var_name="metric")
    wide = wide.pivot_table(index=["layer", "metric"], columns="checkpoint", values="value",
                            dropna=False, sort=False)
    wide = wide.reindex(columns=labels)
    idx = pd.MultiIndex.from_product([order, metrics], names=["layer", "metric"])
    wide = wide.reindex(idx).reset_index()
    wide.columns.name = None
    first, last = wide[labels[0]].astype(float), wide[labels[-1]].astype(float)
    wide["change"] = last - first
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["rel_change"] = np.where(first.abs() > 0, wide["change"] / first.abs(), np.nan)
    return _append_roles(wide, "layer", layer_roles(analyses))


def compare_blocks(analyses: Mapping[str, object], column: str = "J") -> pd.DataFrame:
    """Per weight tensor (block), ``column`` of every checkpoint side by side, plus ``change``
    and ``rel_change`` as in :func:`compare_layers`, then ``layer_index`` and ``role`` read from
    the block name (:func:`block_roles`)."""
    labels = list(analyses)
    frames = [a.blocks.set_index("block")[column].rename(lab) for lab, a in analyses.items()]
    wide = pd.concat(frames, axis=1).reset_index().rename(columns={"index": "block"})
    first, last = wide[labels[0]].astype(float), wide[labels[-1]].astype(float)
    wide["change"] = last - first
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["rel_change"] = np.where(first.abs() > 0, wide["change"] / first.abs(), np.nan)
    return _append_roles(wide, "block", block_roles(analyses))


def layer_roles(analyses: Mapping[str, object]) -> dict[str, tuple[int | None, str | None]]:
    """``{partition name: (layer_index, role)}`` over all analyses (the first one that has a
    name decides): the ``layer_index``/``role`` columns of their ``layers`` tables, or, for
    tables without them, :func:`graphnn.analyses.roles.partition_role` of the name and kind."""
    out: dict[str, tuple[int | None, str | None]] = {}
    for a in analyses.values():
        for name, pair in _roles_of(a.layers, "layer", grouping.partition_role_function(a.layers)).items():
            out.setdefault(name, pair)
    return out


def block_roles(analyses: Mapping[str, object]) -> dict[str, tuple[int | None, str | None]]:
    """``{block name: (layer_index, role)}`` as :func:`layer_roles`, for the ``blocks`` tables
    (:func:`graphnn.analyses.roles.name_role` where a table has no role columns)."""
    out: dict[str, tuple[int | None, str | None]] = {}
    for a in analyses.values():
        for name, pair in _roles_of(a.blocks, "block", None).items():
            out.setdefault(name, pair)
    return out


def _roles_of(frame: pd.DataFrame, key: str, fn) -> dict[str, tuple[int | None, str | None]]:
    """``{name: (layer_index, role)}`` of one table: its own columns, else ``fn(name)``
    (:func:`graphnn.report.grouping.role_columns`)."""
    r = grouping.role_columns(frame, key, fn)
    return {str(n): clean_pair(li, ro) for n, li, ro in zip(r[key], r["layer_index"], r["role"])}


def _append_roles(wide: pd.DataFrame, key: str, roles: Mapping[str, tuple]) -> pd.DataFrame:
    """``wide`` with ``layer_index`` (nullable ``Int64``) and ``role`` (str or ``None``) appended,
    looked up by its ``key`` column (``None`` where ``roles`` has no entry)."""
    return set_roles_(wide, wide[key].astype(str), roles)
