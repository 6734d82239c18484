"""Hypercore-guided re-initialisation (graphnn's rule, graph-model.md §3).

Hcore-Init (Limnios et al., ICPR 2020) re-initialises a briefly pre-trained network from the
hypercore numbers of its neurons; its exact rule is not public, so graphnn defines it as:

1. compute the hypercore number ``c_v`` of every neuron of the pre-trained weight graph
   (:func:`graphnn.hypercore`, |w| edge weights, conv kernels aggregated as in extraction);
2. redraw every mapped weight tensor with the base initialiser;
3. multiply each entry joining source neuron ``j`` to destination neuron ``i`` by
   ``f_ij = (c_i * c_j / mean(c_i * c_j)) ** (gamma / 2)``, the mean taken over the tensor's entries;
4. rescale the tensor to the standard deviation of its fresh draw (signal propagation unchanged).

``gamma = 0`` gives the plain base initialiser (the fresh draw itself); with ``gamma > 0``
weights between neurons of high hypercore number are larger. Biases and norm parameters keep
their pre-trained values. For a conv weight ``(c_out, c_in/groups, *k)`` the entry
``(i, j, ...)`` uses output channel ``i`` and input channel ``j`` (of its group); for a Linear
reading a flattened conv map, the channel its column belongs to; fused q/k/v projections use the
q, k or v partition of their rows.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analyses.hypercore import SCOPES
from .inits import bind_init, check_init
from ..errors import InvalidParameterError
from ..validation import check_choice, check_number
from .pa import _check_seed
from .variance_search import seeded



def _core_vectors(cores: pd.DataFrame, graph) -> Callable[[object, str], torch.Tensor]:
    """A lookup ``(block, "src"|"dst") -> float64 core vector`` from a hypercore table: either
    ``layer, neuron, core`` (``scope="network"``) or ``layer, neuron, core_in, core_out``
    (``scope="block"``: a block's destination neurons use ``core_in``, the numbers in the
    block(s) entering them, and its source neurons ``core_out``, those in the block(s) leaving)."""
    ok = isinstance(cores, pd.DataFrame) and {"layer", "neuron"} <= set(cores.columns) and (
        "core" in cores.columns or {"core_in", "core_out"} <= set(cores.columns))
    if not ok:
        raise InvalidParameterError(
            "cores must be a DataFrame with columns layer, neuron, core (or core_in, core_out), as "
            f"graphnn.hypercore returns, got {type(cores).__name__}"
            + (f" with columns {list(cores.columns)}" if isinstance(cores, pd.DataFrame) else "")
        )
    column = {"dst": "core", "src": "core"} if "core" in cores.columns else {"dst": "core_in", "src": "core_out"}
    by_layer = {k: v for k, v in cores.groupby("layer", sort=False)}
    cache: dict[tuple[str, str], torch.Tensor] = {}

    def lookup(block, end: str) -> torch.Tensor:
        partition, col = getattr(block, end), column[end]
        if (partition, col) in cache:
            return cache[partition, col]
        rows = by_layer.get(partition, cores.iloc[:0])
        size = graph.partitions[partition].size
        if len(rows) != size or set(rows["neuron"].tolist()) != set(range(size)):
            raise InvalidParameterError(
                f"the hypercore table has {len(rows)} rows for partition {partition!r} but it has "
                f"{size} neurons: pass cores computed on this model's graph"
            )
        out = np.empty(size, dtype=np.float64)
        out[rows["neuron"].to_numpy(dtype=np.int64)] = rows[col].to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(out).all() or (out < 0).any():
            raise InvalidParameterError(f"cores: {col} of partition {partition!r} must be finite and >= 0 for "
                                        f"block {block.name!r}")
        cache[partition, col] = torch.from_numpy(out)
        return cache[partition, col]
    return lookup


def endpoint_products(graph, lookup, params=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For every mapped parameter (or those named in ``params``): ``(c_i * c_j per entry, mask of
    entries mapped to an edge)``, both of the parameter's shape (float64), from each block's
    :meth:`~graphnn.Block.entry_index` (the destination and source neuron of every entry's edge)."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for blk in graph.blocks.values():
        if params is not None and blk.param not in params:
            continue
        dst, src = blk.entry_index()
        ok = dst >= 0
        fac = torch.zeros(blk.param_shape, dtype=torch.float64)
        fac[ok] = lookup(blk, "dst")[dst[ok]] * lookup(blk, "src")[src[ok]]
        if blk.param in out:
            f0, c0 = out[blk.param]
            out[blk.param] = (f0 + fac, c0 | ok)
        else:
            out[blk.param] = (fac, ok)
    return out


def reinit_tensors_(
    tensors: Mapping[str, torch.Tensor],
    products: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    gamma: float,
    base_init: Callable,
    seed,
) -> list[dict]:
    """Apply steps 2-4 to ``tensors`` (name -> tensor, in place) for every name in
    ``products``; returns one record per tensor (name, std of the draw, factor range). A tensor
    held under several names (tied) is redrawn once, with the factors of its first name in
    ``products``. ``base_init`` as in :func:`graphnn.rewire.inits.bind_init` (``"match"`` uses
    each tensor's values before the redraw)."""
    base_init = check_init(base_init)
    records = []
    done: set[int] = set()
    with seeded(seed, list(tensors.values())), torch.no_grad():
        for name, (prod, mapped) in products.items():
            w = tensors.get(name)
            if w is None:
                raise ValueError(f"{name} is mapped in the weight graph but is not a parameter of the source; cannot redraw it")
            if id(w) in done:
                continue
            done.add(id(w))
            bind_init(base_init, w, name)(w)
            rec = {"name": name, "std": float(w.double().std()), "factor_min": 1.0, "factor_max": 1.0}
            if gamma != 0:
                if not bool(mapped.all()):
                    raise ValueError(f"{name}: only part of this tensor is mapped to graph edges; cannot re-initialise it")
                mean = prod.mean()
                if not mean > 0:
                    raise ValueError(
                        f"{name}: every neuron it joins has hypercore number 0 (all-zero weights?); "
                        "pre-train the model first, or use gamma=0"
                    )
                f = ((prod / mean) ** (gamma / 2)).to(w.device)
                draw = w.detach().to(torch.float64)
                std0 = draw.std()
                scaled = draw * f
                std1 = scaled.std()
                if not std1 > 0:
                    raise ValueError(f"{name}: the hypercore factors zero out the whole tensor; use a smaller gamma")
                w.copy_((scaled * (std0 / std1)).to(w.dtype))
                rec.update(factor_min=float(f.min()), factor_max=float(f.max()))
            records.append(rec)
    return records


def _check_gamma(gamma) -> float:
    """A finite number >= 0 (:func:`graphnn.validation.check_number`)."""
    return float(check_number("gamma", gamma, nonnegative=True))


def hcore_graph(source, conv: str = "l2"):
    """The weight graph whose hypercore numbers drive the re-initialisation."""
    from graphnn.extract import extract

    return extract(source, conv=conv)


def compute_cores(graph, scope: str) -> pd.DataFrame:
    check_choice("scope", scope, SCOPES)
    from ..analyses.hypercore import hypercore

    return hypercore(graph, scope=scope)


def hcore_reinit_(
    module: nn.Module,
    gamma: float = 1.0,
    base_init: str | Callable[[torch.Tensor], torch.Tensor] = torch.nn.init.kaiming_normal_,
    seed: int | None = None,
    scope: str = "network",
    conv: str = "l2",
    cores: pd.DataFrame | None = None,
) -> nn.Module:
    """Re-initialise a briefly pre-trained ``module`` in place from its hypercore numbers (rule in
    the module docstring); returns ``module``.

    Parameters
    ----------
    gamma : strength of the hypercore bias (>= 0); 0 gives ``base_init`` unchanged.
    base_init : in-place initialiser called on each mapped weight (fan-in from its stored shape): a
        callable, a ``torch.nn.init`` name (``"xavier_uniform_"``) or ``"match"`` (a normal draw
        with the weight's own pre-trained mean and std; see :mod:`graphnn.rewire.inits`).
    seed : seeds torch's global RNG for the redraw (restored afterwards); ``None`` uses it as is.
    scope : ``"network"`` (hypercore of the whole graph) or ``"block"`` (each block on its own:
        an entry uses its destination neuron's number in the block(s) entering it and its
        source neuron's number in the block(s) leaving it).
    conv : kernel aggregation of the graph the hypercore is computed on (``"l2"``, ``"l1"``).
    cores : a precomputed hypercore table for this module's graph (``layer, neuron, core`` or
        ``layer, neuron, core_in, core_out``, e.g. ``graphnn.hypercore(g, top=0.1)``), instead
        of computing the weighted one.

    Every weight that :func:`graphnn.extract` maps is redrawn (its coverage table lists them), a
    tied one (an LM head sharing the embedding matrix) once; biases, norm parameters and buffers
    keep their values. The caller pre-trains and trains.

    Example (digits, a few Adam steps, re-initialise, train again):

    >>> import torch, graphnn
    >>> from sklearn.datasets import load_digits
    >>> x, y = load_digits(return_X_y=True)
    >>> x = torch.tensor(x / 16.0, dtype=torch.float32); y = torch.tensor(y)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    >>> def train(steps):
    ...     opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ...     for _ in range(steps):
    ...         opt.zero_grad()
    ...         loss = torch.nn.functional.cross_entropy(net(x), y)
    ...         loss.backward()
    ...         opt.step()
    ...     return loss.item()
    >>> _ = train(5)                                   # brief pre-training
    >>> _ = graphnn.rewire.hcore_reinit_(net, gamma=1.0, seed=0)
    >>> train(50) < 0.5                                # then train as usual
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"hcore_reinit_ takes an nn.Module, got {type(module).__name__}; for a checkpoint use rewire_checkpoint(..., method='hcore')")
    gamma = _check_gamma(gamma)
    seed = _check_seed(seed)
    check_choice("scope", scope, SCOPES)
    g = hcore_graph(module, conv)
    if cores is None:
        cores = compute_cores(g, scope) if gamma != 0 else None
    base_init = check_init(base_init)
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights under every name
    if cores is None:  # gamma == 0: no cores needed, every mapped weight gets the plain redraw
        products = {b.param: (None, None) for b in g.blocks.values()}
    else:
        products = endpoint_products(g, _core_vectors(cores, g))
    reinit_tensors_(params, products, gamma, base_init, seed)
    return module
