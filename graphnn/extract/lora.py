"""A PEFT LoRA adapter as a ΔW graph on its base model's topology.

A LoRA adapter (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") changes a
weight ``W`` (``out x in``) of the base model by ``ΔW = scale · B · A`` with ``A`` of shape
``(r, in)`` and ``B`` of shape ``(out, r)``; ``scale = lora_alpha / r``, or
``lora_alpha / sqrt(r)`` with ``use_rslora`` (Kalajdzievski, 2023, "A Rank Stabilization Scaling
Factor for Fine-Tuning with LoRA"). The PEFT folder format (documented by PEFT: "Checkpoint format")
holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``adapter_model.bin``) with keys
``base_model.model.<module>.lora_A.weight`` and ``...lora_B.weight`` per adapted module
(``lora_embedding_A``/``lora_embedding_B`` for embeddings, whose ΔW is ``(B·A)ᵀ``); with
``fan_in_fan_out`` (GPT-2's Conv1D, stored ``in x out``) the stored ΔW is ``(B·A)ᵀ`` too.

:func:`lora_delta` builds the base model's graph (names and shapes only) and keeps the blocks of
the adapted weights, each loading ``scale · B · A`` in the layout of the base parameter (so a
fused projection's q/k/v blocks take their rows as the base graph does). Other blocks are absent
and listed in ``g.notes``.

:func:`lora_strength` computes strengths from the factors without forming ``B · A``: the signed
row sums are ``scale · B (A 1)`` and the column sums ``scale · (1ᵀ B) A`` (two matrix-vector
products, exact up to float64 rounding); the |ΔW| sums need the entries, formed a few rows at a
time (``CHUNK_ELEMENTS`` entries at once, never the whole product). The full analyses
(:func:`graphnn.analyse`: centrality, cores) read each block's ΔW once, as for any graph.
:func:`lora_norms` gives ‖ΔW‖_F per block from the r x r Gram matrices of the factors.

Factors and base weights read from a memory-mapped file give their resident pages back once
each pass is done with them (:func:`graphnn._pages.release_pages`), so RSS does not grow to the
size of the base checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..errors import CorruptCheckpointError, InvalidParameterError, TopologyWarning
from ..graph import Block, LayeredGraph
from .delta import _delta_dtype, _some

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
#: Entries of ``B · A`` formed at once by :func:`lora_strength` for the |ΔW| sums (32 MB in float64).
CHUNK_ELEMENTS = 1 << 22

#: ``<module>.lora_A[.<adapter name>].weight``, ``<module>.lora_embedding_A[.<adapter name>]``
#: (PEFT drops the adapter name when it saves; a ``lora_B.bias`` is no factor).
_KEY = re.compile(r"^(?P<module>.+?)\.(?:(?P<which>lora_A|lora_B)(?:\.[^.]+)?\.weight"
                  r"|(?P<emb>lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?)$")
_PREFIX = "base_model.model."
_UNSUPPORTED_TYPES = {
    "IA3": "IA3 scales activations (no low-rank weight change)",
    "PROMPT_TUNING": "prompt tuning learns input embeddings, not weights",
    "PREFIX_TUNING": "prefix tuning learns key/value prefixes, not weights",
    "P_TUNING": "p-tuning learns a prompt encoder, not weight changes",
    "MULTITASK_PROMPT_TUNING": "prompt tuning learns input embeddings, not weights",
    "ADAPTION_PROMPT": "adaption prompts add attention prefixes, not weight changes",
}


@dataclass
class LoraModule:
    """One adapted module: ``module`` (its name in the base model, without PEFT's
    ``base_model.model.`` prefix), ``r``, ``alpha``, ``scale``, the factor loaders (``A``:
    ``(r, in)``, ``B``: ``(out, r)``; for an embedding ``A`` is ``(r, vocab)``, ``B``
    ``(dim, r)``) and ``embedding``."""

    module: str
    r: int
    alpha: float
    scale: float
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    load_a: Callable[[], torch.Tensor] = field(repr=False)
    load_b: Callable[[], torch.Tensor] = field(repr=False)
    embedding: bool = False
    #: the factors' dtypes as stored (``None``: unknown until read)
    dtypes: tuple[torch.dtype | None, ...] = ()


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter read from its folder: ``config`` (adapter_config.json as read),
    ``modules`` (``{module name: LoraModule}``), ``other`` (keys of the weight file that are not
    LoRA factors, e.g. ``modules_to_save`` copies or biases: not analysed), ``fan_in_fan_out``."""

    path: Path
    weights: Path
    config: dict
    modules: dict[str, LoraModule]
    other: list[str]
    fan_in_fan_out: bool

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path`` of the config (informative only)."""
        return self.config.get("base_model_name_or_path")


def is_adapter(path: Any) -> bool:
    """Whether ``path`` is a PEFT adapter folder (or a file beside an ``adapter_config.json``)."""
    try:
        p = Path(path)
    except TypeError:
        return False
    folder = p if p.is_dir() else p.parent
    return (folder / CONFIG_FILE).is_file() and (p.is_dir() or p.name in WEIGHT_FILES)


def read_adapter(path: Any, trust: bool = False) -> LoraAdapter:
    """Read a PEFT LoRA adapter: a folder with ``adapter_config.json`` and
    ``adapter_model.safetensors`` (or ``adapter_model.bin``, loaded with ``weights_only=True``
    unless ``trust``), or the weight file itself. Factors are read lazily (names and shapes now).

    Refused with :class:`~graphnn.errors.InvalidParameterError`: no config, a PEFT type other
    than LoRA (IA3, prompt tuning, ...), DoRA (``use_dora``), a factor whose rank is not the
    configured ``r`` (``rank_pattern`` applied), A and B of one module that do not fit together,
    LoRA on conv layers, a module with only one factor."""
    from .checkpoints import open_checkpoint

    p = Path(path)
    if not p.exists():
        raise InvalidParameterError(f"adapter {str(p)!r} does not exist: give a PEFT adapter folder "
                                    f"({CONFIG_FILE} and {WEIGHT_FILES[0]})")
    folder = p if p.is_dir() else p.parent
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise InvalidParameterError(
            f"{folder} has no {CONFIG_FILE}: a PEFT adapter folder holds {CONFIG_FILE} (r, lora_alpha, "
            f"target_modules, ...) and {WEIGHT_FILES[0]}; without the config the scale alpha/r is unknown. "
            "Put the adapter's config beside its weights (PeftModel.save_pretrained writes both)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"could not read {cfg_path} as JSON ({e}); re-save the adapter") from e
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"{cfg_path} holds a JSON {type(config).__name__}, not an object")
    _check_config(config, cfg_path)
    if p.is_dir():
        weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
        if weights is None:
            raise InvalidParameterError(f"{folder} has {CONFIG_FILE} but no {' or '.join(WEIGHT_FILES)}: "
                                        "the adapter's weights are missing")
    else:
        weights = p
    entries = open_checkpoint(weights, trust=trust)
    r0, alpha0 = int(config["r"]), float(config["lora_alpha"])
    rslora = bool(config.get("use_rslora", False))
    factors: dict[str, dict[str, Any]] = {}
    other = []
    for e in entries:
        name = e.name[len(_PREFIX):] if e.name.startswith(_PREFIX) else e.name
        m = _KEY.match(name)
        if m is None or not e.is_tensor:
            other.append(e.name)
            continue
        which = m.group("which") or m.group("emb")
        factors.setdefault(m.group("module"), {})[which.replace("embedding_", "")] = e
        if m.group("emb"):
            factors[m.group("module")]["embedding"] = True
    if not factors:
        raise InvalidParameterError(f"{weights} holds no LoRA factors (keys ending in lora_A.weight / lora_B.weight); "
                                    f"found: {', '.join(other[:5]) or 'nothing'}")
    modules = {}
    for module, f in factors.items():
        if "lora_A" not in f or "lora_B" not in f:
            have = "lora_A" if "lora_A" in f else "lora_B"
            raise InvalidParameterError(f"{weights}: module {module!r} has {have} but not the other factor; the adapter "
                                        "file is incomplete")
        a, b = f["lora_A"], f["lora_B"]
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise InvalidParameterError(
                f"{module}: LoRA factors of shapes {tuple(a.shape)} and {tuple(b.shape)}: LoRA on conv layers "
                "(4-D factors) is not supported in this version; leave the conv modules out of the adapter")
        r = int(_pattern_value(config.get("rank_pattern"), module, r0))
        alpha = float(_pattern_value(config.get("alpha_pattern"), module, alpha0))
        emb = bool(f.get("embedding"))
        rank_a, rank_b = a.shape[0], b.shape[1]
        if rank_a != r or rank_b != r:
            raise InvalidParameterError(
                f"{module}: lora_A is {tuple(a.shape)} and lora_B {tuple(b.shape)}, but {CONFIG_FILE} says r={r}"
                f"{' (rank_pattern)' if r != r0 else ''}: the config does not belong to these weights")
        modules[module] = LoraModule(module, r, alpha, alpha / math.sqrt(r) if rslora else alpha / r,
                                     tuple(a.shape), tuple(b.shape), a.load, b.load, emb, (a.dtype, b.dtype))
    return LoraAdapter(folder, weights, config, modules, other, bool(config.get("fan_in_fan_out", False)))


def _check_config(config: dict, where: Path) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        why = _UNSUPPORTED_TYPES.get(peft_type, "only LoRA adapters are read")
        raise InvalidParameterError(f"{where}: peft_type {peft_type} is not supported ({why}); graphnn reads LoRA "
                                    "adapters (peft_type LORA) as ΔW = scale·B·A")
    if config.get("use_dora"):
        raise InvalidParameterError(
            f"{where}: use_dora is set: a DoRA adapter rescales each column of W + ΔW by a learned magnitude, so its "
            "weight change is not scale·B·A; DoRA is not supported in this version (merge the adapter into the "
            "model and use graphnn compare BASE MERGED --delta)")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidParameterError(f"{where}: {key} must be a positive number, got {value!r}")


def _pattern_value(pattern: Any, module: str, default: float) -> float:
    """PEFT's ``rank_pattern``/``alpha_pattern``: the value of the first key that matches the end
    of the module name (``re.match(rf"(.*\\.)?({key})$", module)``), else ``default``."""
    if not isinstance(pattern, dict):
        return default
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _targets(config: dict) -> Callable[[str], bool] | None:
    """Whether a module name is one of the config's ``target_modules`` (a list: the name or its
    last dotted parts; a string: a regex matched in full; ``all-linear`` or absent: ``None``)."""
    t = config.get("target_modules")
    if t is None or t == "all-linear":
        return None
    if isinstance(t, str):
        return lambda m: re.fullmatch(t, m) is not None
    names = [str(x) for x in t]
    return lambda m: any(m == n or m.endswith("." + n) for n in names)


# -- the graph -----------------------------------------------------------------------------------
def lora_delta(adapter: Any, base: Any, *, trust: bool = False, norms: bool = True,
               **extract_options: Any) -> LayeredGraph:
    """The ΔW graph of a LoRA adapter on its base model: ``adapter`` is a :class:`LoraAdapter` or
    a path for :func:`read_adapter`; ``base`` a :class:`LayeredGraph` or anything
    :func:`graphnn.extract` reads (with ``extract_options``: include, exclude, conv,
    include_embeddings; ``trust`` also applies to a ``.bin`` adapter). Only names and shapes are
    read here.

    The graph's blocks are the base graph's blocks of the adapted weights, each loading
    ``scale · B · A`` (float64 when the factors are float64, else float32) in the base
    parameter's layout; its partitions are those they touch. ``g.meta["delta"]`` holds the
    adapter's path, ``base``, ``r``/``alpha``/``scale`` per module and the base blocks left
    out; ``g.meta["lora"]`` the :class:`LoraAdapter`.

    ``norms=True`` (default) fills ``g.meta["norms"]`` with :func:`lora_norms` (so
    :func:`graphnn.delta_norms` ``(g)`` works; reads the factors and the adapted base weights
    once) and ``g.meta["all_zero"]`` (True when every ΔW is 0, e.g. an adapter saved right after
    PEFT's initialisation, where B = 0; a note says so). With ``norms=False`` both are ``None``.

    Refused (:class:`~graphnn.errors.InvalidParameterError`): a module of the adapter that the
    base has no weight for, a target module of the config that matches no base module, factors
    whose product does not have the base weight's shape. A module whose base weight is not a
    block of the base graph (an embedding without ``include_embeddings``) is listed in the notes
    with a :class:`~graphnn.errors.TopologyWarning`."""
    ad = adapter if isinstance(adapter, LoraAdapter) else read_adapter(adapter, trust=trust)
    if isinstance(base, LayeredGraph):
        g0 = base
    else:
        from . import extract

        g0 = extract(base, trust=trust, **extract_options)
    params = {r["name"]: r for r in g0.coverage.to_dict("records")}
    blocks_of: dict[str, list[Block]] = {}
    for b in g0.blocks.values():
        blocks_of.setdefault(b.param, []).append(b)
    notes = list(g0.notes) + [f"LoRA ΔW graph: adapter {ad.path} on {g0.source or 'the base'}: ΔW = scale·B·A for "
             f"{len(ad.modules)} module(s)"]
    missing, unmapped, out_blocks, per_module = [], [], [], {}
    for module, lm in ad.modules.items():
        param = _base_param(module, params)
        if param is None:
            missing.append(module)
            continue
        if param != module + ".weight":
            notes.append(f"LoRA module {module} is applied to the base weight {param}")
        rec = params[param]
        # stored in x out (GPT-2's Conv1D, an embedding's vocab x dim): ΔW is (B·A)ᵀ there. The base layer's
        # kind decides, as in PEFT (which turns fan_in_fan_out off for nn.Linear and on for Conv1D); the
        # config's flag only where the base weight is no block
        kinds = {b.kind for b in blocks_of.get(param, [])}
        transposed = lm.embedding or (bool(kinds & {"hf_conv1d", "embedding"}) if kinds else ad.fan_in_fan_out)
        want = _delta_shape(lm, transposed)
        have = _shape_of(rec)
        if have is not None and tuple(have) != want:
            raise InvalidParameterError(
                f"{module}: scale·B·A of lora_B {lm.b_shape} and lora_A {lm.a_shape} is {want}"
                f"{' (transposed: fan_in_fan_out)' if transposed else ''}, but the base weight {param} is "
                f"{tuple(have)}: this adapter was not trained on this base model "
                f"(its config names {ad.base_model!r})")
        if param not in blocks_of:
            unmapped.append(f"{module} ({rec.get('reason') or rec.get('status')})")
            continue
        per_module[module] = {"param": param, "r": lm.r, "alpha": lm.alpha, "scale": lm.scale}
        for b in blocks_of[param]:
            out_blocks.append(_lora_block(b, lm, transposed))
    if missing:
        raise InvalidParameterError(
            f"{len(missing)} module(s) of the adapter have no weight in the base model: {_some(missing, sort=False)}. The adapter "
            f"belongs to another model (its config names {ad.base_model!r}); give that model as the base")
    targets = _targets(ad.config)
    if targets is not None:
        base_modules = [n[:-len(".weight")] for n in params if n.endswith(".weight")]
        t = ad.config["target_modules"]
        absent = ([x for x in t if not any(m == x or m.endswith("." + str(x)) for m in base_modules)]
                  if isinstance(t, list) else ([] if any(targets(m) for m in base_modules) else [t]))
        if absent:
            raise InvalidParameterError(f"target module(s) {absent} of {CONFIG_FILE} match no module of the base model "
                                        f"({g0.source}): the adapter was made for another architecture")
        odd = [m for m in ad.modules if not targets(m)]
        if odd:
            notes.append(f"LoRA: {len(odd)} adapted module(s) are not among target_modules: {_some(odd, sort=False)}")
    if unmapped:
        msg = (f"LoRA: {len(unmapped)} adapted weight(s) are not blocks of the base graph and are left out: "
               f"{_some(unmapped, sort=False)} (for embeddings pass include_embeddings=True / --include-embeddings)")
        notes.append(msg)
        warnings.warn(msg, TopologyWarning, stacklevel=2)
    if not out_blocks:
        raise InvalidParameterError("none of the adapter's modules is a block of the base graph: nothing to analyse "
                                    f"({_some(unmapped, sort=False)})")
    if ad.other:
        notes.append(f"LoRA: {len(ad.other)} tensor(s) of the adapter file are not LoRA factors and are not analysed "
                     f"(modules_to_save copies, biases): {_some(ad.other, sort=False)}")
    left_out = [b.name for b in g0.blocks.values() if b.param not in {v['param'] for v in per_module.values()}]
    if left_out:
        notes.append(f"LoRA ΔW graph: {len(left_out)} base block(s) the adapter does not change are absent: "
                     f"{_some(left_out, sort=False)}")
    touched = {n for b in out_blocks for n in (b.src, b.dst)}
    parts = [p for p in g0.partitions.values() if p.name in touched]
    adapted = {v["param"] for v in per_module.values()}
    coverage = [dict(r, nonfinite=None) if r["name"] in adapted else
                dict(r, nonfinite=None, status="skipped", blocks="",
                     reason=r.get("reason") or "not changed by the adapter")
                for r in g0.coverage.to_dict("records")]
    g = LayeredGraph(parts, out_blocks, coverage=coverage, source=f"lora: {ad.path} on {g0.source}", notes=notes)
    if getattr(g0, "topology", None):
        g.topology = g0.topology
    g.meta.update(delta={"base": g0.source, "tuned": str(ad.path), "kind": "lora", "modules": per_module,
                         "use_rslora": bool(ad.config.get("use_rslora", False)), "left_out": left_out,
                         "all_zero": None},
                  lora=ad, all_zero=None, norms=None)
    if norms:
        rows = lora_norms(g).to_dict("records")
        all_zero = all(r["frobenius_delta"] == 0 for r in rows)
        g.meta.update(norms=rows, all_zero=all_zero)
        g.meta["delta"]["all_zero"] = all_zero
        if all_zero:
            g.notes.append(f"LoRA ΔW is zero in all {len(rows)} adapted blocks (lora_B is 0, as PEFT initialises it, "
                           "or lora_A is): the adapter does not change the model. Strengths and cores are 0 and "
                           "centrality is uniform: there is no change to analyse")
    return g


def _base_param(module: str, params: dict) -> str | None:
    """The base parameter a LoRA module changes: ``<module>.weight``, else the one base weight
    whose name ends with it or that it ends with (a base saved without or with a wrapper prefix,
    e.g. ``model.``)."""
    exact = module + ".weight"
    if exact in params:
        return exact
    cands = [n for n in params if n.endswith("." + exact) or exact.endswith("." + n)]
    return cands[0] if len(cands) == 1 else None


def _shape_of(rec: dict) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in re.findall(r"\d+", str(rec.get("shape", ""))))
    except ValueError:
        return None


def _delta_shape(lm: LoraModule, transposed: bool) -> tuple[int, int]:
    out, inn = lm.b_shape[0], lm.a_shape[1]
    return (inn, out) if transposed else (out, inn)


def _factors(lm: LoraModule) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``(A, B, read)``: the factors in the ΔW dtype (the tensors as read when already in it)
    and the tensors as read (for :func:`_release` once the caller is done with both)."""
    a, b = lm.load_a(), lm.load_b()
    dt = _delta_dtype(a.dtype, b.dtype)
    return a.to(dt), b.to(dt), (a, b)


def _release(*tensors: torch.Tensor) -> None:
    """Give back the resident pages of tensors read from a memory-mapped file (the adapter's
    factors, the base weights) once a pass is done with them (a no-op for other tensors)."""
    for t in tensors:
        release_pages(t)


def _lora_block(b: Block, lm: LoraModule, transposed: bool) -> Block:
    """``b`` with its tensor replaced by ``scale · B · A`` in the base parameter's layout."""

    def load() -> torch.Tensor:
        a, bb, read = _factors(lm)
        d = (bb @ a).mul_(lm.scale)
        _release(*read)
        return d.T if transposed else d

    dt = _delta_dtype(*lm.dtypes)  # what load() returns: float64 factors stay float64
    blk = dataclasses.replace(b, _load=load, _on_load=None, src_size=None, dst_size=None, dtype=dt)
    blk._lora = (lm, transposed, b)  # the factors and the base block, for lora_strength / lora_norms
    return blk


# -- strengths from the factors -------------------------------------------------------------------
def matrix_factors(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, R)`` in float64 with ``block.matrix() == L @ R`` for a block of :func:`lora_delta`:
    ``L = scale · B[rows]`` (``(n_dst, r)``) and ``R = A[:, cols]`` (``(r, n_src)``), where
    ``rows``/``cols`` are the rows and columns of ``B · A`` the block's matrix takes (found by
    passing index probes, stride-0 views of the parameter's shape, through the block's own
    matrix function: no ``B · A`` is formed)."""
    lm, transposed, _ = getattr(block, "_lora", (None, None, None))
    if lm is None:
        raise InvalidParameterError(f"block {block.name!r} is not a LoRA block of graphnn.lora_delta")
    if block.aggregation is not None or block.groups != 1:
        raise InvalidParameterError(f"block {block.name!r}: LoRA factors of aggregated blocks are not supported")
    out, inn = lm.b_shape[0], lm.a_shape[1]

    def probe(ids: torch.Tensor, axis: int) -> torch.Tensor:
        p = ids[:, None].expand(out, inn) if axis == 0 else ids[None, :].expand(out, inn)
        m = block._to_matrix(p.T if transposed else p)
        return m[:, 0] if axis == 0 else m[0, :]

    rows, cols = probe(torch.arange(out), 0), probe(torch.arange(inn), 1)
    a, b, read = _factors(lm)
    left, right = b.double()[rows] * lm.scale, a.double()[:, cols]  # new tensors (indexing copies)
    _release(*read)
    return left, right


def _row_chunks(left: torch.Tensor, right: torch.Tensor):
    """``left @ right`` a few rows at a time (:data:`CHUNK_ELEMENTS` entries): ``(start, chunk)``."""
    step = max(1, CHUNK_ELEMENTS // max(1, right.shape[1]))
    for i in range(0, left.shape[0], step):
        yield i, left[i:i + step] @ right


def lora_norms(g: LayeredGraph) -> pd.DataFrame:
    """The rows of :func:`graphnn.delta_norms` for a LoRA ΔW graph: per block
    ``frobenius_delta`` = ‖L R‖_F from the r x r Gram matrices, ``sqrt(trace((LᵀL)(R Rᵀ)))``
    (no product formed; exact up to float64 rounding), ``frobenius_base`` = ‖W_base‖_F of the
    block's base matrix, ``relative`` (NaN where the base norm is 0) and ``max_abs_delta`` (from
    row chunks of the product). ``L``, ``R``: :func:`matrix_factors`."""
    from .delta import NORM_COLUMNS

    rows = []
    for b in g.blocks.values():
        left, right = matrix_factors(b)
        fd = math.sqrt(max(0.0, float(torch.trace((left.T @ left) @ (right @ right.T)))))
        base_block = b._lora[2]
        raw = base_block.tensor()
        fb = float(torch.linalg.vector_norm(base_block.matrix(tensor=raw).double()))
        _release(raw)  # the base weight (often a large memory-mapped checkpoint) leaves RSS
        mx = max((float(c.abs().max()) for _, c in _row_chunks(left, right) if c.numel()), default=0.0)
        rows.append({"block": b.name, "param": b.param, "frobenius_delta": fd, "frobenius_base": fb,
                     "relative": fd / fb if fb > 0 else math.nan, "max_abs_delta": mx})
    return pd.DataFrame(rows, columns=NORM_COLUMNS)


def lora_strength(g: LayeredGraph) -> pd.DataFrame:
    """Strength of every neuron of a LoRA ΔW graph (:func:`lora_delta`) from the factors:
    ``layer, neuron, in_strength, out_strength, strength, abs_in_strength, abs_out_strength,
    abs_strength`` (definitions of :func:`graphnn.strength`, signed and |ΔW|). Signed sums are
    two matrix-vector products per block (``L (R 1)`` and ``(1ᵀ L) R``, exact up to float64
    rounding); |ΔW| sums form ``L @ R`` a few rows at a time (:data:`CHUNK_ELEMENTS` entries), never
    the whole product. Equal to :func:`graphnn.strength` of the same graph, which forms each
    block's ΔW."""
    from ..analyses.strength import add_block_sums, neuron_frame

    n = g.num_nodes
    s_in, s_out, a_in, a_out = (np.zeros(n) for _ in range(4))
    for b in g.blocks.values():
        left, right = matrix_factors(b)
        rows = left @ right.sum(1)
        cols = left.sum(0) @ right
        add_block_sums(g, b, rows, cols, s_in, s_out)
        abs_rows = torch.empty(left.shape[0], dtype=torch.float64)
        abs_cols = torch.zeros(right.shape[1], dtype=torch.float64)
        for i, c in _row_chunks(left, right):
            c = c.abs_()
            abs_rows[i:i + c.shape[0]] = c.sum(1)
            abs_cols += c.sum(0)
        add_block_sums(g, b, abs_rows, abs_cols, a_in, a_out)
    return neuron_frame(g, {"in_strength": s_in, "out_strength": s_out, "strength": s_in + s_out,
                            "abs_in_strength": a_in, "abs_out_strength": a_out, "abs_strength": a_in + a_out})


