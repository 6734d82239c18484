"""Assembling partitions, blocks and the coverage table into a :class:`LayeredGraph`.

Partitions are created as the dataflow (or the parameter order) is walked; residual additions
merge them (union-find, the earliest partition gives the merged one its name); a concatenation
is a :class:`Concat` of partitions, and a layer reading it gets one block per member (column
slices of its weight), so no neuron is duplicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .._grouped import from_group_diagonal, group_shape
from ..graph import AGGREGATIONS, Block, LayeredGraph, Partition, aggregate_kernel
from .checkpoints import TensorEntry
from .rules import QKV, Rule


@dataclass
class Concat:
    """Partitions stacked along the feature axis, in order (each member a partition id or an
    :class:`Indexed` view of one)."""

    members: list = field(default_factory=list)


@dataclass
class Indexed:
    """A partition read through an index map (graph-model.md §2b): feature ``j`` of this view is
    neuron ``index[j]`` of partition ``base`` (a split/slice ``arange(a, b)``, a channel shuffle's
    permutation, a repeat). ``index`` is int64 on the CPU; ``O(len)`` integers, no edge list."""

    base: int
    index: torch.Tensor

    def __post_init__(self):
        self.index = torch.as_tensor(self.index, dtype=torch.int64).reshape(-1)


def compose(view, index: torch.Tensor):
    """The view ``view[index]`` (feature ``j`` is feature ``index[j]`` of ``view``), for a
    partition id, an :class:`Indexed` view or a :class:`Concat`; a Concat comes back as a Concat
    of the members that are read (in the order of ``index`` when it stays grouped by member)
    or, when the index interleaves members, as ``None`` (the caller cuts the chain)."""
    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    if isinstance(view, int):
        return Indexed(view, index)
    if isinstance(view, Indexed):
        return Indexed(view.base, view.index[index])
    if isinstance(view, Concat):
        return None
    raise TypeError(f"cannot index {view!r}")


def block_diagonal(values: torch.Tensor, n_rows: int, n_cols: int, groups: int) -> torch.Tensor:
    """Place ``values`` (``n_rows x n_cols/groups``) on the diagonal groups of an
    ``n_rows x n_cols`` matrix (grouped / depthwise conv); other entries are 0 (no edge)."""
    if groups == 1:
        return values
    if n_rows % groups == 0 and n_cols % groups == 0:  # group k's block through a view, no mask
        r, c = group_shape(n_rows, n_cols, groups)
        return from_group_diagonal(values.reshape(groups, r, c))
    out = values.new_zeros(n_rows, n_cols)
    rows = torch.arange(n_rows) // (n_rows // groups)
    cols = torch.arange(n_cols) // (n_cols // groups)
    out[rows[:, None] == cols[None, :]] = values.reshape(-1)
    return out


def base_matrix(rule: Rule, conv: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function turning the raw parameter into its ``(n_dst, n_src)`` matrix (before any
    flatten or concat slicing)."""
    if rule.kind in ("linear", "attention_in_proj"):
        return lambda t: t
    if rule.kind in ("hf_conv1d", "embedding"):
        return lambda t: t.T
    if rule.kind == "conv":
        return lambda t: block_diagonal(aggregate_kernel(t, conv), rule.n_dst, rule.n_src, rule.groups)
    if rule.kind == "conv_transpose":
        return lambda t: block_diagonal(aggregate_kernel(t, conv), rule.n_src, rule.n_dst, rule.groups).T
    raise ValueError(f"unknown block kind {rule.kind!r}")


def entry_index(rule: Rule, shape: tuple[int, ...], rows: slice | None, cols,
                positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix row, matrix column) of every entry of a parameter of ``shape`` under ``rule``
    (see :meth:`Block.entry_index`, ``space="matrix"``); ``-1`` marks entries outside this
    block. ``cols``: ``None``, a ``(start, stop)`` span or an int64 tensor of columns."""
    k = len(shape) - 2
    def along(v: torch.Tensor, axis: int) -> torch.Tensor:
        view = [1] * len(shape)
        view[axis] = -1
        return v.view(view).expand(shape)
    if rule.kind in ("linear", "attention_in_proj"):
        dst, src = along(torch.arange(shape[0]), 0), along(torch.arange(shape[1]), 1)
    elif rule.kind in ("hf_conv1d", "embedding"):
        dst, src = along(torch.arange(shape[1]), 1), along(torch.arange(shape[0]), 0)
    elif rule.kind == "conv":  # (c_out, c_in/groups, *k)
        out_per_group = shape[0] // rule.groups
        i, jj = torch.arange(shape[0]), torch.arange(shape[1])
        dst = along(i, 0)
        src = ((i // out_per_group)[:, None] * shape[1] + jj[None, :]).view(shape[0], shape[1], *[1] * k).expand(shape)
    elif rule.kind == "conv_transpose":  # (c_in, c_out/groups, *k)
        in_per_group = shape[0] // rule.groups
        j, m = torch.arange(shape[0]), torch.arange(shape[1])
        src = along(j, 0)
        dst = ((j // in_per_group)[:, None] * shape[1] + m[None, :]).view(shape[0], shape[1], *[1] * k).expand(shape)
    else:
        raise ValueError(f"unknown block kind {rule.kind!r}")
    dst, src = dst.clone(), src.clone()
    valid = torch.ones(shape, dtype=torch.bool)
    if rows is not None:
        valid &= (dst >= rows.start) & (dst < rows.stop)
        dst = dst - rows.start
    if positions > 1:
        src = src // positions
    if isinstance(cols, torch.Tensor):
        inverse = torch.full((int(src.max()) + 1 if src.numel() else 1,), -1, dtype=torch.int64)
        inverse[cols] = torch.arange(cols.numel())
        src = inverse[src]
        valid &= src >= 0
    elif cols is not None:
        valid &= (src >= cols[0]) & (src < cols[1])
        src = src - cols[0]
    dst[~valid] = -1
    src[~valid] = -1
    return dst, src


class GraphBuilder:
    """Collects pre-partitions, blocks and coverage records, then builds the graph."""

    def __init__(self, conv: str = "l2", source: str | None = None):
        if conv not in AGGREGATIONS:
            raise ValueError(f"conv={conv!r}: use one of {', '.join(AGGREGATIONS)}")
        self.conv = conv
        self.source = source
        self.names: list[str] = []
        self.sizes: list[int | None] = []
        self.kinds: list[str] = []
        self.spatial: list[bool] = []
        self.parent: list[int] = []
        self.blocks: list[dict] = []
        self.coverage: dict[str, dict] = {}
        self.notes: list[str] = []
        #: parameters whose layer could not be joined to its input (sizes disagree): chain cuts
        self.cuts: list[str] = []
        self._used_names: set[str] = set()
        self._block_names: set[str] = set()

    # -- partitions ----------------------------------------------------------------------
    def new_partition(self, name: str, size: int | None = None, kind: str = "features", spatial: bool = False) -> int:
        base, k = (name or "output"), 2
        name = base
        while name in self._used_names:
            name, k = f"{base}#{k}", k + 1
        self._used_names.add(name)
        self.names.append(name)
        self.sizes.append(size)
        self.kinds.append(kind)
        self.spatial.append(spatial)
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, pid: int) -> int:
        while self.parent[pid] != pid:
            self.parent[pid] = self.parent[self.parent[pid]]
            pid = self.parent[pid]
        return pid

    def size(self, pid: int) -> int | None:
        return self.sizes[self.find(pid)]

    def is_spatial(self, pid: int) -> bool:
        return self.spatial[self.find(pid)]

    def merge(self, a: int, b: int) -> int | None:
        """Merge two partitions (a residual addition); ``None`` if their sizes disagree."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self.sizes[ra], self.sizes[rb]
        if sa is not None and sb is not None and sa != sb:
            return None
        root, child = (ra, rb) if ra < rb else (rb, ra)
        self.parent[child] = root
        self.sizes[root] = sa if sa is not None else sb
        self.spatial[root] = self.spatial[ra] or self.spatial[rb]
        self.kinds[root] = "residual" if self.kinds[root] != "input" else "input"
        return root

    def concat_size(self, c: Concat) -> int | None:
        sizes = [self.width(m) for m in c.members]
        return None if any(s is None for s in sizes) else sum(sizes)

    def width(self, view) -> int | None:
        """Number of features of a view: a partition id (its size, ``None`` while unknown), an
        :class:`Indexed` view (its index length) or a :class:`Concat` (the sum)."""
        if isinstance(view, Concat):
            return self.concat_size(view)
        if isinstance(view, Indexed):
            return int(view.index.numel())
        return self.size(view)

    def base_of(self, view) -> int:
        return view.base if isinstance(view, Indexed) else view

    # -- reading a source ----------------------------------------------------------------
    def resolve_source(self, src, n_src: int, kind: str, src_index: torch.Tensor | None = None):
        """How a layer with ``n_src`` inputs reads ``src`` (a partition id, an :class:`Indexed`
        view or a :class:`Concat` of them), optionally through ``src_index`` (column ``j`` reads
        feature ``src_index[j]`` of ``src``): returns ``([(partition, cols, index), ...],
        positions)``, one entry per block, where ``cols`` is ``None`` (all columns), a
        ``(start, stop)`` span or an int64 tensor of columns of the weight, and ``index`` the
        block's ``src_index`` (``None``: identity); ``positions > 1`` means a flatten of a
        spatial map (channel-major). ``None`` if the sizes do not fit."""
        members = src.members if isinstance(src, Concat) else [src]
        if isinstance(src, int) and self.size(src) is None and src_index is None:
            root = self.find(src)
            self.sizes[root] = n_src
        total = self.width(src)
        if total is None or total == 0:
            return None
        if src_index is not None:
            if src_index.numel() != n_src or int(src_index.min()) < 0 or int(src_index.max()) >= total:
                return None
            positions = 1
        elif total == n_src:
            positions = 1
        elif (kind in ("linear", "hf_conv1d") and n_src % total == 0
              and all(self.is_spatial(self.base_of(m)) for m in members)):
            positions = n_src // total
        else:
            return None
        out, start = [], 0
        for m in members:
            w = self.width(m)
            if w is None:
                return None
            stop = start + w
            own = m.index if isinstance(m, Indexed) else None
            if src_index is None:
                cols = None if len(members) == 1 else (start, stop)
                local = own
            else:
                sel = ((src_index >= start) & (src_index < stop)).nonzero().reshape(-1)
                if sel.numel() == 0:
                    start = stop
                    continue
                local = src_index[sel] - start
                if own is not None:
                    local = own[local]
                contiguous = bool((sel == torch.arange(int(sel[0]), int(sel[0]) + sel.numel())).all())
                cols = None if sel.numel() == n_src else (
                    (int(sel[0]), int(sel[-1]) + 1) if contiguous else sel)
            base = self.base_of(m)
            if local is not None and local.numel() == self.size(base) and \
                    bool((local == torch.arange(local.numel())).all()):
                local = None  # the identity
            out.append((base, cols, local))
            start = stop
        return out, positions

    # -- blocks -------------------------------------------------------------------------
    def _unique_block_name(self, name: str) -> str:
        base, k = name, 2
        while name in self._block_names:
            name, k = f"{base}#{k}", k + 1
        self._block_names.add(name)
        return name

    def add_layer(self, entry: TensorEntry, rule: Rule, src, dst_name: str, reader_name: str,
                  part_srcs: list | None = None, *, src_index: torch.Tensor | None = None,
                  dst_index: torch.Tensor | None = None, dst_size: int | None = None,
                  rows: slice | None = None, suffix: str = "") -> list[int]:
        """Add the block(s) of one parameter reading from ``src`` (partition id, :class:`Indexed`
        view, :class:`Concat` or ``None`` for "unknown"), creating its destination partition(s).
        Returns the destination partition ids (three for a fused q/k/v projection, whose parts
        may read different inputs: ``part_srcs``).

        Index maps (graph-model.md §2b): ``src_index`` (length ``rule.n_src``) sends weight
        column ``j`` to feature ``src_index[j]`` of ``src`` (e.g. grouped-query attention's
        repeat map for ``o_proj`` reading the v partition); the size check compares the columns
        with ``src`` through the map (``len == n_src``, ``max < width of src``) and on a mismatch
        the layer reads a new partition, with a note. ``dst_index`` (length of the block's rows)
        sends row ``i`` to neuron ``dst_index[i]`` of a new destination partition of
        ``dst_size`` neurons (default ``max + 1``). ``rows`` keeps only a row slice of the weight
        (one part of a fused tensor; the block name gets ``suffix``), so the block and its
        destination have ``rows.stop - rows.start`` rows. Both maps: int64, ``O(n)`` integers."""
        spatial_out = rule.kind in ("conv", "conv_transpose")
        if rows is not None:
            parts = [(suffix, rows, dst_name)]
        elif rule.kind == "attention_in_proj":
            parts = [(f"[{p}]", slice(i * rule.n_dst, (i + 1) * rule.n_dst), f"{dst_name}.{p}") for i, p in enumerate(QKV)]
        else:
            parts = [(suffix, None, dst_name)]
        srcs = part_srcs or [src] * len(parts)
        if src_index is not None:
            src_index = torch.as_tensor(src_index, dtype=torch.int64).reshape(-1)
        if dst_index is not None:
            dst_index = torch.as_tensor(dst_index, dtype=torch.int64).reshape(-1)
        dsts = []
        for (sfx, part_rows, pname), part_src in zip(parts, srcs):
            n_rows = rule.n_dst if part_rows is None else part_rows.stop - part_rows.start
            spans, positions = self._resolve_or_new(entry, rule, part_src, reader_name, src_index)
            if dst_index is not None:
                if dst_index.numel() != n_rows or (n_rows and int(dst_index.min()) < 0):
                    raise ValueError(f"{entry.name}: dst_index has {dst_index.numel()} entries for {n_rows} rows")
                size = int(dst_size) if dst_size is not None else int(dst_index.max()) + 1
                if n_rows and int(dst_index.max()) >= size:
                    raise ValueError(f"{entry.name}: dst_index reaches {int(dst_index.max())} >= dst_size={size}")
            else:
                size = n_rows
            dst = self.new_partition(pname, size, spatial=spatial_out)
            dsts.append(dst)
            for m, cols, index in spans:
                tag = ""
                if len(spans) > 1:
                    tag = f"[in {cols[0]}:{cols[1]}]" if isinstance(cols, tuple) else f"[in {self.names[m]}]"
                n_src = rule.n_src // positions if cols is None else (
                    cols[1] - cols[0] if isinstance(cols, tuple) else int(cols.numel()))
                self.blocks.append(dict(
                    name=self._unique_block_name(entry.name + sfx + tag), entry=entry, rule=rule, src=m,
                    dst=dst, rows=part_rows, cols=cols, positions=positions, n_src=n_src, n_dst=n_rows,
                    src_index=index, dst_index=dst_index,
                ))
        return dsts

    def _resolve_or_new(self, entry: TensorEntry, rule: Rule, src, reader_name: str,
                        src_index: torch.Tensor | None = None):
        resolved = self.resolve_source(src, rule.n_src, rule.kind, src_index) if src is not None else None
        if resolved is None:
            if src is not None:
                have = self.width(src)
                via = f" (through an index map of {src_index.numel()} entries up to {int(src_index.max())})" \
                    if src_index is not None and src_index.numel() else ""
                self.notes.append(
                    f"{entry.name}: expects {rule.n_src} inputs but its input has {have}{via}; "
                    f"it reads a new partition '{reader_name}.in'"
                )
                self.cuts.append(entry.name)
            first = not self.names
            pid = self.new_partition("input" if first else f"{reader_name}.in", rule.n_src,
                                     kind="input", spatial=rule.kind in ("conv", "conv_transpose"))
            resolved = ([(pid, None, None)], 1)
        if rule.kind in ("conv", "conv_transpose"):
            for m, _, _ in resolved[0]:
                self.spatial[self.find(m)] = True
        return resolved

    def record(self, entry: TensorEntry, status: str, kind: str = "", reason: str = "") -> None:
        rec = self.coverage.setdefault(entry.name, {
            "name": entry.name, "shape": str(tuple(entry.shape)),
            "dtype": str(entry.dtype).replace("torch.", "") if entry.dtype is not None else (
                entry.value if isinstance(entry.value, str) and entry.value.startswith("unsupported") else type(entry.value).__name__),
            "numel": math.prod(entry.shape) if entry.is_tensor else 0, "status": status, "kind": kind,
            "reason": reason, "blocks": "", "nonfinite": None,
        })
        rec.update(status=status, kind=kind, reason=reason)

    # -- build ---------------------------------------------------------------------------
    def _matrix_fn(self, spec: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        base = base_matrix(spec["rule"], self.conv)
        rows, cols, positions, conv = spec["rows"], spec["cols"], spec["positions"], self.conv

        def to_matrix(t: torch.Tensor) -> torch.Tensor:
            m = base(t)
            if rows is not None:
                m = m[rows]
            if positions > 1:
                m = aggregate_kernel(m.reshape(m.shape[0], -1, positions), conv)
            if isinstance(cols, torch.Tensor):
                m = m.index_select(1, cols.to(m.device))
            elif cols is not None:
                m = m[:, cols[0]:cols[1]]
            return m
        return to_matrix

    def build(self) -> LayeredGraph:
        touched: dict[int, None] = {}
        for spec in self.blocks:
            touched.setdefault(self.find(spec["src"]))
            touched.setdefault(self.find(spec["dst"]))
        order = sorted(touched)
        members: dict[int, list[str]] = {r: [] for r in order}
        for pid in range(len(self.parent)):
            r = self.find(pid)
            if r in members:
                members[r].append(self.names[pid])
        partitions = [
            Partition(self.names[r], int(self.sizes[r]), kind=self.kinds[r],
                      members=tuple(members[r]) if len(members[r]) > 1 else ())
            for r in order
        ]
        blocks = []
        for spec in self.blocks:
            entry, rule = spec["entry"], spec["rule"]
            agg = self.conv if (rule.kind in ("conv", "conv_transpose") or spec["positions"] > 1) else None
            cols, groups, col_groups = spec["cols"], rule.groups, None
            if groups > 1 and cols is not None:  # a column part of a grouped conv
                full = torch.arange(cols[0], cols[1]) if isinstance(cols, tuple) else cols
                col_groups = full // (rule.n_src // groups)  # rows of other groups are no edges
            blocks.append(Block(
                name=spec["name"], param=entry.name, src=self.names[self.find(spec["src"])],
                dst=self.names[self.find(spec["dst"])], shape=(spec["n_dst"], spec["n_src"]), kind=rule.kind,
                param_shape=tuple(entry.shape), dtype=entry.dtype, aggregation=agg,
                groups=groups, col_groups=col_groups,
                src_index=spec["src_index"], dst_index=spec["dst_index"],
                _load=entry.load, _to_matrix=self._matrix_fn(spec),
                _entry_index=(lambda r=rule, sh=tuple(entry.shape), sp=spec: entry_index(
                    r, sh, sp["rows"], sp["cols"], sp["positions"])),
            ))
            rec = self.coverage[entry.name]
            rec["blocks"] = ", ".join(filter(None, [rec["blocks"], spec["name"]]))
        return LayeredGraph(partitions, blocks, coverage=list(self.coverage.values()),
                            source=self.source, notes=self.notes)

