"""The weight blocks as the analyses read them: each block's matrix loaded once; its
non-negative edge weights (|w|, or 0/1 after a threshold) either computed on the fly from the
signed matrix a few rows at a time (large graphs on the CPU: no copy) or held as one contiguous
transposed copy (CUDA, small graphs); exact float64 row/column sums.

Nodes are numbered in a *node space*: a list of partitions laid end to end (the whole graph in
partition order, or the partitions that a subset of blocks touches).

Every pass here that reads a signed matrix ends with :func:`graphnn._pages.release_pages` on it:
for a matrix that is a view of a memory-mapped checkpoint this drops the pages the pass made
resident (RSS stays near one block instead of growing to the checkpoint's size); for any other
tensor it does nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from .._grouped import group_diagonal, set_group_diagonal_
from .._pages import release_pages
from ..errors import InvalidParameterError, NonFiniteWeightsError
from ..graph import Block, LayeredGraph
from ..validation import check_device

#: Above this many edges the |w| copies are float32 (4 bytes/edge); at or below, float64.
FLOAT64_MAX_EDGES = 4_000_000

#: Elements converted to float64 at a time by :func:`exact_sums` (2 MB chunks).
_CHUNK_ELEMENTS = 1 << 18

Progress = Callable[[str, int, int], None]

_scratch = threading.local()


def scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reused 1-D work buffer of ``numel`` entries, one per thread, dtype and device (it
    grows to the largest size asked for). Callers must not keep or return it."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    key = (dtype, str(device))
    b = bufs.get(key)
    if b is None or b.numel() < numel:
        b = bufs[key] = torch.empty(numel, dtype=dtype, device=device)
    return b[:numel]


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
               absolute: bool = False, row_min: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums and column sums of a 2-D tensor (of ``fn(m)`` when given; of ``|m|`` with
    ``absolute``), accumulated in float64. Works a few rows at a time through one reused
    float64 buffer, so the extra memory is one small chunk. ``row_min`` (float64, one per row),
    when given, receives each row's minimum in the same pass."""
    if m.dim() != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(m.shape)}")
    n_rows, n_cols = m.shape
    f64 = torch.float64
    rows = torch.empty(n_rows, dtype=f64, device=m.device)
    cols = torch.zeros(n_cols, dtype=f64, device=m.device)
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    ones = torch.ones(n_cols, dtype=f64, device=m.device)
    buf = scratch(min(step, n_rows) * n_cols, f64, m.device)
    for i in range(0, n_rows, step):
        k = min(step, n_rows - i)
        c = buf[:k * n_cols].view(k, n_cols)
        c.copy_(fn(m[i:i + k]) if fn is not None else m[i:i + k])
        if absolute:
            c.abs_()
        torch.mv(c, ones, out=rows[i:i + k])
        cols += c.sum(0)
        if row_min is not None and n_cols:
            torch.amin(c, 1, out=row_min[i:i + k])
    release_pages(m)
    return rows, cols


def signed_and_abs_sums(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, abs_rows, abs_cols)``: float64 row and column sums of ``m`` and of ``|m|``
    in one pass over ``m`` (through one reused float64 buffer)."""
    n_rows, n_cols = m.shape
    f64 = torch.float64
    out = [torch.empty(n_rows, dtype=f64, device=m.device), torch.zeros(n_cols, dtype=f64, device=m.device),
           torch.empty(n_rows, dtype=f64, device=m.device), torch.zeros(n_cols, dtype=f64, device=m.device)]
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    ones = torch.ones(n_cols, dtype=f64, device=m.device)
    buf = scratch(min(step, n_rows) * n_cols, f64, m.device)
    for i in range(0, n_rows, step):
        k = min(step, n_rows - i)
        c = buf[:k * n_cols].view(k, n_cols)
        c.copy_(m[i:i + k])
        torch.mv(c, ones, out=out[0][i:i + k])
        out[1] += c.sum(0)
        c.abs_()
        torch.mv(c, ones, out=out[2][i:i + k])
        out[3] += c.sum(0)
    release_pages(m)
    return tuple(out)


def _group_view(m: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``(groups, r, c)`` view of the diagonal groups of ``m`` (:func:`graphnn._grouped.group_diagonal`),
    without a copy when ``m`` or its transpose is contiguous (a grouped ConvTranspose's matrix is
    a transposed view); a strided ``m`` of another layout is made contiguous first."""
    if m.is_contiguous():
        return group_diagonal(m, groups)
    if m.t().is_contiguous():  # group k of m.T is the transpose of group k of m
        return group_diagonal(m.t(), groups).transpose(1, 2)
    return group_diagonal(m.contiguous(), groups)


def masked(block: Block, m: torch.Tensor) -> torch.Tensor:
    """``m`` with the entries outside ``block.structure_mask()`` set to 0 (they are no edges).
    Equal consecutive groups are copied group by group into zeros (no mask is made)."""
    shape = _uniform_groups(block)
    if shape is not None:
        g, r, c = shape
        out = torch.zeros(m.shape, dtype=m.dtype, device=m.device)
        set_group_diagonal_(out, _group_view(m, g))
        release_pages(m)
        return out
    mask = block.structure_mask()
    if mask is None:
        return m
    return m * mask.to(m.device)


#: Dtypes with CPU abs/amin kernels (float8 formats are converted to float32 first).
_REDUCIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Weighting:
    """How a signed weight becomes a non-negative edge weight: ``|w|`` (``tau is None``), or 1
    where ``|w| >= tau`` and 0 elsewhere (a classic unweighted graph)."""

    tau: float | None = None

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if w.is_floating_point() and w.dtype not in _REDUCIBLE:  # float8: exact in float32, which has abs
            w = w.float()
        if self.tau is None:
            return w.abs()
        return (w.abs() >= self.tau).to(w.dtype if w.is_floating_point() else torch.float32)

    @property
    def integral(self) -> bool:
        return self.tau is not None


#: Entries per chunk when |W| is streamed from the signed matrix or a copy is read in chunks
#: (1 MB of float32: L2-cache sized).
_STREAM_ELEMENTS = 1 << 18
#: Entries of a streamed chunk on a GPU, where each chunk costs a few kernel launches (~5 us
#: each) rather than a cache refill: 64 MB of float32 per reused buffer.
_DEVICE_STREAM_ELEMENTS = 1 << 24

#: On the CPU, graphs with at most this many edges get the transposed |W| copy (at most 32 MB
#: in float64; faster matrix-vector products); larger ones are streamed with no copy.
CPU_COPY_MAX_EDGES = FLOAT64_MAX_EDGES


def stream_elements(device: torch.device) -> int:
    """Entries of |W| formed at once when a product streams a block (CPU: cache-sized)."""
    return _STREAM_ELEMENTS if device.type == "cpu" else _DEVICE_STREAM_ELEMENTS


def use_copy(num_edges: int, device: torch.device, weight_dtype: torch.dtype | None = None) -> bool:
    """Whether a block of a graph with ``num_edges`` edges holds a transposed |W| copy in the
    compute dtype (float32/float64), or streams |w| from its signed matrix a chunk at a time.

    CPU: small graphs only (``num_edges <= CPU_COPY_MAX_EDGES``). CUDA: the copy, except for
    weights narrower than 4 bytes (bf16, fp16, fp8: ``weight_dtype``) in a graph above that size:
    those stay on the device in their own dtype (1-2 bytes per edge) and each chunk's |w| is
    converted to the compute dtype when a product reads it (docs/gpu.md: the memory arithmetic)."""
    small = num_edges <= CPU_COPY_MAX_EDGES
    if device.type == "cpu":
        return small
    narrow = weight_dtype is not None and weight_dtype.is_floating_point and weight_dtype.itemsize < 4
    return small or not narrow


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


def _uniform_groups(block: Block) -> tuple[int, int, int] | None:
    """``(groups, rows, cols)`` per group when ``block`` is block-diagonal with equal consecutive
    groups (a grouped or depthwise conv), else ``None``."""
    g = block.groups
    m_dst, m_src = block.shape
    if g <= 1 or block.row_groups is not None or block.col_groups is not None or m_dst % g or m_src % g:
        return None
    return g, m_dst // g, m_src // g


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
        self._block = block
        self._mask = None
        self.has_mask = block.groups > 1
        self._t = None
        self.w = None
        #: ``(groups, rows, cols)`` of a block-diagonal block with equal consecutive groups and no
        #: index map; its in-group entries of ``A`` are then held compactly (``_g``: ``(groups,
        #: rows, cols)``, compute dtype) for the products, sums and components, and the dense
        #: transposed copy ``t`` (if ``copy``) is only made when something asks for it.
        self.group_shape = _uniform_groups(block) if block.src_index is None and block.dst_index is None else None
        self._g = self._g_sums = None
        self._full = self._pre_sums = None
        if self.group_shape is not None:
            g, r, c = self.group_shape
            inside = _group_view(w, g)  # (g, r, c) view (w: masked()'s contiguous zero-filled matrix)
            if inside.dtype not in _REDUCIBLE:  # float8: no abs kernel; float32 holds it exactly
                inside = inside.float()
            a = weighting(inside)
            self._g = a.to(device=device, dtype=dtype, copy=True).contiguous()
            a64 = a.to(torch.float64)
            self._g_sums = (a64.sum(2).reshape(-1).to(device), a64.sum(1).reshape(-1).to(device))
        if not copy:
            self.w = w if w.device == device else w.to(device)
        elif self.group_shape is None and (self.has_mask or device.type != "cpu"):
            t = torch.empty((self.m_src, self.m_dst), dtype=dtype, device=device)
            if weighting.tau is None:
                t.copy_(w.t())
                t.abs_()
            else:
                t.copy_(weighting(w).t())
            if self.has_mask:
                t.mul_(self.mask.t())
            self._t = t
        elif self.group_shape is None:
            self._copy_with_sums(w)
        #: the signed ``(m_dst, m_src)`` matrix beside a CPU copy (the matrix the copy was made
        #: from: a view of the parameter for most layers, else kept as long as the block), so that
        #: |w| can be read row by row without transposing the copy back (the hypercore's lines)
        self.signed_rows = w if self._t is not None and device.type == "cpu" and not self.has_mask else None
        self._copy = copy
        self._sums = None
        if self._t is not None or self._g is not None or self.w is not w:  # w was read into a copy
            release_pages(w)

    def _copy_with_sums(self, w: torch.Tensor) -> None:
        """Make the transposed copy ``t`` a cache-sized chunk at a time and, while each chunk is
        in cache, its exact float64 sums (when the compute dtype holds ``A`` exactly) and its
        zero-free lines (:meth:`full_lines`): one pass instead of three."""
        f64, tau = torch.float64, self.weighting.tau
        t = torch.empty((self.m_src, self.m_dst), dtype=self.dtype, device=self.device)
        exact = tau is not None or w.element_size() <= t.element_size()
        src_sums = torch.empty(self.m_src, dtype=f64, device=self.device)
        dst_sums = torch.zeros(self.m_dst, dtype=f64, device=self.device)
        full = torch.empty(self.m_src, dtype=torch.bool, device=self.device)
        step = max(1, _STREAM_ELEMENTS // max(self.m_dst, 1))
        for j in range(0, self.m_src, step):
            chunk = t[j:j + step]
            k = chunk.shape[0]
            if tau is None:
                chunk.copy_(w[:, j:j + k].t())
                chunk.abs_()
            else:
                chunk.copy_(self.weighting(w[:, j:j + k]).t())
            if self.m_dst:
                torch.gt(chunk.amin(1), 0, out=full[j:j + k])
            if exact:
                torch.sum(chunk, 1, dtype=f64, out=src_sums[j:j + k])
                dst_sums += chunk.sum(0, dtype=f64)
        self._t = t
        self._full = ("src", full)
        if exact:
            self._pre_sums = (dst_sums, src_sums)

    @property
    def mask(self) -> torch.Tensor | None:
        """Boolean ``(m_dst, m_src)`` structure mask on the device (``None`` for a complete
        block); made on first use."""
        if self.has_mask and self._mask is None:
            self._mask = self._block.structure_mask().to(self.device)
        return self._mask

    @property
    def t(self) -> torch.Tensor | None:
        """The transposed contiguous ``A`` (``(m_src, m_dst)``, compute dtype) when the block
        holds a copy, else ``None``; for a compactly held grouped block it is made (and kept) on
        first use."""
        if self._t is None and self._copy and self._g is not None:
            g, r, c = self.group_shape
            t = torch.zeros((self.m_src, self.m_dst), dtype=self.dtype, device=self.device)
            set_group_diagonal_(t, self._g.transpose(1, 2))
            self._t = t
        return self._t

    def group_entries(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Matrix ``(rows, cols)`` of the non-zero entries of ``A`` of a compactly held grouped
        block (see :attr:`group_shape`); ``None`` for other blocks."""
        if self._g is None:
            return None
        g, r, c = self.group_shape
        k, i, j = (self._g != 0).nonzero(as_tuple=True)
        return k * r + i, k * c + j

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
        if self.has_mask:
            m = self.mask
            m = m[rows] if isinstance(rows, slice) else (m.index_select(0, rows) if rows is not None else m)
            a = a * (m.index_select(1, cols) if cols is not None else m)
        return a

    def _matrix_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._g_sums is not None:
            return self._g_sums
        if self._pre_sums is not None:
            return self._pre_sums
        if self.t is not None:
            src_sums, dst_sums = exact_sums(self.t)
        elif not self.has_mask and self._src_map is None and self._dst_map is None:
            low = torch.zeros(self.m_dst, dtype=torch.float64, device=self.device)
            if self.weighting.tau is None:  # |w| in place in the float64 buffer (the same values)
                dst_sums, src_sums = exact_sums(self.w, absolute=True, row_min=low)
            else:
                dst_sums, src_sums = exact_sums(self.w, fn=self.weighting, row_min=low)
            if self.m_src:
                self._full = ("dst", low > 0)  # what full_lines() would read again
        else:
            dst_sums, src_sums = exact_sums(self.w, fn=self.weighting)
            if self.has_mask:  # rare (irregular groups): redo on the masked matrix
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
        y_dst = torch.zeros(self.n_dst, dtype=self.dtype, device=self.device)
        y_src = torch.zeros(self.n_src, dtype=self.dtype, device=self.device)
        self.accumulate(x_src, x_dst, y_dst, y_src)
        return y_dst, y_src

    def accumulate(self, x_src: torch.Tensor, x_dst: torch.Tensor, y_dst: torch.Tensor,
                   y_src: torch.Tensor) -> None:
        """``y_dst += A @ x_src`` and ``y_src += A.T @ x_dst`` (neuron space, as
        :meth:`matvecs`); ``x`` in the compute dtype, ``y`` in the compute dtype (added to in
        place by the products themselves) or in float64 (each product made in the compute dtype,
        then added in float64).

        On the CPU both products are taken from the same cache-sized chunk (about
        ``_STREAM_ELEMENTS`` entries) while it is in cache, so the weights are read from memory
        once per call; a streamed chunk's ``f(W)`` (|w|, or 0/1) is formed in a reused buffer
        in the compute dtype (a bf16/fp16 chunk is converted there), never a full-size
        temporary."""
        if self._src_map is not None:
            x_src = x_src.index_select(0, self._src_map)
        if self._dst_map is not None:
            x_dst = x_dst.index_select(0, self._dst_map)
        direct_dst = self._dst_map is None and y_dst.dtype == self.dtype
        direct_src = self._src_map is None and y_src.dtype == self.dtype
        o_dst = y_dst if direct_dst else torch.zeros(self.m_dst, dtype=self.dtype, device=self.device)
        o_src = y_src if direct_src else torch.zeros(self.m_src, dtype=self.dtype, device=self.device)
        self._products_into(x_src, x_dst, o_dst, o_src)
        if not direct_dst:
            o_dst = o_dst.to(y_dst.dtype)
            y_dst.add_(o_dst) if self._dst_map is None else y_dst.index_add_(0, self._dst_map, o_dst)
        if not direct_src:
            o_src = o_src.to(y_src.dtype)
            y_src.add_(o_src) if self._src_map is None else y_src.index_add_(0, self._src_map, o_src)

    def product_steps(self, x_src: torch.Tensor, x_dst: torch.Tensor, y_dst: torch.Tensor,
                      y_src: torch.Tensor) -> list[tuple[Callable, tuple]] | None:
        """:meth:`accumulate` on these fixed vectors (views of buffers the caller reuses) as a
        list of ``(function, arguments)`` calls made once, so a product costs one call per chunk
        and no slicing; ``None`` where the block needs work per call (streamed chunks, index
        maps, results added in another dtype)."""
        if self._src_map is not None or self._dst_map is not None or self.w is not None \
                or y_dst.dtype != self.dtype or y_src.dtype != self.dtype:
            return None
        if self._g is not None:
            g, r, c = self.group_shape
            if r == c == 1:
                gv = self._g.reshape(-1)
                return [(y_dst.addcmul_, (gv, x_src)), (y_src.addcmul_, (gv, x_dst))]
            return [(y_dst.view(g, r, 1).baddbmm_, (self._g, x_src.view(g, c, 1))),
                    (y_src.view(g, c, 1).baddbmm_, (self._g.transpose(1, 2), x_dst.view(g, r, 1)))]
        if self.t is None:
            return None
        if self.device.type != "cpu":
            return [(y_dst.addmv_, (self.t.t(), x_src)), (y_src.addmv_, (self.t, x_dst))]
        steps = []
        step = max(1, _STREAM_ELEMENTS // max(self.m_dst, 1))
        for j in range(0, self.m_src, step):
            a = self.t[j:j + step]
            k = a.shape[0]
            steps += [(y_src[j:j + k].addmv_, (a, x_dst)), (y_dst.addmv_, (a.t(), x_src[j:j + k]))]
        return steps

    def _products_into(self, x_src: torch.Tensor, x_dst: torch.Tensor, y_dst: torch.Tensor,
                       y_src: torch.Tensor) -> None:
        """Matrix space: ``y_dst += A x_src``, ``y_src += A^T x_dst`` (compute dtype)."""
        if self._g is not None:  # block-diagonal: one small product per group
            g, r, c = self.group_shape
            if r == c == 1:  # depthwise: a diagonal
                gv = self._g.reshape(-1)
                y_dst.addcmul_(gv, x_src)
                y_src.addcmul_(gv, x_dst)
            else:
                y_dst.view(g, r, 1).baddbmm_(self._g, x_src.view(g, c, 1))
                y_src.view(g, c, 1).baddbmm_(self._g.transpose(1, 2), x_dst.view(g, r, 1))
        elif self.t is not None and self.device.type != "cpu":
            y_dst.addmv_(self.t.t(), x_src)
            y_src.addmv_(self.t, x_dst)
        elif self.t is not None:  # chunks of source rows of the transposed copy
            step = max(1, _STREAM_ELEMENTS // max(self.m_dst, 1))
            for j in range(0, self.m_src, step):
                a = self.t[j:j + step]
                y_src[j:j + a.shape[0]].addmv_(a, x_dst)
                y_dst.addmv_(a.t(), x_src[j:j + a.shape[0]])
        else:
            step = max(1, stream_elements(self.device) // max(self.m_src, 1))
            buf = scratch(min(step, self.m_dst) * self.m_src, self.dtype, self.device)
            for i in range(0, self.m_dst, step):
                k = min(step, self.m_dst - i)
                a = self._a_into(buf[:k * self.m_src].view(k, self.m_src), i)
                y_dst[i:i + k].addmv_(a, x_src)
                y_src.addmv_(a.t(), x_dst[i:i + k])
            release_pages(self.w)

    def _a_into(self, out: torch.Tensor, i: int) -> torch.Tensor:
        """``A`` of matrix rows ``i : i + len(out)`` written into ``out`` (compute dtype, a reused
        buffer): |w| (the rows copied, converted, then |.| in place), or the 0/1 threshold, then
        the mask in place."""
        w = self.w[i:i + out.shape[0]]
        if self.weighting.tau is not None:  # compared in the weights' own precision, as Weighting does
            out.copy_(self.weighting(w))
        elif w.dtype == out.dtype:
            torch.abs(w, out=out)
        else:
            out.copy_(w)
            out.abs_()
        if self.has_mask:
            out.mul_(self.mask[i:i + out.shape[0]])
        return out

    def full_lines(self) -> tuple[str, torch.Tensor] | None:
        """Which matrix lines have no zero entry of ``A``, read in one pass without converting
        the weights: ``("dst", bool per matrix row)`` for a streamed block, ``("src", bool per
        matrix column)`` with the transposed copy; ``None`` for a block with a structure mask or
        an index map (callers then look at the entries)."""
        if self.has_mask or self._src_map is not None or self._dst_map is not None:
            return None
        if self._full is not None:
            return self._full
        if self.m_dst == 0 or self.m_src == 0:
            return None
        m, side, tau = (self.t, "src", None) if self.t is not None else (self.w, "dst", self.weighting.tau)
        full = torch.empty(m.shape[0], dtype=torch.bool, device=m.device)
        step = max(1, _STREAM_ELEMENTS // max(m.shape[1], 1))
        for i in range(0, m.shape[0], step):
            c = m[i:i + step]
            if c.dtype not in _REDUCIBLE:  # float8: no abs/amin kernels
                c = c.float()
            low = c.abs().amin(1)  # (an amin of |w| is faster than testing w != 0)
            if tau is None:
                torch.gt(low, 0, out=full[i:i + low.shape[0]])
            else:
                torch.ge(low, tau, out=full[i:i + low.shape[0]])
        release_pages(m)
        return side, full

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
    out = []
    for i, b in enumerate(todo):
        if progress:
            progress("load", i, len(todo))
        w = masked(b, b.matrix())
        if on_matrix is not None:
            on_matrix(b, w)
        out.append(AbsBlock(b, w, weighting, dtype, device, use_copy(g.num_edges, device, w.dtype)))
        release_pages(w)  # what on_matrix read; the passes read it again as they need it
        del w
    if progress:
        progress("load", len(todo), len(todo))
    return out
