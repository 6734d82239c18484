"""The worker side of the Dask engine: a :class:`BlockHost` actor holds the blocks of the shards
placed on its worker, reads each tensor once and answers the per-iteration requests of the
client (a matrix-vector product, a peeling step) with vectors over its own neurons.

A host's *local space* is the partitions its blocks touch, laid end to end in graph order
(:class:`graphnn.analyses._blocks.NodeSpace`); the client maps it to global node numbers. Every
request and answer is a float64/int64 vector over (part of) that space: O(nodes), never O(edges).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np
import torch

from .._pages import release_pages
from ..graph import Block, count_nonfinite
from ..analyses._blocks import (AbsBlock, NodeSpace, Weighting, masked, place, resolve_device,
                                signed_and_abs_sums, use_copy)
from ..analyses.centrality import BlockOperator
from ..analyses.components import component_labels, spanning_forest

#: float64 entries gathered at a time when a peeling step reads the rows of removed neurons.
_GATHER_ELEMENTS = 1 << 20

_open_shards: dict[str, dict[str, Any]] = {}
_open_lock = threading.Lock()


def shard_entries(path: str) -> dict[str, Any]:
    """The tensor entries of one checkpoint file (a shard), opened once per worker process and
    kept: later reads of its tensors reuse the parsed header and the open handle. Safe loading
    as everywhere in graphnn (:func:`graphnn.extract.open_checkpoint`, ``weights_only=True``)."""
    from ..extract.checkpoints import open_checkpoint

    key = os.path.realpath(path)
    with _open_lock:
        entries = _open_shards.get(key)
        if entries is None:
            entries = {e.name: e for e in open_checkpoint(path)}
            _open_shards[key] = entries
    return entries


class ShardTensor:
    """A picklable loader: tensor ``name`` of the checkpoint file ``path``, read on the worker
    that calls it (the file is opened once per worker, see :func:`shard_entries`)."""

    def __init__(self, path: str, name: str):
        self.path, self.name = path, name

    def __call__(self) -> torch.Tensor:
        entries = shard_entries(self.path)
        if self.name not in entries:
            raise KeyError(f"{self.path} holds no tensor {self.name!r}; the checkpoint changed since it was extracted")
        return entries[self.name].load()


class HeldTensor:
    """A loader holding the tensor itself: blocks that no file can reopen (an in-memory model,
    a tied name that the shards do not store) travel to their worker with their data, once."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __call__(self) -> torch.Tensor:
        return self.tensor


class BlockHost:
    """The blocks placed on one worker (a Dask actor: created on its worker, never moved).

    ``blocks``: :class:`~graphnn.graph.Block` objects whose loaders reopen their shard
    (:class:`ShardTensor`) or hold their data (:class:`HeldTensor`). ``names``/``sizes``: the
    partitions of the local space. ``dtype``/``device``/``copy``: as in
    :func:`graphnn.analyse` (the client decides them from the whole graph, so that every host
    computes as the single process would). ``core_tau``: threshold of a 0/1 core weighting
    (``None``: |w|).
    """

    def __init__(self, blocks: Sequence[Block], names: Sequence[str], sizes: Sequence[int], *, dtype: str,
                 device: str, num_edges: int, core_tau: float | None = None):
        torch.set_num_threads(1)
        self.blocks = list(blocks)
        self.space = NodeSpace(list(names), [int(s) for s in sizes])
        self.dtype = getattr(torch, dtype)
        self.device = resolve_device(device)
        self.num_edges = num_edges
        self.core_tau = core_tau
        self.abs_blocks: list[AbsBlock] = []
        self.core_blocks: list[AbsBlock] = []
        self._placed = self._core_placed = None

    # -- load ----------------------------------------------------------------------------
    def load(self, need_abs: bool, need_core: bool, spectral: bool = False) -> list[dict]:
        """Read every block's tensor once: per block its signed and |w| row and column sums
        (matrix space, float64), its block-table record and its NaN/Inf count; keep the |w|
        blocks for the later requests (``need_abs``: centrality or |w| cores; ``need_core``
        with a threshold: the 0/1 core blocks too; ``spectral``: the records carry the blocks'
        spectral columns)."""
        from ..analyses.summary import _block_record

        out = []
        for b in self.blocks:
            raw = b.tensor()
            w = masked(b, b.matrix(tensor=raw))
            rows, cols, arows, acols = signed_and_abs_sums(w)
            out.append({"name": b.name, "rows": rows.cpu().numpy(), "cols": cols.cpu().numpy(),
                        "abs_rows": arows.cpu().numpy(), "abs_cols": acols.cpu().numpy(),
                        "record": _block_record(b, rows, cols, arows, raw, w if spectral else None),
                        "nonfinite": count_nonfinite(raw)})
            release_pages(raw)  # a memory-mapped shard's pages leave the worker's RSS (no-op otherwise)
            del raw
            copy = use_copy(self.num_edges, self.device, w.dtype)
            if need_abs:
                ab = AbsBlock(b, w, Weighting(), self.dtype, self.device, copy)
                ab.set_abs_sums(arows, acols)
                self.abs_blocks.append(ab)
            if need_core and self.core_tau is not None:
                self.core_blocks.append(AbsBlock(b, w, Weighting(self.core_tau), self.dtype, self.device, copy))
            release_pages(w)
            del w
        if self.core_tau is None:
            self.core_blocks = self.abs_blocks
        self._placed = place(self.space, self.abs_blocks)
        self._core_placed = place(self.space, self.core_blocks)
        return out

    # -- centrality ----------------------------------------------------------------------
    def abs_strength(self) -> np.ndarray:
        """Exact float64 |w| strength (in + out) of every local neuron over this host's blocks;
        raises :class:`~graphnn.errors.NonFiniteWeightsError` on NaN/Inf weights."""
        return self._strength(self._placed)

    def total(self) -> float:
        """Sum of the |w| of this host's edges."""
        return float(sum(p.block.total() for p in self._placed))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``A x`` over the local space (``A``: the symmetric |w| adjacency of this host's
        blocks); ``x`` and the result are float64 vectors of the local space's length."""
        op = BlockOperator(self.space.n, self._placed, self.device, self.dtype)
        return op(torch.from_numpy(np.asarray(x, dtype=np.float64))).cpu().numpy()

    def components(self) -> np.ndarray:
        """A spanning forest of this host's non-zero edges in local numbering: ``(2, k)`` int64
        pairs joining each neuron to the first neuron of its local component (O(nodes))."""
        return spanning_forest(component_labels(self.space.n, self._placed))

    # -- hypercore -----------------------------------------------------------------------
    def _group(self, group: Sequence[str] | None):
        if group is None:
            return self._core_placed
        wanted = set(group)
        return [p for p in self._core_placed if p.block.name in wanted]

    def _strength(self, placed) -> np.ndarray:
        s = torch.zeros(self.space.n, dtype=torch.float64, device=self.device)
        for p in placed:
            dst_sums, src_sums = p.block.sums()
            s[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums
            s[p.src_off:p.src_off + p.block.n_src] += src_sums
        return s.cpu().numpy()

    def core_strength(self, group: Sequence[str] | None = None) -> np.ndarray:
        """Float64 core-weight strength of every local neuron over this host's blocks (those
        named in ``group`` when given)."""
        return self._strength(self._group(group))

    def decrement(self, removed: np.ndarray, group: Sequence[str] | None = None) -> np.ndarray:
        """What removing the local neurons ``removed`` (int64) takes from every local neuron's
        strength: the float64 sums of their adjacency rows (core weights, parallel edges added).
        Reads only the rows/columns of the removed neurons."""
        f64 = torch.float64
        dec = torch.zeros(self.space.n, dtype=f64, device=self.device)
        r = torch.as_tensor(np.asarray(removed, dtype=np.int64), device=self.device)
        for p in self._group(group):
            b = p.block
            for start, size, fetch, t_start, t_size in ((p.dst_off, b.n_dst, b.rows, p.src_off, b.n_src),
                                                        (p.src_off, b.n_src, b.cols, p.dst_off, b.n_dst)):
                sel = r[(r >= start) & (r < start + size)] - start
                step = max(1, _GATHER_ELEMENTS // max(t_size, 1))
                for i in range(0, sel.numel(), step):
                    dec[t_start:t_start + t_size] += fetch(sel[i:i + step]).to(f64).sum(0)
        return dec.cpu().numpy()
