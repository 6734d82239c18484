"""The weight blocks as the analyses read them: each block's matrix loaded once; its
non-negative edge weights (|w|, or 0/1 after a threshold) either computed on the fly from the
signed matrix a few rows at a time (large graphs on the CPU: no copy) or held as one contiguous
transposed copy (CUDA, small graphs); exact float64 row/column sums.

Nodes are numbered in a *node space*: a list of partitions laid end to end (the whole graph in
partition order, or the partitions that a subset of blocks touches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from ..errors import InvalidParameterError, NonFiniteWeightsError
from ..graph import Block, LayeredGraph
from ..validation import check_device

#: Above this many edges the |w| copies are float32 (4 bytes/edge); at or below, float64.
FLOAT64_MAX_EDGES = 4_000_000

#: Elements converted to float64 at a time by :func:`exact_sums` (2 MB chunks).
_CHUNK_ELEMENTS = 1 << 18

Progress = Callable[[str, int, int], None]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available, else CPU; ``cpu``/``cuda[:i]`` as given.
    An alias of :func:`graphnn.validation.check_device` (a bad device raises
    :class:`~graphnn.errors.InvalidParameterError`)."""
    return check_device(device)


def resolve_dtype(num_edges: int, dtype: torch.dtype | str | None) -> torch.dtype:
    """Precision of the |w| copies: ``None`` -> float64 up to ``FLOAT64_MAX_EDGES`` edges,
    float32 above (sums and vectors are float64 either way); ``"float32"``/``"float64"`` accepted.
    Anything else raises :class:`~graphnn.errors.InvalidParameterError`."""
    if dtype is None:
        return torch.float64 if num_edges <= FLOAT64_MAX_EDGES else torch.float32
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise InvalidParameterError(f"dtype={dtype!r}: use torch.float32, torch.float64 or None (automatic)")
    return dtype


def exact_sums(m: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
               absolute: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums and column sums of a 2-D tensor (of ``fn(m)`` when given; of ``|m|`` with
    ``absolute``), accumulated in float64. Works a few rows at a time, so the extra memory is
    one small chunk."""
    if m.dim() != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(m.shape)}")
    n_rows, n_cols = m.shape
    f64 = torch.float64
    rows = torch.empty(n_rows, dtype=f64, device=m.device)
    cols = torch.zeros(n_cols, dtype=f64, device=m.device)
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    ones = torch.ones(n_cols, dtype=f64, device=m.device)
    for i in range(0, n_rows, step):
        c = m[i:i + step]
        c = (fn(c) if fn is not None else c).to(f64, copy=True)
        if absolute:
            c.abs_()
        rows[i:i + step] = c @ ones
        cols += c.sum(0)
    return rows, cols


def signed_and_abs_sums(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, abs_rows, abs_cols)``: float64 row and column sums of ``m`` and of ``|m|``
    in one pass over ``m``."""
    n_rows, n_cols = m.shape
    f64 = torch.float64
    out = [torch.empty(n_rows, dtype=f64, device=m.device), torch.zeros(n_cols, dtype=f64, device=m.device),
           torch.empty(n_rows, dtype=f64, device=m.device), torch.zeros(n_cols, dtype=f64, device=m.device)]
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    ones = torch.ones(n_cols, dtype=f64, device=m.device)
    for i in range(0, n_rows, step):
        c = m[i:i + step].to(f64, copy=True)
        out[0][i:i + step] = c @ ones
        out[1] += c.sum(0)
        c.abs_()
        out[2][i:i + step] = c @ ones
        out[3] += c.sum(0)
    return tuple(out)


def masked(block: Block, m: torch.Tensor) -> torch.Tensor:
    """``m`` with the entries outside ``block.structure_mask()`` set to 0 (they are no edges)."""
    mask = block.structure_mask()
    if mask is None:
        return m
    return m * mask.to(m.device)


@dataclass(frozen=True)
class Weighting:
    """How a signed weight becomes a non-negative edge weight: ``|w|`` (``tau is None``), or 1
    where ``|w| >= tau`` and 0 elsewhere (a classic unweighted graph)."""

    tau: float | None = None

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if self.tau is None:
            return w.abs()
        return (w.abs() >= self.tau).to(w.dtype if w.is_floating_point() else torch.float32)

    @property
    def integral(self) -> bool:
        return self.tau is not None


#: Rows per chunk when |W| is streamed from the signed matrix (about 256 KB, cache sized).
_STREAM_ELEMENTS = 1 << 16
#: On the CPU, graphs with at most this many edges get the transposed |W| copy (at most 32 MB
#: in float64; faster matrix-vector products); larger ones are streamed with no copy.
CPU_COPY_MAX_EDGES = FLOAT64_MAX_EDGES


def use_copy(num_edges: int, device: torch.device) -> bool:
    """Whether blocks hold a transposed |W| copy: always on CUDA, on the CPU for small graphs."""
    return device.type != "cpu" or num_edges <= CPU_COPY_MAX_EDGES


class _Inverse:
    """The inverse of an index map ``index`` (matrix row/column -> neuron, ``size`` neurons):
    for a set of neurons, the matrix rows/columns that map to them. ``O(len(index))`` ints."""

    def __init__(self, index: torch.Tensor, size: int, device: torch.device):
        index = index.to(device)
        self.order = torch.argsort(index, stable=True)
        self.counts = torch.bincount(index, minlength=size)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def select(self, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lines, pos)``: the matrix lines mapped to ``neurons`` and, for each, the position
        in ``neurons`` of its neuron."""
        c = self.counts[neurons]
        k = torch.arange(neurons.numel(), device=neurons.device)
        pos = torch.repeat_interleave(k, c)
        first = torch.repeat_interleave(self.starts[neurons] - (torch.cumsum(c, 0) - c), c)
        lines = self.order[first + torch.arange(pos.numel(), device=neurons.device)]
        return lines, pos


class AbsBlock:
    """One block's non-negative edge weights ``A = f(W)`` (``(n_dst, n_src)``; ``f`` is the
    :class:`Weighting`), zero outside the block's structure, seen in *neuron space*.

    With ``copy`` (CUDA, and small graphs on the CPU, see :func:`use_copy`) ``A`` is held
    transposed and contiguous as ``t`` (``(m_src, m_dst)``, compute dtype) on the device.
    Without it nothing is copied: ``A`` is computed from the signed matrix ``w`` (a view of the
    parameter for an in-memory model) a few cache-sized rows at a time, so the analyses of a
    large graph cost little more memory than its weights.

    Neuron space (graph-model.md §2b): ``n_dst``/``n_src`` are the sizes of the destination and
    source *partitions*; the weight matrix is ``(m_dst, m_src)``, equal to them unless the block
    has index maps. Every method takes and returns neuron-space vectors: matrix column ``j``
    reads neuron ``src_index[j]`` (a gather), and rows/columns that map to the same neuron add
    up (``index_add_``: parallel edges are summed), so the callers (centrality's block operator,
    the hypercore peeling) use slices ``[off, off + n)`` of a node space as for any block.
    """

    def __init__(self, block: Block, w: torch.Tensor, weighting: Weighting, dtype: torch.dtype,
                 device: torch.device, copy: bool):
        self.name, self.src, self.dst = block.name, block.src, block.dst
        self.m_dst, self.m_src = block.shape
        self.n_dst = block.dst_size if block.dst_size is not None else self.m_dst
        self.n_src = block.src_size if block.src_size is not None else self.m_src
        self._src_map = None if block.src_index is None else block.src_index.to(device)
        self._dst_map = None if block.dst_index is None else block.dst_index.to(device)
        self._inv_src = self._inv_dst = None
        self.weighting = weighting
        self.dtype = dtype
        self.device = device
        mask = block.structure_mask()
        self.mask = None if mask is None else mask.to(device)
        self.t = None
        self.w = None
        if not copy:
            self.w = w if w.device == device else w.to(device)
        else:
            t = torch.empty((self.m_src, self.m_dst), dtype=dtype, device=device)
            if weighting.tau is None:
                t.copy_(w.t())
                t.abs_()
            else:
                t.copy_(weighting(w).t())
            if self.mask is not None:
                t.mul_(self.mask.t())
            self.t = t
        self._sums = None

    # -- matrix space <-> neuron space ------------------------------------------------------
    def _to_dst(self, v: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Matrix-row values (along ``dim``) summed into destination neurons."""
        if self._dst_map is None:
            return v
        shape = list(v.shape)
        shape[dim] = self.n_dst
        return torch.zeros(shape, dtype=v.dtype, device=v.device).index_add_(dim, self._dst_map, v)

    def _to_src(self, v: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Matrix-column values (along ``dim``) summed into source neurons."""
        if self._src_map is None:
            return v
        shape = list(v.shape)
        shape[dim] = self.n_src
        return torch.zeros(shape, dtype=v.dtype, device=v.device).index_add_(dim, self._src_map, v)

    def _a(self, w_part: torch.Tensor, rows: slice | torch.Tensor | None = None,
           cols: torch.Tensor | None = None) -> torch.Tensor:
        """``f`` applied to a piece of ``w`` (matrix space), in the compute dtype, masked."""
        a = self.weighting(w_part).to(self.dtype)
        if self.mask is not None:
            m = self.mask
            m = m[rows] if isinstance(rows, slice) else (m.index_select(0, rows) if rows is not None else m)
            a = a * (m.index_select(1, cols) if cols is not None else m)
        return a

    def _matrix_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.t is not None:
            src_sums, dst_sums = exact_sums(self.t)
        else:
            dst_sums, src_sums = exact_sums(self.w, fn=self.weighting)
            if self.mask is not None:  # rare (grouped blocks are small): redo on the masked matrix
                dst_sums, src_sums = exact_sums(self._a(self.w))
        return dst_sums, src_sums

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact float64 sums of ``A`` per neuron: (``dst_sums``, length ``n_dst``; ``src_sums``,
        length ``n_src``), parallel edges added; raises :class:`NonFiniteWeightsError` on
        NaN/Inf weights."""
        if self._sums is None:
            dst_sums, src_sums = self._matrix_sums()
            if not (torch.isfinite(src_sums).all() and torch.isfinite(dst_sums).all()):
                raise NonFiniteWeightsError(
                    f"block {self.name!r} has NaN or infinite weights; eigenvector centrality and "
                    "hypercores need finite weights: fix the checkpoint, or leave the parameter out "
                    "(graphnn.extract(..., exclude=[...]))")
            self._sums = (self._to_dst(dst_sums), self._to_src(src_sums))
        return self._sums

    def _matrix_rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self.t is not None:
            return self.t.index_select(1, idx).t()
        return self._a(self.w.index_select(0, idx), rows=idx)

    def _matrix_cols(self, idx: torch.Tensor) -> torch.Tensor:
        if self.t is not None:
            return self.t.index_select(0, idx)
        return self._a(self.w.index_select(1, idx), cols=idx).t()

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The adjacency rows of destination neurons ``idx``: a ``(k, n_src)`` tensor whose entry
        ``(q, u)`` sums ``A`` over the edges between ``idx[q]`` and source neuron ``u``."""
        if self._dst_map is None:
            a = self._matrix_rows(idx)
        else:
            if self._inv_dst is None:
                self._inv_dst = _Inverse(self._dst_map, self.n_dst, self.device)
            lines, pos = self._inv_dst.select(idx)
            a = torch.zeros(idx.numel(), self.m_src, dtype=self.dtype, device=self.device).index_add_(
                0, pos, self._matrix_rows(lines))
        return self._to_src(a, dim=1)

    def cols(self, idx: torch.Tensor) -> torch.Tensor:
        """The adjacency rows of source neurons ``idx``: a ``(k, n_dst)`` tensor (``A[:, idx]``
        transposed, parallel edges summed)."""
        if self._src_map is None:
            a = self._matrix_cols(idx)
        else:
            if self._inv_src is None:
                self._inv_src = _Inverse(self._src_map, self.n_src, self.device)
            lines, pos = self._inv_src.select(idx)
            a = torch.zeros(idx.numel(), self.m_dst, dtype=self.dtype, device=self.device).index_add_(
                0, pos, self._matrix_cols(lines))
        return self._to_dst(a, dim=1)

    def matvecs(self, x_src: torch.Tensor, x_dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A @ x_src, A.T @ x_dst)`` in the compute dtype, in one pass over the weights;
        ``x_src``/``x_dst`` and the results are neuron-space (lengths ``n_src``/``n_dst``):
        inputs gathered through the index maps, outputs summed back (``index_add_``)."""
        if self._src_map is not None:
            x_src = x_src.index_select(0, self._src_map)
        if self._dst_map is not None:
            x_dst = x_dst.index_select(0, self._dst_map)
        if self.t is not None:
            y_dst, y_src = self.t.t() @ x_src, self.t @ x_dst
        else:
            y_dst = torch.empty(self.m_dst, dtype=self.dtype, device=self.device)
            y_src = torch.zeros(self.m_src, dtype=self.dtype, device=self.device)
            step = max(1, _STREAM_ELEMENTS // max(self.m_src, 1))
            for i in range(0, self.m_dst, step):
                a = self._a(self.w[i:i + step], rows=slice(i, i + step))
                y_dst[i:i + step] = a @ x_src
                y_src.addmv_(a.t(), x_dst[i:i + step])
        return self._to_dst(y_dst), self._to_src(y_src)

    def set_abs_sums(self, dst_sums: torch.Tensor, src_sums: torch.Tensor) -> None:
        """Reuse |w| sums already computed from the (masked) signed matrix (matrix space: row and
        column sums of ``|W|``), when they are exactly the sums of ``A`` (|w| weighting, and no
        rounding into the compute dtype)."""
        exact = self.w is not None and self.w.element_size() <= torch.tensor([], dtype=self.dtype).element_size()
        if self.weighting.tau is None and exact:
            if not (torch.isfinite(src_sums).all() and torch.isfinite(dst_sums).all()):
                return  # sums() will raise with the message
            self._sums = (self._to_dst(dst_sums.to(self.device)), self._to_src(src_sums.to(self.device)))

    def total(self) -> float:
        """Sum of all entries of ``A``."""
        return float(self.sums()[0].sum())


@dataclass
class NodeSpace:
    """Partitions laid end to end: ``offsets[name]`` is the index of the partition's neuron 0."""

    names: list[str]
    sizes: list[int]

    def __post_init__(self):
        self.offsets, n = {}, 0
        for name, size in zip(self.names, self.sizes):
            self.offsets[name] = n
            n += size
        self.n = n

    @classmethod
    def of_graph(cls, g: LayeredGraph, names: Iterable[str] | None = None) -> "NodeSpace":
        """All partitions of ``g`` (in order), or those in ``names`` (kept in graph order)."""
        wanted = None if names is None else set(names)
        parts = [p for p in g.partitions.values() if wanted is None or p.name in wanted]
        return cls([p.name for p in parts], [p.size for p in parts])


@dataclass
class Placed:
    """A block placed in a node space: destination and source offsets."""

    block: AbsBlock
    dst_off: int
    src_off: int


def place(space: NodeSpace, blocks: Sequence[AbsBlock]) -> list[Placed]:
    return [Placed(b, space.offsets[b.dst], space.offsets[b.src]) for b in blocks]


def load_abs_blocks(
    g: LayeredGraph,
    *,
    blocks: Sequence[Block] | None = None,
    weighting: Weighting = Weighting(),
    dtype: torch.dtype,
    device: torch.device,
    on_matrix: Callable[[Block, torch.Tensor], None] | None = None,
    progress: Progress | None = None,
) -> list[AbsBlock]:
    """Read each block's matrix once (masked to its structure), hand the signed matrix to
    ``on_matrix`` if given, and wrap it in an :class:`AbsBlock` (which keeps the matrix)."""
    todo = list(g.blocks.values()) if blocks is None else list(blocks)
    copy = use_copy(g.num_edges, device)
    out = []
    for i, b in enumerate(todo):
        if progress:
            progress("load", i, len(todo))
        w = masked(b, b.matrix())
        if on_matrix is not None:
            on_matrix(b, w)
        out.append(AbsBlock(b, w, weighting, dtype, device, copy))
        del w
    if progress:
        progress("load", len(todo), len(todo))
    return out
