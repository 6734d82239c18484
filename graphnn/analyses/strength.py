"""Neuron strength (weighted degree) and strength variance.

Definitions (graph-model.md §3):

* in-strength of neuron ``v`` = sum of its row entries over every block entering its partition;
  out-strength = sum of its column entries over every block leaving it; total = in + out.
  ``signed=True`` (default, as Scabini et al.) sums the raw weights, ``signed=False`` sums |w|.
  A block from a partition to itself contributes its row *and* its column to each neuron, so a
  diagonal entry (a self-loop) counts twice in the total, like ``networkx``'s ``G.degree`` and
  igraph's ``strength(loops=True)``; two blocks joining the same pair of partitions add up, and
  so do the columns (rows) of an index-mapped block that read (write) the same neuron: they are
  parallel edges (graph-model.md §2b).
  Only structural edges count (entries outside ``Block.structure_mask()`` are ignored).
  Sums are accumulated in float64.
* Tensor view (Scabini et al., used by PA rewiring): a weight tensor flattened to
  ``(n_out, numel / n_out)``; in-strengths are its row sums, out-strengths its column sums,
  both signed; ``J = (Var(row sums) + Var(column sums)) / 2`` with the unbiased variance.

Variances in this module are unbiased (``ddof=1``); a single value has variance 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..graph import Block, LayeredGraph, output_units
from ..validation import check_bool, check_choice
from ._blocks import Progress, exact_sums, masked

DIRECTIONS = ("in", "out", "total")
#: Per-partition statistics of :func:`strength_variance` and :func:`graphnn.analyse`.
STATS = ("mean", "var", "std", "cv")


def strength_column(direction: str, signed: bool = True) -> str:
    """Name of the value column: ``in_strength``, ``out_strength`` or ``strength`` (total),
    prefixed with ``abs_`` when ``signed=False``."""
    check_choice("direction", direction, DIRECTIONS)
    check_bool("signed", signed)
    name = {"in": "in_strength", "out": "out_strength", "total": "strength"}[direction]
    return name if signed else "abs_" + name


def neuron_frame(g: LayeredGraph, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A tidy per-neuron frame: ``layer``, ``neuron``, then ``columns`` (global node order)."""
    layer = np.repeat(np.array(list(g.partitions), dtype=object),
                      [p.size for p in g.partitions.values()])
    neuron = np.concatenate([np.arange(p.size) for p in g.partitions.values()]) if g.partitions else []
    df = pd.DataFrame({"layer": layer, "neuron": np.asarray(neuron, dtype=np.int64)})
    for k, v in columns.items():
        df[k] = v
    return df


def node_strengths(g: LayeredGraph, signed: bool = True,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """In- and out-strength of every neuron in global node order (float64 arrays)."""
    n_in = np.zeros(g.num_nodes)
    n_out = np.zeros(g.num_nodes)
    blocks = list(g.blocks.values())
    for i, b in enumerate(blocks):
        if progress:
            progress("strength", i, len(blocks))
        rows, cols = exact_sums(masked(b, b.matrix()), absolute=not signed)
        add_block_sums(g, b, rows, cols, n_in, n_out)
    if progress:
        progress("strength", len(blocks), len(blocks))
    return n_in, n_out


def add_block_sums(g: LayeredGraph, b: Block, rows: torch.Tensor, cols: torch.Tensor,
                   n_in: np.ndarray, n_out: np.ndarray) -> None:
    """Add a block's row sums (matrix space) to its destinations' in-strengths and its column
    sums to its sources' out-strengths; through the index maps when the block has them
    (several rows/columns sent to one neuron add up: parallel edges)."""
    d, s = g.offset(b.dst), g.offset(b.src)
    r, c = rows.cpu().numpy(), cols.cpu().numpy()
    if b.dst_index is None:
        n_in[d:d + b.n_dst] += r
    else:
        np.add.at(n_in, d + b.dst_index.numpy(), r)
    if b.src_index is None:
        n_out[s:s + b.n_src] += c
    else:
        np.add.at(n_out, s + b.src_index.numpy(), c)


def strength(g: LayeredGraph, direction: str = "total", signed: bool = True) -> pd.DataFrame:
    """Strength of every neuron: a DataFrame ``layer, neuron, <value>`` where the value column is
    named by :func:`strength_column` (``in_strength``, ``out_strength`` or ``strength`` for the
    total; ``abs_`` prefix when ``signed=False``). A bad ``direction`` or a non-bool ``signed``
    raises :class:`~graphnn.errors.InvalidParameterError`.

    >>> import torch, graphnn
    >>> g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 1}, {"w": ("a", "b", torch.tensor([[1., -3.]]))})
    >>> graphnn.strength(g)["strength"].tolist()
    [1.0, -3.0, -2.0]
    """
    col = strength_column(direction, signed)
    n_in, n_out = node_strengths(g, signed)
    values = {"in": n_in, "out": n_out, "total": n_in + n_out}[direction]
    return neuron_frame(g, {col: values})


def unbiased_var(x) -> float:
    """Unbiased variance (``ddof=1``) in float64; 0.0 for fewer than two values."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.var(ddof=1)) if x.size > 1 else 0.0


def describe(x) -> dict[str, float]:
    """``mean``, ``var`` (unbiased), ``std``, ``cv`` (std / |mean|, NaN when the mean is 0) and
    ``max`` of a 1-D array."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean()) if x.size else float("nan")
    var = unbiased_var(x)
    std = var ** 0.5
    return {"mean": mean, "var": var, "std": std,
            "cv": std / abs(mean) if mean != 0 else float("nan"),
            "max": float(x.max()) if x.size else float("nan")}


def tensor_strength_variance(tensor, signed: bool = True) -> tuple[float, float, float]:
    """Scabini et al.'s strength variance of one weight tensor: ``(J, var_rows, var_cols)``.

    The tensor (output units on its first axis, PyTorch layout) is flattened to
    ``(n_out, numel / n_out)``: for a conv the columns are (input channel, kernel position)
    entries. ``var_rows`` is the unbiased variance of the row sums (in-strengths), ``var_cols``
    of the column sums (out-strengths), ``J = (var_rows + var_cols) / 2``. Sums are signed
    unless ``signed=False`` and accumulated in float64; a side with a single entry has
    variance 0.

    >>> import torch
    >>> tensor_strength_variance(torch.tensor([[1., 2.], [3., 4.]]))
    (5.0, 8.0, 2.0)
    """
    t = torch.as_tensor(tensor).detach()
    if t.dim() < 2:
        raise ValueError(
            f"strength variance needs a weight tensor with at least 2 dimensions (output units "
            f"first), got shape {tuple(t.shape)}; biases and norm parameters have no strength")
    if t.shape[0] == 0 or t.numel() == 0:
        raise ValueError(f"cannot compute the strength variance of an empty tensor {tuple(t.shape)}")
    rows, cols = exact_sums(t.reshape(t.shape[0], -1), absolute=not signed)
    vr, vc = unbiased_var(rows.cpu().numpy()), unbiased_var(cols.cpu().numpy())
    return 0.5 * (vr + vc), vr, vc


def block_tensor(b: Block, matrix: torch.Tensor | None = None, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor whose strength variance is reported for a block: its own ``(n_dst, n_src)``
    matrix when it has no kernel aggregation (Linear, HF Conv1D transposed to out x in, a q/k/v
    slice of a fused projection), else the whole parameter as stored (conv kernels, a Linear after
    a flatten), as ``(n_out, numel / n_out)`` output units (:func:`graphnn.graph.output_units`;
    ConvTranspose weights are stored input-first and are re-ordered)."""
    if b.aggregation is None:
        return masked(b, b.matrix()) if matrix is None else matrix
    return output_units(b.tensor() if tensor is None else tensor, b.kind == "conv_transpose", b.groups)


def strength_variance(g: LayeredGraph, signed: bool = True, view: str = "layer") -> pd.DataFrame:
    """Strength variance, per partition (``view="layer"``) or per weight tensor (``"block"``).

    ``view="layer"``: one row per partition: ``layer, n``, then ``<metric>_<stat>`` for the
    metrics ``in_strength``, ``out_strength``, ``strength`` (total) and the stats ``mean``,
    ``var`` (unbiased), ``std``, ``cv`` (std / |mean|). ``abs_`` prefixes the metrics when
    ``signed=False``. A partition with no block entering it has in-strength 0.

    ``view="block"``: Scabini et al.'s tensor view, one row per block: ``block, param, rows,
    cols`` (the flattened shape, see :func:`block_tensor`), ``J, var_rows, var_cols``.
    Another ``view`` or a non-bool ``signed`` raises :class:`~graphnn.errors.InvalidParameterError`.
    """
    check_bool("signed", signed)
    if view == "block":
        recs = []
        for b in g.blocks.values():
            raw = b.tensor()
            t = block_tensor(b, matrix=masked(b, b.matrix(tensor=raw)) if b.aggregation is None else None, tensor=raw)
            j, vr, vc = tensor_strength_variance(t, signed)
            release_pages(raw)  # a memory-mapped parameter's pages leave RSS (a no-op otherwise)
            recs.append({"block": b.name, "param": b.param, "rows": int(t.shape[0]),
                         "cols": int(t.numel() // t.shape[0]), "J": j, "var_rows": vr, "var_cols": vc})
        return pd.DataFrame(recs, columns=["block", "param", "rows", "cols", "J", "var_rows", "var_cols"]).astype(
            {"rows": "int64", "cols": "int64", "J": "float64", "var_rows": "float64", "var_cols": "float64"})
    check_choice("view", view, ("layer", "block"))
    n_in, n_out = node_strengths(g, signed)
    cols = {strength_column(d, signed): v for d, v in
            (("in", n_in), ("out", n_out), ("total", n_in + n_out))}
    recs = []
    for name, p in g.partitions.items():
        o = g.offset(name)
        rec = {"layer": name, "n": p.size}
        for metric, values in cols.items():
            stats = describe(values[o:o + p.size])
            rec.update({f"{metric}_{s}": stats[s] for s in STATS})
        recs.append(rec)
    return pd.DataFrame(recs)
