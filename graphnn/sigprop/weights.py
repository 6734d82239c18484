"""Signal-propagation quantities read from the weights alone (graph quantities).

For every mapped layer (a weight block of :func:`graphnn.extract`, grouped by parameter and
destination partition, so a layer that reads a concatenation counts all its inputs):

* ``sigma_w2`` = σ̂_w² = mean over the layer's output neurons of the sum of squared incoming edge
  weights, ``‖W‖²_F / n_out``. For a conv the edge of the channel graph is the l2 norm of the kernel
  slice, so this is ``‖W[i]‖²_F`` over input channels and kernel taps, averaged over output channels.
  It equals ``fan_in · E[W²]`` (``= fan_in · Var(W)`` for zero-mean weights), the ``σ_w²`` of
  mean-field theory (weights of variance ``σ_w² / fan_in``). Any permutation of a tensor's entries
  (PA rewiring, rank matching) leaves it unchanged.
* ``sigma_b2`` = σ̂_b² = mean of ``b_i²`` over the layer's biases (0 without a bias).
* ``activation``: the elementwise nonlinearity applied to the layer's output before the next mapped
  layer, read from the torch.fx graph of a module (dropout, flatten/reshape and pooling are looked
  through), from the module registration order when fx cannot trace, ``"identity"`` when the output
  goes straight into another layer or out of the model, ``"unknown: ..."`` with the reason otherwise
  (a normalisation, a residual addition, attention, a checkpoint without a module).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Mapping


import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._pages import release_pages
from ..errors import InvalidParameterError

#: Activation modules -> names of :mod:`graphnn.sigprop.mean_field`.
_ACT_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
                nn.Identity: None}
_ACT_FUNCTIONS = {torch.relu: "relu", F.relu: "relu", torch.relu_: "relu", torch.tanh: "tanh", F.tanh: "tanh",
                  torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.gelu: "gelu", F.silu: "silu"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
                "sigmoid_": "sigmoid"}
_THROUGH_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Flatten,
                    nn.Unflatten, nn.Identity, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_THROUGH_FUNCTIONS = {torch.flatten, F.dropout, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute,
                      torch.transpose, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
                      F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, operator.getitem}
_THROUGH_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose",
                    "clone", "float", "to"}


def _activation_of_module(mod: nn.Module) -> str | None:
    if isinstance(mod, nn.LeakyReLU):
        return f"leaky_relu({mod.negative_slope:g})"
    for cls, name in _ACT_MODULES.items():
        if type(mod) is cls:
            return name
    return None


def _activation_of_call(node, modules) -> tuple[str, str | None]:
    """``("act", name)``, ``("through", None)``, ``("layer", None)`` or ``("other", description)``
    for one fx node reading a layer's output."""
    from ..extract.rules import is_mapped_module

    if node.op == "output":
        return "layer", None  # the model's output: no activation
    if node.op == "call_module":
        mod = modules[node.target]
        if is_mapped_module(mod):
            return "layer", None
        act = _activation_of_module(mod)
        if act is not None:
            return "act", act
        if isinstance(mod, _THROUGH_MODULES):
            return "through", None
        return "other", f"{type(mod).__name__} module {node.target!r}"
    if node.op == "call_function":
        t = node.target
        if t in (F.linear, F.conv1d, F.conv2d, F.conv3d):
            return "layer", None
        if t is F.leaky_relu:
            slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
            return "act", f"leaky_relu({float(slope):g})"
        if t in _ACT_FUNCTIONS:
            return "act", _ACT_FUNCTIONS[t]
        if t in _THROUGH_FUNCTIONS:
            return "through", None
        return "other", f"function {getattr(t, '__name__', str(t))}"
    if node.op == "call_method":
        if node.target in _ACT_METHODS:
            return "act", _ACT_METHODS[node.target]
        if node.target in _THROUGH_METHODS:
            return "through", None
        return "other", f"method .{node.target}()"
    return "other", node.op


def _follow(node, modules, depth: int = 0) -> str:
    """The activation applied to ``node``'s value before the next layer (see module docstring)."""
    users = list(node.users)
    if not users:
        return "unknown: the output is not used"
    found = set()
    for u in users:
        kind, what = _activation_of_call(u, modules)
        if kind == "through" and depth < 50:
            found.add(_follow(u, modules, depth + 1))
        elif kind == "act":
            found.add(what)
        elif kind == "layer":
            found.add("identity")
        else:
            found.add(f"unknown: followed by {what}")
    if len(found) == 1:
        return found.pop()
    return "unknown: the output branches into " + ", ".join(sorted(found))


def activations_from_module(model: nn.Module) -> tuple[dict[str, str], str]:
    """``({module name: activation}, how)`` for every mapped module of ``model``; ``how`` is
    ``"fx"``, ``"module order"`` (fx failed; the next leaf module in registration order is
    used, which misses functional activations: then ``"unknown"``) or ``"none"`` (a transformers
    model: every activation ``"unknown"``, since neither fx nor registration order gives its dataflow)."""
    from ..extract.module import trace
    from ..extract.rules import is_mapped_module

    from ..extract.hf import module_config

    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    if module_config(model) is not None:  # transformers: fx does not trace them, and registration
        # order is not forward order (GPT-2 registers c_fc, c_proj, then the activation)
        return {name: "unknown: transformers model (not traced; registration order is not dataflow order)"
                for name, m in modules.items() if is_mapped_module(m)}, "none"
    try:
        graph = trace(model)
    except Exception:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
        graph = None
    if graph is not None:
        for node in graph.nodes:
            if node.op == "call_module" and is_mapped_module(modules[node.target]):
                act = _follow(node, modules)
                if isinstance(modules[node.target], nn.MultiheadAttention):
                    act = _follow_getitem0(node, modules)
                out.setdefault(node.target, act)
            elif node.op == "call_function" and node.target in (F.linear, F.conv1d, F.conv2d, F.conv3d):
                w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
                if getattr(w, "op", None) == "get_attr":
                    out.setdefault(w.target.rsplit(".", 1)[0] if "." in w.target else w.target, _follow(node, modules))
        return out, "fx"
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children()) or is_mapped_module(m)]
    for i, (name, mod) in enumerate(leaves):
        if not is_mapped_module(mod):
            continue
        act = "unknown: no module after it in registration order"
        for nxt_name, nxt in leaves[i + 1:]:
            if is_mapped_module(nxt):
                act = ("unknown: registration order (no fx trace) puts the next layer right after it; a "
                       "functional activation in forward() would not show")
                break
            a = _activation_of_module(nxt)
            if a is not None:
                act = a
                break
            if not isinstance(nxt, _THROUGH_MODULES):
                act = f"unknown: registration order (no fx trace) puts {type(nxt).__name__} module {nxt_name!r} next"
                break
        out[name] = act
    return out, "module order"


def _follow_getitem0(node, modules) -> str:
    """MultiheadAttention returns ``(output, weights)``: follow ``output``."""
    for u in node.users:
        if u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0:
            return _follow(u, modules)
    return "unknown: attention output not used"


# -- tensors by name ----------------------------------------------------------------------------
def _tensor_lookup(source: Any, trust: bool):
    """A function ``name -> tensor or None`` over ``source``'s tensors (files read lazily)."""
    if isinstance(source, nn.Module):
        params = dict(source.named_parameters(remove_duplicate=False))
        return lambda name: params[name].detach() if name in params else None
    if isinstance(source, Mapping):
        from ..extract import unwrap_state_dict

        sd = unwrap_state_dict(source)
        return lambda name: sd.get(name) if isinstance(sd.get(name), torch.Tensor) else None
    from ..extract import open_checkpoint

    entries = {e.name: e for e in open_checkpoint(source, trust=trust)}

    def load(name):
        e = entries.get(name)
        if e is None or not e.is_tensor or e.skip_reason is not None:
            return None
        t = e.load()
        return t if isinstance(t, torch.Tensor) else None

    return load


def _bias_name(param: str) -> str | None:
    if param.endswith("in_proj_weight"):
        return param[: -len("in_proj_weight")] + "in_proj_bias"
    if param.endswith("weight"):
        return param[: -len("weight")] + "bias"
    return None


def weight_table(source: Any, graph=None, *, include=None, exclude=None, trust: bool = False,
                 activation: str | Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per mapped layer of ``source`` (an ``nn.Module``, a state_dict or a checkpoint
    path): ``layer`` (destination partition), ``param``, ``kind``, ``src`` (the partition it reads),
    ``n_out``, ``fan_in``, ``sigma_w2``, ``sigma_b2``, ``mean_w``, ``var_w`` (population variance of
    the layer's weight entries), ``activation`` and ``activation_source`` (``"fx"``,
    ``"module order"``, ``"given"`` or ``"none"``). See the module docstring for the definitions.

    ``activation`` overrides: a name for every layer whose activation could not be read, or a
    mapping ``{layer or param: name}``. ``graph``: an already extracted graph of ``source``
    (``conv="l2"``)."""
    import graphnn

    if graph is None:
        graph = graphnn.extract(source, include=include, exclude=exclude, conv="l2", trust=trust)
    lookup = _tensor_lookup(source, trust)
    acts: dict[str, str] = {}
    how = "none"
    if isinstance(source, nn.Module):
        acts, how = activations_from_module(source)
    groups: dict[tuple[str, str], list] = {}
    for b in graph.blocks.values():
        if b.aggregation not in (None, "l2"):
            raise InvalidParameterError(f"sigma_w2 needs the l2 aggregation of conv kernels, the graph of "
                                        f"{b.name} uses {b.aggregation!r}: extract with conv='l2'")
        groups.setdefault((b.param, b.dst), []).append(b)
    rows_of_param: dict[str, int] = {}
    for (param, _dst), blocks in groups.items():
        rows_of_param[param] = rows_of_param.get(param, 0) + blocks[0].n_dst
    rows = []
    cache: dict[str, torch.Tensor] = {}  # the parameter last read
    for (param, dst), blocks in groups.items():
        if param not in cache:
            for done in cache.values():  # its float64 sums are taken: a mapped file's pages go back
                release_pages(done)
            cache.clear()
            cache[param] = blocks[0].tensor()
        raw = cache[param]
        exact = raw.detach().double()  # the l2 kernel aggregate in float64: ‖W[i, j]‖² without rounding
        sq = sum(float(b.matrix(tensor=exact).pow(2).sum()) for b in blocks)
        n_out = blocks[0].n_dst
        fan_in = raw.numel() / rows_of_param[param]
        single = len([k for k in groups if k[0] == param]) == 1
        if single:
            vals = raw.detach().double()
        elif all(b.aggregation is None for b in blocks):
            vals = torch.cat([b.matrix(tensor=exact).reshape(-1) for b in blocks])
        else:
            vals = None
        bias, bias_read = _bias_for(lookup, param, blocks[0], raw, n_out)
        mod = param.rsplit(".", 1)[0] if "." in param else ""
        act, src = _activation_for(acts, how, mod, param, dst, blocks[0])
        rows.append({
            "layer": dst, "param": param, "kind": blocks[0].kind, "src": ",".join(b.src for b in blocks),
            "n_out": n_out, "fan_in": fan_in, "sigma_w2": sq / n_out,
            "sigma_b2": float(bias.double().pow(2).mean()) if bias is not None and bias.numel() else 0.0,
            "has_bias": bias is not None,
            "mean_w": float(vals.mean()) if vals is not None else math.nan,
            "var_w": float(vals.var(unbiased=False)) if vals is not None else math.nan,
            "activation": act, "activation_source": src,
        })
        release_pages(bias_read)
    for done in cache.values():
        release_pages(done)
    df = pd.DataFrame(rows)
    return _apply_override(df, activation)


def _bias_for(lookup, param: str, block, raw: torch.Tensor, n_out: int):
    """``(bias of the layer's outputs or None, the tensor read for it or None)``."""
    name = _bias_name(param)
    bias = lookup(name) if name else None
    if bias is None or bias.dim() != 1:
        return None, bias
    if bias.numel() == n_out:
        return bias.detach(), bias
    rows_axis = 1 if block.kind == "hf_conv1d" else 0  # HF Conv1D stores (in, out)
    if block.name.endswith("]") and raw.dim() == 2 and bias.numel() == raw.shape[rows_axis]:
        rows = block.entry_index("matrix")[0][:, 0] >= 0 if block.kind != "hf_conv1d" else \
            block.entry_index("matrix")[0][0, :] >= 0
        if int(rows.sum()) == n_out:
            return bias.detach()[rows], bias
    return None, bias


def _activation_for(acts: dict, how: str, mod: str, param: str, dst: str, block) -> tuple[str, str]:
    if how == "none" and not acts:
        return "unknown: no module (a checkpoint holds no dataflow): pass activation=...", "none"
    if param.endswith("in_proj_weight") or param.endswith(("q_proj_weight", "k_proj_weight", "v_proj_weight")):
        return "unknown: attention (q/k/v feed the softmax and token mixing)", how
    if param.endswith("out_proj.weight") and mod.rsplit(".", 1)[0] in acts:
        return acts[mod.rsplit(".", 1)[0]], how
    if mod in acts:
        return acts[mod], how
    return "unknown: the layer was not found in the traced forward pass", how


def _apply_override(df: pd.DataFrame, activation) -> pd.DataFrame:
    if activation is None or df.empty:
        return df
    from .mean_field import activation as check

    if isinstance(activation, str):
        check(activation)
        unknown = df["activation"].str.startswith("unknown")
        df.loc[unknown, "activation"] = activation
        df.loc[unknown, "activation_source"] = "given"
        return df
    if not isinstance(activation, Mapping):
        raise InvalidParameterError(f"activation must be a name or a mapping {{layer: name}}, not {activation!r}")
    known = set(df["layer"]) | set(df["param"])
    for key, name in activation.items():
        if key not in known:
            raise InvalidParameterError(f"activation given for {key!r}, which is not a mapped layer; layers are: "
                                        + ", ".join(df["layer"]))
        check(name)
        hit = (df["layer"] == key) | (df["param"] == key)
        df.loc[hit, "activation"] = name
        df.loc[hit, "activation_source"] = "given"
    return df


def known_activation(name: str) -> bool:
    """Whether mean-field theory can use ``name`` (a name of :mod:`.mean_field`)."""
    from .mean_field import activation

    if not isinstance(name, str) or name.startswith("unknown"):
        return False
    try:
        activation(name)
    except InvalidParameterError:
        return False
    return True


__all__ = ["weight_table", "activations_from_module", "known_activation"]


