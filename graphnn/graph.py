"""The layered (multipartite) weighted graph whose edges are weight tensors.

A :class:`LayeredGraph` is a list of :class:`Partition` (groups of neurons, each with a stable
name and a size) and a list of :class:`Block` (the bipartite edges between two partitions that
one weight parameter produces). A block keeps the weights as a ``(n_dst, n_src)`` matrix view;
no edge list is ever built. Nodes are addressed as ``(partition name, index)``; the global node
order is partition order, then index.

Example
-------
>>> import torch, graphnn
>>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> g = graphnn.extract(mlp)
>>> [(p.name, p.size) for p in g.partitions.values()]
[('input', 4), ('0', 3), ('2', 2)]
>>> g.num_nodes, g.num_edges
(9, 18)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import GraphTooLargeError, MissingDependencyError, NonFiniteWeightsWarning

#: Aggregations of a kernel slice ``W[i, j, ...]`` into one channel-level edge weight.
AGGREGATIONS = ("l2", "l1", "sum")

#: Default refusal thresholds (edges) of the interop exports; networkx costs ~400 B/edge,
#: igraph ~70 B/edge, a symmetric scipy CSR (float64) ~24 B/edge.
MAX_EDGES = {"networkx": 5_000_000, "igraph": 50_000_000, "scipy": 200_000_000}

_TENSOR_NATIVE_HINT = (
    "use graphnn's tensor-native analyses instead (graphnn.strength, graphnn.strength_variance, "
    "graphnn.eigenvector_centrality, graphnn.hypercore, graphnn.analyse), which work on the "
    "weight tensors directly at 2-4 bytes per edge; or pass max_edges=... to export anyway"
)


@dataclass(frozen=True)
class Partition:
    """A group of neurons: ``name`` is stable (derived from module/parameter names), ``size`` the
    number of neurons. ``members`` lists the names merged into it (residual additions) and
    ``kind`` is one of ``"input"``, ``"features"``, ``"residual"``, ``"concat"``."""

    name: str
    size: int
    kind: str = "features"
    members: tuple[str, ...] = ()


def aggregate_kernel(weight: torch.Tensor, how: str) -> torch.Tensor:
    """Collapse all axes after the first two of ``weight`` (``(a, b, *k)``) into one number per
    ``(a, b)`` pair: ``"l2"`` (Euclidean norm), ``"l1"`` (sum of |w|) or ``"sum"`` (signed sum).
    Computed in at least float32, and again in float64 where finite weights overflow float32
    (e.g. 1e38 everywhere: the float64 result then carries the true, larger-than-float32 value)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}: use one of {', '.join(AGGREGATIONS)}")
    w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    if w.dim() == 2:
        return w.abs() if how in ("l2", "l1") else w
    out = _aggregate(w.reshape(w.shape[0], w.shape[1], -1), how)
    if w.dtype != torch.float64 and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(w).all()):
        out = _aggregate(w.reshape(w.shape[0], w.shape[1], -1).double(), how)
    return out


def _aggregate(w: torch.Tensor, how: str) -> torch.Tensor:
    if how == "l2":
        return torch.linalg.vector_norm(w, ord=2, dim=-1)
    if how == "l1":
        return w.abs().sum(dim=-1)
    return w.sum(dim=-1)


def output_units(weight: torch.Tensor, transposed: bool = False, groups: int = 1) -> torch.Tensor:
    """Scabini et al.'s tensor view: ``weight`` as an ``(n_out, numel / n_out)`` matrix whose rows
    are output units. A view for weights stored output-first (Linear ``(out, in)``, ConvNd
    ``(c_out, c_in/groups, *k)``); a copy for ``transposed`` ConvTranspose weights
    ``(c_in, c_out/groups, *k)``, whose output channel ``o`` of group ``g`` gets the entries
    ``W[g * c_in/groups : (g+1) * c_in/groups, o, ...]``."""
    if not transposed:
        return weight.reshape(weight.shape[0], -1)
    cin, cout_g, k = weight.shape[0], weight.shape[1], weight.shape[2:]
    v = weight.reshape(groups, cin // groups, cout_g, *k).transpose(1, 2)  # (g, cout_g, cin_g, *k)
    return v.reshape(groups * cout_g, -1)


def count_nonfinite(t: torch.Tensor, chunk: int = 1 << 22) -> int:
    """Exact number of NaN/±Inf entries of ``t`` (0 for non-float tensors and for tensors
    without values, on the ``meta`` device), cheaply and without a full-size temporary.

    One sum in ``t``'s own dtype decides the common case: NaN and ±Inf propagate through a sum
    (``inf + -inf`` is NaN), so a finite sum proves there are none. A non-finite sum may also
    come from overflow of finite values (1e38 + 1e38 in float32), so it is only a reason to
    count exactly, ``chunk`` entries at a time with ``isfinite``. Dtypes without a sum kernel
    (float8) are counted directly. Sparse tensors count their stored values."""
    if not t.is_floating_point() or t.device.type == "meta":
        return 0
    if t.layout != torch.strided:
        t = t.coalesce().values() if t.layout == torch.sparse_coo else t.values()
    if t.numel() == 0:
        return 0
    try:
        if bool(torch.isfinite(t.sum())):
            return 0
    except (RuntimeError, NotImplementedError):  # no sum kernel for this dtype (float8)
        pass
    return sum(int(piece.numel() - _isfinite(piece).sum()) for piece in _pieces(t, chunk))


def _isfinite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite``, through float32 for dtypes without a kernel (some float8 formats)."""
    try:
        return torch.isfinite(t)
    except (RuntimeError, NotImplementedError):
        return torch.isfinite(t.float())


def _pieces(t: torch.Tensor, chunk: int) -> Iterable[torch.Tensor]:
    """``t`` as consecutive views of about ``chunk`` entries (whole rows of the first axis when
    ``t`` is not contiguous, so that no piece is copied)."""
    if t.is_contiguous() or t.dim() == 0:
        flat = t.reshape(-1)
        for i in range(0, flat.numel(), chunk):
            yield flat[i:i + chunk]
        return
    rows = max(1, chunk // max(1, t[0].numel()))
    for i in range(0, t.shape[0], rows):
        yield t[i:i + rows]


@dataclass(eq=False)
class Block:
    """The bipartite edges between two partitions produced by one weight parameter.

    ``name`` is the fully qualified parameter name (``layer3.0.conv1.weight``); a fused tensor
    split into several blocks gets a suffix (``attn.in_proj_weight[q]``). ``param`` is the
    parameter name alone. ``matrix()`` returns the ``(n_dst, n_src)`` weights: entry ``(i, j)``
    is the edge from source neuron ``j`` to destination neuron ``i``. Without aggregation it is a
    view sharing memory with the parameter (signed values), except for a block that takes a
    non-contiguous set of the weight's columns (a layer reading an interleaved concatenation,
    e.g. after a channel shuffle), which is gathered on each call; with an aggregation (conv
    kernels, flatten) it is computed on each call. ``groups > 1`` means a block-diagonal structure
    (grouped / depthwise conv): only entries inside the diagonal groups are edges.

    Index maps (graph-model.md §2b): ``src_index`` (int64, length ``n_src``, values in
    ``[0, size of src)``) says that column ``j`` is an edge from source neuron ``src_index[j]``;
    ``dst_index`` (length ``n_dst``) that row ``i`` is an edge into ``dst_index[i]``. ``None`` is
    the identity (then ``n_src``/``n_dst`` equal the partition sizes). A split/slice of a
    partition is ``arange(a, b)``, a channel shuffle a permutation, grouped-query attention a
    repeat map. Several columns (rows) mapping to one neuron are parallel edges: strength adds
    them, centrality and cores add their |w|, the exports merge them into one edge (summed). An
    index map costs ``O(n_src)`` integers, never an edge list. ``shape``, ``matrix()`` and
    :attr:`num_edges` stay in *matrix space* (parallel edges counted one by one);
    ``src_size``/``dst_size`` are the partition sizes (filled in by :class:`LayeredGraph`).
    """

    name: str
    param: str
    src: str
    dst: str
    shape: tuple[int, int]
    kind: str
    param_shape: tuple[int, ...]
    dtype: torch.dtype
    aggregation: str | None = None
    groups: int = 1
    src_index: torch.Tensor | None = None
    dst_index: torch.Tensor | None = None
    src_size: int | None = None
    dst_size: int | None = None
    #: group id of every matrix row / column when the block is a part (a column selection) of a
    #: grouped conv; ``None``: derived from ``groups`` as equal consecutive groups
    row_groups: torch.Tensor | None = field(repr=False, default=None)
    col_groups: torch.Tensor | None = field(repr=False, default=None)
    _load: Callable[[], torch.Tensor] = field(repr=False, default=None)
    _to_matrix: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, default=None)
    _on_load: Callable[["Block", torch.Tensor], None] | None = field(repr=False, default=None)
    _entry_index: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = field(repr=False, default=None)

    @property
    def n_dst(self) -> int:
        return self.shape[0]

    @property
    def n_src(self) -> int:
        return self.shape[1]

    @property
    def num_edges(self) -> int:
        """Structural edges in matrix space: ``n_dst * n_src / groups`` (zero-valued weights
        still count; parallel edges of an index map count one by one)."""
        if self.groups > 1 and (self.row_groups is not None or self.col_groups is not None):
            r, c = self._groups_of()
            g = int(max(int(r.max()), int(c.max()))) + 1
            return int((torch.bincount(r, minlength=g) * torch.bincount(c, minlength=g)).sum())
        return self.shape[0] * self.shape[1] // self.groups

    @property
    def is_mapped(self) -> bool:
        """Whether the block carries an index map on either side."""
        return self.src_index is not None or self.dst_index is not None

    def _groups_of(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.groups
        rows = self.row_groups if self.row_groups is not None else torch.arange(self.n_dst) // (self.n_dst // g)
        cols = self.col_groups if self.col_groups is not None else torch.arange(self.n_src) // (self.n_src // g)
        return rows, cols

    def src_neurons(self) -> torch.Tensor:
        """Source neuron of every matrix column (``src_index``, or ``arange(n_src)``)."""
        return self.src_index if self.src_index is not None else torch.arange(self.n_src)

    def dst_neurons(self) -> torch.Tensor:
        """Destination neuron of every matrix row (``dst_index``, or ``arange(n_dst)``)."""
        return self.dst_index if self.dst_index is not None else torch.arange(self.n_dst)

    def tensor(self) -> torch.Tensor:
        """The raw parameter tensor (read from the file on each call for file sources)."""
        t = self._load()
        if self._on_load is not None:
            self._on_load(self, t)
        return t

    def matrix(self, dtype: torch.dtype | None = None, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(n_dst, n_src)`` weight matrix; ``dtype`` converts (copies) if given. ``tensor``
        is the raw parameter when the caller already read it with :meth:`tensor` (a lazily
        loaded file is then not read again)."""
        m = self._to_matrix(self.tensor() if tensor is None else tensor)
        if tuple(m.shape) != self.shape:  # a bug, never a user error
            raise AssertionError(f"block {self.name}: matrix {tuple(m.shape)} != {self.shape}")
        return m if dtype is None or m.dtype == dtype else m.to(dtype)

    def entry_index(self, space: str = "neuron") -> tuple[torch.Tensor, torch.Tensor]:
        """Which edge each entry of the parameter tensor belongs to: two int64 tensors of the
        parameter's shape holding the destination and source of that entry's edge in this
        block, or ``-1`` where the entry belongs to another block of the same parameter
        (another q/k/v part, another concatenated input). Several entries share one edge when
        an aggregation (conv kernel, flatten positions) combines them. Needs no tensor data.

        ``space="neuron"`` (default): neuron indices in the ``dst``/``src`` partitions (the
        index maps applied: what per-neuron tables such as hypercores are indexed by).
        ``space="matrix"``: row and column of :meth:`matrix` instead (equal to the neuron
        indices when the block has no index map)."""
        if space not in ("neuron", "matrix"):
            raise ValueError(f"space={space!r}: use 'neuron' (partition neurons) or 'matrix' (matrix rows/cols)")
        if self._entry_index is None:  # a plain (n_dst, n_src) matrix
            rows = torch.arange(self.n_dst)[:, None].expand(self.shape).clone()
            cols = torch.arange(self.n_src)[None, :].expand(self.shape).clone()
        else:
            rows, cols = self._entry_index()
        if space == "neuron":
            rows, cols = _through(rows, self.dst_index), _through(cols, self.src_index)
        return rows, cols

    def neuron_entry_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`entry_index` in neuron space (destination and source neuron of every entry)."""
        return self.entry_index("neuron")

    def structure_mask(self) -> torch.Tensor | None:
        """Boolean ``(n_dst, n_src)`` mask of structural edges (matrix space), or ``None`` when
        complete."""
        if self.groups == 1:
            return None
        rows, cols = self._groups_of()
        return rows[:, None] == cols[None, :]


def _through(idx: torch.Tensor, index_map: torch.Tensor | None) -> torch.Tensor:
    """``index_map[idx]`` where ``idx >= 0``; ``-1`` stays ``-1``."""
    if index_map is None:
        return idx
    out = torch.full_like(idx, -1)
    ok = idx >= 0
    out[ok] = index_map[idx[ok]]
    return out


def check_index_map(index: torch.Tensor | None, length: int, size: int, what: str) -> torch.Tensor | None:
    """Validate an index map: 1-D int64 on the CPU, ``length`` entries in ``[0, size)``.
    Returns it (as int64, CPU, contiguous) or ``None``; raises ``ValueError`` naming ``what``."""
    if index is None:
        return None
    if not isinstance(index, torch.Tensor):
        index = torch.as_tensor(index)
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{what}: an index map must be a 1-D integer tensor, got {index.dtype} of shape "
                         f"{tuple(index.shape)}")
    if index.numel() != length:
        raise ValueError(f"{what}: index map has {index.numel()} entries but the matrix has {length}")
    if length and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"{what}: index map values must lie in [0, {size}), got "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index.to("cpu", torch.int64).contiguous()


class LayeredGraph:
    """A layered, weighted multipartite graph whose edges are weight tensors.

    Parameters
    ----------
    partitions : ordered partitions (names unique).
    blocks : blocks; each ``src``/``dst`` must name a partition.
    coverage : one record per parameter of the source (see :attr:`coverage`).
    source : a short description of what was extracted (path or class name).
    notes : messages about the extraction (e.g. a topology fallback).
    meta : free-form facts about how the graph was made, kept as :attr:`meta` (a dict); e.g. a
        ΔW graph of :func:`graphnn.delta` records ``meta["delta"]`` and ``meta["all_zero"]``.
    """

    def __init__(
        self,
        partitions: Sequence[Partition],
        blocks: Sequence[Block],
        coverage: Sequence[dict] | None = None,
        source: str | None = None,
        notes: Sequence[str] = (),
        meta: Mapping | None = None,
    ):
        parts: dict[str, Partition] = {}
        for p in partitions:
            if p.name in parts:
                raise ValueError(f"duplicate partition name {p.name!r}")
            if p.size < 1:
                raise ValueError(f"partition {p.name!r} has size {p.size}; sizes must be >= 1")
            parts[p.name] = p
        blks: dict[str, Block] = {}
        for b in blocks:
            if b.name in blks:
                raise ValueError(f"duplicate block name {b.name!r}")
            for side, end, size, index in (("src", b.src, b.n_src, b.src_index), ("dst", b.dst, b.n_dst, b.dst_index)):
                if end not in parts:
                    raise ValueError(f"block {b.name!r} refers to unknown partition {end!r}")
                psize = parts[end].size
                if index is None and psize != size:
                    raise ValueError(
                        f"block {b.name!r} has {size} neurons on partition {end!r} of size "
                        f"{psize}"
                    )
                index = check_index_map(index, size, psize, f"block {b.name!r} {side}_index")
                declared = getattr(b, f"{side}_size")
                if declared is not None and declared != psize:
                    raise ValueError(f"block {b.name!r}: {side}_size={declared} but partition {end!r} has {psize} neurons")
                setattr(b, f"{side}_index", index)
                setattr(b, f"{side}_size", psize)
            blks[b.name] = b
        self._partitions = parts
        self._blocks = blks
        self._coverage = [dict(r) for r in (coverage or [])]
        self._coverage_index = {r["name"]: r for r in self._coverage}
        self.source = source
        self.notes = list(notes)
        self.meta: dict = dict(meta or {})
        offsets, total = {}, 0
        for name, p in parts.items():
            offsets[name] = total
            total += p.size
        self._offsets = offsets
        self._num_nodes = total
        for b in blks.values():
            if b._on_load is None:
                b._on_load = self._record_nonfinite

    @classmethod
    def from_matrices(
        cls,
        partitions: Mapping[str, int],
        blocks: Mapping[str, tuple[str, str, torch.Tensor]],
    ) -> "LayeredGraph":
        """Build a graph from plain matrices: ``partitions`` maps names to sizes (in order),
        ``blocks`` maps a block name to ``(src, dst, W)`` with ``W`` of shape ``(n_dst, n_src)``,
        or to ``(src, dst, W, src_index, dst_index)`` for an index-mapped block (either map may
        be ``None``; see :class:`Block`). The blocks share memory with the given tensors.

        >>> import torch
        >>> g = LayeredGraph.from_matrices({"a": 2, "b": 3}, {"w": ("a", "b", torch.ones(3, 2))})
        >>> g.num_edges
        6
        """
        parts = [Partition(n, int(s), kind="features") for n, s in partitions.items()]
        blks, cov = [], []
        for name, spec in blocks.items():
            if len(spec) not in (3, 5):
                raise ValueError(f"block {name!r}: give (src, dst, W) or (src, dst, W, src_index, dst_index)")
            src, dst, w = spec[:3]
            src_index, dst_index = spec[3:] if len(spec) == 5 else (None, None)
            if w.dim() != 2:
                raise ValueError(f"block {name!r}: expected a 2-D (n_dst, n_src) matrix, got {tuple(w.shape)}")
            blks.append(Block(
                name=name, param=name, src=src, dst=dst, shape=tuple(w.shape), kind="matrix",
                param_shape=tuple(w.shape), dtype=w.dtype,
                src_index=None if src_index is None else torch.as_tensor(src_index),
                dst_index=None if dst_index is None else torch.as_tensor(dst_index),
                _load=(lambda w=w: w), _to_matrix=(lambda t: t),
            ))
            cov.append({"name": name, "shape": str(tuple(w.shape)), "dtype": str(w.dtype).replace("torch.", ""),
                        "numel": w.numel(), "status": "mapped", "kind": "matrix", "reason": "",
                        "blocks": name, "nonfinite": None})
        return cls(parts, blks, coverage=cov, source="matrices")

    # -- structure -----------------------------------------------------------------------
    @property
    def partitions(self) -> Mapping[str, Partition]:
        """Ordered, read-only mapping ``name -> Partition``."""
        return MappingProxyType(self._partitions)

    @property
    def blocks(self) -> Mapping[str, Block]:
        """Ordered, read-only mapping ``block name -> Block``."""
        return MappingProxyType(self._blocks)

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def num_edges(self) -> int:
        """Structural edges summed over blocks (a zero weight is still an edge)."""
        return sum(b.num_edges for b in self._blocks.values())

    def offset(self, partition: str) -> int:
        """Global index of neuron 0 of ``partition`` (nodes are ordered by partition)."""
        return self._offsets[partition]

    def node_index(self, partition: str, neuron: int) -> int:
        if not 0 <= neuron < self._partitions[partition].size:
            raise IndexError(f"neuron {neuron} out of range for partition {partition!r}")
        return self._offsets[partition] + neuron

    def nodes(self) -> Iterator[tuple[str, int]]:
        """All nodes as ``(partition, index)`` in global order."""
        for name, p in self._partitions.items():
            for i in range(p.size):
                yield (name, i)

    def blocks_into(self, partition: str) -> list[Block]:
        return [b for b in self._blocks.values() if b.dst == partition]

    def blocks_out_of(self, partition: str) -> list[Block]:
        return [b for b in self._blocks.values() if b.src == partition]

    def matrices(self, dtype: torch.dtype | None = torch.float32, absolute: bool = False) -> dict[str, torch.Tensor]:
        """Every block's matrix, each read once: ``{block name: (n_dst, n_src) tensor}``."""
        out = {}
        for name, b in self._blocks.items():
            m = b.matrix(dtype)
            out[name] = m.abs() if absolute else m
        return out

    # -- coverage --------------------------------------------------------------------------
    @property
    def coverage(self) -> pd.DataFrame:
        """One row per parameter of the source: ``name``, ``shape``, ``dtype``, ``numel``,
        ``status`` (``mapped``/``skipped``), ``kind``, ``reason``, ``blocks`` (names of the blocks
        it produced) and ``nonfinite`` (count of NaN/Inf entries; ``<NA>`` until a lazily read
        tensor has been read)."""
        cols = ["name", "shape", "dtype", "numel", "status", "kind", "reason", "blocks", "nonfinite"]
        df = pd.DataFrame([{c: r.get(c) for c in cols} for r in self._coverage], columns=cols)
        df["numel"] = df["numel"].astype("int64")
        df["nonfinite"] = df["nonfinite"].astype("Int64")
        return df

    @property
    def coverage_fraction(self) -> float:
        """Share of parameter entries (numel) that were mapped to blocks."""
        total = sum(r["numel"] for r in self._coverage)
        mapped = sum(r["numel"] for r in self._coverage if r["status"] == "mapped")
        return mapped / total if total else 0.0

    def _record_nonfinite(self, block: Block, tensor: torch.Tensor) -> None:
        rec = self._coverage_index.get(block.param)
        if rec is None or rec.get("nonfinite") is not None:
            return
        count = count_nonfinite(tensor)
        rec["nonfinite"] = count
        if count:
            warnings.warn(
                f"{block.param}: {count} NaN/Inf weights; results touching this block are not "
                "meaningful (see the 'nonfinite' column of the coverage table)",
                NonFiniteWeightsWarning,
                stacklevel=3,
            )

    def __repr__(self) -> str:
        return (
            f"LayeredGraph({len(self._partitions)} partitions, {len(self._blocks)} blocks, "
            f"{self.num_nodes} nodes, {self.num_edges} edges"
            + (f", source={self.source!r}" if self.source else "")
            + ")"
        )

    def _repr_html_(self) -> str:
        """A short HTML summary for Jupyter: counts, the first partitions and blocks, the notes
        (:mod:`graphnn.html_summary`; names and notes escaped)."""
        from .html_summary import graph_html

        return graph_html(self)

    # -- interop ---------------------------------------------------------------------------
    def _check_size(self, tool: str, max_edges: int | None) -> None:
        limit = MAX_EDGES[tool] if max_edges is None else max_edges
        if self.num_edges > limit:
            raise GraphTooLargeError(
                f"{self.num_edges:,} edges exceed the {tool} export limit of {limit:,}: "
                + _TENSOR_NATIVE_HINT
            )

    def _edge_arrays(self, weight: str) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per block: global (dst, src) node indices and weights of its structural edges."""
        if weight not in ("abs", "signed"):
            raise ValueError(f"weight must be 'abs' or 'signed', not {weight!r}")
        for b in self._blocks.values():
            m = b.matrix(torch.float64)
            if weight == "abs":
                m = m.abs()
            mask = b.structure_mask()
            if mask is None:
                rows, cols = np.divmod(np.arange(b.n_dst * b.n_src), b.n_src)
                vals = m.reshape(-1).numpy()
            else:
                r, c = mask.nonzero(as_tuple=True)
                rows, cols, vals = r.numpy(), c.numpy(), m[r, c].numpy()
            if b.dst_index is not None:  # matrix rows/cols -> neurons (parallel edges repeat a pair)
                rows = b.dst_index.numpy()[rows]
            if b.src_index is not None:
                cols = b.src_index.numpy()[cols]
            yield rows + self._offsets[b.dst], cols + self._offsets[b.src], vals

    def to_scipy(self, weight: str = "abs", max_edges: int | None = None):
        """Symmetric sparse adjacency (``scipy.sparse.csr_array``, float64) over all nodes in
        global order. ``weight="abs"`` uses |w|, ``"signed"`` the raw weights. Parallel edges
        (two blocks joining the same pair of neurons, or several columns/rows of one block that
        an index map sends to the same neuron) are merged into one entry: their weights are
        summed (so with ``"abs"`` the entry is the sum of their |w|)."""
        import scipy.sparse as sp

        self._check_size("scipy", max_edges)
        rows, cols, vals = [], [], []
        for r, c, v in self._edge_arrays(weight):
            rows += [r, c]
            cols += [c, r]
            vals += [v, v]
        n = self.num_nodes
        if not rows:
            return sp.csr_array((n, n), dtype=np.float64)
        a = sp.coo_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        return a.tocsr()

    def to_networkx(self, weight: str = "signed", max_edges: int | None = None):
        """An undirected ``networkx.Graph``. Nodes are ``(partition, index)`` with attributes
        ``layer``, ``neuron`` and ``subset`` (partition position, for
        ``nx.multipartite_layout``); edges carry ``weight`` (signed by default, ``"abs"`` for
        |w|). Parallel edges (two blocks joining the same pair of neurons, or columns/rows that an
        index map sends to the same neuron) are merged into one edge whose weight is the sum of
        theirs (for ``"abs"``: the sum of their |w|), so ``number_of_edges()`` can be smaller than
        :attr:`num_edges`."""
        import networkx as nx

        self._check_size("networkx", max_edges)
        g = nx.Graph()
        names = list(self._partitions)
        for k, name in enumerate(names):
            g.add_nodes_from(((name, i), {"layer": name, "neuron": i, "subset": k})
                             for i in range(self._partitions[name].size))
        node_of = [nd for nd in g.nodes]
        for r, c, v in self._edge_arrays(weight):
            for a, b_, w in zip(r.tolist(), c.tolist(), v.tolist()):
                u, x = node_of[a], node_of[b_]
                if g.has_edge(u, x):
                    g[u][x]["weight"] += w
                else:
                    g.add_edge(u, x, weight=w)
        return g

    def to_igraph(self, weight: str = "signed", max_edges: int | None = None):
        """An undirected ``igraph.Graph`` (needs ``pip install graphnn[igraph]``). Vertex ``i`` is
        global node ``i``, with attributes ``layer``, ``neuron``, ``subset``; edges carry
        ``weight``. Parallel edges (two blocks joining the same pair of neurons, or columns/rows
        that an index map sends to the same neuron) are merged into one edge, weights summed."""
        try:
            import igraph as ig
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingDependencyError(
                "to_igraph needs python-igraph (GPL): pip install 'graphnn[igraph]'"
            ) from e
        self._check_size("igraph", max_edges)
        parts = list(self._edge_arrays(weight))
        dst = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        src = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        val = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
        g = ig.Graph(n=self.num_nodes, edges=np.column_stack([src, dst]).tolist())
        g.es["weight"] = val.tolist()
        g.simplify(multiple=True, loops=False, combine_edges="sum")
        layer, neuron, subset = [], [], []
        for k, (name, p) in enumerate(self._partitions.items()):
            layer += [name] * p.size
            neuron += list(range(p.size))
            subset += [k] * p.size
        g.vs["layer"], g.vs["neuron"], g.vs["subset"] = layer, neuron, subset
        return g


def nbytes_of(graph: LayeredGraph) -> int:
    """Bytes held by the graph's parameter tensors (in their stored dtype)."""
    return sum(math.prod(b.param_shape) * b.dtype.itemsize for b in graph.blocks.values())
