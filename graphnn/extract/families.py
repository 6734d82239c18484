"""The rule table of transformer families: parameter names (and ``config.json``) -> roles.

graph-model.md §2c says how a transformer becomes a graph; this module says, for each family,
which parameter plays which part. A :class:`Role` names what a weight does (``q``, ``o``,
``gate``, ``experts_down``, ...) and the *unit* it belongs to (the attention or MLP module whose
partitions it shares: ``model.layers.3.self_attn``). :mod:`graphnn.extract.family_graph` turns
roles into partitions and blocks, one way for every family:

- one residual stream per tower (``{prefix}.stream``, ``hidden_size`` neurons) that every q/k/v,
  gate/up, MLP input, router and head reads and every o_proj, down_proj, MLP output, expert
  output and embedding writes into (norms keep the partition);
- q, k, v, router scores: partitions of their own (sinks of the weight graph);
- o reads the v partition (through the grouped-query repeat map);
- gate and up write one hidden partition (their elementwise product), down reads it;
- cross-attention k/v read the encoder's stream.

Families are chosen from ``config.json``'s ``model_type`` or recognised from the names; names of
both layouts of one model (a live transformers-5 module and the checkpoint it saves, which
``save_pretrained`` writes with the original names) are in the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Role:
    """What one weight does: ``role`` (see :data:`PATTERNS`) and ``unit``, the module whose
    partitions it shares with its siblings (an attention module, an MLP, one expert)."""

    role: str
    unit: str


@dataclass(frozen=True)
class Family:
    """A transformer family: ``name`` (shown in ``g.topology``), the ``model_type`` values of
    its ``config.json``, its ``towers`` layout (``"single"``, ``"encoder-decoder"``,
    ``"text-vision"``), the layout of its fused q/k/v projection (``"concat"``: rows
    ``[q | k | v]``; ``"per-head"``: NeoX's ``(heads, 3, head_dim)``; ``"columns"``: GPT-2's
    ``Conv1D`` of shape ``(in, 3 * out)``) and a regex on parameter names that recognises it
    when there is no config."""

    name: str
    model_types: tuple[str, ...]
    towers: str = "single"
    fused_qkv: str = "concat"
    recognise: str | None = None


#: Recognition from names tries the families in this order (the most specific patterns first:
#: BART's ``encoder_attn`` before Llama's ``self_attn.q_proj``, which many families share).
FAMILIES: tuple[Family, ...] = (
    Family("mixtral", ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe"),
           recognise=r"(block_sparse_moe\.|\.mlp\.experts\.(\d+\.)?(w1|gate_proj|gate_up_proj))"),
    Family("gpt2", ("gpt2",), fused_qkv="columns", recognise=r"\.attn\.c_attn\.weight$"),
    Family("gpt_neox", ("gpt_neox",), fused_qkv="per-head", recognise=r"\.attention\.query_key_value\.weight$"),
    Family("t5", ("t5", "mt5", "umt5"), towers="encoder-decoder", recognise=r"\.SelfAttention\.q\.weight$"),
    Family("bart", ("bart", "mbart", "marian", "pegasus"), towers="encoder-decoder",
           recognise=r"\.encoder_attn\.q_proj\.weight$"),
    Family("clip", ("clip", "siglip"), towers="text-vision", recognise=r"^(.*\.)?vision_model\..*self_attn\.q_proj"),
    Family("vit", ("vit", "deit"), recognise=r"(patch_embeddings\.projection\.weight$)"),
    Family("bert", ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "albert"),
           recognise=r"(\.attention\.self\.query\.weight$|\.attention\.q_lin\.weight$)"),
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2",
                     "granite", "cohere", "stablelm", "baichuan", "internlm2", "yi", "deepseek"),
           recognise=r"\.self_attn\.(q_proj|qkv_proj|W_pack)\.weight$|\.mlp\.(gate_proj|gate_up_proj)\.weight$"),
)

_BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}

_ATTN_ROLE = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o", "dense": "o",
              "q": "q", "k": "k", "v": "v", "o": "o", "query": "q", "key": "k", "value": "v",
              "q_lin": "q", "k_lin": "k", "v_lin": "v", "out_lin": "o"}

#: Ordered (regex, role) pairs; group ``u`` of the regex is the unit. First match wins.
PATTERNS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    # fused q/k/v (split by rows) and fused gate/up
    (r"^(?P<u>.+)\.(?:qkv_proj|W_pack|c_attn|query_key_value)\.weight$", "qkv"),
    (r"^(?P<u>.+)\.gate_up_proj\.weight$", "gate_up"),
    # transformers-5 fused expert tensors: (experts, 2 * intermediate, hidden), (experts, hidden, intermediate)
    (r"^(?P<u>.+\.experts)\.gate_up_proj$", "experts_gate_up"),
    (r"^(?P<u>.+\.experts)\.down_proj$", "experts_down"),
    # BERT-style attention: attention.self.query / attention.attention.query, attention.output.dense
    (r"^(?P<u>.+\.attention)\.(?:self|attention)\.(?:query|key|value)\.weight$", "attn"),
    (r"^(?P<u>.+\.attention)\.output\.dense\.weight$", "o"),
    (r"^(?P<u>.+\.layer\.\d+)\.intermediate\.dense\.weight$", "mlp_in"),
    (r"^(?P<u>.+\.layer\.\d+)\.output\.dense\.weight$", "mlp_out"),
    # GPT-2 / NeoX names of o and the MLP
    (r"^(?P<u>.+\.attn)\.c_proj\.weight$", "o"),
    (r"^(?P<u>.+\.attention)\.dense\.weight$", "o"),
    (r"^(?P<u>.+\.mlp)\.c_fc\.weight$", "mlp_in"),
    (r"^(?P<u>.+\.mlp)\.c_proj\.weight$", "mlp_out"),
    (r"^(?P<u>.+\.mlp)\.dense_h_to_4h\.weight$", "mlp_in"),
    (r"^(?P<u>.+\.mlp)\.dense_4h_to_h\.weight$", "mlp_out"),
    # separate projections: llama/BART/CLIP/ViT (transformers 5) q_proj.., T5 q/k/v/o, DistilBERT q_lin..
    (r"^(?P<u>.+)\.(?:q_proj|k_proj|v_proj|o_proj|out_proj|q_lin|k_lin|v_lin|out_lin)\.weight$", "attn"),
    (r"^(?P<u>.+\.(?:SelfAttention|EncDecAttention))\.(?:q|k|v|o)\.weight$", "attn"),
    # gated MLPs (dense, per expert, shared expert): gate/up -> one hidden partition -> down
    (r"^(?P<u>.+)\.(?:gate_proj|w1|wi_0)\.weight$", "gate"),
    (r"^(?P<u>.+)\.(?:up_proj|w3|wi_1)\.weight$", "up"),
    (r"^(?P<u>.+)\.(?:down_proj|w2|wo)\.weight$", "down"),
    (r"^(?P<u>.+)\.(?:fc1|wi|lin1)\.weight$", "mlp_in"),
    (r"^(?P<u>.+)\.(?:fc2|lin2)\.weight$", "mlp_out"),
    # MoE routers: stream -> expert scores (a sink)
    (r"^(?P<u>.+)\.(?:block_sparse_moe|mlp)\.gate\.weight$", "router"),
    (r"^(?P<u>.+)\.(?:mlp\.)?shared_expert_gate\.weight$", "router"),
    (r"^(?P<u>.+)\.relative_attention_bias\.weight$", "score_bias"),
    # embeddings write the stream
    (r"^(?P<u>(?:.+\.)?(?:embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|"
     r"embed_in|token_embedding|position_embedding|embed_positions))\.weight$", "embed"),
    (r"^(?P<u>(?:.+\.)?shared)\.weight$", "shared_embed"),
    (r"^(?P<u>.+(?:patch_embeddings\.projection|patch_embedding|patch_embed\.proj))\.weight$", "patch"),
    # heads read the stream
    (r"^(?P<u>(?:.+\.)?pooler\.dense)\.weight$", "pooler"),
    # masked-LM heads: stream -> transform -> decoder (BERT cls.predictions, RoBERTa lm_head)
    (r"^(?P<u>(?:.+\.)?cls\.predictions)\.transform\.dense\.weight$", "mlm_transform"),
    (r"^(?P<u>(?:.+\.)?lm_head)\.dense\.weight$", "mlm_transform"),
    (r"^(?P<u>(?:.+\.)?(?:cls\.predictions|lm_head))\.decoder\.weight$", "mlm_decoder"),
    (r"^(?P<u>(?:.+\.)?(?:lm_head|embed_out|score|classifier|visual_projection|text_projection))\.weight$", "head"),
))

_CROSS_UNITS = ("encoder_attn", "EncDecAttention", "crossattention")


def attention_part(param: str) -> str:
    """``q``, ``k``, ``v`` or ``o`` for a separate attention projection weight."""
    leaf = param.rsplit(".", 2)[-2]
    return _ATTN_ROLE[leaf]


def role_of(name: str) -> Role | None:
    """The role of parameter ``name`` in the table, or ``None`` if no pattern matches."""
    for pattern, role in PATTERNS:
        m = pattern.match(name)
        if m:
            if role == "attn":
                role = attention_part(name)
            return Role(role, m.group("u"))
    return None


def is_cross_attention(unit: str) -> bool:
    """Whether the attention ``unit`` is an encoder-decoder cross-attention (its k and v read
    the encoder's stream)."""
    return unit.rsplit(".", 1)[-1] in _CROSS_UNITS or ".crossattention" in unit


def family_of(config: Mapping[str, Any] | None, names: Iterable[str]) -> tuple[Family | None, str]:
    """The family of a model and how it was chosen (``"config.json"``-style ``model_type``,
    or ``"names"``); ``(None, reason)`` when none fits."""
    if config:
        mt = str(config.get("model_type", "")).lower()
        if mt in _BY_TYPE:
            return _BY_TYPE[mt], f"model_type {mt!r}"
    names = list(names)
    for fam in FAMILIES:
        pat = re.compile(fam.recognise)
        if any(pat.search(n) for n in names):
            return fam, "parameter names"
    mt = config.get("model_type") if config else None
    return None, (f"model_type {mt!r} is not in the family table" if mt else "no family pattern matches the names")


def tower_of(family: Family, name: str) -> str:
    """Which residual stream a parameter belongs to: ``"main"``, or ``"encoder"``/``"decoder"``,
    ``"text"``/``"vision"`` for two-tower families."""
    segs = name.split(".")
    if family.towers == "encoder-decoder":
        return "encoder" if "encoder" in segs else "decoder"
    if family.towers == "text-vision":
        return "vision" if any(s.startswith(("vision_model", "visual_projection")) for s in segs) else "text"
    return "main"


_STACK = re.compile(r"^(?P<pre>.*?)\.?(?:layers|layer|h|block|blocks)\.\d+\.")


def stream_name(family: Family, tower: str, names: Iterable[str]) -> str:
    """The name of a tower's stream partition: ``{prefix}.stream`` where ``prefix`` is the path
    of the module holding the layer stack (``model``, ``transformer``, ``gpt_neox``,
    ``encoder``/``decoder`` of an encoder-decoder, ``text_model``/``vision_model``), without a
    trailing ``encoder`` in one-tower models (BERT's ``encoder.layer.N``); ``stream`` if the stack
    is at the top."""
    for n in names:
        if tower_of(family, n) != tower:
            continue
        m = _STACK.match(n)
        if m is None:
            continue
        pre = m.group("pre")
        if family.towers != "encoder-decoder":
            pre = re.sub(r"(^|\.)encoder$", "", pre)
        return f"{pre}.stream" if pre else "stream"
    return "stream" if tower == "main" else f"{tower}.stream"


def _get(cfg: Mapping[str, Any], *keys: str):
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return None


def tower_config(config: Mapping[str, Any] | None, family: Family, tower: str) -> Mapping[str, Any]:
    """The part of ``config`` that describes ``tower`` (CLIP's ``text_config``/``vision_config``)."""
    if not config:
        return {}
    if family.towers == "text-vision":
        sub = config.get(f"{tower}_config")
        return sub if isinstance(sub, Mapping) else {}
    return config


def attention_shape(config: Mapping[str, Any], tower: str = "main") -> tuple[int | None, int | None, int | None]:
    """``(num_attention_heads, num_key_value_heads, head_dim)`` from a (tower's) config, each
    ``None`` where the config does not say."""
    heads = _get(config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"
                 if tower == "encoder" else "decoder_attention_heads")
    if heads is None:
        heads = _get(config, "encoder_attention_heads")
    kv = _get(config, "num_key_value_heads", "multi_query_group_num") or heads
    hidden = _get(config, "hidden_size", "n_embd", "d_model", "dim")
    head_dim = _get(config, "head_dim", "d_kv")
    if head_dim is None and heads and hidden:
        head_dim = int(hidden) // int(heads)
    return (int(heads) if heads else None, int(kv) if kv else None, int(head_dim) if head_dim else None)


def has_lm_head(config: Mapping[str, Any] | None) -> bool:
    """Whether ``config.json``'s ``architectures`` name a model with a language-model head
    (``lm_head``): ``...LMHeadModel``, ``...ForCausalLM``, ``...ForConditionalGeneration``. A bare
    ``BertModel``/``LlamaModel`` has none, whatever ``tie_word_embeddings`` says."""
    archs = [str(a) for a in ((config or {}).get("architectures") or [])]
    return any(a.endswith(("LMHeadModel", "ForCausalLM", "ForConditionalGeneration")) for a in archs)


def tied_aliases(family: Family, config: Mapping[str, Any] | None, names: set[str]) -> dict[str, str]:
    """Names that share the tensor of another name by the model's definition: ``{alias: stored
    name}``, whether or not a checkpoint stores the alias too (``save_pretrained`` leaves tied
    names out of safetensors; a ``.bin`` may keep them). Encoder-decoder token embeddings share
    ``shared``; a language-model head shares the input embedding when ``tie_word_embeddings`` is
    true (the transformers default) and the architecture has a head."""
    out: dict[str, str] = {}
    shared = next((n for n in names if re.fullmatch(r"(.+\.)?shared\.weight", n)), None)
    if family.towers == "encoder-decoder" and shared is not None:
        pre = shared[: -len("shared.weight")]
        for side in ("encoder", "decoder"):
            out[f"{pre}{side}.embed_tokens.weight"] = shared
    if not config:
        return out
    archs = [str(a) for a in (config.get("architectures") or [])]
    has_head = has_lm_head(config)
    masked_lm = any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)
    if (has_head or masked_lm) and config.get("tie_word_embeddings", True):
        emb = shared or next((n for n in sorted(names) if re.search(
            r"(^|\.)(embed_tokens|wte|word_embeddings|embed_in)\.weight$", n)), None)
        if emb is not None and has_head:
            out["lm_head.weight"] = emb
        elif emb is not None:
            out["lm_head.decoder.weight" if any(n.startswith("lm_head.") for n in names)
                else "cls.predictions.decoder.weight"] = emb
    return out
