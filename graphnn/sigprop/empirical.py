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
* the partial Jacobians between layers, with :func:`torch.func.vjp`: each layer's output is cut
  from the dataflow in its hook (its output is replaced by a stand-in ``h^l`` that continues the
  forward pass), so the output of a later layer ``m`` depends on ``h^l`` only through the
  operations between them. A first pass records every ``h^l`` (and, from its autograd graph,
  which layers each layer reads directly); a second pass is the function
  ``(h^1, ..., h^L) -> (outputs of the layers)`` given to ``torch.func.vjp``. For ``K``
  Rademacher probes ``v`` (±1 entries, drawn per layer ``m`` from a generator seeded by
  ``(seed, m)``), Hutchinson's estimator ``E_v ‖vᵀ ∂h^m/∂h^l‖² = ‖∂h^m/∂h^l‖²_F`` gives
  ``chi1_hat(l → m) = ‖∂h^m/∂h^l‖²_F / (number of entries of h^m)``, i.e. per input and per output
  unit (and position). One vector–Jacobian product per probe serves every layer pair at once, as
  long as no two layers probed together read the same layer (layers that do are probed in separate
  groups, so each pair's estimate is its own; each group costs one forward pass, stopped after its
  last layer: a chain is one group, a transformer's residual stream, read by every q/k/v/MLP
  input, makes about five groups per block). For a chain ``m = l + 1`` and this is mean-field
  theory's χ₁. A model that ``torch.func`` cannot transform (e.g. an ``autograd.Function`` without
  ``setup_context``) gets q̂, ĉ and kurtosis only, and a note says why.

The model runs in eval mode (dropout off, batch norm with its running statistics, so that inputs
do not interact) and is put back in its previous mode afterwards; no parameter is changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
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

    def call():
        if isinstance(inputs, Mapping):
            return model(**inputs)
        if isinstance(inputs, tuple):
            return model(*inputs)
        return model(inputs)

    pair_rows: list[dict] = []
    try:
        with torch.enable_grad():
            call()
        for h in handles:
            h.remove()
        handles = []
        recs = [records[n] for n in order]
        layer_rows = [_moments(r, paired) for r in recs]
        sources = direct_sources(recs)
        values = [r.target.detach() for r in recs]
        for r in recs:  # free the first pass's autograd graph before the second pass
            r.target = r.leaf = None
        if sources:
            try:
                with torch.no_grad():  # torch.func.vjp differentiates anyway; parameters stay constants
                    pair_rows = _jacobians(call, recs, values, sources, probes, seed)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError) as e:
                notes.append(f"partial Jacobians (chi1_hat) not computed: torch.func.vjp cannot transform this "
                             f"model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); q_hat, "
                             "c_hat and kurtosis are unaffected")
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


def rademacher(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One Hutchinson probe: a float64 tensor of ``shape`` with independent ±1 entries."""
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.float64) * 2 - 1


def _probe_generator(seed: int, layer: int) -> torch.Generator:
    """The probes of layer number ``layer`` (forward order): independent of which other layers are
    probed and in which group, so the estimate of a pair depends on ``seed`` and the pair only."""
    state = np.random.SeedSequence([int(seed), int(layer)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def direct_sources(recs: list[_Record]) -> dict[int, list[int]]:
    """For each recorded layer ``m`` (index into ``recs``): the earlier layers whose outputs its
    output depends on directly, i.e. through no other recorded layer. Read from the autograd graph
    of the first pass, where each layer's output was replaced by a fresh leaf."""
    leaf_of = {id(r.leaf): i for i, r in enumerate(recs) if r.leaf is not None}
    out: dict[int, list[int]] = {}
    for m, r in enumerate(recs):
        if r.target is None or r.target.grad_fn is None:
            continue
        found, seen, stack = set(), set(), [r.target.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)  # AccumulateGrad: a leaf (a parameter or a stand-in)
            if var is not None:
                i = leaf_of.get(id(var))
                if i is not None and i < m:
                    found.add(i)
                continue
            stack.extend(fn for fn, _ in node.next_functions)
        if found:
            out[m] = sorted(found)
    return out


def probe_groups(sources: dict[int, list[int]]) -> list[list[int]]:
    """Layers to probe together, no two of a group sharing a source. In forward order, each layer
    joins the compatible group whose last layer is latest (or starts a new one): a group's forward
    pass stops after its last layer, so this keeps the passes short."""
    groups: list[tuple[list[int], set[int]]] = []
    for m, src in sources.items():
        fits = [g for g in groups if g[1].isdisjoint(src)]
        if fits:
            members, used = max(fits, key=lambda g: g[0][-1])
            members.append(m)
            used.update(src)
        else:
            groups.append(([m], set(src)))
    return [members for members, _ in groups]


class _StopForward(Exception):
    """Raised by a hook once a probe group's last output is computed: the forward pass of that
    group stops there (raised and caught inside the function given to ``torch.func.vjp``)."""


def _jacobians(call, recs: list[_Record], values: list[torch.Tensor], sources: dict[int, list[int]],
               probes: int, seed: int) -> list[dict]:
    """Hutchinson estimates of ``‖∂h^m/∂h^l‖²_F / numel(h^m)`` for every layer ``m`` and each of
    its ``sources[m]``, by :func:`torch.func.vjp` of the hooked forward pass ``call()`` as a
    function of the layers' outputs ``values``."""
    index = {r.name: i for i, r in enumerate(recs)}
    sums: dict[tuple[int, int], list[float]] = {}
    for group in probe_groups(sources):
        wanted = set(group)

        def forward(*stand_ins):
            outs: dict[int, torch.Tensor] = {}
            calls: dict[int, int] = {}

            def hook(i):
                def fn(mod, args, out):
                    calls[i] = calls.get(i, 0) + 1
                    if calls[i] > 1:
                        return None  # as in the first pass: a layer used twice keeps its first call
                    y = out[0] if isinstance(out, tuple) else out
                    if i in wanted:
                        outs[i] = y
                        if len(outs) == len(wanted):
                            raise _StopForward  # the rest of the model does not reach this group's outputs
                    new = stand_ins[i].clone()  # in-place activations after the layer must not touch it
                    return (new, *out[1:]) if isinstance(out, tuple) else new
                return fn

            handles = [r.module.register_forward_hook(hook(index[r.name])) for r in recs]
            try:
                call()
            except _StopForward:
                pass
            finally:
                for h in handles:
                    h.remove()
            missing = wanted - set(outs)
            if missing:
                raise RuntimeError("the second forward pass did not call " + ", ".join(recs[i].name for i in missing))
            return tuple(outs[m] for m in group)

        _, vjp_fn = torch.func.vjp(forward, *values)
        gens = {m: _probe_generator(seed, m) for m in group}
        for _ in range(probes):
            cot = tuple(rademacher(tuple(values[m].shape), gens[m]).to(values[m]) for m in group)
            grads = vjp_fn(cot)
            for m in group:
                n = values[m].numel()
                for i in sources[m]:
                    sums.setdefault((i, m), []).append(float(grads[i].double().pow(2).sum()) / n)
        del vjp_fn
    rows = []
    for (i, m), vals in sorted(sums.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        t = torch.tensor(vals, dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
        rows.append({"src_module": recs[i].name, "dst_module": recs[m].name, "chi1_hat": float(t.mean()),
                     "chi1_hat_se": se})
    return rows
