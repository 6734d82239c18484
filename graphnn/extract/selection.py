"""The one weight-selection policy: which tensors are weights, how they are oriented, which are
tied, and which a caller selected (graph-model.md §2).

:func:`select_weights` reads a module, a state_dict, a checkpoint file or a model folder and
returns one :class:`WeightRecord` per parameter name, in source order. Extraction builds its
coverage table from these records and every re-initialiser (modules, tensors of a state_dict,
checkpoint files, sharded folders) rewrites exactly the tensors they select, so ``describe``'s
"mapped" column is what ``rewire`` changes.

Policy
------
- A tensor is a *weight* when a block rule exists for it: from its module's type for an
  ``nn.Module`` (Linear, ConvNd, ConvTransposeNd, MultiheadAttention, HF ``Conv1D``, Embedding),
  from its name and shape for a state_dict or a file (:func:`graphnn.extract.rules.rule_from_name`:
  T5/BART ``shared``, T5 ``relative_attention_bias`` and ``*embed*`` tables are embeddings).
  Biases, norm parameters, buffers, integer tensors and RNN/LSTM/GRU weights are never weights.
- *Selected* = a weight that is not an embedding (embeddings need ``include_embeddings=True``),
  matches an ``include`` glob when there is one, and matches no ``exclude`` glob.
- *Orientation* (``layout``): ``"out_first"`` when the stored first axis indexes output units
  (Linear ``(out, in)``, ConvNd ``(c_out, c_in/groups, *k)``, fused ``in_proj_weight (3d, d)``,
  Embedding ``(vocab, d)`` as stored); ``"transposed"`` when it indexes inputs (HF ``Conv1D``
  ``(in, out)``, ConvTranspose ``(c_in, c_out/groups, *k)``): re-initialisers see every weight as an
  ``(n_out, numel / n_out)`` matrix of output units (:func:`graphnn.graph.output_units`).
- *Ties*: names that share one tensor (the same ``Parameter`` in a module; the same storage, offset,
  shape and strides in a state_dict or a pickle), and, for a Hugging Face folder whose
  ``config.json`` has ``tie_word_embeddings: true`` (or omits it while the files store no
  ``lm_head.weight``), ``lm_head.weight`` and the input embedding. A name declared tied that the
  files do not store gets a record with ``stored=False``. A tie group is re-initialised once, with the
  orientation of its first selected member (an LM head is a Linear, so a GPT-2 ``lm_head``/``wte`` pair
  is selected by default, seen as ``(vocab, d)``), unless one of its names matches an ``exclude`` glob:
  a tensor is never changed under a name the caller excluded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..errors import InvalidParameterError
from .rules import SKIP_EMBEDDING, Rule, as_patterns, hf_conv1d_layout, matches_any, rule_from_name, rules_for_module, skip_reason_for_tensor

#: Block kinds whose stored first axis indexes input units.
TRANSPOSED_KINDS = ("hf_conv1d", "conv_transpose")
#: How the input embedding of a tied LM head is usually named (checked in this order).
_INPUT_EMBEDDING_SUFFIXES = ("shared.weight", "embed_tokens.weight", "wte.weight", "word_embeddings.weight",
                             "embed_in.weight", "tok_embeddings.weight", "embeddings.weight")
LM_HEAD = "lm_head.weight"


@dataclass(frozen=True)
class WeightRecord:
    """What the selection policy says about one parameter name.

    ``kind``: block kind (``linear``, ``hf_conv1d``, ``conv``, ``conv_transpose``,
    ``attention_in_proj``, ``embedding``), ``""`` when the tensor is not a weight. ``rule``: the
    block rule (``None`` when not a weight); ``reason``: why it is not a weight or not selected
    (``""`` when selected). ``layout``/``groups``: the output-unit view (module docstring).
    ``tied_with``: the other names of the same tensor. ``stored``: ``False`` for a name that a
    folder's config declares tied but its files do not hold."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None
    kind: str
    rule: Rule | None
    selected: bool
    reason: str = ""
    layout: str = "out_first"
    groups: int = 1
    tied_with: tuple[str, ...] = ()
    stored: bool = True
    excluded: bool = field(default=False, repr=False)

    @property
    def is_weight(self) -> bool:
        return self.rule is not None


class Selection:
    """``include``/``exclude`` globs on parameter names and the embedding opt-in, checked once.
    :meth:`reason` gives why a weight of a given kind is not selected, or ``None``."""

    def __init__(self, include=None, exclude=None, include_embeddings: bool = False):
        self.include = list(as_patterns(include, "include"))
        self.exclude = list(as_patterns(exclude, "exclude"))
        if not isinstance(include_embeddings, bool):
            raise InvalidParameterError(f"include_embeddings must be True or False, not {include_embeddings!r}")
        self.include_embeddings = include_embeddings

    def excluded_by(self, name: str) -> str | None:
        return next((p for p in self.exclude if matches_any(name, [p])), None)

    def reason(self, name: str, kind: str) -> str | None:
        if kind == "embedding" and not self.include_embeddings:
            return SKIP_EMBEDDING
        if self.include and not matches_any(name, self.include):
            return f"not matched by include={self.include}"
        hit = self.excluded_by(name)
        if hit is not None:
            return f"excluded by exclude pattern {hit!r}"
        return None


def _layout(rule: Rule) -> tuple[str, int]:
    if rule.kind in TRANSPOSED_KINDS:
        return "transposed", rule.groups
    return "out_first", 1


def _record(name, shape, dtype, rule: Rule | str, sel: Selection, stored: bool = True) -> WeightRecord:
    if isinstance(rule, str):
        return WeightRecord(name, tuple(shape), dtype, "", None, False, rule, stored=stored)
    reason = sel.reason(name, rule.kind)
    layout, groups = _layout(rule)
    return WeightRecord(name, tuple(shape), dtype, rule.kind, rule, reason is None, reason or "", layout, groups,
                        stored=stored, excluded=sel.excluded_by(name) is not None)


def _tie_key(t: torch.Tensor):
    """Names whose tensors have equal keys are one tensor (``None``: cannot tell, never tied)."""
    if t.numel() == 0:
        return None
    if t.device.type == "meta":
        return ("object", id(t))
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _with_ties(records: list[WeightRecord], keys: Mapping[str, Any]) -> list[WeightRecord]:
    groups: dict[Any, list[str]] = {}
    for r in records:
        k = keys.get(r.name)
        if k is not None:
            groups.setdefault(k, []).append(r.name)
    tied = {n: tuple(m for m in names if m != n) for names in groups.values() if len(names) > 1 for n in names}
    return [_replace(r, tied_with=tied[r.name]) if r.name in tied else r for r in records]


def _replace(r: WeightRecord, **changes) -> WeightRecord:
    from dataclasses import replace

    return replace(r, **changes)


# -- sources -----------------------------------------------------------------------------------
def _from_module(model: nn.Module, sel: Selection) -> list[WeightRecord]:
    for name, p in model.named_parameters(remove_duplicate=False):
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise InvalidParameterError(
                f"{name} is not initialised yet (lazy module): run one forward pass before extracting or "
                "re-initialising the model")
    rules: dict[str, Rule | str] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for local, rule in rules_for_module(mod).items():
            rules[f"{mod_name}.{local}" if mod_name else local] = rule
    records, keys = [], {}
    for name, p in model.named_parameters(remove_duplicate=False):
        rule = rules.get(name, "parameter not owned by any module graphnn knows")
        records.append(_record(name, p.shape, p.dtype, rule, sel))
        keys[name] = ("object", id(p)) if p.numel() else None
    return _with_ties(records, keys)


def records_from_entries(entries, sel: Selection, config: Mapping | None = None) -> list[WeightRecord]:
    """Records for the entries of a state_dict or checkpoint (names and shapes; in-memory
    tensors are also checked for shared storage); ``config`` is a folder's ``config.json``."""
    hf_conv1d = hf_conv1d_layout({e.name: e.shape for e in entries if e.is_tensor})
    records, keys = [], {}
    for e in entries:
        reason = e.skip_reason or skip_reason_for_tensor(e.name, e.shape, e.dtype)
        rule = rule_from_name(e.name, e.shape, hf_conv1d) if reason is None else reason
        records.append(_record(e.name, e.shape, e.dtype, rule, sel))
        if e.is_tensor and e.in_memory and e.skip_reason is None:
            t = e.load()
            keys[e.name] = _tie_key(t) if isinstance(t, torch.Tensor) else None
    records = _with_ties(records, keys)
    return _declared_ties(records, config, sel) if config is not None else records


def _declared_ties(records: list[WeightRecord], config: Mapping, sel: Selection) -> list[WeightRecord]:
    """``lm_head.weight`` tied to the input embedding when ``config.json`` says so."""
    from .families import has_lm_head

    by_name = {r.name: r for r in records}
    head = by_name.get(LM_HEAD)
    tie = config.get("tie_word_embeddings")
    if not (tie is True or (tie is None and head is None)):
        return records
    if head is None and not has_lm_head(config):  # e.g. a bare BertModel: there is no head to tie
        return records
    vocab = config.get("vocab_size")
    candidates = [r for r in records if r.kind == "embedding" and r.stored
                  and (r.shape == head.shape if head is not None else (vocab is None or r.shape[0] == vocab))
                  and "position" not in r.name and "relative" not in r.name]
    if not candidates:
        return records
    embedding = next((r for suffix in _INPUT_EMBEDDING_SUFFIXES for r in candidates if r.name.endswith(suffix)),
                     candidates[0])
    names = [embedding.name, *embedding.tied_with]
    if head is None:
        head = _record(LM_HEAD, embedding.shape, embedding.dtype, Rule("linear", embedding.shape[0], embedding.shape[1]),
                       sel, stored=False)
        records = records + [head]
    if head.name in names:
        return records
    group = names + [head.name, *head.tied_with]
    out = []
    for r in records:
        if r.name in group:
            r = _replace(r, tied_with=tuple(dict.fromkeys(n for n in group if n != r.name)))
        out.append(r)
    return out


def read_config(folder: str | os.PathLike) -> dict | None:
    """A model folder's ``config.json`` as a dict (``None`` when absent or not a JSON object)."""
    p = Path(folder) / "config.json"
    if not p.is_file():
        return None
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return cfg if isinstance(cfg, dict) else None


def select_weights(
    source: Any,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    include_embeddings: bool = False,
    *,
    trust: bool = False,
) -> list[WeightRecord]:
    """One :class:`WeightRecord` per parameter name of ``source`` (an ``nn.Module``, a state_dict,
    or the path of a checkpoint file or model folder), in source order; see the module docstring
    for the policy. Files are read for names, shapes and dtypes only (a pickle is loaded with
    ``weights_only=True``, memory-mapped).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
    >>> [(r.name, r.kind, r.selected) for r in select_weights(net) if r.is_weight]
    [('0.weight', 'embedding', False), ('1.weight', 'linear', True)]
    """
    from .checkpoints import entries_from_state_dict, open_checkpoint, unwrap_state_dict

    sel = Selection(include, exclude, include_embeddings)
    if isinstance(source, nn.Module):
        return _from_module(source, sel)
    if isinstance(source, Mapping):
        return records_from_entries(entries_from_state_dict(unwrap_state_dict(source)), sel)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        config = read_config(path) if path.is_dir() else None
        return records_from_entries(open_checkpoint(path, trust=trust), sel, config)
    from ..errors import UnsupportedSourceError

    raise UnsupportedSourceError(
        f"cannot select weights of a {type(source).__name__}: pass an nn.Module, a state_dict or the path of "
        "a checkpoint file or model folder")


@dataclass(frozen=True)
class TieGroup:
    """The names of one tensor and what happens to it: ``primary`` is the record whose
    orientation a re-initialiser uses (its first selected name, else its first name);
    ``selected`` says whether the tensor is re-initialised, ``reason`` why not; ``stored`` are
    the names a checkpoint holds (all of them for a module or a state_dict)."""

    primary: WeightRecord
    names: tuple[str, ...]
    selected: bool
    reason: str = ""

    stored: tuple[str, ...] = ()


def tie_groups(records: list[WeightRecord]) -> list[TieGroup]:
    """Group records by tensor (each tensor once, in order of its first name). A group is
    selected when one of its names is and none matches an ``exclude`` glob."""
    by_name = {r.name: r for r in records}
    seen: set[str] = set()
    out = []
    for r in records:
        if r.name in seen:
            continue
        names = (r.name, *[n for n in r.tied_with if n in by_name])
        seen.update(names)
        members = [by_name[n] for n in names]
        chosen = [m for m in members if m.selected]
        excluded = [m.name for m in members if m.excluded]
        primary = chosen[0] if chosen else next((m for m in members if m.is_weight), r)
        stored = tuple(m.name for m in members if m.stored)
        if chosen and excluded:
            out.append(TieGroup(primary, names, False,
                                f"tied with {', '.join(excluded)}, which an exclude glob names: a tied tensor is "
                                "changed under all its names, so it is left alone", stored))
        else:
            out.append(TieGroup(primary, names, bool(chosen), "" if chosen else primary.reason, stored))
    return out
