"""``analyse``: strength, strength variance, eigenvector centrality and hypercores in one call,
reading every block once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..errors import InvalidParameterError
from ..graph import Block, LayeredGraph
from ..validation import check_bool, check_choice
from ._blocks import (AbsBlock, NodeSpace, Weighting, masked, place, resolve_device, resolve_dtype,
                      signed_and_abs_sums, use_copy)
from .centrality import check_options, leading_eigenvector
from .components import component_labels
from .hypercore import _weighting, as_integers, cores_on
from .roles import add_role_columns
from .spectral import SPECTRAL_COLUMNS, block_spectrum, resolve_spectral, join_weightwatcher, weightwatcher_alpha
from .strength import (STATS, add_block_sums, block_tensor, describe, neuron_frame, tensor_strength_variance,
                       unbiased_var)

#: Statistics of the per-layer table, in column order.
LAYER_STATS = STATS + ("max",)
_BLOCK_COLUMNS = ["block", "param", "src", "dst", "n_dst", "n_src", "edges", "kind", "aggregation",
                  "J", "var_rows", "var_cols", "mean_abs_weight"]


@dataclass
class Analysis:
    """Everything :func:`analyse` computed.

    ``neurons``: one row per neuron, ``layer, neuron, in_strength, out_strength, strength``
    (total), ``abs_strength`` (total of |w|) when strength is on, ``centrality`` when centrality
    is on, ``core`` when cores are on (``core_in``/``core_out`` for ``core_scope="block"``).
    ``layers``: one row per partition, ``layer, size, kind``, then ``<metric>_<stat>`` for each
    neuron metric and the stats ``mean, var, std, cv, max`` (unbiased var; cv = std / |mean|).
    ``blocks``: one row per block, ``block, param, src, dst, n_dst, n_src, edges, kind,
    aggregation, J, var_rows, var_cols`` (Scabini et al.'s tensor view, see
    :func:`graphnn.analyses.strength.block_tensor`), ``mean_abs_weight`` (over structural
    edges) and, with ``spectral=True``, ``spectral_norm, stable_rank, frobenius_norm`` of the
    block's signed matrix (:mod:`graphnn.analyses.spectral`); ``ww_alpha`` with
    ``weightwatcher=True``. Every table ends with ``layer_index`` (nullable Int64) and ``role``
    (str or None): the transformer block and role read from the names
    (:mod:`graphnn.analyses.roles`; None for names that are not transformer weights).
    ``centrality_info``: eigenvalue, iterations, converged, residual, solver, normalise.
    ``options``: the options used. ``runtime_s``: wall time; ``timings``: seconds per step.
    ``null``: with ``analyse(..., null=K)``, the null-model baseline of
    :func:`graphnn.null_model` (observed value, null mean and std, z, p per layer and metric);
    ``None`` otherwise.
    """

    neurons: pd.DataFrame
    layers: pd.DataFrame
    blocks: pd.DataFrame
    centrality_info: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    runtime_s: float = 0.0
    timings: dict = field(default_factory=dict)
    null: pd.DataFrame | None = None

    def _repr_html_(self) -> str:
        """A short HTML summary for Jupyter: counts, the centrality solve, the first rows of the
        layer and block tables, the null model's largest |z| (:mod:`graphnn.html_summary`)."""
        from ..html_summary import analysis_html

        return analysis_html(self)

    def __repr__(self) -> str:
        return (f"Analysis({len(self.layers)} layers, {len(self.neurons)} neurons, {len(self.blocks)} blocks, "
                f"columns={list(self.neurons.columns[2:])}, {self.runtime_s:.2f} s)")


def analyse(
    g: LayeredGraph,
    *,
    strength: bool = True,
    centrality: bool = True,
    core: bool = True,
    normalise: str = "l2",
    tol: float | None = None,
    max_iter: int = 10_000,
    core_scope: str = "network",
    core_threshold: float | None = None,
    core_top: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[str, int, int], None] | None = None,
    client: Any = None,
    per_component: bool = False,
    null: int | None = None,
    null_kind: str = "shuffle",
    seed: int | None = None,
    spectral: bool | str = "auto",
    weightwatcher: bool = False,
) -> Analysis:
    """Strength (signed and |w|), strength variance, eigenvector centrality and hypercore
    numbers of ``g``, reading every block's matrix once. Returns an :class:`Analysis`.

    ``strength``/``centrality``/``core`` switch the parts (the block table is always made).
    ``normalise``, ``tol``, ``max_iter``, ``per_component`` are those of
    :func:`graphnn.eigenvector_centrality` (``per_component=True`` adds a ``component`` column);
    ``core_scope``, ``core_threshold``, ``core_top`` are :func:`graphnn.hypercore`'s ``scope``,
    ``threshold`` and ``top``. ``progress(step, done, total)`` is called as the steps ``load``,
    ``centrality`` and ``hypercore`` advance. A bad option raises
    :class:`~graphnn.errors.InvalidParameterError`.

    ``spectral``: add the block table's spectral columns (one SVD or a few dozen Lanczos
    products per block, :mod:`graphnn.analyses.spectral`); ``"auto"`` (default): only for graphs
    of at most ``spectral.AUTO_MAX_EDGES`` (1e8) edges, ``a.options["spectral"]`` says which. ``weightwatcher``: add ``ww_alpha``,
    WeightWatcher's α per layer (needs ``pip install 'graphnn[weightwatcher]'``; reads every
    mapped parameter once more).

    ``null=K``: also compare the metrics with ``K`` null copies of ``g`` (``null_kind``:
    ``"shuffle"`` or ``"rewire"``; ``seed`` makes it reproducible), stored as ``a.null``: see
    :func:`graphnn.null_model` and docs/null-models.md. Not with ``client``.

    ``client``: a ``distributed.Client``: the same analyses run on its Dask workers, blocks
    placed by shard (:mod:`graphnn.distributed`; ``device`` is then where each worker computes).
    """
    check_bool("per_component", per_component)
    if null is not None:
        from .null_model import check_null

        check_null(null, null_kind, seed)
        if client is not None:
            raise InvalidParameterError("null= runs on one process only in this version: leave out client= "
                                        "(or the --dask option) to compute a null-model baseline")
    spectral = resolve_spectral(g.num_edges, spectral)
    check_bool("weightwatcher", weightwatcher)
    if client is not None:
        from ..distributed import analyse_distributed

        a = analyse_distributed(
            g, client, strength=strength, centrality=centrality, core=core, normalise=normalise, tol=tol,
            max_iter=max_iter, core_scope=core_scope, core_threshold=core_threshold, core_top=core_top,
            dtype=dtype, device=device, progress=progress, per_component=per_component, spectral=spectral)
        return _with_weightwatcher(g, a) if weightwatcher else a
    t_start = time.perf_counter()
    check_options(normalise, "auto", max_iter)
    check_choice("core_scope", core_scope, ("network", "block"))
    for name, flag in (("strength", strength), ("centrality", centrality), ("core", core)):
        check_bool(name, flag)
    weighting = _weighting(g, core_threshold, core_top) if core else Weighting()
    dev = resolve_device(device)
    dt = resolve_dtype(g.num_edges, dtype)
    options = {"strength": strength, "centrality": centrality, "core": core, "normalise": normalise,
               "tol": tol, "max_iter": max_iter, "core_scope": core_scope, "core_threshold": core_threshold,
               "core_top": core_top, "dtype": str(dt).replace("torch.", ""), "device": str(dev),
               "per_component": per_component, "spectral": spectral, "weightwatcher": weightwatcher}
    timings: dict[str, float] = {}

    n = g.num_nodes
    sums = {k: np.zeros(n) for k in ("in", "out", "abs_in", "abs_out")}
    block_recs: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    cen_blocks: list[AbsBlock] = []
    core_blocks: list[AbsBlock] = []
    todo = list(g.blocks.values())
    for i, b in enumerate(todo):
        if progress:
            progress("load", i, len(todo))
        raw = b.tensor()  # read once: the matrix and (for aggregated blocks) the tensor view J
        w = masked(b, b.matrix(tensor=raw))
        copy = use_copy(g.num_edges, dev, w.dtype)
        rows, cols, arows, acols = signed_and_abs_sums(w)
        add_block_sums(g, b, rows, cols, sums["in"], sums["out"])
        add_block_sums(g, b, arows, acols, sums["abs_in"], sums["abs_out"])
        block_recs.append(_block_record(b, rows, cols, arows, raw, w if spectral else None))
        release_pages(raw)  # a memory-mapped parameter: its pages leave RSS (a no-op otherwise)
        del raw
        if centrality or (core and not weighting.integral):
            ab = AbsBlock(b, w, Weighting(), dt, dev, copy)
            ab.set_abs_sums(arows, acols)
            if centrality:
                cen_blocks.append(ab)
            if core and not weighting.integral:
                core_blocks.append(ab)
        if core and weighting.integral:
            core_blocks.append(AbsBlock(b, w, weighting, dt, dev, copy))
        release_pages(w)
        del w
    if progress:
        progress("load", len(todo), len(todo))
    timings["load_and_strength"] = time.perf_counter() - t0
    if spectral:  # measured inside the loading loop, reported on its own
        timings["spectral"] = sum(r.pop("_spectral_s", 0.0) for r in block_recs)
        timings["load_and_strength"] -= timings["spectral"]

    columns: dict[str, np.ndarray] = strength_columns(sums) if strength else {}

    centrality_info: dict[str, Any] = {}
    if centrality:
        t0 = time.perf_counter()
        if progress:
            progress("centrality", 0, 1)
        space = NodeSpace.of_graph(g)
        placed = place(space, cen_blocks)
        x, centrality_info = leading_eigenvector(space.n, placed, normalise=normalise, tol=tol, max_iter=max_iter,
                                                 device=dev, dtype=dt, per_component=per_component)
        columns["centrality"] = x
        if per_component:
            columns["component"] = component_labels(space.n, placed)
        del cen_blocks, placed
        if progress:
            progress("centrality", 1, 1)
        timings["centrality"] = time.perf_counter() - t0
    if core:
        t0 = time.perf_counter()
        core_cols = cores_on(g, core_blocks, core_scope, dev, progress=progress)
        columns.update(as_integers(core_cols) if weighting.integral else core_cols)
        timings["hypercore"] = time.perf_counter() - t0
    del core_blocks

    neurons = neuron_frame(g, columns)
    layers = _layer_table(g, neurons, [c for c in columns])
    blocks = block_frame(block_recs, spectral)
    add_role_columns(g, neurons, layers, blocks)
    a = Analysis(neurons=neurons, layers=layers, blocks=blocks, centrality_info=centrality_info,
                 options=options, runtime_s=time.perf_counter() - t_start, timings=timings)
    a = _with_weightwatcher(g, a) if weightwatcher else a
    return a if null is None else _with_null(g, a, null, null_kind, seed, normalise, tol, max_iter, dtype, device,
                                                   progress)


def block_frame(block_recs: list[dict[str, Any]], spectral: bool) -> pd.DataFrame:
    """The block table from :func:`_block_record` rows (with the spectral columns when
    ``spectral``; the role columns are added by :func:`~graphnn.analyses.roles.add_role_columns`)."""
    columns = _BLOCK_COLUMNS + (list(SPECTRAL_COLUMNS) if spectral else [])
    return pd.DataFrame(block_recs, columns=columns).astype(
        {"n_dst": "int64", "n_src": "int64", "edges": "int64", "J": "float64", "var_rows": "float64",
         "var_cols": "float64", "mean_abs_weight": "float64", **{c: "float64" for c in columns[len(_BLOCK_COLUMNS):]}})


def _with_weightwatcher(g: LayeredGraph, a: Analysis) -> Analysis:
    """``a`` with WeightWatcher's ``ww_alpha`` joined into its block table (before the role
    columns, which stay last)."""
    t0 = time.perf_counter()
    blocks = join_weightwatcher(a.blocks, weightwatcher_alpha(g))
    last = [c for c in ("layer_index", "role") if c in blocks.columns]
    a.blocks = blocks[[c for c in blocks.columns if c not in last] + last]
    a.timings["weightwatcher"] = time.perf_counter() - t0
    a.options["weightwatcher"] = True  # also for an analysis made on Dask workers (which records False)
    a.runtime_s += a.timings["weightwatcher"]
    return a


def _with_null(g: LayeredGraph, a: Analysis, n, kind, seed, normalise, tol, max_iter, dtype, device,
               progress=None) -> Analysis:
    """``a`` with its null-model baseline (:func:`graphnn.analyses.null_model.attach_null`;
    ``progress`` sees the step ``null``, one tick per copy)."""
    from .null_model import attach_null

    return attach_null(g, a, n, kind, seed, normalise=normalise, tol=tol, max_iter=max_iter, dtype=dtype,
                       device=device, progress=progress)


def strength_columns(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The neuron table's strength columns from the summed ``in``/``out``/``abs_in``/``abs_out``
    (signed in, signed out, their total, and the total of |w|)."""
    return {"in_strength": sums["in"], "out_strength": sums["out"], "strength": sums["in"] + sums["out"],
            "abs_strength": sums["abs_in"] + sums["abs_out"]}


def _layer_table(g: LayeredGraph, neurons: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    recs = []
    for name, p in g.partitions.items():
        o = g.offset(name)
        rec: dict[str, Any] = {"layer": name, "size": p.size, "kind": p.kind}
        for m in metrics:
            values = neurons[m].to_numpy(dtype=np.float64, na_value=np.nan)[o:o + p.size]
            values = values[~np.isnan(values)]
            stats = describe(values) if values.size else dict.fromkeys(LAYER_STATS, float("nan"))
            rec.update({f"{m}_{s}": stats[s] for s in LAYER_STATS})
        recs.append(rec)
    return pd.DataFrame(recs)


def _block_record(b: Block, rows: torch.Tensor, cols: torch.Tensor, abs_rows: torch.Tensor,
                  raw: torch.Tensor, w: torch.Tensor | None = None) -> dict[str, Any]:
    """One row of the block table from the block's signed and |w| row/column sums; given the
    block's masked matrix ``w``, its spectral columns too (and ``_spectral_s``, their seconds)."""
    extra: dict[str, Any] = {}
    if w is not None:
        t0 = time.perf_counter()
        extra = block_spectrum(w, name=b.name)
        extra["_spectral_s"] = time.perf_counter() - t0
    if b.aggregation is None:  # the tensor view is this matrix: reuse its sums
        vr, vc = unbiased_var(rows.cpu().numpy()), unbiased_var(cols.cpu().numpy())
        j = 0.5 * (vr + vc)
    else:
        j, vr, vc = tensor_strength_variance(block_tensor(b, tensor=raw))
    return {"block": b.name, "param": b.param, "src": b.src, "dst": b.dst, "n_dst": b.n_dst,
            "n_src": b.n_src, "edges": b.num_edges, "kind": b.kind, "aggregation": b.aggregation,
            "J": j, "var_rows": vr, "var_cols": vc,
            "mean_abs_weight": float(abs_rows.sum()) / b.num_edges if b.num_edges else float("nan"), **extra}
