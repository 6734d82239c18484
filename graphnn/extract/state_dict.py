"""Graphs from parameter names and shapes alone (state_dicts, checkpoint files, and modules whose
dataflow cannot be traced).

Without a module there is no dataflow, so blocks are joined in parameter order where shapes
agree: a layer reads the partition the previous layer wrote if its input size matches (or is a
multiple of a conv partition: a flatten). Two naming conventions refine this:

- sibling projections (``query``/``key``/``value``, ``q_proj``/``k_proj``/``v_proj``,
  ``gate_proj``/``up_proj``, ...) read the same input;
- a ``shortcut``/``downsample`` layer reads the input of its residual block and writes into
  the partition of the block's last layer (a residual addition).

Everything else starts a new component, with a note saying so.
"""

from __future__ import annotations

from .builder import GraphBuilder
from .checkpoints import TensorEntry
from .rules import Rule, leaf_name, module_name

_SIBLINGS = [
    {"query", "key", "value"}, {"q", "k", "v"}, {"q_proj", "k_proj", "v_proj"}, {"wq", "wk", "wv"},
    {"to_q", "to_k", "to_v"}, {"gate_proj", "up_proj"}, {"w1", "w3"},
]
_SHORTCUT = ("shortcut", "downsample")


def _siblings(a: str, b: str) -> bool:
    if module_name(a) != module_name(b):
        return False
    la, lb = leaf_name(a), leaf_name(b)
    return la != lb and any(la in s and lb in s for s in _SIBLINGS)


def _shortcut_prefix(module: str) -> str | None:
    parts = module.split(".")
    for i, p in enumerate(parts):
        if p in _SHORTCUT:
            return ".".join(parts[:i])
    return None


def chain(builder: GraphBuilder, layers: list[tuple[TensorEntry, Rule]]) -> None:
    """Add ``layers`` (in order) to ``builder``, joining them where shapes agree."""
    current: int | None = None
    history: list[dict] = []  # per added layer: module, src, dst, n_src
    for entry, rule in layers:
        mod = module_name(entry.name) or entry.name
        src = current
        prev = history[-1] if history else None
        shortcut_of = _shortcut_prefix(mod)
        if prev is not None and _siblings(mod, prev["module"]) and prev["n_src"] == rule.n_src:
            src = prev["src"]
        elif shortcut_of:
            first = next((h for h in history if h["module"].startswith(shortcut_of + ".")), None)
            if first is not None:
                src = first["src"]
        if rule.kind == "conv" and not rule.groups_known:
            rule = _infer_groups(builder, src, rule, entry)
        dsts = builder.add_layer(entry, rule, src, mod, mod)
        src_used = builder.blocks[-1]["src"]
        if shortcut_of and current is not None and builder.merge(dsts[-1], current) is not None:
            dsts = [current]
        history.append({"module": mod, "src": src_used, "dst": dsts[-1], "n_src": rule.n_src})
        current = dsts[-1]


def _infer_groups(builder: GraphBuilder, src, rule: Rule, entry: TensorEntry) -> Rule:
    """A conv weight ``(c_out, c_in/groups, *k)`` read from a state_dict does not say its
    groups; infer them from the size of the partition it reads (depthwise when it is 1)."""
    per_group = entry.shape[1]
    have = builder.size(src) if isinstance(src, int) else None
    groups = 1
    if have and have != per_group and have == entry.shape[0] and _looks_transposed(entry):
        builder.notes.append(
            f"{entry.name}: read as a ConvTranspose weight (c_in={entry.shape[0]}, c_out={per_group}): its first "
            "axis matches the input and its name or even-sized kernel says transposed conv; a grouped conv would "
            "have the same shape (pass the module for certainty)")
        return Rule("conv_transpose", per_group, entry.shape[0], groups=1)
    if have and have != per_group and have % per_group == 0 and rule.n_dst % (have // per_group) == 0:
        groups = have // per_group
        builder.notes.append(f"{entry.name}: groups={groups} inferred from shapes (grouped/depthwise conv)")
    return Rule("conv", rule.n_dst, per_group * groups, groups=groups)


_TRANSPOSED_WORDS = ("transpose", "deconv", "convt", "upconv", "up_conv", "upsample", "upsampler")


def _looks_transposed(entry: TensorEntry) -> bool:
    """A conv weight ``(a, b, *k)`` whose name says transposed conv (a segment ``up``/``ups`` or a
    word such as ``deconv``, ``transpose``, ``upsample``) or whose kernel has an even size (the
    usual ``kernel = stride = 2`` upsampling; the regular convs whose groups would be inferred
    have odd kernels)."""
    segments = entry.name.lower().split(".")
    if any(seg in ("up", "ups") or any(w in seg for w in _TRANSPOSED_WORDS) for seg in segments):
        return True
    return any(k % 2 == 0 for k in entry.shape[2:])
