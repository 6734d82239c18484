"""Classic k-cores of the 0/1 graph (``hypercore(threshold=...)`` / ``top=``): a bucket peeling.

After thresholding, every edge weighs 1 (parallel edges and the two ends of a self-loop count
one by one, as in :func:`graphnn.strength`), so the core numbers are integers and all neurons of
one level can go together. This is Batagelj & Zaveršnik's O(m) bucket algorithm processed a
bucket at a time: at level ``k``, every alive neuron of degree ``<= k`` is removed with number
``k``; removing them lowers the degrees of their neighbours only, and the neighbours that fall
to ``<= k`` are the next wave of the same level; when a level has no wave left, ``k`` rises to
the smallest degree left. A wave reads the 0/1 lines (:mod:`._lines`) of the neurons it
removes, block end by block end, as one summed gather (its edges, once), and looks for the next
wave only in the partitions it reached; the smallest degree left comes from segment minima
(:class:`._chunkmin.SegmentMin`). Every edge is read once from each end, and integer sums are
exact: the numbers equal ``networkx.core_number`` on simple graphs, on every machine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._blocks import Placed, Progress
from ._chunkmin import SegmentMin, segment_cuts
from ._lines import LineEnd, line_ends


def _small_ints(ends: list[LineEnd]) -> None:
    """0/1 (or small multi-edge count) lines as the narrowest exact unsigned integers."""
    for e in ends:
        top = float(e.lines.max()) if e.lines.size else 0.0
        e.lines = e.lines.astype(np.uint8 if top <= 255 else np.int64)


def _degrees(n: int, placed: Sequence[Placed]) -> np.ndarray:
    deg = np.zeros(n)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        deg[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums.cpu().numpy()
        deg[p.src_off:p.src_off + p.block.n_src] += src_sums.cpu().numpy()
    return np.round(deg)


def core_numbers(n: int, placed: Sequence[Placed], progress: Progress | None = None) -> np.ndarray:
    """k-core number of every node of a node space of ``n`` nodes joined by ``placed`` (blocks
    weighted 0/1), as float64 integers."""
    core = np.zeros(n)
    if n == 0:
        return core
    ends = line_ends(list(placed))
    _small_ints(ends)
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
