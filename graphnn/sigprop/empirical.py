"""Empirical signal propagation through a live torch model, with forward hooks.

One forward pass of a batch of ``2P`` inputs, arranged as ``P`` pairs ``(x_a, x_b)``, records the
output ``h^l`` of every mapped layer (Linear, ConvNd, HF Conv1D, the output of a
MultiheadAttention: the pre-activations) and, for each layer:

* ``q_hat`` = q̂^l, the mean of ``h_i²`` over units, positions and inputs (the second moment of
  mean-field theory; not centred);
* ``c_hat`` = ĉ^l, the mean over pairs of ``<h(x_a), h(x_b)> / (‖h(x_a)‖ ‖h(x_b)‖)`` (units and
  positions together);
* ``kurtosis``: the excess kurtosis ``m₄/m₂² − 3`` of each unit (channel) over inputs and
  positions, averaged over units (0 for Gaussian pre-activations);
* the partial Jacobians between layers: each layer's output is cut from the autograd graph in its
  hook (a fresh leaf ``h^l`` continues the forward pass), so the output of a later layer ``m``
  depends on ``h^l`` only through the operations between them. For ``K`` Rademacher probes ``v``,
  Hutchinson's estimator ``E_v ‖vᵀ ∂h^m/∂h^l‖² = ‖∂h^m/∂h^l‖²_F`` gives
  ``chi1_hat(l → m) = ‖∂h^m/∂h^l‖²_F / (number of entries of h^m)``, i.e. per input and per output
  unit (and position). One backward pass per (layer m, probe) returns the vector–Jacobian products
  for every earlier layer at once. For a chain ``m = l + 1`` and this is mean-field theory's χ₁.

The model runs in eval mode (dropout off, batch norm with its running statistics, so that inputs
do not interact) and is put back in its previous mode afterwards; no parameter is changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
import torch
from torch import nn

from ..errors import InvalidParameterError


@dataclass
class _Record:
    name: str
    module: nn.Module
    target: torch.Tensor | None = None
    leaf: torch.Tensor | None = None
    calls: int = 0


def hooked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs are recorded: mapped layers (embeddings aside), in registration
    order; a MultiheadAttention stands for its output projection."""
    from ..extract.rules import is_mapped_module

    out = {}
    for name, mod in model.named_modules():
        if is_mapped_module(mod) and not isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
            out[name] = mod
    return out


def _feature_axis(mod: nn.Module, y: torch.Tensor) -> int:
    return 1 if isinstance(mod, nn.modules.conv._ConvNd) and y.dim() >= 3 else y.dim() - 1


def gaussian_pairs(shape: tuple[int, ...], pairs: int, correlation: float, generator: torch.Generator,
                   variance: float = 1.0) -> torch.Tensor:
    """``2·pairs`` standard-normal inputs of ``shape`` (times ``√variance``): rows ``2k`` and
    ``2k+1`` have correlation ``correlation`` entry by entry."""
    a = torch.randn((pairs, *shape), generator=generator, dtype=torch.float64)
    noise = torch.randn((pairs, *shape), generator=generator, dtype=torch.float64)
    b = correlation * a + math.sqrt(max(0.0, 1 - correlation ** 2)) * noise
    x = torch.stack([a, b], dim=1).reshape(2 * pairs, *shape)
    return (math.sqrt(variance) * x).float()


def run_empirical(model: nn.Module, inputs: Any, *, probes: int = 4, seed: int = 0,
                  paired: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Hooked forward pass of ``model`` on ``inputs`` (a tensor, a tuple of positional arguments or
    a mapping of keyword arguments; its first dimension is the batch, consecutive rows form the
    pairs when ``paired``). Returns ``(layers, pairs, notes)``: one row per recorded module
    (``module``, ``q_hat``, ``c_hat``, ``kurtosis``, ``numel``) and one per connected layer pair
    (``src_module``, ``dst_module``, ``chi1_hat``, ``chi1_hat_se``: the standard error over probes)."""
    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
        raise InvalidParameterError(f"probes must be an integer >= 1, not {probes!r}")
    records = {n: _Record(n, m) for n, m in hooked_layers(model).items()}
    notes: list[str] = []
    order: list[str] = []

    def hook(rec: _Record):
        def fn(mod, args, out):
            rec.calls += 1
            y = out[0] if isinstance(out, tuple) else out
            if rec.calls > 1 or not isinstance(y, torch.Tensor) or not y.is_floating_point():
                return None  # a layer used twice keeps its first call
            rec.target = y
            rec.leaf = y.detach().requires_grad_(True)
            order.append(rec.name)
            new = rec.leaf.clone()  # in-place activations after the layer must not touch the leaf
            return (new, *out[1:]) if isinstance(out, tuple) else new
        return fn

    handles = [r.module.register_forward_hook(hook(r)) for r in records.values()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if isinstance(inputs, Mapping):
                model(**inputs)
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
            layer_rows = [_moments(records[n], paired) for n in order]
            pair_rows = _jacobians([records[n] for n in order], probes, seed)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for r in records.values():
        if r.calls > 1:
            notes.append(f"{r.name} is called {r.calls} times in one forward pass: its first call is recorded")
        if r.calls == 0:
            notes.append(f"{r.name} was not called in the forward pass: no empirical values")
    return pd.DataFrame(layer_rows), pd.DataFrame(pair_rows), notes


@torch.no_grad()
def _moments(rec: _Record, paired: bool) -> dict:
    y = rec.target.detach().double()
    axis = _feature_axis(rec.module, y)
    q = float(y.pow(2).mean())
    units = y.movedim(axis, -1).reshape(-1, y.shape[axis])
    centred = units - units.mean(0)
    m2 = centred.pow(2).mean(0)
    m4 = centred.pow(4).mean(0)
    ok = m2 > 0
    kurt = float((m4[ok] / m2[ok] ** 2 - 3).mean()) if bool(ok.any()) else math.nan
    c = math.nan
    if paired and y.shape[0] >= 2:
        n = (y.shape[0] // 2) * 2
        flat = y[:n].reshape(n // 2, 2, -1)
        a, b = flat[:, 0], flat[:, 1]
        denom = a.norm(dim=1) * b.norm(dim=1)
        good = denom > 0
        if bool(good.any()):
            c = float(((a * b).sum(1)[good] / denom[good]).mean())
    return {"module": rec.name, "q_hat": q, "c_hat": c, "kurtosis": kurt, "numel": y[0].numel()}


def _jacobians(recs: list[_Record], probes: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for j, dst in enumerate(recs):
        earlier = recs[:j]
        if not earlier or not dst.target.requires_grad:
            continue
        sums: dict[int, list[float]] = {}
        for _ in range(probes):
            v = torch.randint(0, 2, dst.target.shape, generator=gen).to(dst.target) * 2 - 1
            grads = torch.autograd.grad(dst.target, [r.leaf for r in earlier], grad_outputs=v,
                                        retain_graph=True, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    sums.setdefault(i, []).append(float(g.double().pow(2).sum()) / dst.target.numel())
        for i, vals in sums.items():
            t = torch.tensor(vals, dtype=torch.float64)
            se = float(t.std() / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
            rows.append({"src_module": earlier[i].name, "dst_module": dst.name, "chi1_hat": float(t.mean()),
                         "chi1_hat_se": se})
    return rows
