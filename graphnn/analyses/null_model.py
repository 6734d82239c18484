"""Null-model baselines: is a layer's strength variance, centrality concentration or hypercore
profile unusual for weights like these, or what any arrangement of them would give?

:func:`null_model` measures the metrics on ``g`` (the *observed* values) and on ``n`` null copies
of ``g``, then reports per metric the null mean and standard deviation, a z-score and an
empirical two-sided p-value (docs/null-models.md).

Null copies (:func:`null_copy`) are lazy: each block's loader returns a permuted copy of the
block's own tensor, made when the block is read and regenerated identically on every read
(the permutation comes from a seed per draw and block), so the original and one block's copy are
in memory, never two copies of the model; an original read from a memory-mapped checkpoint gives
its resident pages back once the copy is made (:func:`graphnn._pages.release_pages`). Every null
permutes the block's own entries of the parameter tensor, so the multiset of the tensor's
entries is kept exactly; entries that belong to other blocks of the same parameter (q/k/v
parts, other experts) stay where they are, and a grouped conv's entries stay inside its
diagonal groups (its tensor holds only those).

* ``kind="shuffle"``: a uniformly random permutation of the block's tensor entries (as
  WeightWatcher's ``randomize`` does per layer). Destroys every structure, also inside a conv
  kernel; for blocks without aggregation (Linear, attention projections) the matrix is that
  tensor, so its multiset is kept too; an aggregated matrix (conv kernel norms) is recomputed
  from the shuffled entries.
* ``kind="rewire"`` permutes whole edges (the entries of one edge, a kernel slice or the
  flattened positions of one channel, move together), so the matrix's multiset is kept too.
  It is a strength-preserving null after Rubinov & Sporns (2011, NeuroImage
  56:2068-2079, "Weight-conserving characterization of complex functional brain networks"),
  applied to each block (each diagonal group of a grouped conv) as a complete bipartite graph.
  (1) The sign pattern (which edges are positive, which are <= 0) is randomised keeping every
  neuron's number of positive edges in the block exactly, with the curveball algorithm (Strona
  et al. 2014, Nat. Commun. 5:4114). (2) Within each sign class the weights are re-assigned as
  in Rubinov & Sporns: the edges are ranked by their expected weight, the product of the
  remaining (not yet assigned) target strengths of their two neurons, the |weights| are sorted,
  and a random subset of ranks gets the weight of the same rank; the remaining strengths are
  updated and the ranking redone, ``REWIRE_ROUNDS`` times in all (the batched form of their
  ``wei_freq`` re-sorting). (3) Swaps of two weights of one class in one row (column) that
  bring the column (row) strengths closer to their targets, greedy, in the manner of Ansmann &
  Lehnertz (2011, Phys. Rev. E 84:026103); this step is graphnn's addition: without it the
  row sums of a Gaussian 128 x 256 block are off by ~20 % of their spread, with it the largest
  error is ~0.3 % (~9 % on a 10 x 784 block, whose columns have 10 edges). Kept exactly: the
  multisets, the structural edges, each neuron's positive and non-positive degree in the
  block. Kept approximately: each neuron's positive and negative strength in the block
  (strengths of the matrix, after a conv's kernel aggregation), hence its signed and |w|
  strength, and for blocks without aggregation ``J``, whose null spread is then tiny (a
  z-score of such a ``J`` against this null says little). A block of one row or one column
  cannot move at all.

Zero weights count as non-positive. Blocks are rewired independently, so a neuron's strength
in the whole graph is kept as well as its strength in each block.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..errors import GraphnnError, InvalidParameterError
from ..graph import Block, LayeredGraph
from ..validation import check_choice, check_number, check_seed

KINDS = ("shuffle", "rewire")

#: Metric name -> (scopes it is reported at, the part of :func:`graphnn.analyse` it needs).
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "strength_variance": (("block", "layer"), "strength"),
    "centrality_gini": (("layer", "network"), "centrality"),
    "centrality_top1": (("layer", "network"), "centrality"),
    "max_core": (("layer", "network"), "core"),
    "core_size": (("layer", "network"), "core"),
}
#: Names that select a group of metrics.
METRIC_GROUPS = {"strength": ("strength_variance",), "centrality": ("centrality_gini", "centrality_top1"),
                 "hypercore": ("max_core", "core_size")}
#: The ``layer`` value of network-scope rows.
NETWORK = "(network)"
#: Columns of the :func:`null_model` frame, in order.
COLUMNS = ["layer", "scope", "metric", "observed", "null_mean", "null_std", "z", "p", "n", "kind", "note",
           "layer_index", "role"]
#: Re-ranking rounds of the rewire null's weight assignment.
REWIRE_ROUNDS = 8
#: Curveball sweeps (each: one trade per pair of rows, in a random pairing).
CURVEBALL_SWEEPS = 10
#: Batches of candidate swaps of the rewire null's refinement.
REFINE_BATCHES = 400


def check_metrics(metrics: str | Iterable[str] | None) -> tuple[str, ...]:
    """The metric names of ``metrics`` (``None``: all of :data:`METRICS`; group names
    ``strength``, ``centrality``, ``hypercore`` expand), in :data:`METRICS` order; an unknown
    name or an empty selection raises :class:`~graphnn.errors.InvalidParameterError`."""
    if metrics is None:
        return tuple(METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    wanted: set[str] = set()
    for m in names:
        if m in METRIC_GROUPS:
            wanted.update(METRIC_GROUPS[m])
        elif m in METRICS:
            wanted.add(m)
        else:
            known = ", ".join(list(METRICS) + list(METRIC_GROUPS))
            raise InvalidParameterError(f"unknown null-model metric {m!r}: use one or more of {known}")
    if not wanted:
        raise InvalidParameterError("metrics is empty: give at least one null-model metric, or None for all")
    return tuple(m for m in METRICS if m in wanted)


# -- null copies ---------------------------------------------------------------------------------
def own_entries(b: Block) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices (into the contiguous parameter tensor) of the entries that belong to block
    ``b``, and the matrix row and column of each (entries of other blocks of the same parameter
    are left out)."""
    rows, cols = b.entry_index("matrix")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    pos = (rows >= 0).nonzero().squeeze(1)
    return pos, rows[pos], cols[pos]


def edge_units(b: Block) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block's structural edges in row-major matrix order: ``units`` (``(E, c)`` int64, the
    flat indices into the contiguous parameter tensor of the ``c`` entries that make each edge:
    1 for a plain matrix, the kernel size for a conv), and each edge's matrix ``row`` and ``col``.
    Entries of other blocks of the same parameter are not in it."""
    pos, rows, cols = own_entries(b)
    eid = rows * b.n_src + cols
    if eid.numel() > 1 and not bool((eid[1:] >= eid[:-1]).all()):  # e.g. HF Conv1D (stored in x out)
        order = torch.argsort(eid, stable=True)
        eid, pos = eid[order], pos[order]
    ids, counts = torch.unique_consecutive(eid, return_counts=True)
    c = int(counts[0]) if counts.numel() else 1
    if counts.numel() and not bool((counts == c).all()):
        raise GraphnnError(f"block {b.name}: its edges combine different numbers of tensor entries, so a "
                           "null model cannot permute them; leave this layer out (--exclude)")
    return pos.reshape(-1, c), ids // b.n_src, ids % b.n_src


def shuffle_permutation(num_edges: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``num_edges`` edges (new edge e takes old edge perm[e])."""
    return rng.permutation(num_edges)


def curveball(b: np.ndarray, rng: np.random.Generator, sweeps: int = CURVEBALL_SWEEPS) -> np.ndarray:
    """A random 0/1 matrix with the row and column sums of the boolean matrix ``b`` (the
    curveball algorithm of Strona et al. 2014: two rows trade the columns that only one of them
    has, at random, keeping how many each has). Each sweep pairs the rows at random and makes
    one trade per pair."""
    out = b.copy()
    nr, nc = out.shape
    if nr < 2 or nc < 2:
        return out
    half = nr // 2
    for _ in range(sweeps):
        order = rng.permutation(nr)
        a, c = order[0:2 * half:2], order[1:2 * half:2]
        xa, xc = out[a], out[c]
        diff = xa ^ xc
        n_a = (xa & diff).sum(axis=1)
        keys = rng.random(diff.shape)
        keys[~diff] = 2.0
        ranks = keys.argsort(axis=1, kind="stable").argsort(axis=1, kind="stable")
        to_a = diff & (ranks < n_a[:, None])
        out[a] = (xa & ~diff) | to_a
        out[c] = (xc & ~diff) | (diff & ~to_a)
    return out


def assign_weights(magnitudes: np.ndarray, rows: np.ndarray, cols: np.ndarray, target_rows: np.ndarray,
                   target_cols: np.ndarray, rng: np.random.Generator, rounds: int = REWIRE_ROUNDS) -> np.ndarray:
    """Rubinov & Sporns' weight re-assignment: which of the non-negative ``magnitudes`` each
    position ``(rows[p], cols[p])`` gets (an index into ``magnitudes``; a permutation), so that
    the row and column sums come close to ``target_rows``/``target_cols``. Each round ranks the
    open positions by the product of their remaining target strengths (ties at random) and
    gives a random subset of ranks the open weight of the same rank (weights sorted)."""
    m = magnitudes.size
    out = np.empty(m, dtype=np.int64)
    open_w = np.argsort(magnitudes, kind="stable")
    open_p = np.arange(m)
    got_r, got_c = np.zeros(target_rows.size), np.zeros(target_cols.size)
    batch = max(1, math.ceil(m / max(1, rounds)))
    while open_p.size:
        left_r = np.clip(target_rows - got_r, 0.0, None)
        left_c = np.clip(target_cols - got_c, 0.0, None)
        expected = left_r[rows[open_p]] * left_c[cols[open_p]]
        ranked = open_p[np.lexsort((rng.random(open_p.size), expected))]
        k = min(batch, open_p.size)
        picked = np.zeros(open_p.size, dtype=bool)
        picked[rng.choice(open_p.size, size=k, replace=False) if k < open_p.size else slice(None)] = True
        pos, w = ranked[picked], open_w[picked]
        out[pos] = w
        np.add.at(got_r, rows[pos], magnitudes[w])
        np.add.at(got_c, cols[pos], magnitudes[w])
        open_p, open_w = ranked[~picked], open_w[~picked]
    return refine_assignment(out, magnitudes, rows, cols, target_rows, target_cols, rng)


def refine_assignment(choice: np.ndarray, magnitudes: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      target_rows: np.ndarray, target_cols: np.ndarray, rng: np.random.Generator,
                      batches: int = REFINE_BATCHES) -> np.ndarray:
    """Bring the row and column sums of an assignment (``choice``: position -> weight index)
    closer to their targets by swapping the weights of two positions when that lowers the
    squared error of the sums (a greedy form of the constrained randomisation of Ansmann &
    Lehnertz 2011, Phys. Rev. E 84:026103). Batches alternate between swaps inside one row
    (they change two column sums only) and swaps inside one column (two row sums only); a batch
    applies its improving swaps at once, about one per column (row) so that they do not
    overshoot together; it stops when 20 batches gain less than 1 %. The multiset is kept."""
    m = choice.size
    if m < 2:
        return choice
    choice = choice.copy()
    w = magnitudes[choice]
    err = {"r": np.bincount(rows, weights=w, minlength=target_rows.size) - target_rows,
           "c": np.bincount(cols, weights=w, minlength=target_cols.size) - target_cols}
    lines = {}
    for side, ids in (("r", rows), ("c", cols)):  # positions grouped by row (column)
        order = np.argsort(ids, kind="stable")
        count = np.bincount(ids, minlength=err[side].size)
        lines[side] = (order, np.concatenate([[0], np.cumsum(count)[:-1]]), count)
    last = float((err["r"] ** 2).sum() + (err["c"] ** 2).sum())
    for t in range(batches):
        if t % 20 == 19:  # stop once 20 batches gain less than 1 % of the squared error
            now = float((err["r"] ** 2).sum() + (err["c"] ** 2).sum())
            if now >= 0.99 * last:
                break
            last = now
        keep, move = ("r", "c") if t % 2 == 0 else ("c", "r")  # swap inside a row: columns move
        fixed, moved = (rows, cols) if keep == "r" else (cols, rows)
        order, start, count = lines[keep]
        size = max(1, min(m // 2, 2 * err[move].size))
        p = rng.integers(0, m, size)
        line = fixed[p]
        q = order[start[line] + (rng.random(size) * count[line]).astype(np.int64)]
        j, l = moved[p], moved[q]
        d = w[q] - w[p]
        e = err[move]
        good = (j != l) & (2 * d * (e[j] - e[l]) + 2 * d * d < 0)
        p, q, d, j, l = p[good], q[good], d[good], j[good], l[good]
        if not p.size:
            continue
        used = np.bincount(np.concatenate([p, q]), minlength=m)  # each position in one swap at most
        crowd = np.bincount(np.concatenate([j, l]), minlength=e.size)
        ok = (used[p] == 1) & (used[q] == 1) & (rng.random(p.size) * np.maximum(crowd[j], crowd[l]) < 1.0)
        p, q, d, j, l = p[ok], q[ok], d[ok], j[ok], l[ok]
        choice[p], choice[q] = choice[q], choice[p].copy()
        w[p], w[q] = w[q], w[p].copy()
        np.add.at(e, j, d)
        np.add.at(e, l, -d)
    return choice


def rewire_permutation(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, row_groups: np.ndarray,
                       col_groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rewire null's permutation of a block's structural edges (``values``, their matrix
    ``rows``/``cols``; ``row_groups``/``col_groups``: the group of every matrix row/column, all
    zeros for a dense block): per group, the sign pattern by :func:`curveball`, then the weights
    of each sign class by :func:`assign_weights` (module docstring)."""
    perm = np.empty(values.size, dtype=np.int64)
    group_of_edge = row_groups[rows]
    for grp in np.unique(group_of_edge):
        idx = np.nonzero(group_of_edge == grp)[0]
        r_ids, r_loc = np.unique(rows[idx], return_inverse=True)
        c_ids, c_loc = np.unique(cols[idx], return_inverse=True)
        if r_ids.size * c_ids.size != idx.size:  # a bug, never a user error
            raise AssertionError("a group of a block is not a complete bipartite sub-block")
        v = values[idx]
        pattern = np.zeros((r_ids.size, c_ids.size), dtype=bool)
        pattern[r_loc, c_loc] = v > 0
        new_pattern = curveball(pattern, rng)[r_loc, c_loc]
        for old, new in ((v > 0, new_pattern), (~(v > 0), ~new_pattern)):
            src, dst = idx[old], idx[new]
            if not src.size:
                continue
            mags = np.abs(values[src])
            t_r = np.bincount(r_loc[old], weights=mags, minlength=r_ids.size)
            t_c = np.bincount(c_loc[old], weights=mags, minlength=c_ids.size)
            choice = assign_weights(mags, r_loc[new], c_loc[new], t_r, t_c, rng)
            perm[dst] = src[choice]
    return perm


def _groups(b: Block) -> tuple[np.ndarray, np.ndarray]:
    if b.groups == 1:
        return np.zeros(b.n_dst, dtype=np.int64), np.zeros(b.n_src, dtype=np.int64)
    r, c = b._groups_of()
    return r.numpy(), c.numpy()


def permuted_tensor(b: Block, kind: str, seed: np.random.SeedSequence) -> torch.Tensor:
    """``b``'s parameter tensor with the block's own entries (``shuffle``) or edges (``rewire``)
    permuted by the ``kind`` null drawn from ``seed`` (the same tensor on every call with the
    same seed)."""
    raw = b.tensor()
    rng = np.random.default_rng(seed)
    if kind == "shuffle":  # every entry on its own (a conv's kernel slices are broken up too)
        units = own_entries(b)[0]
        perm = shuffle_permutation(units.shape[0], rng)
    else:
        units, er, ec = edge_units(b)
        m = b.matrix(torch.float64, tensor=raw).cpu()
        rg, cg = _groups(b)
        perm = rewire_permutation(m[er, ec].numpy(), er.numpy(), ec.numpy(), rg, cg, rng)
    if tuple(raw.shape) != tuple(b.param_shape) and b._entry_index is not None:  # a bug, never a user error
        raise AssertionError(f"block {b.name}: tensor {tuple(raw.shape)} != {b.param_shape}")
    flat = torch.clone(raw, memory_format=torch.contiguous_format).view(-1)
    release_pages(raw)  # the original's last read: a memory-mapped parameter's pages leave RSS
    units = units.to(flat.device)
    flat[units] = flat[units[torch.from_numpy(perm).to(flat.device)]]
    return flat.view(raw.shape)


def null_copy(g: LayeredGraph, kind: str = "shuffle", seed: int | np.random.SeedSequence | None = None) -> LayeredGraph:
    """A lazy null copy of ``g``: the same partitions and blocks, each block's loader returning
    its tensor with the block's edges permuted by the ``kind`` null (module docstring). ``seed``
    (an integer or a ``numpy.random.SeedSequence``) fixes every block's permutation; the copy
    regenerates it on each read, so it costs one block's tensor at a time. ``copy.meta`` is
    ``g``'s with ``meta["null"]`` (kind, seed entropy and spawn key) added."""
    check_choice("kind", kind, KINDS)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(check_seed("seed", seed))
    blocks = []
    for i, b in enumerate(g.blocks.values()):
        ss = np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (i,))
        blocks.append(replace(b, _load=(lambda b=b, ss=ss: permuted_tensor(b, kind, ss)), _on_load=None))
    coverage = [dict(r) for r in getattr(g, "_coverage", [])]
    meta = {**getattr(g, "meta", {}), "null": {"kind": kind, "seed_entropy": root.entropy,
                                               "spawn_key": tuple(root.spawn_key)}}
    return LayeredGraph(list(g.partitions.values()), blocks, coverage=coverage,
                        source=f"{kind} null of {g.source or 'a graph'}", notes=list(g.notes), meta=meta)


# -- metrics -------------------------------------------------------------------------------------
def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values: ``sum_ij |x_i - x_j| / (2 n^2 mean)``; 0 for
    equal values, ``(n-1)/n`` when one value holds everything; NaN when the sum is 0 or empty."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, total = x.size, float(x.sum()) if x.size else 0.0
    if n == 0 or total <= 0:
        return float("nan")
    return float(2.0 * np.dot(np.arange(1, n + 1), x) / (n * total) - (n + 1) / n)


def top_share(x: np.ndarray, fraction: float = 0.01) -> float:
    """Share of the total held by the largest ``ceil(fraction * n)`` values (at least one)."""
    x = np.asarray(x, dtype=np.float64)
    total = float(x.sum()) if x.size else 0.0
    if x.size == 0 or total <= 0:
        return float("nan")
    k = max(1, math.ceil(fraction * x.size))
    return float(np.sort(x)[-k:].sum() / total)


def measure(g: LayeredGraph, a, metrics: Sequence[str], core_level: float | None) -> dict[tuple[str, str, str], float]:
    """The metrics of an :class:`~graphnn.analyses.summary.Analysis` of ``g``, keyed by
    ``(layer, scope, metric)`` in output order. ``core_level`` is the ``k`` of ``core_size``."""
    out: dict[tuple[str, str, str], float] = {}
    if "strength_variance" in metrics:
        for name, j in zip(a.blocks["block"], a.blocks["J"]):
            out[(name, "block", "strength_variance")] = float(j)
    columns = {"centrality_gini": "centrality", "centrality_top1": "centrality", "max_core": "core",
               "core_size": "core"}
    values = {c: a.neurons[c].to_numpy(dtype=np.float64, na_value=np.nan)
              for c in set(columns.values()) if c in a.neurons.columns}
    var = dict(zip(a.layers["layer"], a.layers["strength_var"])) if "strength_var" in a.layers.columns else {}

    def stat(metric: str, x: np.ndarray) -> float:
        if metric == "centrality_gini":
            return gini(x)
        if metric == "centrality_top1":
            return top_share(x)
        if metric == "max_core":
            return float(x.max()) if x.size else float("nan")
        return float(np.count_nonzero(x >= core_level))  # core_size

    scoped = [m for m in metrics if m != "strength_variance"]
    for name, p in g.partitions.items():
        o = g.offset(name)
        if "strength_variance" in metrics:
            out[(name, "layer", "strength_variance")] = float(var.get(name, float("nan")))
        for m in scoped:
            out[(name, "layer", m)] = stat(m, values[columns[m]][o:o + p.size])
    for m in scoped:
        out[(NETWORK, "network", m)] = stat(m, values[columns[m]])
    return out


def null_statistics(observed: float, draws: Sequence[float]) -> dict[str, Any]:
    """Null mean, std (unbiased), z = (observed - mean) / std, and the empirical two-sided
    p = (r + 1) / (K + 1) with r = #draws with |draw - mean| >= |observed - mean|, of one metric
    over ``K`` null draws; ``note`` says why z or p is NaN."""
    x = np.asarray(draws, dtype=np.float64)
    k = x.size
    rec: dict[str, Any] = {"null_mean": float("nan"), "null_std": float("nan"), "z": float("nan"),
                           "p": float("nan"), "n": k, "note": ""}
    finite = x[np.isfinite(x)]
    if not math.isfinite(observed):
        rec["note"] = "the observed value is undefined (e.g. all-zero centrality)"
        if finite.size:
            rec["null_mean"] = float(finite.mean())
        return rec
    if finite.size < k:
        rec["note"] = f"{k - finite.size} of {k} null draws are undefined"
        return rec
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if k > 1 else float("nan")
    rec["null_mean"], rec["null_std"] = mean, std
    dev = abs(observed - mean)
    # a draw as far from the mean as the observation, up to rounding, counts as "at least as extreme"
    tol = 1e-12 * max(abs(mean), abs(observed), 1e-300)
    r = int(np.count_nonzero(np.abs(x - mean) >= dev - tol))
    rec["p"] = (r + 1) / (k + 1)
    if k < 2:
        rec["note"] = "one null draw has no spread: use n >= 2 for a z-score"
    elif not std > tol:
        rec["null_std"] = 0.0
        rec["note"] = ("every null draw gives the same value (the null keeps this metric)"
                       if dev <= tol else "every null draw gives the same value, and the observed one differs")
    else:
        rec["z"] = (observed - mean) / std
    return rec


# -- the baseline ----------------------------------------------------------------------------------
def _parts(metrics: Sequence[str]) -> dict[str, Any]:
    """The options of :func:`graphnn.analyse` that ``metrics`` need (and nothing more: no
    spectral columns where analyse has them)."""
    need = {METRICS[m][1] for m in metrics}
    return {"strength": True, "centrality": "centrality" in need, "core": "core" in need, "spectral": False}


def check_null(n: Any, kind: Any, seed: Any, metrics: Any = None) -> tuple[int, str, int | None, tuple[str, ...]]:
    """Validate the null-model options (``n`` >= 1 draws, ``kind``, ``seed``, ``metrics``)."""
    n = check_number("n", n, integer=True, positive=True)
    check_choice("kind", kind, KINDS)
    return n, kind, check_seed("seed", seed), check_metrics(metrics)


def reusable_observed(a, metrics: Sequence[str]) -> bool:
    """Whether the analysis ``a`` measured ``metrics`` (names of :data:`METRICS`) as the
    baseline's own analysis of the observed graph does: strength on (``J`` and the layers'
    ``strength_var``), centrality on and normalised over the whole graph (not
    ``per_component``) where a centrality metric is asked for, and network-scope hypercores on
    the |w| strengths (no ``core_threshold``/``core_top``) where a hypercore metric is."""
    opts = getattr(a, "options", None) or {}
    need = {METRICS[m][1] for m in metrics}
    if not opts.get("strength", True) or "strength_var" not in a.layers.columns or "J" not in a.blocks.columns:
        return False
    if "centrality" in need and (not opts.get("centrality") or opts.get("per_component")
                                 or "centrality" not in a.neurons.columns):
        return False
    if "core" in need and (not opts.get("core") or opts.get("core_scope", "network") != "network"
                           or opts.get("core_threshold") is not None or opts.get("core_top") is not None
                           or "core" not in a.neurons.columns):
        return False
    return True


def attach_null(g: LayeredGraph, a, n: int, kind: str, seed: int | None, **options) -> Any:
    """``a`` (an :class:`~graphnn.analyses.summary.Analysis` of ``g``) with ``a.null`` set to the
    :func:`null_model` frame of the metrics its enabled parts measure (strength variance always;
    centrality and hypercore metrics when those parts ran); the time goes to
    ``a.timings["null"]``."""
    import time

    t0 = time.perf_counter()
    opts = a.options
    metrics = ["strength"] + [grp for grp, on in (("centrality", opts.get("centrality")),
                                                  ("hypercore", opts.get("core"))) if on]
    a.null = null_model(g, metrics, kind=kind, n=n, seed=seed, observed=a, **options)
    a.timings["null"] = time.perf_counter() - t0
    a.runtime_s += a.timings["null"]
    a.options.update({"null": n, "null_kind": kind, "seed": seed})
    return a


def null_model(
    g: LayeredGraph,
    metrics: str | Iterable[str] | None = None,
    kind: str = "shuffle",
    n: int = 99,
    seed: int | None = None,
    *,
    normalise: str = "l2",
    tol: float | None = None,
    max_iter: int = 10_000,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[str, int, int], None] | None = None,
    observed: Any = None,
) -> pd.DataFrame:
    """Compare ``g``'s metrics with ``n`` null copies (:func:`null_copy`, ``kind="shuffle"`` or
    ``"rewire"``). Returns a tidy frame, one row per (layer, metric), with the columns
    ``layer`` (block name for ``scope="block"``, partition name for ``"layer"``,
    ``"(network)"`` for ``"network"``), ``scope``, ``metric``, ``observed``, ``null_mean``,
    ``null_std`` (unbiased), ``z`` = (observed - null_mean) / null_std, ``p`` (empirical,
    two-sided: (r + 1) / (n + 1), r = #draws at least as far from the null mean as the
    observation), ``n``, ``kind``, ``note`` (why z or p is NaN, else empty), and the
    transformer ``layer_index`` (nullable ``Int64``) and ``role`` of the row's ``layer``
    (:func:`graphnn.analyses.roles.partition_role` for a partition, ``name_role`` for a
    block; empty for the network row and for names without a role).

    Metrics (``metrics=``: names or the groups ``strength``, ``centrality``, ``hypercore``;
    default all): ``strength_variance`` (block: ``J`` of :func:`graphnn.analyse`'s block
    table; layer: the unbiased variance of the neurons' total signed strength,
    ``strength_var``); ``centrality_gini`` and ``centrality_top1`` (Gini coefficient of the
    eigenvector centrality, share of the top 1 % of neurons; per layer and network);
    ``max_core`` (largest weighted hypercore number) and ``core_size`` (neurons whose
    hypercore number is >= k, k = the median |w| strength of ``g``'s neurons, kept fixed for
    the null draws); hypercores are network-scope, without threshold. ``normalise``, ``tol``,
    ``max_iter``, ``dtype``, ``device`` are :func:`graphnn.analyse`'s.

    ``seed``: the same seed gives the same frame; ``None`` draws fresh entropy (recorded in
    ``frame.attrs["seed_entropy"]``). Warnings that the analyses raise on null copies are
    given once each. A bad option raises :class:`~graphnn.errors.InvalidParameterError`.

    ``observed``: an :class:`~graphnn.analyses.summary.Analysis` of ``g`` already computed with
    the same ``normalise``, ``tol``, ``max_iter``, ``dtype`` and ``device`` (what
    ``analyse(g, null=K)`` passes): its tables give the observed values when it measured what the
    metrics need the way the baseline does (:func:`reusable_observed`), so only the ``n`` copies
    are analysed; otherwise ``g`` is analysed once more.
    """
    from .summary import analyse

    n, kind, seed, chosen = check_null(n, kind, seed, metrics)
    options = {"normalise": normalise, "tol": tol, "max_iter": max_iter, "dtype": dtype, "device": device,
               "core_scope": "network", **_parts(chosen)}
    reuse = observed is not None and reusable_observed(observed, chosen)
    observed_analysis = observed if reuse else analyse(g, **options)
    core_level = None
    if options["core"]:
        core_level = float(np.median(observed_analysis.neurons["abs_strength"].to_numpy(dtype=np.float64)))
    observed = measure(g, observed_analysis, chosen, core_level)
    del observed_analysis
    root = np.random.SeedSequence(seed)
    draws: dict[tuple[str, str, str], list[float]] = {key: [] for key in observed}
    seen: dict[tuple[type, str], warnings.WarningMessage] = {}
    for d in range(n):
        if progress:
            progress("null", d, n)
        copy = null_copy(g, kind, np.random.SeedSequence(root.entropy, spawn_key=(d,)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = measure(copy, analyse(copy, **options), chosen, core_level)
        for w in caught:
            seen.setdefault((w.category, str(w.message)), w)
        for key in observed:
            draws[key].append(values[key])
    if progress:
        progress("null", n, n)
    for (category, message) in seen:
        warnings.warn(f"on the {kind} null copies: {message}", category, stacklevel=2)
    recs = []
    for (layer, scope, metric), obs in observed.items():
        rec = {"layer": layer, "scope": scope, "metric": metric, "observed": obs}
        rec.update(null_statistics(obs, draws[(layer, scope, metric)]))
        rec["kind"] = kind
        recs.append(rec)
    frame = pd.DataFrame(recs, columns=COLUMNS).astype(
        {"observed": "float64", "null_mean": "float64", "null_std": "float64", "z": "float64", "p": "float64",
         "n": "int64"})
    add_null_roles(g, frame)
    frame.attrs["seed_entropy"] = root.entropy
    frame.attrs["core_level"] = core_level
    return frame


def add_null_roles(g: LayeredGraph, frame: pd.DataFrame) -> pd.DataFrame:
    """Set ``layer_index`` (nullable ``Int64``) and ``role`` of the rows of a null-model
    ``frame``, in place, keyed by its ``layer`` column: a partition's by
    :func:`~graphnn.analyses.roles.partition_role` (its kind and members), a block's by
    :func:`~graphnn.analyses.roles.name_role`; ``None`` for the network row."""
    from .roles import partition_roles, role_arrays

    scope = frame["scope"]
    index, roles = role_arrays(frame["layer"].where(scope == "layer"), partition_roles(g))
    block_index, block_roles = role_arrays(frame["layer"].where(scope == "block"))
    blocks = (scope == "block").to_numpy()
    index[blocks], roles[blocks] = block_index[blocks], block_roles[blocks]
    frame["layer_index"] = index
    frame["role"] = pd.Series(roles, index=frame.index, dtype=object)
    return frame
