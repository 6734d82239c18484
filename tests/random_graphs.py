"""Hypothesis strategies for small random layered graphs (used by the analyses tests).

Graphs have 1-5 partitions of 1-4 neurons; blocks between consecutive partitions, skip
connections, optionally blocks from a partition to itself (self-loops on the diagonal), two
blocks joining the same pair (parallel edges) and grouped blocks (``groups > 1``, with garbage
values outside the block-diagonal structure that must be ignored). Weights are drawn either from
a small set (many ties, zeros) or from a continuous range with some zeros.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from graphnn.graph import Block, LayeredGraph, Partition

TIE_VALUES = (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0)


def make_block(name: str, src: str, dst: str, w: torch.Tensor, groups: int = 1) -> Block:
    """A plain matrix block (``w`` is ``(n_dst, n_src)``), block-diagonal when ``groups > 1``."""
    return Block(name=name, param=name, src=src, dst=dst, shape=tuple(w.shape), kind="matrix",
                 param_shape=tuple(w.shape), dtype=w.dtype, groups=groups,
                 _load=(lambda w=w: w), _to_matrix=(lambda t: t))


def make_graph(sizes: list[int], blocks: list[tuple[str, int, int, torch.Tensor, int]]) -> LayeredGraph:
    """``sizes`` of partitions ``p0, p1, ...``; ``blocks`` as ``(name, src, dst, W, groups)``."""
    parts = [Partition(f"p{i}", s) for i, s in enumerate(sizes)]
    return LayeredGraph(parts, [make_block(n, f"p{s}", f"p{d}", w, g) for n, s, d, w, g in blocks])


@st.composite
def weight_matrices(draw, n_dst: int, n_src: int, ties: bool, positive: bool = False) -> torch.Tensor:
    n = n_dst * n_src
    if ties:
        vals = draw(st.lists(st.sampled_from(TIE_VALUES), min_size=n, max_size=n))
    else:
        vals = draw(st.lists(st.one_of(st.just(0.0), st.floats(-2.0, 2.0, allow_nan=False, width=64)),
                             min_size=n, max_size=n))
    w = torch.tensor(vals, dtype=torch.float64).reshape(n_dst, n_src)
    if positive:
        w = w.abs() + 0.1
    return w


@st.composite
def layered_graphs(draw, max_parts: int = 5, max_size: int = 4, max_nodes: int = 12, self_loops: bool = True,
                   parallel: bool = True, groups: bool = True, positive: bool = False,
                   ties: bool | None = None) -> LayeredGraph:
    """A random layered graph (see the module docstring). ``positive`` draws weights >= 0.1 (no
    zeros) so that consecutive partitions are fully joined; ``ties`` forces the weight style."""
    n_parts = draw(st.integers(1, max_parts))
    sizes = []
    for _ in range(n_parts):
        room = max_nodes - sum(sizes) - (n_parts - len(sizes) - 1)
        sizes.append(draw(st.integers(1, max(1, min(max_size, room)))))
    tie = draw(st.booleans()) if ties is None else ties
    pairs = [(i, i + 1) for i in range(n_parts - 1)]
    skips = [(i, j) for i in range(n_parts) for j in range(i + 2, n_parts)]
    pairs += [p for p in skips if draw(st.booleans())] if skips else []
    if self_loops:
        pairs += [(i, i) for i in range(n_parts) if draw(st.integers(0, 3)) == 0]
    if parallel and pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))
    specs = []
    for k, (s, d) in enumerate(pairs):
        w = draw(weight_matrices(sizes[d], sizes[s], tie, positive))
        g = 1
        if groups and s != d:
            common = [q for q in (2, 3, 4) if sizes[s] % q == 0 and sizes[d] % q == 0]
            if common and draw(st.booleans()):
                g = draw(st.sampled_from(common))
        specs.append((f"b{k}", s, d, w, g))
    return make_graph(sizes, specs)


def dense_abs_adjacency(g: LayeredGraph) -> np.ndarray:
    """The |w| adjacency from the graph's scipy export (independent of graphnn.analyses)."""
    return g.to_scipy(weight="abs").toarray()


def random_mlp(sizes, seed=0, dtype=torch.float64, scale=1.0, absolute=False) -> LayeredGraph:
    """A layered graph of dense Gaussian blocks between consecutive partitions of ``sizes``."""
    gen = torch.Generator().manual_seed(seed)
    blocks = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.randn(b, a, generator=gen, dtype=dtype) * scale
        blocks[f"w{i}"] = (f"l{i}", f"l{i + 1}", w.abs() if absolute else w)
    return LayeredGraph.from_matrices({f"l{i}": s for i, s in enumerate(sizes)}, blocks)
