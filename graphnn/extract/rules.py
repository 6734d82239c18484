"""Which parameters become blocks, and how (graph-model.md §2).

A :class:`Rule` says how one weight tensor maps to one or more blocks: its kind, the
``(n_dst, n_src)`` channel-level shape, the groups of a grouped conv and, for fused tensors, the
row slices of each part. Parameters that are not edges get a reason instead.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

#: Fused attention projections split into these parts, in this order.
QKV = ("q", "k", "v")

_RNN_PARAM = re.compile(r"(^|\.)(weight|bias)_(ih|hh)(_l\d+)?(_reverse)?$")
_EMBED_NAME = re.compile(r"(embed|wte$|wpe$|tok_embeddings|word_embeddings|position_embeddings|^shared$"
                         r"|relative_attention_bias$)", re.I)
#: Output heads whose name says "embed" (GPT-NeoX ``embed_out`` is the LM head, a Linear).
_HEAD_NAME = re.compile(r"^(embed_out|lm_head)$")
_HF_CONV1D = {"c_attn", "c_proj", "c_fc", "q_attn"}

RNN_TYPES = (nn.RNNBase, nn.RNNCellBase)
NORM_TYPES = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

SKIP_NOT_EDGE = "not an edge: 1-D tensor (bias, norm affine parameter or buffer)"
SKIP_NOT_FLOAT = "not an edge: integer/bool tensor (counter, index or mask buffer)"
SKIP_RNN = "recurrent layer (RNN/LSTM/GRU): not mapped in this version of graphnn"
SKIP_EMBEDDING = "embedding table (token -> feature): excluded by default, opt in with include_embeddings=True"


def as_patterns(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    """``include``/``exclude`` arguments as a tuple of glob patterns (``fnmatch`` on parameter
    names); ``None`` is no pattern."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        pats = tuple(value)
    except TypeError:
        raise TypeError(f"{what} must be a glob pattern or a list of them (e.g. 'layer4.*'), not {value!r}") from None
    for p in pats:
        if not isinstance(p, str):
            raise TypeError(f"{what} must be a glob pattern or a list of them (e.g. 'layer4.*'), got {p!r}")
    return pats


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class Rule:
    """How a parameter maps to blocks. ``kind`` is one of ``linear``, ``hf_conv1d``, ``conv``,
    ``conv_transpose``, ``attention_in_proj``, ``embedding``. ``n_dst``/``n_src`` are the
    channel-level sizes (``n_src`` for a grouped conv counts all input channels)."""

    kind: str
    n_dst: int
    n_src: int
    groups: int = 1
    groups_known: bool = True


def module_name(param: str) -> str:
    """``layer1.0.conv1.weight`` -> ``layer1.0.conv1``; ``attn.in_proj_weight`` -> ``attn``."""
    return param.rsplit(".", 1)[0] if "." in param else ""


def leaf_name(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def skip_reason_for_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype | None) -> str | None:
    """A reason to skip any tensor regardless of the module it belongs to, else ``None``."""
    if dtype is None:
        return "not a tensor (or a tensor of a dtype torch cannot hold)"
    if not dtype.is_floating_point:
        return SKIP_NOT_FLOAT
    if len(shape) < 2:
        return SKIP_NOT_EDGE
    if _RNN_PARAM.search(name):
        return SKIP_RNN
    return empty_skip_reason(shape)


def empty_skip_reason(shape: tuple[int, ...]) -> str | None:
    """Why a tensor with a dimension of size 0 cannot be an edge block (``None`` otherwise)."""
    if len(shape) >= 2 and 0 in shape:
        return f"empty tensor (shape {tuple(shape)}, a dimension of size 0): it has no edges"
    return None


def hf_conv1d_layout(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether the 2-D ``c_attn``/``c_fc``/``c_proj`` weights of a bare state_dict are stored
    ``(in, out)`` like Hugging Face's GPT-2 ``Conv1D`` (``True``) or ``(out, in)`` like the
    ``nn.Linear`` of nanoGPT/minGPT (``False``). Decided by the widening projections ``c_attn``
    (d -> 3d) and ``c_fc`` (d -> 4d), whose output is wider than their input; ``True`` when
    there is no such evidence."""
    votes = [shape[1] > shape[0] for name, shape in shapes.items()
             if len(shape) == 2 and leaf_name(module_name(name)) in ("c_attn", "c_fc")]
    return not votes or 2 * sum(votes) >= len(votes)


def rule_from_name(name: str, shape: tuple[int, ...], hf_conv1d: bool = True) -> Rule | str:
    """Classify a tensor of a bare state_dict by its name and shape (no module known).
    ``hf_conv1d`` is the layout of GPT-2-style ``c_*`` weights (see :func:`hf_conv1d_layout`).
    Returns a :class:`Rule` or a skip reason."""
    last = name.rsplit(".", 1)[-1]
    mod = leaf_name(module_name(name))
    if last == "in_proj_weight":
        if len(shape) == 2 and shape[0] == 3 * shape[1]:
            return Rule("attention_in_proj", shape[1], shape[1])
        return f"in_proj_weight of shape {shape} is not (3d, d): cannot split into q/k/v"
    if "weight" not in last:
        return f"not a layer weight (name does not end in 'weight'): position/class tokens and other free parameters are not edges"
    if len(shape) == 2:
        if _EMBED_NAME.search(mod) and not _HEAD_NAME.match(mod):
            return Rule("embedding", shape[1], shape[0])
        if mod in _HF_CONV1D and hf_conv1d:
            return Rule("hf_conv1d", shape[1], shape[0])
        return Rule("linear", shape[0], shape[1])
    if 3 <= len(shape) <= 5:
        return Rule("conv", shape[0], shape[1], groups=1, groups_known=False)
    return f"{len(shape)}-D weight: no block rule for this shape"


def _is_hf_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_mapped_module(module: nn.Module) -> bool:
    """Layers whose weights graphnn maps to blocks (the tracer keeps them as leaves)."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Embedding,
                               nn.EmbeddingBag)) or _is_hf_conv1d(module)


def rules_for_module(module: nn.Module) -> dict[str, Rule | str]:
    """Rules (or skip reasons) for the parameters a module owns directly, keyed by local name."""
    out: dict[str, Rule | str] = {}
    params = dict(module.named_parameters(recurse=False))
    if isinstance(module, RNN_TYPES):
        return {n: SKIP_RNN for n in params}
    if isinstance(module, NORM_TYPES):
        return {n: "not an edge: normalisation parameter" for n in params}
    for local, p in params.items():
        reason = skip_reason_for_tensor(local, tuple(p.shape), p.dtype)
        if reason is not None:
            out[local] = reason
            continue
        shape = tuple(p.shape)
        if isinstance(module, nn.Linear) and local == "weight":
            out[local] = Rule("linear", shape[0], shape[1])
        elif _is_hf_conv1d(module) and local == "weight":
            out[local] = Rule("hf_conv1d", shape[1], shape[0])
        elif isinstance(module, nn.modules.conv._ConvTransposeNd) and local == "weight":
            g = module.groups
            out[local] = Rule("conv_transpose", shape[1] * g, shape[0], groups=g)
        elif isinstance(module, nn.modules.conv._ConvNd) and local == "weight":
            g = module.groups
            out[local] = Rule("conv", shape[0], shape[1] * g, groups=g)
        elif isinstance(module, nn.MultiheadAttention) and local == "in_proj_weight":
            out[local] = Rule("attention_in_proj", module.embed_dim, module.embed_dim)
        elif isinstance(module, nn.MultiheadAttention) and local in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            out[local] = Rule("linear", shape[0], shape[1])
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
            out[local] = Rule("embedding", shape[1], shape[0])
        else:
            out[local] = f"parameter {local!r} of a {type(module).__name__} module: graphnn has no block rule for it"
    return out
