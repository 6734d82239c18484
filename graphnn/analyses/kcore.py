"""Classic k-cores of the 0/1 graph (``hypercore(threshold=...)`` / ``top=``): a bucket peeling.

After thresholding, every edge weighs 1 (parallel edges and the two ends of a self-loop count
one by one, as in :func:`graphnn.strength`), so the core numbers are integers and all neurons of
one level can go together. This is Batagelj & Zaveršnik's O(m) bucket algorithm processed a
bucket at a time: at level ``k``, every alive neuron of degree ``<= k`` is removed with number
``k``; removing them lowers the degrees of their neighbours only, and the neighbours that fall
to ``<= k`` are the next wave of the same level; when a level has no wave left, ``k`` rises to
the smallest degree left. Integer counts are exact: the numbers equal ``networkx.core_number``
on simple graphs, on every machine.

Two layouts. Up to :data:`CSR_MAX_ENTRIES` adjacency entries, a CSR of the kept edges
(:func:`csr_of_blocks`; built like a graph, once, by a counting sort) and :func:`peel_csr`: a
wave copies its neighbour lists into one buffer and subtracts them from the degrees with two
compiled scipy calls (its kept edges only, no Python loop over neurons). Above, the dense 0/1
lines of :mod:`._lines` (no build): a wave's lines are summed block end by block end, the next wave is
looked for only in the partitions it reached, and the smallest degree left comes from segment
minima (:class:`._chunkmin.SegmentMin`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._blocks import Placed, Progress
from ._chunkmin import SegmentMin, segment_cuts
from ._lines import LineEnd, _numpy, _weighted_matrix, line_ends


#: Up to this many adjacency entries (twice the kept edges) the 0/1 graph is peeled on a CSR
#: copy (4 bytes per entry, about 24 while it is built: only the kept edges are read); above,
#: on the dense 0/1 lines (1 byte per structural entry and end, no build).
CSR_MAX_ENTRIES = 1 << 24


def _small_ints(ends: list[LineEnd]) -> None:
    """Lines as the narrowest exact unsigned integers (0/1, or multi-edge counts)."""
    for e in ends:
        top = int(e.lines.max()) if e.lines.size else 0
        want = np.uint8 if top <= 255 else np.int64
        if e.lines.dtype != want:
            e.lines = e.lines.astype(want)


def _kept(p: Placed) -> tuple[str, np.ndarray]:
    """A placed 0/1 block's kept entries as a uint8 matrix: ``("groups", (groups, rows, cols))``
    for a compactly held grouped block, else ``("matrix", (m_dst, m_src))`` (masked)."""
    b = p.block
    compact = getattr(b, "_g", None)
    if compact is not None:
        return "groups", _numpy(compact != 0)
    return "matrix", _numpy(_weighted_matrix(b, binary=True)[0])


def _pairs(p: Placed, kind: str, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node-space ``(dst, src)`` (int32) of every kept edge (parallel edges of an index map
    repeat a pair)."""
    b = p.block
    if kind == "groups":
        g, r, c = b.group_shape
        k, i, j = np.nonzero(kept)
        rows, cols = k * r + i, k * c + j
    else:
        rows, cols = np.divmod(np.flatnonzero(kept), kept.shape[1])  # (faster than a 2-D nonzero)
        if b._dst_map is not None:
            rows = b._dst_map.cpu().numpy()[rows]
        if b._src_map is not None:
            cols = b._src_map.cpu().numpy()[cols]
    return (p.dst_off + rows).astype(np.int32), (p.src_off + cols).astype(np.int32)


def csr_of_blocks(n: int, placed: Sequence[Placed]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(indptr, indices)`` of the 0/1 multigraph of the placed blocks: the neighbours of node
    ``v`` are ``indices[indptr[v]:indptr[v + 1]]`` (int32), a parallel edge once per copy, a
    self-loop twice. Read from each block's 0/1 matrix with one flat ``nonzero`` and ordered by
    scipy's counting conversion (``coo_tocsr``), whose copies of one node pair are merged and
    counted only where a pair can repeat (:func:`_may_repeat_pairs`); ``None`` (nothing built)
    when the graph keeps more than
    :data:`CSR_MAX_ENTRIES` adjacency entries or has ``2**31`` nodes or more."""
    import scipy.sparse as sp

    kept = [_kept(p) for p in placed]
    entries = 2 * sum(int(np.count_nonzero(m)) for _, m in kept)
    if entries > CSR_MAX_ENTRIES or n >= 2**31:
        return None
    if not entries:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    pairs = [_pairs(p, kind, m) for p, (kind, m) in zip(placed, kept)]
    del kept
    rows = np.concatenate([d for d, _ in pairs] + [s for _, s in pairs])
    cols = np.concatenate([s for _, s in pairs] + [d for d, _ in pairs])
    del pairs
    tools = _sparsetools()
    if tools is not None and not _may_repeat_pairs(placed):  # every pair once: counting sort, nothing to merge
        indptr, indices = np.empty(n + 1, dtype=np.int32), np.empty(rows.size, dtype=np.int32)
        tools[2](n, n, rows.size, rows, cols, np.zeros(rows.size, dtype=np.int8), indptr, indices,
                 np.empty(rows.size, dtype=np.int8))
        return indptr.astype(np.int64), indices
    a = sp.coo_array((np.ones(rows.size, dtype=np.int32), (rows, cols)), shape=(n, n)).tocsr()
    del rows, cols
    a.sum_duplicates()  # a multi-edge (parallel edges, a self-loop's two ends) is one entry with its count
    indices, counts = a.indices.astype(np.int32, copy=False), a.data
    if counts.size and int(counts.max()) > 1:  # back to one entry per edge copy
        indices = np.repeat(indices, counts)
        return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))[a.indptr].astype(np.int64), indices
    return a.indptr.astype(np.int64), indices


def _may_repeat_pairs(placed: Sequence[Placed]) -> bool:
    """Whether a node pair can carry more than one kept edge: an index map, a block within one
    partition (a self-loop's two ends, or both directions), or two blocks between the same two
    partitions."""
    seen = set()
    for p in placed:
        b = p.block
        if b._src_map is not None or b._dst_map is not None or p.src_off == p.dst_off:
            return True
        key = (min(p.src_off, p.dst_off), max(p.src_off, p.dst_off))
        if key in seen:
            return True
        seen.add(key)
    return False


def peel_csr(n: int, indptr: np.ndarray, indices: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """k-core numbers (int64) of the CSR multigraph, a wave at a time (see the module docstring).

    Each wave costs two compiled passes over its own neighbour lists and no Python loop over its
    neurons: scipy's ``csr_row_index`` copies the lists into one reused int32 buffer and
    ``csc_matvec`` (that buffer read as one sparse column of ones, times ``-1``) subtracts one
    from the degree of every listed neighbour in place (int32 counts, exact). The next wave is
    every alive neuron of degree ``<= k``: found by one pass over the degrees after a large wave
    (at least ``n / 4`` list entries), among the wave's neighbours after a small one. Without
    scipy's compiled helpers (or at ``2**31`` entries or more) the same waves run in plain numpy
    (:func:`_peel_csr_numpy`)."""
    tools = _sparsetools()
    if tools is None or indices.size >= 2**31 - 1 or n >= 2**30:
        return _peel_csr_numpy(n, indptr, indices, progress)
    row_index, matvec = tools[:2]
    removed = np.int32(1 << 30)  # the degree of a removed neuron: stays above any degree (< 2**30 decrements)
    ip = indptr.astype(np.int32)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    d = np.diff(ip)
    deg0 = d.copy()
    core = np.zeros(n, dtype=np.int64)
    lists = np.empty(indices.size, dtype=np.int32)
    # csr_row_index copies values beside the indices: int8 placeholders (1 byte per entry)
    no_values, no_values_out = np.zeros(indices.size, dtype=np.int8), np.empty(indices.size, dtype=np.int8)
    ones = np.ones(0, dtype=np.int32)
    column = np.zeros(2, dtype=np.int32)
    minus_one = np.full(1, -1, dtype=np.int32)
    left, k = n, 0
    while left:
        k = max(k, int(d.min()))
        wave = np.flatnonzero(d <= k).astype(np.int32)
        while wave.size:
            core[wave] = k
            d[wave] = removed
            left -= wave.size
            total = int(deg0[wave].sum())
            if not total:
                break
            row_index(wave.size, wave, ip, indices, no_values, lists, no_values_out)
            nb = lists[:total]
            if ones.size < total:
                ones = np.ones(max(total, 2 * ones.size), dtype=np.int32)
            column[1] = total
            matvec(n, 1, column, nb, ones, minus_one, d)  # d[nb[i]] -= 1 for every i
            if 4 * total > n:
                wave = np.flatnonzero(d <= k).astype(np.int32)
            else:
                hit = nb[d[nb] <= k]
                wave = np.unique(hit) if hit.size > 1 else hit
        if progress:
            progress("hypercore", n - left, n)
    return core


def _sparsetools():
    """scipy's compiled ``(csr_row_index, csc_matvec, coo_tocsr)``, or ``None`` where this scipy
    lacks them."""
    try:
        from scipy.sparse import _sparsetools as st

        return st.csr_row_index, st.csc_matvec, st.coo_tocsr
    except (ImportError, AttributeError):
        return None


def _peel_csr_numpy(n: int, indptr: np.ndarray, indices: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """:func:`peel_csr` in plain numpy: a wave's neighbour lists gathered through one index
    array and counted (``bincount`` for a large wave, ``subtract.at`` for a small one)."""
    big = np.int64(1) << 62
    d = np.diff(indptr)
    core = np.zeros(n, dtype=np.int64)
    left, k = n, 0
    while left:
        k = max(k, int(d.min()))
        wave = np.flatnonzero(d <= k)
        while wave.size:
            core[wave] = k
            d[wave] = big
            left -= wave.size
            lo, hi = indptr[wave], indptr[wave + 1]
            if wave.size == 1:
                nb = indices[int(lo[0]):int(hi[0])]
            else:
                length = hi - lo
                pos = np.repeat(lo - (np.cumsum(length) - length), length)
                pos += np.arange(pos.size)
                nb = indices[pos]
            if not nb.size:
                break
            if 4 * nb.size > n:
                dec = np.bincount(nb, minlength=n)
                d -= dec
                wave = np.flatnonzero((d <= k) & (dec > 0))
            else:
                np.subtract.at(d, nb, 1)
                hit = nb[d[nb] <= k]
                wave = np.unique(hit) if hit.size > 1 else hit.astype(np.int64)
        if progress:
            progress("hypercore", n - left, n)
    return core


def core_numbers(n: int, placed: Sequence[Placed], progress: Progress | None = None) -> np.ndarray:
    """k-core number of every node of a node space of ``n`` nodes joined by ``placed`` (blocks
    weighted 0/1), as float64 integers: on a CSR copy of the kept edges up to
    :data:`CSR_MAX_ENTRIES` adjacency entries, else on the dense 0/1 lines."""
    if n == 0:
        return np.zeros(0)
    built = csr_of_blocks(n, placed)
    if built is not None:
        return peel_csr(n, *built, progress=progress).astype(np.float64)
    ends = line_ends(list(placed), binary=True)
    _small_ints(ends)
    return _peel_lines(n, placed, ends, progress)


def _degrees(n: int, placed: Sequence[Placed]) -> np.ndarray:
    deg = np.zeros(n)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        deg[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums.cpu().numpy()
        deg[p.src_off:p.src_off + p.block.n_src] += src_sums.cpu().numpy()
    return np.round(deg)


def _peel_lines(n: int, placed: Sequence[Placed], ends: list[LineEnd], progress: Progress | None) -> np.ndarray:
    """The same waves on the dense 0/1 lines (no CSR copy: for graphs with many kept edges)."""
    core = np.zeros(n)
    starts = sorted({(e.start, e.size) for e in ends})
    heap = SegmentMin(_degrees(n, placed), segment_cuts(n, [(a, a + size) for a, size in starts]
                                                       + [e.t_part for e in ends]))
    d = heap.v
    bounds = np.asarray([a for a, _ in starts] + [n], dtype=np.int64)
    by_start = {a: [e for e in ends if e.start == a] for a, _ in starts}
    spans = {}
    for e in ends:
        if e.t_part[1] > e.t_part[0]:
            spans.setdefault(e.t_part, heap.span(*e.t_part))
    inf = np.inf
    left, level, done_report = n, 0.0, 0
    while left:
        level = max(level, heap.m.min())
        segs = np.flatnonzero(heap.m <= level)
        wave = np.concatenate([heap.lo[j] + np.flatnonzero(d[heap.lo[j]:heap.hi[j]] <= level) for j in segs])
        while wave.size:
            wave.sort()
            core[wave] = level
            d[wave] = inf
            left -= wave.size
            reached: set[tuple[int, int]] = set()
            # the wave's neurons partition by partition (wave is sorted; neurons outside every
            # partition with block ends have no edges)
            cut = np.searchsorted(wave, bounds)
            for q, (a, _) in enumerate(starts):
                local = wave[cut[q]:cut[q + 1]] - a
                if not local.size:
                    continue
                for e in by_start[a]:
                    _remove_lines(d, e, local)
                    if e.t_part[1] > e.t_part[0]:
                        reached.add(e.t_part)
            for j in np.unique(np.searchsorted(heap.cuts, wave, side="right") - 1).tolist():
                heap.refresh_segment(j)
            nxt = []
            for t_part in reached:
                heap.refresh_span(spans[t_part])
                lo, hi = t_part
                hit = np.flatnonzero(d[lo:hi] <= level)
                if hit.size:
                    nxt.append(hit + lo)
            wave = np.unique(np.concatenate(nxt)) if nxt else np.zeros(0, dtype=np.int64)
            if progress and n - left - done_report >= 4096:
                done_report = n - left
                progress("hypercore", done_report, n)
    if progress:
        progress("hypercore", n, n)
    return core


def _remove_lines(d: np.ndarray, e: LineEnd, local: np.ndarray) -> None:
    """Subtract the lines of the local neurons ``local`` (sorted, of ``e``'s partition) from the
    degrees ``d``."""
    if e.line_of is not None:
        idx = e.line_of[local]
        idx = idx[idx >= 0]
    else:
        idx = local
    if not idx.size:
        return
    if e.group_lines:
        rows = e.lines[idx]
        first = e.t_start + (idx // e.group_lines) * e.group_width
        where = (first[:, None] + np.arange(e.group_width)[None, :]).ravel()
        np.subtract.at(d, where, rows.ravel().astype(np.float64))
        return
    dec = e.lines[idx[0]] if idx.size == 1 else e.lines[idx].sum(0)
    if e.absolute:  # never for 0/1 lines (made by the weighting), kept for safety
        raise AssertionError("0/1 lines must not be signed views")
    if e.targets is not None:
        d[e.targets] -= dec
    else:
        d[e.t_start:e.t_start + e.lines.shape[1]] -= dec
