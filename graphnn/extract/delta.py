"""The graph of a fine-tune's weight change: ΔW = W_tuned − W_base, block by block.

:func:`delta` matches the blocks of two graphs by name and returns a :class:`LayeredGraph` on
the tuned graph's partitions and index maps whose blocks load ``W_tuned − W_base`` lazily (one
block at a time, from the two graphs' own sources: nothing is held beyond what they hold).
Any analysis runs on it as on a model: its strength is the change of strength, its centrality
and cores say where the change concentrates.

:func:`delta_norms` gives per block ``‖ΔW‖_F``, ``‖W_base‖_F`` and their ratio. Norms are over
the weights the block holds *as stored* (a conv block's whole kernels, not their aggregation;
a q/k/v block only its rows of the fused tensor), computed in float64.

Both read each side's tensor once per call and then give back its resident pages
(:func:`graphnn._pages.release_pages`: for a memory-mapped checkpoint RSS stays near one block;
a no-op for tensors in ordinary memory).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Iterable

import pandas as pd
import torch

from .._pages import release_pages
from ..errors import InvalidParameterError, TopologyWarning
from ..graph import Block, LayeredGraph
from ..validation import check_bool

#: Columns of :func:`delta_norms`, in order.
NORM_COLUMNS = ["block", "param", "frobenius_delta", "frobenius_base", "relative", "max_abs_delta"]

#: Names shown in a refusal before "... (N in all)".
_SHOWN = 6


def delta(base: Any, tuned: Any, *, labels: tuple[str, str] | None = None, norms: bool = True) -> LayeredGraph:
    """The ΔW graph ``W_tuned − W_base`` of two graphs (or anything :func:`graphnn.extract` reads,
    extracted with its defaults) whose blocks are matched by name.

    The result has the tuned graph's partitions (those its matched blocks touch, in order) and
    index maps; each block loads ``tuned − base`` of its parameter in float32 (float64 when either
    side is float64) when it is read. Blocks of one side only are left out and listed in
    ``g.notes`` (with a :class:`~graphnn.errors.TopologyWarning`) and ``g.meta["delta"]``.

    ``norms=True`` (default) reads every matched block once to fill ``g.meta["norms"]`` (the rows
    of :func:`delta_norms`) and ``g.meta["all_zero"]`` (True when ΔW is 0 everywhere: the models
    have equal weights; a note says so, and the analyses give well-defined values: strengths
    and cores 0, centrality uniform). With ``norms=False`` both are ``None`` (not checked).

    Refused with :class:`~graphnn.errors.InvalidParameterError` (saying what did not match): no
    block name in common, a matched block whose shape, kind or aggregation differs, or one whose
    source/destination partitions (names, sizes, members, index maps) differ.
    """
    check_bool("norms", norms)
    if labels is not None and (not isinstance(labels, (tuple, list)) or len(labels) != 2
                               or not all(isinstance(x, str) for x in labels)):
        raise InvalidParameterError(f"labels must be two strings (base, tuned), not {labels!r}")
    base_g, tuned_g = _as_graph(base, "base"), _as_graph(tuned, "tuned")
    base_label, tuned_label = labels or (base_g.source or "base", tuned_g.source or "tuned")
    pairs, only_base, only_tuned = match_blocks(base_g, tuned_g, (base_label, tuned_label))
    blocks = [_delta_block(t, b) for b, t in pairs]
    touched = {n for blk in blocks for n in (blk.src, blk.dst)}
    parts = [p for p in tuned_g.partitions.values() if p.name in touched]
    notes = list(tuned_g.notes) + [f"ΔW graph: {tuned_label} − {base_label}, {len(pairs)} blocks matched by name"]
    if only_base or only_tuned:
        msg = ("ΔW graph: blocks on one side only are left out: "
               + "; ".join(f"only in {lab!r}: {_some(names)}" for lab, names in
                           ((base_label, only_base), (tuned_label, only_tuned)) if names))
        notes.append(msg)
        warnings.warn(msg, TopologyWarning, stacklevel=2)
    dropped = [p for p in tuned_g.partitions if p not in touched]
    if dropped:
        notes.append(f"ΔW graph: partitions no matched block touches are left out: {_some(dropped)}")
    g = LayeredGraph(parts, blocks, coverage=_coverage(base_g, tuned_g, pairs, base_label, tuned_label),
                     source=f"delta: {tuned_label} - {base_label}", notes=notes)
    if getattr(tuned_g, "topology", None):
        g.topology = tuned_g.topology
    info = {"base": base_label, "tuned": tuned_label, "matched": len(pairs),
            "only_in_base": only_base, "only_in_tuned": only_tuned, "all_zero": None}
    g.meta.update(delta=info, all_zero=None, norms=None)
    if norms:
        rows = [_norm_row(t, b) for b, t in pairs]
        all_zero = all(r["frobenius_delta"] == 0 for r in rows)
        g.meta.update(norms=rows, all_zero=all_zero)
        info["all_zero"] = all_zero
        if all_zero:
            g.notes.append(f"ΔW is zero in all {len(pairs)} matched blocks: {tuned_label} and {base_label} have "
                           "equal weights there. Strengths and cores of the ΔW graph are 0 and its centrality "
                           "is uniform: there is no change to analyse")
    return g


def delta_norms(base: Any, tuned: Any = None) -> pd.DataFrame:
    """Per matched block: ``block, param, frobenius_delta`` (‖W_tuned − W_base‖_F),
    ``frobenius_base`` (‖W_base‖_F), ``relative`` (their ratio; NaN where ‖W_base‖_F = 0) and
    ``max_abs_delta`` (max |ΔW|), over the block's weights as stored, in float64.

    ``delta_norms(base, tuned)`` with two graphs (or sources) matches them as :func:`delta`
    does; ``delta_norms(g)`` with a ΔW graph made by :func:`delta` returns the norms it
    computed."""
    if tuned is None:
        if not isinstance(base, LayeredGraph) or "delta" not in base.meta:
            raise InvalidParameterError("delta_norms(g) needs a ΔW graph made by graphnn.delta; or give two graphs: "
                                        "delta_norms(base, tuned)")
        rows = base.meta.get("norms")
        if rows is None:
            raise InvalidParameterError("this ΔW graph was made with norms=False: call graphnn.delta(base, tuned) "
                                        "with norms=True, or delta_norms(base, tuned)")
    else:
        base_g, tuned_g = _as_graph(base, "base"), _as_graph(tuned, "tuned")
        pairs, _, _ = match_blocks(base_g, tuned_g, (base_g.source or "base", tuned_g.source or "tuned"))
        rows = [_norm_row(t, b) for b, t in pairs]
    return pd.DataFrame(rows, columns=NORM_COLUMNS)


# -- matching ------------------------------------------------------------------------------------
def match_blocks(base: LayeredGraph, tuned: LayeredGraph, labels: tuple[str, str] = ("base", "tuned")
                 ) -> tuple[list[tuple[Block, Block]], list[str], list[str]]:
    """``(pairs, only_in_base, only_in_tuned)``: ``(base block, tuned block)`` pairs with the same
    name (in tuned order) and the names found on one side only. Raises
    :class:`~graphnn.errors.InvalidParameterError` when no name matches, or when a matched pair
    differs in shape or in the partitions it joins (see :func:`delta`)."""
    lb, lt = labels
    pairs = [(base.blocks[n], t) for n, t in tuned.blocks.items() if n in base.blocks]
    only_base = [n for n in base.blocks if n not in tuned.blocks]
    only_tuned = [n for n in tuned.blocks if n not in base.blocks]
    if not pairs:
        raise InvalidParameterError(
            f"no block of {lt!r} has the name of a block of {lb!r}, so there is no ΔW to take: give the "
            f"fine-tuned model and the model it was tuned from, extracted with the same options "
            f"(blocks of {lb!r}: {_some(only_base)}; of {lt!r}: {_some(only_tuned)})")
    shapes = [f"{t.name}: {_shape_text(b)} in {lb!r} vs {_shape_text(t)} in {lt!r}"
              for b, t in pairs if _shape_key(b) != _shape_key(t)]
    if shapes:
        raise InvalidParameterError(
            f"{len(shapes)} block(s) of the same name have different shapes, so W_tuned − W_base is not defined "
            f"there: {_some(shapes, sort=False)}. Leave them out (exclude=[...], CLI --exclude GLOB), e.g. a "
            "resized vocabulary, or compare checkpoints of the same architecture")
    parts = [m for b, t in pairs for m in _partition_mismatches(base, tuned, b, t, labels)]
    if parts:
        raise InvalidParameterError(
            f"{len(parts)} matched block(s) join different partitions in the two graphs, so their ΔW cannot share one "
            f"graph: {_some(list(dict.fromkeys(parts)), sort=False)}. Extract both the same way (the same options; "
            "both folders with their config.json, or both bare checkpoints)")
    return pairs, only_base, only_tuned


def _shape_key(b: Block) -> tuple:
    return (tuple(b.param_shape), tuple(b.shape), b.kind, b.aggregation, b.groups)


def _shape_text(b: Block) -> str:
    extra = f", {b.kind}" + (f", {b.aggregation}" if b.aggregation else "") + (f", groups={b.groups}" if b.groups > 1 else "")
    return f"{tuple(b.param_shape)}{extra}"


def _partition_mismatches(base: LayeredGraph, tuned: LayeredGraph, b: Block, t: Block,
                          labels: tuple[str, str]) -> Iterable[str]:
    lb, lt = labels
    for side in ("src", "dst"):
        pb, pt = base.partitions[getattr(b, side)], tuned.partitions[getattr(t, side)]
        if (pb.name, pb.size, pb.members) != (pt.name, pt.size, pt.members):
            yield (f"{t.name} {'reads' if side == 'src' else 'writes'} {pb.name!r} ({pb.size} neurons) in {lb!r} "
                   f"but {pt.name!r} ({pt.size} neurons) in {lt!r}")
        ib, it = getattr(b, f"{side}_index"), getattr(t, f"{side}_index")
        if (ib is None) != (it is None) or (ib is not None and not torch.equal(ib, it)):
            yield f"{t.name}: its {side} index map differs between {lb!r} and {lt!r}"


# -- blocks, coverage, norms -----------------------------------------------------------------------
def _delta_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _delta_block(t: Block, b: Block) -> Block:
    """``t`` with its tensor replaced by ``t.tensor() − b.tensor()`` (read on each call)."""
    dt = _delta_dtype(t.dtype, b.dtype)

    def load() -> torch.Tensor:
        wt, wb = t.tensor(), b.tensor()
        d = wt.to(dt) - wb.to(dt)  # a new tensor: the two sides are read once, here
        release_pages(wt)  # memory-mapped checkpoints: their pages leave RSS (a no-op otherwise)
        release_pages(wb)
        return d

    return dataclasses.replace(t, dtype=dt, _load=load, _on_load=None, src_size=None, dst_size=None)


def _norm_row(t: Block, b: Block) -> dict:
    """One row of :func:`delta_norms` for a matched pair."""
    wt, wb = t.tensor(), b.tensor()
    if "meta" in (wt.device.type, wb.device.type):
        raise InvalidParameterError(f"{t.name}: a weight is on the meta device (no values), so ΔW has no values; "
                                    "extract both models with their weights (or pass norms=False)")
    if t.aggregation is None and t.groups == 1:
        mt, mb = t.matrix(tensor=wt).double(), b.matrix(tensor=wb).double()
    else:  # the stored entries of the block (whole kernels), not their aggregation
        rows, _ = t.entry_index("matrix")
        keep = rows >= 0
        mt, mb = wt.double()[keep], wb.double()[keep]
    d = mt - mb
    fd = float(torch.linalg.vector_norm(d)) if d.numel() else 0.0
    fb = float(torch.linalg.vector_norm(mb)) if mb.numel() else 0.0
    mx = float(d.abs().max()) if d.numel() else 0.0
    release_pages(wt)  # the last read of the two tensors (mb may be a view of wb)
    release_pages(wb)
    return {"block": t.name, "param": t.param, "frobenius_delta": fd, "frobenius_base": fb,
            "relative": fd / fb if fb > 0 else math.nan, "max_abs_delta": mx}


def _coverage(base: LayeredGraph, tuned: LayeredGraph, pairs, lb: str, lt: str) -> list[dict]:
    """The tuned graph's coverage, with parameters that no matched block comes from marked
    skipped (and why), and parameters mapped in the base graph only added as skipped."""
    matched_blocks: dict[str, list[str]] = {}
    for _, t in pairs:
        matched_blocks.setdefault(t.param, []).append(t.name)
    recs = []
    for r in tuned.coverage.to_dict("records"):
        r = dict(r, nonfinite=None)
        if r["status"] == "mapped":
            if r["name"] in matched_blocks:
                r["blocks"] = ", ".join(matched_blocks[r["name"]])
            else:
                r.update(status="skipped", blocks="", reason=f"only in {lt!r}: no block of that name in {lb!r}")
        recs.append(r)
    seen = {r["name"] for r in recs}
    for r in base.coverage.to_dict("records"):
        if r["status"] == "mapped" and r["name"] not in seen:
            recs.append(dict(r, status="skipped", blocks="", nonfinite=None,
                             reason=f"only in {lb!r}: no block of that name in {lt!r}"))
            seen.add(r["name"])
    return recs


def _as_graph(x: Any, what: str) -> LayeredGraph:
    if isinstance(x, LayeredGraph):
        return x
    from . import extract

    try:
        return extract(x)
    except TypeError as e:
        raise InvalidParameterError(f"{what}: expected a LayeredGraph or something graphnn.extract reads, got "
                                    f"{type(x).__name__} ({e})") from e


def _some(names: list[str], k: int = _SHOWN, sort: bool = True) -> str:
    shown = sorted(names) if sort else list(names)
    if not shown:
        return "none"
    return ", ".join(shown[:k]) + (f", ... ({len(shown)} in all)" if len(shown) > k else "")
