"""Connected components of the neuron graph (edges = entries with non-zero weight).

Two neurons are in one component when a path of non-zero edges joins them; a neuron with no
non-zero edge is a component of its own. Computed from the placed blocks in one pass over the
weights without an edge list: a chunk of rows whose entries are all non-zero is joined as a star
(each row to the chunk's first column, each column to the chunk's first row: same connectivity
as the complete bipartite chunk); only chunks with zeros contribute their non-zero entries. The
edges gathered so far are folded into a spanning forest whenever they grow large, so the extra
memory is a few integers per neuron.

Example
-------
>>> import torch, graphnn
>>> g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 2}, {"w": ("a", "b", torch.eye(2))})
>>> graphnn.connected_components(g)["component"].tolist()
[0, 1, 0, 1]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..graph import LayeredGraph
from ._blocks import NodeSpace, Placed, Weighting, load_abs_blocks, place, resolve_device
from .strength import neuron_frame

#: Row chunks are scanned ``_SCAN_ELEMENTS`` entries at a time.
_SCAN_ELEMENTS = 1 << 18
#: Gathered edges are folded into a spanning forest above this many.
_FOLD_EDGES = 1 << 22


def index_map(p: Placed, side: str) -> np.ndarray:
    """Global node of each neuron-space row (``side="dst"``) or column (``"src"``) of a placed
    block. :class:`~graphnn.analyses._blocks.AbsBlock` already presents index-mapped blocks in
    neuron space (graph-model.md §2b: parallel edges summed), so this is a range."""
    b = p.block
    off, n = (p.dst_off, b.n_dst) if side == "dst" else (p.src_off, b.n_src)
    return np.arange(off, off + n, dtype=np.int64)


def _labels(n: int, edges: list[np.ndarray]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), dtype=np.int64)
    adj = coo_matrix((np.ones(e.shape[1], dtype=np.int8), (e[0], e[1])), shape=(n, n))
    return connected_components(adj, directed=False)[1].astype(np.int64)


def _fold(n: int, edges: list[np.ndarray]) -> list[np.ndarray]:
    """A spanning forest with the connectivity of ``edges``: each neuron joined to the first
    neuron of its component."""
    return [spanning_forest(_labels(n, edges))]


def spanning_forest(labels: np.ndarray) -> np.ndarray:
    """``(2, k)`` int64 edges joining every node to the first node of its component: the same
    connectivity as ``labels`` in one edge per node at most."""
    _, first = np.unique(labels, return_index=True)  # the first node of each component
    root = first[labels]
    keep = root != np.arange(len(labels))
    return np.stack([np.flatnonzero(keep), root[keep]]).astype(np.int64)


def _rows(b, i: int, j: int) -> torch.Tensor:
    """Neuron-space rows ``i:j`` of a block's non-negative weights ``A`` (a view of the |w| copy
    when the block has no index map)."""
    if b.t is not None and b._src_map is None and b._dst_map is None:  # matrix space == neuron space
        return b.t[:, i:j].t()
    return b.rows(torch.arange(i, j, device=b.device))


def _edges_from_full_lines(b, full: tuple[str, torch.Tensor], rows_g: np.ndarray,
                           cols_g: np.ndarray) -> np.ndarray:
    """Edges with a block's connectivity from its lines without zeros (``AbsBlock.full_lines``):
    those lines joined to the whole other side as a star; only the other lines' entries read."""
    side, mask = full
    lines_g, other_g, fetch = (rows_g, cols_g, b.rows) if side == "dst" else (cols_g, rows_g, b.cols)
    mask = mask.cpu().numpy()
    whole = np.flatnonzero(mask)
    out = []
    if whole.size:
        out += [np.stack([lines_g[whole], np.full(whole.size, other_g[0])]),
                np.stack([np.full(len(other_g), lines_g[whole[0]]), other_g])]
    rest = np.flatnonzero(~mask)
    step = max(1, _SCAN_ELEMENTS // max(len(other_g), 1))
    for i in range(0, rest.size, step):
        idx = rest[i:i + step]
        li, oi = np.nonzero((fetch(torch.as_tensor(idx, device=b.device)) != 0).cpu().numpy())
        out.append(np.stack([lines_g[idx[li]], other_g[oi]]))
    return np.concatenate(out, axis=1) if out else np.zeros((2, 0), dtype=np.int64)


def component_labels(n: int, placed: Sequence[Placed]) -> np.ndarray:
    """Component label of every node (``0 .. k-1``, numbered by each component's first node)."""
    edges: list[np.ndarray] = []
    count = 0
    for p in placed:
        b = p.block
        if b.n_dst == 0 or b.n_src == 0:
            continue
        rows_g, cols_g = index_map(p, "dst"), index_map(p, "src")
        entries, full = b.group_entries(), None
        if entries is None:
            full = b.full_lines()
        if entries is not None or full is not None:
            if entries is not None:  # a grouped block held compactly: its non-zero entries
                block_edges = np.stack([rows_g[entries[0].cpu().numpy()], cols_g[entries[1].cpu().numpy()]])
            else:
                block_edges = _edges_from_full_lines(b, full, rows_g, cols_g)
            edges.append(block_edges)
            count += block_edges.shape[1]
            if count > _FOLD_EDGES:
                edges = _fold(n, edges)
                count = edges[0].shape[1]
            release_pages(getattr(b, "w", None))  # lines read from a memory-mapped matrix
            continue
        step = max(1, _SCAN_ELEMENTS // b.n_src)
        for i in range(0, b.n_dst, step):
            nz = _rows(b, i, min(i + step, b.n_dst)) != 0
            r = rows_g[i:i + nz.shape[0]]
            if bool(nz.all()):  # a complete bipartite chunk: a star has the same connectivity
                e = np.concatenate([np.stack([r, np.full(len(r), cols_g[0])]),
                                    np.stack([np.full(len(cols_g), r[0]), cols_g])], axis=1)
            else:
                ri, ci = np.nonzero(nz.cpu().numpy())
                e = np.stack([r[ri], cols_g[ci]])
            edges.append(e)
            count += e.shape[1]
            if count > _FOLD_EDGES:
                edges = _fold(n, edges)
                count = edges[0].shape[1]
        release_pages(getattr(b, "w", None))
    return labels_from_edges(n, edges)


def labels_from_edges(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """Component label of each of ``n`` nodes joined by ``edges`` (``(2, k)`` arrays), numbered
    by each component's first node, so labels do not depend on scipy's traversal order."""
    labels = _labels(n, edges)
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


def connected_components(g: LayeredGraph, device: str | torch.device = "auto") -> pd.DataFrame:
    """Connected components of ``g``'s neurons, joined by edges of non-zero weight.

    Returns a DataFrame ``layer, neuron, component`` (component ``0`` holds the first neuron of
    the graph; components are numbered by their first neuron). ``df.attrs["sizes"]`` lists the
    number of neurons of each component, by component number.
    """
    dev = resolve_device(device)
    blocks = load_abs_blocks(g, weighting=Weighting(), dtype=torch.float64, device=dev)
    space = NodeSpace.of_graph(g)
    labels = component_labels(space.n, place(space, blocks))
    df = neuron_frame(g, {"component": labels})
    df.attrs["sizes"] = np.bincount(labels).tolist() if labels.size else []
    return df
