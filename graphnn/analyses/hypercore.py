"""k-hypercores: the weighted generalised cores of the |w| graph (graph-model.md §3).

The k-hypercore is the largest set H of neurons in which every neuron has
``sum_{u in H, u ~ v} |w_uv| >= k``; the hypercore number of v is the largest k whose
k-hypercore contains v (Batagelj & Zaveršnik's p-cores with the strength to surviving
neighbours as vertex property). graphnn's definition: the Hcore-Init paper's own code is not
public. The strength is that of the undirected adjacency ``A = sum over blocks (|W| + |W|^T)``:
a self-loop counts ``2|w|`` and parallel blocks add up, as in :func:`graphnn.strength`; so do
the parallel edges of an index-mapped block (graph-model.md §2b: columns or rows sent to the same
neuron), which the peeling sees through :class:`~graphnn.analyses._blocks.AbsBlock`'s neuron
space.

Computed exactly by peeling: repeatedly remove a neuron of minimum current strength; its number
is ``max(level so far, its strength at removal)``. Neurons are taken in batches of the k
smallest; the exact sequential order inside a batch is replayed on the batch's own k x k
adjacency, and a batch is cut where a neuron outside it could have become the minimum first, so
the result is that of the one-at-a-time peeling. Strengths are accumulated in float64; a
strength within ``1e-12`` times the neuron's initial strength of the current level counts as
equal to it (a tie within rounding), so such neurons share the level's number.

With all weights 1, or after thresholding to a 0/1 graph (``threshold=``, ``top=``), this is the
classic k-core and equals ``networkx.core_number`` (on graphs with no self-loops and no parallel
edges, which networkx does not accept or merges; here those count as multi-edges: each weight is
thresholded on its own, then parallel edges add up, and ``top=`` counts them one by one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import InvalidParameterError
from ..graph import LayeredGraph
from ..validation import check_choice, check_number
from ._blocks import (AbsBlock, NodeSpace, Placed, Progress, Weighting, load_abs_blocks, place,
                      resolve_device, resolve_dtype)
from .strength import neuron_frame

SCOPES = ("network", "block")
#: Relative tie tolerance (times the neuron's initial strength).
TIE_RTOL = 1e-12
_MIN_BATCH, _MAX_BATCH = 8, 512
#: Full-pass takes of :class:`_SmallestAlive` before its sorted order is redone.
_RESORT_EVERY = 32
#: float64 entries of the per-batch work arrays (8 MB): bounds the batch size on wide graphs.
_ELEMENTS_PER_BATCH = 1 << 20


def _replay(a: np.ndarray, s: np.ndarray, tol: np.ndarray, level: float):
    """One-at-a-time peeling of a batch on its own adjacency ``a`` (k x k) from strengths ``s``:
    the order, each neuron's strength at removal, the level before and after each step."""
    s = s.copy()
    k = len(s)
    order = np.empty(k, dtype=np.int64)
    at_removal = np.empty(k)
    before = np.empty(k)
    after = np.empty(k)
    for q in range(k):
        i = int(np.argmin(s))
        v = s[i]
        order[q], at_removal[q], before[q] = i, v, level
        if v > level + tol[i]:
            level = v
        after[q] = level
        s -= a[i]
        s[i] = np.inf
    return order, at_removal, before, after


def _lowest_before_each_step(s, suspects, parts, order, n, device) -> np.ndarray:
    """For the batch removed in ``order``: the lowest strength among ``suspects`` before each
    step (exact), computed a few suspects at a time to bound memory."""
    f64 = torch.float64
    kk = len(order)
    perm = torch.from_numpy(order).to(device)
    low = np.full(kk, np.inf)
    step = max(1, _ELEMENTS_PER_BATCH // (2 * kk))
    where = torch.full((n,), -1, dtype=torch.long, device=device)
    for c0 in range(0, suspects.numel(), step):
        chunk = suspects[c0:c0 + step]
        where[chunk] = torch.arange(chunk.numel(), device=device)
        contrib = torch.zeros(kk, chunk.numel(), dtype=f64, device=device)
        for sel, t_start, rows in parts:
            pos = where[t_start:t_start + rows.shape[1]]
            hit = (pos >= 0).nonzero().reshape(-1)
            if hit.numel():
                contrib[sel[:, None], pos[hit][None, :]] += rows[:, hit]
        where[chunk] = -1
        contrib = contrib[perm]
        contrib.cumsum_(0)
        s_chunk = s[chunk]
        contrib.neg_().add_(s_chunk)  # row q: strengths after the first q + 1 removals
        before = torch.empty(kk, dtype=f64, device=device)
        before[0] = s_chunk.min()
        if kk > 1:
            before[1:] = contrib[:-1].min(1).values
        low = np.minimum(low, before.cpu().numpy())
    return low


class _SmallestAlive:
    """The ``k`` alive nodes of smallest current strength, without a pass over all nodes each time.

    Strengths only change on nodes a removal reaches ("dirty" nodes). The others keep the value
    they had at the last full sort, so the smallest of them are the first alive, clean entries of
    that sorted order; the answer is among those ``k`` and the dirty nodes. Once the dirty nodes
    are more than an eighth of all nodes (dense layers reach whole partitions), a take is one
    ``topk`` over all alive nodes, and the order is redone every ``_RESORT_EVERY`` such takes."""

    def __init__(self, s: torch.Tensor, alive: torch.Tensor):
        self.s, self.alive = s, alive
        self.n = s.numel()
        self._sort()

    def _sort(self) -> None:
        live = self.alive.nonzero().reshape(-1)
        self.order = live[torch.argsort(self.s[live], stable=True)]
        self.ptr = 0
        self.dirty = torch.zeros(self.n, dtype=torch.bool, device=self.s.device)
        self.dirty_nodes: list[torch.Tensor] = []
        self.dirty_count = 0
        self.full_takes = 0

    def mark(self, nodes: torch.Tensor) -> None:
        new = nodes[~self.dirty[nodes]]
        if new.numel():
            self.dirty[new] = True
            self.dirty_nodes.append(new)
            self.dirty_count += new.numel()

    def take(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(strengths, nodes)`` of the ``k`` smallest alive nodes (fewer if fewer are alive),
        in increasing strength."""
        if self.dirty_count > self.n // 8:  # most strengths changed: one pass over all nodes,
            self.full_takes += 1              # and a new sorted order now and then
            if self.full_takes < _RESORT_EVERY:
                inf = torch.tensor(float("inf"), dtype=self.s.dtype, device=self.s.device)
                return torch.topk(torch.where(self.alive, self.s, inf), k, largest=False, sorted=True)
            self._sort()
        order, window = self.order, 2 * k + 16
        while True:
            seg = order[self.ptr:self.ptr + window]
            ok = self.alive[seg] & ~self.dirty[seg]
            if int(ok.sum()) >= k or self.ptr + window >= order.numel():
                break
            window *= 4
        lead = int(ok.long().argmax()) if bool(ok.any()) else seg.numel()
        clean = seg[ok][:k]
        self.ptr += lead  # entries before the first clean one are removed or tracked as dirty
        if self.dirty_nodes:
            d = torch.cat(self.dirty_nodes)
            d = d[self.alive[d]]
            self.dirty_nodes = [d]
            cand = torch.cat([clean, d])
        else:
            cand = clean
        vals, pos = torch.topk(self.s[cand], min(k, cand.numel()), largest=False, sorted=True)
        return vals, cand[pos]


def peel(n: int, placed: Sequence[Placed], *, device: torch.device, tie_rtol: float = TIE_RTOL,
         progress: Progress | None = None) -> np.ndarray:
    """Hypercore number of every node of a node space of ``n`` nodes joined by ``placed``."""
    f64 = torch.float64
    s = torch.zeros(n, dtype=f64, device=device)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        s[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums
        s[p.src_off:p.src_off + p.block.n_src] += src_sums
    tol_all = (s * tie_rtol).cpu().numpy()
    alive = torch.ones(n, dtype=torch.bool, device=device)
    core = np.zeros(n)
    level, left, k = 0.0, n, 64
    inf = torch.tensor(float("inf"), dtype=f64, device=device)
    # each block seen from both ends: (node range start, size, fetch rows/cols, target start, target size)
    ends = []
    for p in placed:
        b = p.block
        ends.append((p.dst_off, b.n_dst, b.rows, p.src_off, b.n_src))
        ends.append((p.src_off, b.n_src, b.cols, p.dst_off, b.n_dst))
    # entries fetched per node (its adjacency row across every block end): bounds a batch's memory
    degree = torch.zeros(n, dtype=torch.long, device=device)
    for start, size, _, _, t_size in ends:
        degree[start:start + size] += t_size
    max_batch = _MAX_BATCH
    pool = _SmallestAlive(s, alive)
    in_batch = torch.full((n,), -1, dtype=torch.long, device=device)
    total = torch.zeros(n, dtype=f64, device=device)
    while left:
        kk = min(k, left)
        vals, batch = pool.take(kk)
        fits = int((torch.cumsum(degree[batch], 0) <= _ELEMENTS_PER_BATCH).sum())
        if fits < kk:  # the smallest few whose rows fit the work arrays (at least one)
            kk = max(1, fits)
            vals, batch = vals[:kk], batch[:kk]
        in_batch[batch] = torch.arange(kk, device=device)
        # adjacency rows of the batch nodes, block end by block end: (batch positions, target start, rows)
        parts = []
        touched: dict[int, int] = {}  # partitions the batch's edges reach: start -> size
        for start, size, fetch, t_start, t_size in ends:
            sel = ((batch >= start) & (batch < start + size)).nonzero().reshape(-1)
            if sel.numel():
                parts.append((sel, t_start, fetch(batch[sel] - start).to(f64)))
                touched[t_start] = t_size
        a_bb = torch.zeros(kk, kk, dtype=f64, device=device)
        for sel, t_start, rows in parts:
            total[t_start:t_start + rows.shape[1]] += rows.sum(0)
            pos = in_batch[t_start:t_start + rows.shape[1]]
            hit = (pos >= 0).nonzero().reshape(-1)
            if hit.numel():
                a_bb[sel[:, None], pos[hit][None, :]] += rows[:, hit]
        order, at_removal, before, after = _replay(a_bb.cpu().numpy(), vals.cpu().numpy(),
                                                   tol_all[batch.cpu().numpy()], level)
        take = kk
        # a node outside the batch can only interfere if its strength could fall below the batch's;
        # every node the batch does not reach has s >= the batch's strengths, so look only there
        top = float(at_removal.max())
        found = []
        for t_start, t_size in touched.items():
            r = slice(t_start, t_start + t_size)
            hit = (alive[r] & (in_batch[r] < 0) & (s[r] - total[r] < top)).nonzero().reshape(-1)
            if hit.numel():
                found.append(hit + t_start)
        if found:
            suspects = torch.cat(found)
            low = _lowest_before_each_step(s, suspects, parts, order, n, device)
            ok = (at_removal <= before + tol_all[batch.cpu().numpy()[order]]) | (at_removal <= low)
            bad = np.flatnonzero(~ok)
            take = int(bad[0]) if bad.size else kk
        removed_pos = torch.from_numpy(order[:take]).to(device)
        if take == kk:
            for t_start, t_size in touched.items():
                s[t_start:t_start + t_size] -= total[t_start:t_start + t_size]
        else:
            keep = torch.zeros(kk, dtype=torch.bool, device=device)
            keep[removed_pos] = True
            for sel, t_start, rows in parts:
                use = keep[sel]
                if use.any():
                    s[t_start:t_start + rows.shape[1]] -= rows[use].sum(0)
        for t_start, t_size in touched.items():
            total[t_start:t_start + t_size] = 0.0
            pool.mark(torch.arange(t_start, t_start + t_size, device=device))
        in_batch[batch] = -1
        removed = batch[removed_pos]
        core[removed.cpu().numpy()] = after[:take]
        alive[removed] = False
        level = float(after[take - 1])
        left -= take
        k = min(2 * k, max_batch) if take == kk else min(max(_MIN_BATCH, 2 * take), max_batch)
        if progress:
            progress("hypercore", n - left, n)
    return core


def _threshold_from_top(g: LayeredGraph, top: float) -> float:
    """The |w| of the ``ceil(top * E)``-th largest structural edge (ties included). Holds all
    |w| once, in the weights' own precision (at least float32)."""
    top = float(check_number("top", top, positive=True, high=1))
    values = []
    for b in g.blocks.values():
        m = b.matrix()
        mask = b.structure_mask()
        a = m[mask.to(m.device)] if mask is not None else m.reshape(-1)
        values.append(a.abs().to(torch.promote_types(a.dtype, torch.float32)).cpu())
    if not values or sum(v.numel() for v in values) == 0:
        return 0.0
    allv = torch.cat(values)
    del values
    keep = max(1, int(np.ceil(top * allv.numel() - 1e-9)))
    return float(torch.kthvalue(allv, allv.numel() - keep + 1).values)


def _weighting(g: LayeredGraph, threshold, top) -> Weighting:
    if threshold is not None and top is not None:
        raise InvalidParameterError("give either threshold= (keep |w| >= tau) or top= (keep the strongest "
                                    f"fraction of edges), not both (got threshold={threshold!r}, top={top!r})")
    if top is not None:
        return Weighting(_threshold_from_top(g, top))
    if threshold is not None:
        return Weighting(float(check_number("threshold", threshold, nonnegative=True)))
    return Weighting()


def cores_on(g: LayeredGraph, blocks: Sequence[AbsBlock], scope: str, device: torch.device,
             progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Hypercore columns (global node order) from loaded blocks: ``{"core": ...}`` for the
    network scope, ``{"core_in": ..., "core_out": ...}`` for the block scope."""
    if scope == "network":
        space = NodeSpace.of_graph(g)
        return {"core": peel(space.n, place(space, blocks), device=device, progress=progress)}
    core_in = np.full(g.num_nodes, np.nan)
    core_out = np.full(g.num_nodes, np.nan)
    cache: dict[tuple[str, ...], tuple[NodeSpace, np.ndarray]] = {}
    names = list(g.partitions)
    for i, name in enumerate(names):
        for side, group in (("in", [b for b in blocks if b.dst == name]),
                            ("out", [b for b in blocks if b.src == name])):
            if not group:
                continue
            key = tuple(sorted(b.name for b in group))
            if key not in cache:
                space = NodeSpace.of_graph(g, {e for b in group for e in (b.src, b.dst)})
                cache[key] = (space, peel(space.n, place(space, group), device=device))
            space, c = cache[key]
            o = space.offsets[name]
            target = core_in if side == "in" else core_out
            target[g.offset(name):g.offset(name) + g.partitions[name].size] = c[o:o + g.partitions[name].size]
        if progress:
            progress("hypercore", i + 1, len(names))
    return {"core_in": core_in, "core_out": core_out}


def as_integers(cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """Core numbers of a 0/1 graph as integers (nullable ``Int64`` where some are NaN)."""
    return {k: (np.round(v).astype(np.int64) if not np.isnan(v).any() else pd.array(np.round(v), dtype="Int64"))
            for k, v in cols.items()}


def hypercore(
    g: LayeredGraph,
    scope: str = "network",
    threshold: float | None = None,
    device: str | torch.device = "auto",
    *,
    top: float | None = None,
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Hypercore number of every neuron (see the module docstring).

    ``scope="network"``: the whole multipartite graph; a DataFrame ``layer, neuron, core``.
    ``scope="block"``: the hypergraph view; ``layer, neuron, core_in, core_out`` where
    ``core_in`` is the number in the bipartite graph of the block entering the neuron's
    partition (all blocks entering it together when there are several) and ``core_out`` the
    same for the block(s) leaving it; NaN where there is none.

    ``threshold=tau`` keeps the edges with ``|w| >= tau`` as weight-1 edges, ``top=q`` the
    strongest fraction ``q`` of the structural edges (every edge tied with the last one kept
    too): the classic unweighted k-core, returned as integers. Without either, the cores are
    weighted by |w| (float64). ``dtype``: precision of the |w| copies (``None``: float64 up to
    4M edges, float32 above; the peeling sums are float64 either way). A bad option (unknown
    scope, ``threshold`` < 0 or not finite, ``top`` outside (0, 1], both given, unknown device or
    dtype) raises :class:`~graphnn.errors.InvalidParameterError`.

    >>> import torch, graphnn
    >>> g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 2}, {"w": ("a", "b", torch.tensor([[1., 1.], [1., 0.]]))})
    >>> graphnn.hypercore(g)["core"].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    check_choice("scope", scope, SCOPES)
    weighting = _weighting(g, threshold, top)
    dev = resolve_device(device)
    dt = resolve_dtype(g.num_edges, dtype)
    blocks = load_abs_blocks(g, weighting=weighting, dtype=dt, device=dev)
    cols = cores_on(g, blocks, scope, dev)
    if weighting.integral:
        cols = as_integers(cols)
    df = neuron_frame(g, cols)
    df.attrs.update({"scope": scope, "threshold": weighting.tau, "top": top,
                     "weighted": not weighting.integral})
    return df
