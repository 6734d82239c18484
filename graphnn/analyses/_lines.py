"""A block's adjacency *lines* as the peeling algorithms read them: for each neuron at one end of
a block, the non-negative weights of its edges to the other end, as one contiguous numpy row.

The hypercore peelings (:mod:`.hypercore`, :mod:`.kcore`) remove neurons one at a time or in
small batches and must touch only the edges of the removed neurons. A block is dense, so the
edges of a destination neuron are a row of ``A = f(W)`` and those of a source neuron a column; a
:class:`LineEnd` holds the matrix of one end with its lines contiguous (the rows as they are,
the columns as a transposed copy when the memory allows, else strided views), so that removing
neuron ``v`` is ``s[t0:t1] -= lines[v]``: one pass over exactly its edges.

Structure, in the order the constructor resolves it:

* grouped / depthwise blocks (``groups > 1``, equal consecutive groups): only in-group entries
  are edges, so a line holds its group's entries alone (``(n, width / groups)``) and its target
  range starts at its group's first neuron; a depthwise conv is one entry per line;
* index maps (graph-model.md §2b): lines that reach the same neuron (a repeat map) are added up
  into one line, target columns that reach the same neuron are added up too; an injective map
  (a slice, a permutation) is a target index array, a slice ``arange(a, b)`` a plain offset.

Values are float64 for float64 weights and float32 otherwise (exact copies of float32/bf16/fp16
weights); the callers accumulate in float64 (numpy upcasts ``s -= line`` element by element).
Signed float weights (|w| weighting, no mask or index map, on the CPU: the streamed storage of a
large graph) are never copied up front: their rows are numpy views of the weights themselves
(float32/float64 as they are, fp16 as numpy ``float16``, bf16 as its raw ``uint16`` patterns,
``encoding="bf16"``, turned into ``|w|`` in float32 by a shift and a mask, exactly), their columns a
transposed copy in the same dtype made only when the peeling first needs one
(:class:`._columns.TransposedLines`: in memory while :data:`LAZY_COPY_FACTOR` x
:data:`TRANSPOSE_BUDGET_BYTES` allows, beyond it in a temporary file); ``|w|`` is taken as a line
is read. float8 matrices are read a line at a time through torch (:class:`TorchLines`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._blocks import _REDUCIBLE, AbsBlock, Placed
from ._columns import MemoryBudget, TransposedLines, numpy_bits

#: Transposed copies of the column side made up front (|w| of matrices already weighted or
#: masked, float8) are made while their total stays below this many bytes; beyond it the columns
#: are strided views of the (row-major) matrix (slower, no extra memory).
TRANSPOSE_BUDGET_BYTES = 1 << 29
#: The column copies of signed float weights (made only when first read, freed once useless) may
#: take this many times :data:`TRANSPOSE_BUDGET_BYTES` of memory together (1 GB); beyond it they
#: go to a temporary file (:mod:`._columns`).
LAZY_COPY_FACTOR = 2
#: numpy view of the float dtypes whose signed lines are read as views of the weights, with the
#: encoding of :attr:`LineEnd.encoding` (bf16: raw patterns).
_VIEWS = {torch.bfloat16: (np.dtype(np.uint16), "bf16"), torch.float16: (np.dtype(np.float16), ""),
          torch.float32: (np.dtype(np.float32), ""), torch.float64: (np.dtype(np.float64), "")}


@dataclass
class LineEnd:
    """One block seen from one of its partitions (node-space offsets ``start``/``t_start``).

    ``lines[line_of[v]]`` are the edge weights of local neuron ``v`` (``line_of is None``: line
    ``v``; ``-1``: no edges); they go to node-space neurons ``t_start + group_off(v) + j`` for
    ``j < lines.shape[1]`` (``targets is None``) or to ``targets`` (injective node-space
    indices). Grouped ends: ``group_off(v) = (line // group_lines) * group_width``. ``absolute``:
    the lines are signed weights (a view of the parameter) whose ``|.|`` is taken on use.
    ``encoding="bf16"``: the lines are bf16 bit patterns (``uint16``; float32 bits = pattern << 16).
    ``lines`` may be a :class:`._columns.TransposedLines`, made on first use (:meth:`matrix`)."""

    name: str
    start: int
    size: int
    t_start: int
    t_size: int
    lines: np.ndarray
    line_of: np.ndarray | None = None
    targets: np.ndarray | None = None
    group_lines: int = 0
    group_width: int = 0
    absolute: bool = False
    #: the node range of the whole target partition
    t_part: tuple[int, int] = (0, 0)
    encoding: str = ""

    def matrix(self) -> np.ndarray:
        """The lines as an array (a lazily made transposed copy is made now)."""
        if isinstance(self.lines, TransposedLines):
            return self.lines.get()
        return self.lines

    def line(self, v: int) -> tuple[np.ndarray | None, int, np.ndarray | None]:
        """``(values, target_start, targets)`` of local neuron ``v`` (``values`` None: no edges;
        else float32/float64 |w|)."""
        i = v if self.line_of is None else int(self.line_of[v])
        if i < 0:
            return None, 0, None
        vals = self.matrix()[i]
        if self.encoding == "bf16":
            vals = bf16_abs(vals)
        elif self.absolute:
            vals = np.abs(vals)
        t0 = self.t_start + (i // self.group_lines) * self.group_width if self.group_lines else self.t_start
        return vals, t0, self.targets

    def target_range(self) -> tuple[int, int]:
        """The node range that the lines of this end reach (all of it for non-grouped ends)."""
        if self.targets is not None:
            return (int(self.targets.min()), int(self.targets.max()) + 1) if self.targets.size else (0, 0)
        return self.t_start, self.t_start + self.lines.shape[1]


def bf16_abs(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``|w|`` in float32 of bf16 patterns (``uint16``), exactly: a bf16 number is the top half of
    the float32 of the same value, so its bits shifted left by 16, with the sign bit cleared."""
    wide = np.left_shift(bits, 16, dtype=np.uint32, out=out)
    np.bitwise_and(wide, np.uint32(0x7FFF0000), out=wide)
    return wide.view(np.float32)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU float32/float64 tensor (a bool tensor: its bytes as uint8); other
    dtypes (bf16, fp16) become float32."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bool:
        return t.numpy().view(np.uint8)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.numpy()


class TorchLines:
    """The lines of a 2-D CPU torch matrix in a dtype numpy has no type for (bf16, fp16), each
    converted to float32 when it is read (exactly): no full-size float32 copy of the weights."""

    def __init__(self, t: torch.Tensor):
        self.t = t
        self.shape = tuple(t.shape)
        self.dtype = np.dtype(np.float32)
        self.nbytes = t.numel() * t.element_size()

    def __getitem__(self, i):
        if isinstance(i, np.ndarray):
            i = torch.from_numpy(i)
        return self.t[i].to(torch.float32).numpy()


def _compact_groups(mask: torch.Tensor | None) -> int:
    """Number of equal consecutive diagonal groups of a structure mask (1: not such a mask)."""
    if mask is None:
        return 1
    m_dst, m_src = mask.shape
    mask = mask.cpu().numpy()
    c = int(np.count_nonzero(mask[0])) if m_dst else 0
    if c == 0 or m_src % c:
        return 1
    groups = m_src // c
    if m_dst % groups:
        return 1
    r = m_dst // groups
    inside = mask.reshape(groups, r, groups, c).diagonal(axis1=0, axis2=2)
    return groups if int(np.count_nonzero(mask)) == groups * r * c and bool(inside.all()) else 1


def _cpu_matrix(b: AbsBlock, w: torch.Tensor) -> torch.Tensor:
    """The signed matrix ``w`` of a block held on a GPU, on the CPU where the peeling runs: the
    graph's own matrix when it lives there (a view of a CPU parameter or of a memory-mapped
    checkpoint: no copy, and its pages are released like any mapped line's), else one copy in
    ``w``'s own dtype (2 bytes per entry for bf16), never a float32 copy."""
    m = b._block.matrix()
    if m.device.type == "cpu" and tuple(m.shape) == tuple(w.shape) and m.dtype == w.dtype:
        return m
    return w.cpu()


def _weighted_matrix(b: AbsBlock, binary: bool = False) -> tuple[torch.Tensor, bool]:
    """``(matrix, signed)``: the block's ``(m_dst, m_src)`` weights, masked: ``A`` itself, or the
    signed matrix when ``A = |W|`` can be taken on use (a view, no copy). ``binary``: a 0/1
    weighting as a bool matrix (1 byte per entry)."""
    if binary:
        if b.t is not None:
            return b.t.t() != 0, False
        w = b.w
        if w.is_floating_point() and w.dtype not in _REDUCIBLE:  # float8: no abs kernel; exact in float32
            w = w.float()
        a = w.abs() >= b.weighting.tau
        if b.mask is not None:
            a &= b.mask.to(a.device)
        return a, False
    if b.t is not None:
        return b.t.t(), False
    w = b.w
    if b.weighting.tau is None and b.mask is None and w.is_floating_point():
        return (w if w.device.type == "cpu" else _cpu_matrix(b, w)), True
    a = b.weighting(w)
    if b.mask is not None:
        a = a * b.mask.to(a.device)
    return a, False


def _fold(a: np.ndarray, index: np.ndarray | None, size: int, axis: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Index map ``index`` (matrix line -> neuron of ``size``) along ``axis`` of ``a``:
    ``(a', where, offset_only)``. Injective maps keep ``a`` and give the neuron of every line
    (``where``); non-injective ones add the lines of each neuron (``a'`` has one line per
    distinct neuron, ``where`` their neurons)."""
    if index is None:
        return a, None, True
    uniq, inverse = np.unique(index, return_inverse=True)
    if uniq.size == index.size:
        offset_only = bool(index.size and index[-1] - index[0] == index.size - 1 and np.all(np.diff(index) == 1))
        return a, index, offset_only
    shape = list(a.shape)
    shape[axis] = uniq.size
    kind = np.float64 if a.dtype == np.float64 else (np.int64 if a.dtype.kind in "ui" else np.float32)
    out = np.zeros(shape, dtype=kind)
    if axis == 0:
        np.add.at(out, inverse, a)
    else:
        np.add.at(out.T, inverse, a.T)
    return out, uniq, False


def _end(name: str, a: np.ndarray, absolute: bool, start: int, size: int, t_start: int, t_size: int,
         own_map: np.ndarray | None, other_map: np.ndarray | None, groups: int) -> LineEnd:
    """The end whose lines are the rows of ``a`` (``(lines, width)``)."""
    if groups > 1:  # equal consecutive groups, no index maps: rows keep their group's columns only
        lines_per, width = a.shape[0] // groups, a.shape[1] // groups
        compact = a.reshape(groups, lines_per, groups, width)
        compact = np.ascontiguousarray(np.einsum("gigj->gij", compact)).reshape(a.shape[0], width)
        return LineEnd(name, start, size, t_start, t_size, compact, group_lines=lines_per,
                       group_width=width, absolute=absolute, t_part=(t_start, t_start + t_size))
    if absolute and (own_map is not None or other_map is not None):
        a, absolute = np.abs(a), False
    a, where, _ = _fold(a, own_map, size, 0)
    line_of = None
    if where is not None:
        line_of = np.full(size, -1, dtype=np.int64)
        line_of[where] = np.arange(where.size)
    a, cols, offset_only = _fold(a, other_map, t_size, 1)
    targets, t0 = None, t_start
    if cols is not None:
        if offset_only:
            t0 = t_start + int(cols[0]) if cols.size else t_start
        else:
            targets = (t_start + cols).astype(np.int64)
    return LineEnd(name, start, size, t0, t_size, a, line_of=line_of, targets=targets, absolute=absolute,
                   t_part=(t_start, t_start + t_size))


def _rows_beside_copy(b: AbsBlock, budget: MemoryBudget) -> np.ndarray | None:
    """The destination lines of a block held as a transposed |w| copy ``t`` whose signed matrix
    is at hand (:attr:`AbsBlock.signed_rows`; |w| weighting, no mask or index map, float32/64):
    ``|w|`` read row by row (contiguous, in ``t``'s dtype: the same values as ``t``), instead of
    transposing ``t`` back. ``None`` where that does not apply or the budget is spent."""
    w = getattr(b, "signed_rows", None)
    if w is None or b.weighting.tau is not None or b._src_map is not None or b._dst_map is not None \
            or w.dtype not in (torch.float32, torch.float64) or b.t is None:
        return None
    kind = _numpy(b.t).dtype
    if not budget.take(w.numel() * kind.itemsize):
        return None
    rows = np.empty(tuple(w.shape), dtype=kind)
    np.abs(_numpy(w), out=rows)
    return rows


def line_ends(placed: list[Placed], budget_bytes: int | None = None, binary: bool = False) -> list[LineEnd]:
    """Both ends of every placed block (the destination end's lines are rows, the source end's
    columns). The column side is a transposed contiguous copy: made when first read for signed
    float weights (:class:`._columns.TransposedLines`, within ``LAZY_COPY_FACTOR x budget_bytes``
    of memory, else in a file), made now for the others while ``budget_bytes`` (default
    :data:`TRANSPOSE_BUDGET_BYTES`, read at the call) allows, else strided.
    ``binary``: the blocks are weighted 0/1 (a threshold); lines are then unsigned integers
    (uint8 0/1, or int64 counts where an index map adds parallel edges)."""
    budget = MemoryBudget(TRANSPOSE_BUDGET_BYTES if budget_bytes is None else budget_bytes)
    lazy_budget = MemoryBudget(LAZY_COPY_FACTOR * budget.left)
    ends = []
    for p in placed:
        b = p.block
        compact = getattr(b, "_g", None)
        if compact is not None:  # held as (groups, rows, cols) in-group entries already
            g, r, c = b.group_shape
            if binary:
                compact = compact != 0
            rows = _numpy(compact).reshape(g * r, c)
            cols = np.ascontiguousarray(_numpy(compact).transpose(0, 2, 1)).reshape(g * c, r)
            ends.append(LineEnd(b.name, p.dst_off, b.n_dst, p.src_off, b.n_src, rows, group_lines=r,
                                group_width=c, t_part=(p.src_off, p.src_off + b.n_src)))
            ends.append(LineEnd(b.name, p.src_off, b.n_src, p.dst_off, b.n_dst, cols, group_lines=c,
                                group_width=r, t_part=(p.dst_off, p.dst_off + b.n_dst)))
            continue
        rows = _rows_beside_copy(b, budget) if not binary else None
        if rows is not None:  # |w| rows from the signed matrix (contiguous), columns = the copy itself
            ends.append(_end(b.name, rows, False, p.dst_off, b.n_dst, p.src_off, b.n_src, None, None, 1))
            ends.append(_end(b.name, _numpy(b.t), False, p.src_off, b.n_src, p.dst_off, b.n_dst, None, None, 1))
            continue
        mat, signed = _weighted_matrix(b, binary)
        if signed and mat.dtype in _VIEWS and b._src_map is None and b._dst_map is None:
            # lines that are contiguous in the weights (the rows of a row-major matrix, the columns of
            # a transposed view such as HF Conv1D's) are views of them; the others a transposed copy
            # (same dtype) made when first read
            kind, encoding = _VIEWS[mat.dtype]
            for x, start, size, t_start, t_size in ((mat, p.dst_off, b.n_dst, p.src_off, b.n_src),
                                                    (mat.t(), p.src_off, b.n_src, p.dst_off, b.n_dst)):
                lines = numpy_bits(x, kind) if x.shape[1] <= 1 or x.stride(1) == 1 else \
                    TransposedLines(x.t(), kind, lazy_budget)
                ends.append(LineEnd(b.name, start, size, t_start, t_size, lines, absolute=True,
                                    t_part=(t_start, t_start + t_size), encoding=encoding))
            continue
        if signed and mat.dtype not in (torch.float32, torch.float64) and b._src_map is None \
                and b._dst_map is None:  # float8: lines converted as they are read
            t_mat = mat.t()
            if budget.take(t_mat.numel() * t_mat.element_size()):
                t_mat = t_mat.contiguous()
            ends.append(LineEnd(b.name, p.dst_off, b.n_dst, p.src_off, b.n_src, TorchLines(mat), absolute=True,
                                t_part=(p.src_off, p.src_off + b.n_src)))
            ends.append(LineEnd(b.name, p.src_off, b.n_src, p.dst_off, b.n_dst, TorchLines(t_mat), absolute=True,
                                t_part=(p.dst_off, p.dst_off + b.n_dst)))
            continue
        a = _numpy(mat)
        groups = 1
        if b.mask is not None and b._src_map is None and b._dst_map is None:
            groups = _compact_groups(b.mask)
        src_map = None if b._src_map is None else b._src_map.cpu().numpy()
        dst_map = None if b._dst_map is None else b._dst_map.cpu().numpy()
        for x, start, size, t_start, t_size, own, other in (
                (a, p.dst_off, b.n_dst, p.src_off, b.n_src, dst_map, src_map),
                (a.T, p.src_off, b.n_src, p.dst_off, b.n_dst, src_map, dst_map)):
            x_signed = signed
            if groups == 1 and not x.flags.c_contiguous and budget.take(x.nbytes):
                copy = np.empty(x.shape, dtype=x.dtype)
                if signed:
                    np.abs(x, out=copy)
                else:
                    copy[...] = x
                x, x_signed = copy, False
            ends.append(_end(b.name, x, x_signed, start, size, t_start, t_size, own, other, groups))
    return ends
