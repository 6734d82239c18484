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

Computed exactly by peeling, one neuron at a time as the definition says: repeatedly remove a
neuron of minimum current strength (the lowest index among exact ties); its number is the level
so far, raised to its strength at removal when that exceeds the level by more than ``1e-12``
times the neuron's initial strength (a tie within rounding shares the level's number). A removal
costs its own edges: its adjacency lines (a row or a column of each block it is on, held
contiguous by :mod:`._lines`; one entry per line for a depthwise conv) are subtracted from its
neighbours' strengths, and the minimum is kept per segment of the node space
(:mod:`._chunkmin`), so no step passes over all neurons, whatever the number of blocks or levels.
Strengths are float64 (the initial ones from float64 block sums) and every update is one float64
subtraction per edge, in removal order, whatever the batching or the machine: the peeling itself
adds no dependence on the BLAS, the CPU or the thread count (rounding in the initial sums is what
the tie tolerance absorbs).

With all weights 1, or after thresholding to a 0/1 graph (``threshold=``, ``top=``), this is the
classic k-core and equals ``networkx.core_number`` (on graphs with no self-loops and no parallel
edges, which networkx does not accept or merges; here those count as multi-edges: each weight is
thresholded on its own, then parallel edges add up, and ``top=`` counts them one by one). Those
integer cores are computed by the bucket peeling of :mod:`.kcore`, a whole level's wave at a time.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import InvalidParameterError
from ..graph import LayeredGraph
from ..validation import check_choice, check_number
from ._blocks import (AbsBlock, NodeSpace, Placed, Progress, Weighting, _uniform_groups, load_abs_blocks,
                      place, resolve_device, resolve_dtype)
from .._pages import release_pages
from ._chunkmin import SegmentMin, segment_cuts
from ._columns import TransposedLines
from ._lines import LineEnd, line_ends
from .kcore import core_numbers
from .strength import neuron_frame

SCOPES = ("network", "block")
#: Relative tie tolerance (times the neuron's initial strength).
TIE_RTOL = 1e-12
#: Progress is reported every this many removals.
_PROGRESS_EVERY = 4096


def initial_strengths(n: int, placed: Sequence[Placed]) -> np.ndarray:
    """Float64 strength of every node of the node space over the placed blocks (exact block
    sums, parallel edges added; raises on NaN/Inf weights)."""
    s = torch.zeros(n, dtype=torch.float64)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        s[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums.cpu()
        s[p.src_off:p.src_off + p.block.n_src] += src_sums.cpu()
    return s.numpy()


class _Partition:
    """The block ends of one partition of the node space, as the peeling loop reads them.

    ``ends``: a list per end whose lines are vectors (``[start, lines, line_of, kind, target,
    absolute, group_lines, views, gspans, target_partition]``; ``kind`` 3 and 4: signed lines
    read as views of the weights or from their lazy column copies (:func:`_reads_weights`), bf16
    patterns (3) or fp16/float32/float64 values (4), whose ``views`` field holds ``[lazy,
    line_bytes, out, value, t_start]`` (and
    the index of their source for page releases, added by the peeling) and
    whose ``lines`` may be made on first use from ``lazy``, :func:`_materialise`); ``scalar``: ends with one edge per line (a depthwise conv), as Python lists
    of weight, target node and target segment per line, so that such a removal is a few scalar
    operations and keeps the segment minimum exact without a pass; ``spans``: the segment spans
    (:meth:`SegmentMin.span`) of the target partitions that a removal here always changes,
    contiguous ones merged (grouped vector ends change one group: a span per group)."""

    __slots__ = ("ends", "scalar", "spans")

    def __init__(self, ends: list[LineEnd], heap: SegmentMin, pid: list[int], wide: dict):
        self.ends, self.scalar = [], []
        for e in ends:
            tp = pid[e.t_part[0]] if e.t_part[1] > e.t_part[0] else -1
            if e.group_lines and e.group_width == 1:
                lines = np.abs(e.lines[:, 0]) if e.absolute else e.lines[:, 0]
                where = e.t_start + np.arange(e.lines.shape[0]) // e.group_lines
                self.scalar.append((e.start, lines.astype(np.float64).tolist(), where.tolist(),
                                    [heap.seg_of[t] for t in where.tolist()]))
                continue
            sv = heap.v
            if e.targets is not None:
                self.ends.append([e.start, e.lines, e.line_of, 1, e.targets, e.absolute, 0, None, None, tp])
            elif e.group_lines:
                groups = e.lines.shape[0] // e.group_lines
                w = e.group_width
                views = [sv[e.t_start + q * w:e.t_start + (q + 1) * w] for q in range(groups)]
                gspans = [heap.span(e.t_start + q * w, e.t_start + (q + 1) * w) for q in range(groups)] if w else None
                self.ends.append([e.start, e.lines, e.line_of, 2, None, e.absolute, e.group_lines, views, gspans, tp])
            elif _reads_weights(e):
                width = e.lines.shape[1]
                view = sv[e.t_start:e.t_start + width]
                lazy = e.lines if isinstance(e.lines, TransposedLines) else None
                kind = 3 if e.encoding == "bf16" else 4
                out, value = _buffers(wide, kind, width, e.lines.dtype)
                line_bytes = 0 if lazy else _mapped_bytes(width * e.lines.dtype.itemsize)
                self.ends.append([e.start, None if lazy else e.lines, e.line_of, kind, view, True, 0,
                                  [lazy, line_bytes, out, value, e.t_start], None, tp])
            else:
                view = sv[e.t_start:e.t_start + e.lines.shape[1]]
                self.ends.append([e.start, e.lines, e.line_of, 0, view, e.absolute, 0, None, None, tp])
        merged: list[list] = []
        for lo, hi in sorted({e.t_part for e in ends if not e.group_lines and e.t_part[1] > e.t_part[0]}):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.spans = []
        for lo, hi in merged:
            j0, j1, a, b, rel = heap.span(lo, hi)
            self.spans.append((j0, j1, heap.v[a:b], rel))


def _reads_weights(e: LineEnd) -> bool:
    """Whether an end's lines are the signed weights themselves (numpy views of the matrix, maybe
    of a file mapping) or their lazily made transposed copy: :func:`._lines.line_ends`'s ends of
    signed float weights; the peeling takes ``|w|`` into a buffer and releases mapped pages."""
    return isinstance(e.lines, TransposedLines) or (isinstance(e.lines, np.ndarray) and e.absolute
                                                    and not e.group_lines and e.targets is None)


def _buffers(wide: dict[tuple, tuple[np.ndarray, np.ndarray]], kind: int, width: int, dtype: np.dtype
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(out, value)`` buffers of a line of ``width`` (shared by the ends of one kind, width and
    dtype): bf16 (kind 3): float32 words whose low halves stay 0, the sign-cleared patterns
    written to their high halves (``out``), read as float32 (``value``): ``|w|`` exactly; others:
    one buffer of the lines' dtype (fp16, float32, float64) for ``|w|``."""
    key = (kind, width, np.dtype(dtype))
    if key not in wide:
        if kind == 3:
            words = np.zeros(2 * width, dtype=np.uint16)
            wide[key] = (words[_HIGH::2], words.view(np.float32))
        else:
            one = np.zeros(width, dtype=dtype)
            wide[key] = (one, one)
    return wide[key]


def _materialise(e: list, s: np.ndarray, wide) -> np.ndarray:
    """Make a lazy end's lines (its first read): the transposed copy, of the targets still
    alive only when fewer than half are (the end then reads ``s[targets]``: kinds 5 and 6)."""
    x = e[7]
    lazy = x[0]
    lines = lazy.get(alive=e[4] != np.inf)
    if lazy.targets is not None:
        width = lines.shape[1]
        e[3] = e[3] + 2
        e[4] = x[4] + lazy.targets
        x[2], x[3] = _buffers(wide, e[3] - 2, width, lazy.kind)
    # strided views of the (maybe mapped) matrix count towards the page budget
    x[1] = _mapped_bytes(lines.shape[1] * lazy.kind.itemsize) if lazy.spill_error else 0
    e[1] = lines
    return lines


def _free(ends: list[list]) -> None:
    """Free the made copies of lazy ends that will not be read again."""
    for e in ends:
        if e[1] is not None:
            e[1] = None
            e[7][0].close()


def node_partitions(n: int, s0: np.ndarray, ends: list[LineEnd]
                    ) -> tuple[list[int], list[_Partition], SegmentMin, list[int], list[list], dict]:
    """``(pid, parts, heap, sizes, closers, buffers)``: the partition (index into ``parts``, -1:
    no block end) of every node, the segment minima of ``s0`` cut at the partitions, each
    partition's size (one more entry, 1, for ends whose target partition is empty), per
    partition the lazy ends whose copies are useless once it has no neuron left (its own ends
    and those reaching it), and the line buffers."""
    starts = sorted({(e.start, e.size) for e in ends})
    ranges = [(a, a + size) for a, size in starts] + [e.t_part for e in ends]
    heap = SegmentMin(s0, segment_cuts(n, ranges))
    pid_np = np.full(n, -1, dtype=np.int64)
    for k, (start, size) in enumerate(starts):
        pid_np[start:start + size] = k
    pid = pid_np.tolist()
    wide: dict = {}
    parts = [_Partition([e for e in ends if e.start == start], heap, pid, wide) for start, _ in starts]
    closers: list[list] = [[] for _ in range(len(starts) + 1)]
    for k, part in enumerate(parts):
        for e in part.ends:
            if e[3] >= 3 and e[7][0] is not None:
                closers[k].append(e)
                closers[e[9]].append(e)
    return pid, parts, heap, [size for _, size in starts] + [1], closers, wide  # [1]: target of empty ends


#: Bytes a read of a mapped line makes resident at least: a fault maps the pages around it too
#: (Linux's fault-around, 64 KB by default; more where the page cache holds large folios).
_FAULT_AROUND = 1 << 16
#: Counted bytes (:func:`_mapped_bytes`) between two looks at the process's resident file pages.
_CHECK_BYTES = 1 << 25


def _mapped_bytes(nbytes: int) -> int:
    """What reading a mapped line of ``nbytes`` counts towards the next look."""
    return max(nbytes, _FAULT_AROUND)


def _resident_file_bytes(counted: int) -> int:
    """The process's resident file-backed (shared) memory, from ``/proc/self/statm``; where that
    cannot be read, ``counted`` (the bytes counted since the last release) stands in for it."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return counted


#: Index of the high 16-bit half of a float32 word in memory.
_HIGH = 1 if sys.byteorder == "little" else 0

#: Resident file-backed memory of the process (1.5 GB) above which the peeling releases the pages
#: of the mapped weights it has read since the last release (:func:`graphnn._pages.release_pages`;
#: spilled copies are read with ``pread``, not mapped); looked at every
#: :data:`_CHECK_BYTES` of mapped lines read. Measured (Linux 6.18, ext4): one 8 KB row read
#: maps the page cache's whole 2 MB folio around it, so rows read in removal order make whole
#: matrices resident within a few dozen reads. At 8 layers of the Llama shape about 200
#: releases, and a peak of ~1.2 GB of file pages with a 1 GB budget (2.2 GB unreleased); each
#: release's look at the page tables is one ``PAGEMAP_SCAN`` ioctl (:mod:`graphnn._pages`; it
#: was a pagemap read of every page it covers, ~2 s together).
PAGE_BUDGET_BYTES = 3 << 29


def peel(n: int, placed: Sequence[Placed], *, device: torch.device | None = None, tie_rtol: float = TIE_RTOL,
         progress: Progress | None = None) -> np.ndarray:
    """Hypercore number of every node of a node space of ``n`` nodes joined by ``placed``.

    One neuron at a time, in the order of the definition: the alive neuron of smallest current
    strength (the lowest index on exact ties) is removed; its number is the level, raised to its
    strength when that exceeds the level by more than the tie tolerance. A removal subtracts the
    neuron's adjacency lines (:mod:`._lines`) from the strengths of its neighbours, element by
    element in float64, and refreshes the segment minima of what it changed
    (:class:`._chunkmin.SegmentMin`; its own segment's minimum with its position, which the next
    removal, most often from the same segment, then reads without a search; a depthwise update
    keeps both exact by a comparison): the work of a removal is its own edges plus a few
    numpy calls per block end, for any number of blocks or levels, and every sum is done in the
    same order on every machine. A line whose target partition has no neuron left is not read
    (it would only change removed neurons): the last partitions to go, often the widest (a
    transformer's residual stream), never need their columns. The lines of signed float weights
    (the streamed storage of a large graph) are read as views of the weights, ``|w|`` taken into
    a reused buffer (bf16 turned into float32, exactly); their transposed copies are made when first read
    and freed once no line of theirs can be read again (:mod:`._columns`), and the resident
    pages of the mapped weights are released whenever the process's resident file pages exceed
    :data:`PAGE_BUDGET_BYTES`. ``device`` is accepted for
    symmetry with the other analyses: the peeling runs on the CPU.
    """
    if n == 0:
        return np.zeros(0)
    s0 = initial_strengths(n, placed)
    tol = (s0 * tie_rtol).tolist()
    ends = line_ends(list(placed))
    copies = [e.lines for e in ends if isinstance(e.lines, TransposedLines)]
    mapped = [e.lines for e in ends if isinstance(e.lines, np.ndarray) and _reads_weights(e)]
    try:
        return _peel(n, s0, tol, ends, copies, mapped, progress)
    finally:
        del ends
        for c in copies:
            c.close()
        for m in mapped:
            release_pages(m)


def _release(sources: list, dirty: list[int]) -> None:
    """Release the resident pages of the sources read since the last release (``dirty``): a
    mapped matrix (numpy rows), or the matrix a column copy read (or reads, strided)."""
    for i, d in enumerate(dirty):
        if d:
            x = sources[i]
            if isinstance(x, TransposedLines):
                release_pages(x.mat)
            else:
                release_pages(x)
            dirty[i] = 0


def _peel(n: int, s0: np.ndarray, tol: list[float], ends: list[LineEnd], copies: list[TransposedLines],
          mapped: list[np.ndarray], progress: Progress | None) -> np.ndarray:
    pid, parts, heap, alive, closers, wide = node_partitions(n, s0, ends)
    del ends
    sources = list(mapped) + list(copies)
    where = {id(x): i for i, x in enumerate(sources)}
    for part in parts:
        for e in part.ends:
            if e[3] >= 3:  # the extra fields end with the index of the source in ``sources``
                e[7].append(where[id(e[7][0] if e[7][0] is not None else e[1])])
    dirty = [1] * len(mapped) + [0] * len(copies)
    _release(sources, dirty)  # what earlier passes left resident
    s, m = heap.v, heap.m
    seg_lo = heap.lo
    seg_view = [s[lo:hi] for lo, hi in zip(heap.lo, heap.hi)]
    rmin, rmin_at = np.minimum.reduce, np.minimum.reduceat
    band, sub, npabs = np.bitwise_and, np.subtract, np.abs
    no_sign = np.uint16(0x7FFF)
    inf = np.inf
    core = [0.0] * n
    level = 0.0
    touched = counted = 0
    # m[j] is segment j's exact minimum; pos[j] its position in the segment (the lowest on exact
    # ties) while known, -1 after a refresh that gave the minimum only
    pos = [-1] * len(seg_view)
    for step in range(n):
        j = int(m.argmin())
        i = pos[j]
        if i < 0:
            i = int(seg_view[j].argmin())
        v = seg_lo[j] + i
        a = s.item(v)
        if a > level + tol[v]:
            level = a
        core[v] = level
        s[v] = inf
        k = pid[v]
        if k < 0:
            _refresh_own(seg_view[j], m, pos, j)
            continue
        alive[k] -= 1
        part = parts[k]
        for start, weights, where, segs in part.scalar:
            i = v - start
            w = weights[i]
            if w:
                t = where[i]
                x = s.item(t) - w
                s[t] = x
                sj, at = segs[i], t - seg_lo[segs[i]]
                y = m.item(sj)
                if x < y:  # the segment's new minimum, here alone
                    m[sj] = x
                    pos[sj] = at
                elif x == y and pos[sj] > at:  # a tie with a known minimum further on
                    pos[sj] = at
        for e in part.ends:
            start, lines, line_of, kind, target, absolute, group_lines, views, gspans, tp = e
            if not alive[tp]:
                continue
            i = v - start if line_of is None else line_of[v - start]
            if i < 0:
                continue
            if kind >= 3:  # lines of the signed weights (see _buffers); 5, 6: to some targets only
                if lines is None:
                    lines = _materialise(e, s, wide)
                    kind, target = e[3], e[4]
                    release_pages(views[0].mat)  # making the copy read all of it
                dirty[views[5]] = 1
                if kind == 3:  # bf16 patterns, sign bit cleared, as the high halves of float32 words: |w|
                    band(lines[i], no_sign, out=views[2])
                    sub(target, views[3], out=target)
                elif kind == 4:  # fp16, float32, float64: |w| in a buffer of their dtype
                    npabs(lines[i], out=views[2])
                    sub(target, views[2], out=target)
                elif kind == 5:
                    band(lines[i], no_sign, out=views[2])
                    s[target] -= views[3]
                else:
                    npabs(lines[i], out=views[2])
                    s[target] -= views[2]
                touched += views[1]
                continue
            vals = lines[i]
            if absolute:
                vals = np.abs(vals)
            if kind == 0:
                target -= vals
            elif kind == 1:
                s[target] -= vals
            else:
                q = i // group_lines
                views[q] -= vals
                if gspans is not None:
                    span = gspans[q]
                    heap.refresh_span(span)
                    pos[span[0]:span[1]] = [-1] * (span[1] - span[0])
        for j0, j1, view, rel in part.spans:
            if rel is None:
                m[j0] = rmin(view)
                pos[j0] = -1
            else:
                m[j0:j1] = rmin_at(view, rel)
                pos[j0:j1] = [-1] * (j1 - j0)
        seg = seg_view[j]  # the removed neuron's segment (inline _refresh_own)
        i = int(seg.argmin())
        m[j] = seg.item(i)
        pos[j] = i
        if not alive[k] and closers[k]:
            _free(closers[k])
        if touched > _CHECK_BYTES:
            counted += touched
            touched = 0
            if _resident_file_bytes(counted) > PAGE_BUDGET_BYTES:
                _release(sources, dirty)
                counted = 0
        if progress and (step + 1) % _PROGRESS_EVERY == 0:
            progress("hypercore", step + 1, n)
    if progress:
        progress("hypercore", n, n)
    return np.asarray(core)


def _refresh_own(seg: np.ndarray, m: np.ndarray, pos: list[int], j: int) -> None:
    """After a removal: the minimum of the removed neuron's segment and where it is (the next
    removal is most often from this segment, and then needs no search)."""
    i = int(seg.argmin())
    m[j] = seg.item(i)
    pos[j] = i


def _threshold_from_top(g: LayeredGraph, top: float) -> float:
    """The |w| of the ``ceil(top * E)``-th largest structural edge (ties included). Holds all
    |w| once, block by block, in the weights' own precision (at least float32); selected by
    :func:`kth_largest`."""
    top = float(check_number("top", top, positive=True, high=1))
    values = []
    for b in g.blocks.values():
        m = b.matrix()
        groups = _uniform_groups(b)
        if groups is not None:  # equal consecutive groups (a depthwise conv): the in-group entries, no mask
            k, r, c = groups
            a = m.reshape(k, r, k, c).diagonal(dim1=0, dim2=2).reshape(-1)
        else:
            mask = b.structure_mask()
            a = m[mask.to(m.device)] if mask is not None else m.reshape(-1)
        if a.element_size() == 1:  # float8: no abs kernel; float32 holds it exactly
            a = a.float()
        a = a.abs().to(torch.promote_types(a.dtype, torch.float32)).cpu()
        if a.numel():
            values.append(a.numpy())
    total = sum(v.size for v in values)
    if not total:
        return 0.0
    if len({v.dtype for v in values}) > 1:
        values = [v.astype(np.float64) for v in values]
    keep = max(1, int(np.ceil(top * total - 1e-9)))
    return kth_largest(values, keep)


#: Histogram bins of :func:`kth_largest` (the top 16 bits of a float's pattern).
_RADIX_BITS = 16


def kth_largest(values: list[np.ndarray], k: int) -> float:
    """The ``k``-th largest (1-based, ties counted) of non-negative float32/float64 arrays of one
    dtype, exactly: a non-negative float's bit pattern, read as an unsigned integer of the same
    width, orders as the value does (zeros, subnormals and inf included; a NaN sorts above
    inf, as in a sort). One pass counts the top ``_RADIX_BITS`` bits of every pattern, which
    gives the bin holding the answer and its rank there; a second pass gathers that bin's
    patterns and a partition of them gives the value. No concatenation of the values."""
    kind = np.uint32 if values[0].dtype.itemsize == 4 else np.uint64
    shift = kind(8 * values[0].dtype.itemsize - _RADIX_BITS)
    bins = 1 << _RADIX_BITS
    hist = np.zeros(bins, dtype=np.int64)
    for v in values:
        top_bits = (v.view(kind) >> shift).astype(np.intp)
        hist += np.bincount(top_bits, minlength=bins)
    from_top = np.cumsum(hist[::-1])  # from_top[j]: patterns in the j + 1 highest bins
    j = int(np.searchsorted(from_top, k))  # the answer is in bin bins - 1 - j
    rank = k - (int(from_top[j - 1]) if j else 0)  # its rank from the top within that bin
    hit = kind(bins - 1 - j)
    inside = np.concatenate([v.view(kind)[(v.view(kind) >> shift) == hit] for v in values])
    pattern = np.partition(inside, inside.size - rank)[inside.size - rank]
    return float(np.asarray(pattern, dtype=kind).view(values[0].dtype))


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
    integral = bool(blocks) and blocks[0].weighting.integral
    cores = core_numbers if integral else (lambda n, placed, progress=None: peel(n, placed, device=device,
                                                                                 progress=progress))
    if scope == "network":
        space = NodeSpace.of_graph(g)
        return {"core": cores(space.n, place(space, blocks), progress=progress)}
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
                cache[key] = (space, cores(space.n, place(space, group)))
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
    4M edges, float32 above; the peeling sums are float64 either way). Above 4M edges the weights
    are peeled in their own dtype (bf16, fp16, float32, float64): the columns it reads get
    transposed copies in that dtype, made when first read, up to 1 GB of
    memory together (``_lines.LAZY_COPY_FACTOR x TRANSPOSE_BUDGET_BYTES``), beyond that in an
    unlinked temporary file in ``TMPDIR`` of at most the size of those matrices. A bad option (unknown
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
