"""Transformer layer index and role of a parameter, block or partition, read from its name.

:func:`name_role` maps a name such as ``model.layers.3.self_attn.q_proj.weight`` to
``(3, "q")``. Roles:

* attention: ``q``, ``k``, ``v``, ``qkv`` (one fused tensor), ``kv`` (fused k/v, MLA's
  ``kv_a``/``kv_b``), ``o`` (output projection);
* MLP: ``gate``, ``up``, ``gate_up`` (fused), ``down``;
* mixture of experts: ``router`` (the expert gate, Qwen's ``shared_expert_gate``), ``expert``
  (any weight of a routed expert; shared experts keep ``gate``/``up``/``down``);
* ``embed`` (token, position, patch embeddings), ``head`` (LM head, classifier, projection to a
  joint space), ``pooler``, ``norm`` (layer/RMS norms);
* ``stream`` (a residual-stream partition; :func:`partition_role` only).

The layer index is the number after the first ``layers``/``layer``/``h``/``block``/``blocks``
segment (the transformer block within its tower: T5's ``encoder.block.2.layer.1.…`` is
block 2; the encoder and decoder of a seq2seq model each count from 0); ``None`` outside the
stack (embeddings, heads). A name without a recognised role gives ``(None, None)``, so the
names of CNNs and MLPs (``layer1.0.conv1``, ``0.weight``) get no role and no index; names
that are common outside transformers (``fc1``, ``w1``, ``q``, ``value``) get their role only
inside a block stack or under an attention/MLP module. Heads (``classifier``, ``head``, ``lm_head``)
, embeddings and norms are recognised by name anywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
import pandas as pd

#: Segments whose next segment is the transformer block number.
_CONTAINERS = frozenset({"layers", "layer", "h", "block", "blocks", "transformer_blocks"})
#: Trailing segments that name a tensor of a module rather than the module.
_TENSOR_NAMES = frozenset({"weight", "bias", "weight_orig", "in_proj_bias", "scale"})

_EMBED = frozenset({"embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings",
                    "token_type_embeddings", "embed_positions", "embed_in", "token_embedding",
                    "position_embedding", "patch_embedding", "patch_embeddings", "cls_token", "class_embedding",
                    "shared", "embeddings", "embedding", "embed", "patch_embed", "pos_embed"})
_HEAD = frozenset({"lm_head", "embed_out", "classifier", "score", "qa_outputs", "text_projection",
                   "visual_projection", "head", "cls"})
_ROUTER = frozenset({"router", "shared_expert_gate", "switch"})
_MOE_PARENTS = frozenset({"mlp", "block_sparse_moe", "moe", "feed_forward", "ffn", "sparse_moe"})

#: Module (last segment) name -> role, where the name alone decides.
_BY_NAME = {
    **dict.fromkeys(("q_proj", "q", "query", "q_lin", "wq", "q_a_proj", "q_b_proj", "to_q", "query_proj", "q_attn"),
                    "q"),
    **dict.fromkeys(("k_proj", "k", "key", "k_lin", "wk", "to_k", "key_proj"), "k"),
    **dict.fromkeys(("v_proj", "v", "value", "v_lin", "wv", "to_v", "value_proj"), "v"),
    **dict.fromkeys(("qkv", "qkv_proj", "c_attn", "query_key_value", "wqkv", "w_pack", "in_proj_weight"), "qkv"),
    **dict.fromkeys(("kv_proj", "kv", "kv_a_proj_with_mqa", "kv_b_proj", "kv_a_proj"), "kv"),
    **dict.fromkeys(("o_proj", "o", "out_lin", "to_out", "attn_out"), "o"),
    **dict.fromkeys(("gate_proj", "wi_0", "w1"), "gate"),
    **dict.fromkeys(("up_proj", "wi_1", "w3", "c_fc", "fc1", "dense_h_to_4h", "lin1", "wi", "fc_in"), "up"),
    "gate_up_proj": "gate_up",
    **dict.fromkeys(("down_proj", "w2", "fc2", "dense_4h_to_h", "lin2", "fc_out"), "down"),
}
#: Split-block suffixes (``c_attn.weight[q]``, ``gate_up_proj.weight[up]``) -> role.
_SUFFIX = {"q": "q", "k": "k", "v": "v", "qkv": "qkv", "kv": "kv", "gate": "gate", "up": "up"}
#: Names common outside transformers too (LeNet's ``fc1``): a role only inside a block stack
#: (``layers.3.…``) or under an attention / MLP module.
_GENERIC = frozenset({"fc1", "fc2", "fc_in", "fc_out", "w1", "w2", "w3", "lin1", "lin2", "wi", "q", "k", "v", "o",
                      "query", "key", "value", "kv", "qkv"})
_BLOCK_PARENTS = frozenset({"mlp", "ffn", "feed_forward", "densereludense", "intermediate"})
_NORM = re.compile(r"(norm|layrnorm|^ln(_|\d|$)|_ln$)")
_SUFFIXES = re.compile(r"\[([^\]]*)\]")


def _attention_context(segments: Iterable[str]) -> bool:
    return any("attn" in s or "attention" in s or s == "mha" for s in segments)


def _stack_index(segments: list[str]) -> int | None:
    """The number after the first block-stack segment (``layers.3``), or ``None``."""
    return next((int(segments[i + 1]) for i in range(len(segments) - 1)
                 if segments[i] in _CONTAINERS and segments[i + 1].isdigit()), None)


def _role_of(segments: list[str], suffixes: list[str]) -> str | None:
    """The role of a name split into lower-case ``segments`` (tensor names removed) and its
    bracket ``suffixes``."""
    if not segments:
        return None
    if "experts" in segments:
        return "expert"
    last = segments[-1]
    parent = segments[-2] if len(segments) > 1 else ""
    if last in _ROUTER or "router" in segments or (last == "gate" and parent in _MOE_PARENTS):
        return "router"
    named = [s for s in suffixes if not s.isdigit()]
    if named and named[-1] in _SUFFIX:
        return _SUFFIX[named[-1]]
    if _NORM.search(last):
        return "norm"
    if segments[0] in _HEAD or any(s in _HEAD and s != "cls" for s in segments):
        return "head"
    if any(s in _EMBED for s in segments):
        return "embed"
    if "pooler" in segments:
        return "pooler"
    attention = _attention_context(segments[:-1])
    if last in _BY_NAME:
        inside = (_stack_index(segments) is not None or attention
                  or any(s in _BLOCK_PARENTS for s in segments[:-1]))
        return _BY_NAME[last] if last not in _GENERIC or inside else None
    if last in ("wo", "c_proj", "out_proj", "proj", "dense"):
        if attention:
            return "o"
        if last in ("wo", "c_proj"):
            return "down"
        if last == "dense" and "intermediate" in segments:
            return "up"
        if last == "dense" and parent == "output":
            return "down"
    return None


def name_role(name: str) -> tuple[int | None, str | None]:
    """``(layer index, role)`` of a parameter, block or module name (module docstring), or
    ``(None, None)`` when the name is not a recognised transformer weight.

    >>> name_role("model.layers.3.self_attn.q_proj.weight")
    (3, 'q')
    >>> name_role("transformer.h.0.attn.c_attn.weight[v]")
    (0, 'v')
    >>> name_role("layer1.0.conv1.weight")
    (None, None)
    """
    if not isinstance(name, str):
        return (None, None)
    suffixes = _SUFFIXES.findall(name)
    segments = [s for s in _SUFFIXES.sub("", name).lower().split(".") if s]
    while segments and segments[-1] in _TENSOR_NAMES:
        segments.pop()
    role = _role_of(segments, [s.lower() for s in suffixes])
    if role is None:
        return (None, None)
    return (_stack_index(segments), role)


def partition_role(name: str, kind: str = "features", members: Iterable[str] = ()) -> tuple[int | None, str | None]:
    """``(layer index, role)`` of a partition: ``stream`` for a residual stream; for an input
    partition (``model.embed_tokens.in``) the role of the layer that reads it; the gate ⊙ up
    partition of a gated MLP (members ``gate_proj`` and ``up_proj``) is ``gate_up``."""
    if kind == "residual":
        return (None, "stream")
    base = name[:-3] if kind == "input" and name.endswith(".in") else name
    index, role = name_role(base)
    roles = {name_role(m)[1] for m in members}
    if roles >= {"gate", "up"} and role in ("gate", "up"):
        role = "gate_up"
    return (index, role)


#: A name -> ``(layer_index, role)`` function, or a ``{name: (layer_index, role)}`` table.
RoleLookup = Union[Callable[[Any], tuple], Mapping[Any, tuple]]


def clean_pair(index: Any, role: Any) -> tuple[int | None, str | None]:
    """``(layer_index, role)`` as the tables hold them: an ``int`` or ``None`` (for ``None``,
    ``pd.NA`` and NaN), a non-empty ``str`` or ``None``."""
    index = None if index is None or index is pd.NA or (isinstance(index, float) and math.isnan(index)) else int(index)
    if role is None or role is pd.NA or (isinstance(role, float) and math.isnan(role)) or role == "":
        role = None
    else:
        role = str(role)
    return index, role


def role_arrays(names: Iterable, lookup: RoleLookup | None = None) -> tuple[pd.api.extensions.ExtensionArray,
                                                                            np.ndarray]:
    """The ``layer_index`` (nullable ``Int64`` array) and ``role`` (object array of str or
    ``None``) of each name in ``names``: ``lookup(name)`` (default :func:`name_role`), or
    ``lookup[name]`` for a mapping (``(None, None)`` for names it lacks). Missing names (None,
    NaN) get ``(None, None)``. Each distinct name is looked up once."""
    if not isinstance(names, (pd.Series, pd.Index, np.ndarray)):
        names = np.array(list(names), dtype=object)
    codes, uniques = pd.factorize(names)
    lookup = name_role if lookup is None else lookup
    get = (lambda n: lookup.get(n, (None, None))) if isinstance(lookup, Mapping) else lookup
    pairs = [clean_pair(*get(n)) for n in uniques] + [(None, None)]  # the last entry: code -1 (missing)
    index = pd.array([i for i, _ in pairs], dtype="Int64")
    roles = np.array([r for _, r in pairs], dtype=object)
    return index[codes], roles[codes]


def set_roles_(frame: pd.DataFrame, names: Iterable, lookup: RoleLookup | None = None) -> pd.DataFrame:
    """Set ``frame``'s ``layer_index`` and ``role`` columns from ``names`` (one per row,
    :func:`role_arrays`), in place: appended last when new, replaced where they are otherwise.
    Returns ``frame``."""
    index, roles = role_arrays(names, lookup)
    frame["layer_index"] = index
    frame["role"] = pd.Series(roles, index=frame.index, dtype=object)
    return frame


def with_roles(frame: pd.DataFrame, name_column: str, lookup: RoleLookup | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with ``layer_index`` (nullable ``Int64``) and ``role`` (str or
    ``None``) read from its ``name_column`` (:func:`role_arrays`: by default :func:`name_role`
    of each name; for partitions pass :func:`partition_roles` of the graph)."""
    return set_roles_(frame.copy(), frame[name_column], lookup)


def partition_roles(g) -> dict[str, tuple[int | None, str | None]]:
    """``{partition name: (layer_index, role)}`` of ``g`` (:func:`partition_role` with each
    partition's kind and members)."""
    return {p.name: partition_role(p.name, p.kind, p.members) for p in g.partitions.values()}


def add_role_columns(g, neurons: pd.DataFrame, layers: pd.DataFrame, blocks: pd.DataFrame) -> None:
    """Append ``layer_index`` (nullable ``Int64``) and ``role`` (str or ``None``) to the
    neuron, layer and block tables of an analysis of ``g``, in place: neurons and layers by
    their partition (:func:`partition_roles`), blocks by their name (:func:`name_role`)."""
    parts = partition_roles(g)
    set_roles_(layers, layers["layer"], parts)
    set_roles_(blocks, blocks["block"])
    set_roles_(neurons, neurons["layer"], parts)
