"""Transformer graphs from the family rule table (graph-model.md §2c, §2d way 3).

:func:`family_graph` takes the named tensors of a model (a checkpoint's lazy entries, or a live
module's parameters) and the roles :mod:`graphnn.extract.families` gives them, and builds the
partitions and blocks directly: no shape chaining, so nothing depends on the order of the names.
The same function serves files, folders, state_dicts and transformers modules, so one model
gives one graph whichever way it is read.

Conventions (documented here once):

- the stream of a tower is named ``{prefix}.stream`` (see :func:`~graphnn.extract.families.stream_name`),
  of ``hidden_size`` neurons, kind ``"residual"``; its ``members`` list the modules writing it;
- q/k/v partitions are named after their module (``...self_attn.q_proj``), or ``{module}.q`` for
  a fused projection (whose blocks are ``{param}[q]``);
- the hidden partition of an MLP is named after its first writer (``...mlp.gate_proj``, members
  ``gate_proj`` and ``up_proj``); an expert slice of a fused 3-D tensor is block ``{param}[e]``
  (``[e][gate]``/``[e][up]`` for ``gate_up_proj``) writing partition ``{unit}.{e}``;
- an embedding reads a token partition ``{module}.in`` (kind ``"input"``), the patch embedding
  reads ``{module}.in`` (image channels).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import torch

from ..errors import TopologyWarning
from ..graph import Block, LayeredGraph, Partition, aggregate_kernel
from .builder import GraphBuilder
from .checkpoints import TensorEntry, _model_order_key
from .families import (
    Family, Role, attention_shape, is_cross_attention, role_of, stream_name, tied_aliases, tower_config, tower_of,
)
from .rules import SKIP_EMBEDDING, hf_conv1d_layout, leaf_name, module_name, rule_from_name, skip_reason_for_tensor

SCORES_NOTE = ("attention scores (q·kᵀ) and the softmax are not weight edges: the q and k partitions are sinks of "
               "the weight graph, and the attention output is the v partition (token mixing keeps it)")
MOE_NOTE = ("mixture of experts: routing is data-dependent, so the router's score partition is a sink; each "
            "expert is a gated MLP from the stream back to the stream with its own hidden partition")


def _hidden_size(cfg: Mapping[str, Any]) -> int | None:
    for k in ("hidden_size", "n_embd", "d_model", "dim"):
        if cfg.get(k):
            return int(cfg[k])
    return None


def _select(m: torch.Tensor, rows) -> torch.Tensor:
    if rows is None:
        return m
    if isinstance(rows, slice):
        return m[rows]
    return m.index_select(0, rows)


def _matrix_fn(layout: str, rows, expert: int | None, conv: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw tensor -> ``(n_dst, n_src)`` matrix. ``layout``: ``"out_in"`` (Linear, conv: axis 0 is
    the destination), ``"in_out"`` (HF Conv1D, embedding tables: axis 0 is the source);
    ``expert`` selects one slice of a 3-D expert tensor first; ``rows`` keeps some destinations."""
    def to_matrix(t: torch.Tensor) -> torch.Tensor:
        if expert is not None:
            t = t[expert]
        if t.dim() > 2:
            t = aggregate_kernel(t, conv)
        m = t if layout == "out_in" else t.T
        return _select(m, rows)
    return to_matrix


def _entry_index_fn(shape: tuple[int, ...], layout: str, rows, expert: int | None):
    """(destination row, source column) of every entry of the raw tensor in this block's matrix,
    ``-1`` for entries of other blocks (other rows of a fused tensor, other experts)."""
    def entry_index() -> tuple[torch.Tensor, torch.Tensor]:
        lead = 1 if expert is not None else 0
        d_axis, s_axis = (lead, lead + 1) if layout == "out_in" else (lead + 1, lead)

        def along(n: int, axis: int) -> torch.Tensor:
            view = [1] * len(shape)
            view[axis] = -1
            return torch.arange(n).view(view).expand(shape).clone()
        dst, src = along(shape[d_axis], d_axis), along(shape[s_axis], s_axis)
        if rows is not None:
            pos = torch.full((shape[d_axis],), -1, dtype=torch.int64)
            sel = torch.arange(shape[d_axis])[rows] if isinstance(rows, slice) else rows
            pos[sel] = torch.arange(sel.numel())
            dst = pos[dst]
        valid = dst >= 0
        if expert is not None:
            valid &= along(shape[0], 0) == expert
        dst[~valid] = -1
        src[~valid] = -1
        return dst, src
    return entry_index


def _n_rows(rows, total: int) -> int:
    if rows is None:
        return total
    if isinstance(rows, slice):
        return len(range(*rows.indices(total)))
    return int(rows.numel())


class _Assembler:
    """Partitions keyed by role (``("stream", tower)``, ``("v", unit)``, ...), created on first
    use with a size that every later block must fit; blocks built directly."""

    def __init__(self, family: Family, config: Mapping[str, Any] | None, names: list[str], conv: str,
                 builder: GraphBuilder):
        self.family = family
        self.config = config or {}
        self.names = names
        self.conv = conv
        self.b = builder
        self.parts: dict[tuple, dict] = {}
        self.blocks: list[Block] = []
        self.warnings: list[str] = []
        self.hints: dict[tuple, str] = {}
        self.cut_params: dict[str, str] = {}

    # -- partitions -------------------------------------------------------------------------
    def stream(self, tower: str) -> tuple:
        key = ("stream", tower)
        if key not in self.parts:
            size = _hidden_size(tower_config(self.config, self.family, tower))
            self.parts[key] = dict(name=stream_name(self.family, tower, self.names), size=size, kind="residual",
                                   writers=[])
        return key

    def part(self, key: tuple, name: str, size: int | None = None, kind: str = "features") -> tuple:
        """Partition ``key``, created on first use; named by :attr:`hints` (its writer's module,
        found before any block is added) or else ``name``."""
        if key not in self.parts:
            self.parts[key] = dict(name=self.hints.get(key, name), size=size, kind=kind, writers=[])
        return key

    def size(self, key: tuple) -> int | None:
        return self.parts[key]["size"] if key in self.parts else None

    def _fit(self, key: tuple, n: int, index: torch.Tensor | None = None) -> bool:
        p = self.parts[key]
        if p["size"] is None:
            p["size"] = n if index is None else int(index.max()) + 1
            return True
        if index is None:
            return p["size"] == n
        return index.numel() == n and int(index.max()) < p["size"]

    def cut(self, param: str, what: str, key: tuple, n: int, side: str) -> tuple:
        """A block that does not fit the rule table's partition: it gets a new one and a warning."""
        have = self.parts[key]["size"]
        mod = module_name(param) or param
        new = ("cut", param, side)
        name = f"{mod}.in" if side == "src" else f"{mod}.out"
        msg = (f"{param}: the {self.family.name} rule table says it {what} {self.parts[key]['name']!r} "
               f"({have} neurons) but it has {n}; it {'reads' if side == 'src' else 'writes'} a new partition "
               f"{name!r} instead (the checkpoint does not follow the family's layout; check config.json or "
               "report the architecture)")
        self.warnings.append(msg)
        self.cut_params[param] = f"topology cut: {'reads' if side == 'src' else 'writes'} {name!r} (see notes)"
        return self.part(new, name, n, kind="input" if side == "src" else "features")

    # -- blocks -----------------------------------------------------------------------------
    def add(self, entry: TensorEntry, src: tuple, dst: tuple, *, layout: str = "out_in", rows=None,
            expert: int | None = None, suffix: str = "", kind: str = "linear", src_index: torch.Tensor | None = None,
            writer: str | None = None) -> Block:
        shape = tuple(entry.shape)
        inner = shape[1:] if expert is not None else shape
        d_axis, s_axis = (0, 1) if layout == "out_in" else (1, 0)
        n_dst, n_src = _n_rows(rows, inner[d_axis]), inner[s_axis]
        if not self._fit(src, n_src, src_index):
            src, src_index = self.cut(entry.name, "reads", src, n_src, "src"), None
        if not self._fit(dst, n_dst):
            dst = self.cut(entry.name, "writes", dst, n_dst, "dst")
        if writer is not None and writer not in self.parts[dst]["writers"]:
            self.parts[dst]["writers"].append(writer)
        agg = self.conv if len(inner) > 2 else None
        blk = Block(
            name=entry.name + suffix, param=entry.name, src=self.parts[src]["name"], dst=self.parts[dst]["name"],
            shape=(n_dst, n_src), kind=kind, param_shape=shape, dtype=entry.dtype, aggregation=agg,
            src_index=src_index, _load=entry.load, _to_matrix=_matrix_fn(layout, rows, expert, self.conv),
            _entry_index=_entry_index_fn(shape, layout, rows, expert),
        )
        self.blocks.append(blk)
        return blk

    def build(self, coverage: list[dict], source: str | None, notes: list[str]) -> LayeredGraph:
        used = {b.src for b in self.blocks} | {b.dst for b in self.blocks}
        partitions = []
        for p in self.parts.values():
            if p["name"] not in used:
                continue
            members = [p["name"]] + [w for w in p["writers"] if w != p["name"]] if p["kind"] == "residual" else p["writers"]
            partitions.append(Partition(p["name"], int(p["size"]), kind=p["kind"],
                                        members=tuple(members) if len(members) > 1 else ()))
        return LayeredGraph(partitions, self.blocks, coverage=coverage, source=source, notes=notes)


def _storage_ties(entries: list[TensorEntry]) -> dict[str, str]:
    """``{name: first name}`` for in-memory tensors that are the same tensor (same storage,
    offset, shape and strides) as an earlier entry: tied weights of a module or a ``.bin``."""
    seen: dict[tuple, str] = {}
    out: dict[str, str] = {}
    for e in entries:
        if not (e.in_memory and e.is_tensor):
            continue
        t = e.load()
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in seen:
            out[e.name] = seen[key]
        else:
            seen[key] = e.name
    return out


def _guess_head_dim(width: int) -> int:
    return next((d for d in (128, 64, 32) if width % d == 0), width)


class _Planner:
    """Walks the entries in model order and adds the blocks of each role."""

    def __init__(self, asm: _Assembler, entries: dict[str, TensorEntry], hf_conv1d: bool):
        self.a = asm
        self.entries = entries
        self.hf_conv1d = hf_conv1d
        self.roles: dict[str, Role] = {}
        self.o_width: dict[str, int] = {}
        self.unmatched: list[str] = []
        self.head_dim_guessed: set[str] = set()

    # attention geometry of a unit: (heads, kv heads, head_dim), from the config when it says
    def attention_geometry(self, unit: str, tower: str) -> tuple[int | None, int | None, int | None]:
        """From the config; else the head size from a per-head norm (Qwen3/Gemma-3 ``q_norm``,
        ``head_dim`` entries) when the checkpoint has one."""
        cfg = tower_config(self.a.config, self.a.family, tower if tower in ("text", "vision") else "main")
        if cfg:
            return attention_shape(cfg, tower)
        norm = self.entries.get(f"{unit}.q_norm.weight") or self.entries.get(f"{unit}.k_norm.weight")
        if norm is not None and len(norm.shape) == 1:
            return None, None, int(norm.shape[0])
        return None, None, None

    def qkv_rows(self, e: TensorEntry, unit: str, tower: str):
        """Row selections of q, k, v in a fused projection (rows of ``(out, in)``; for GPT-2's
        Conv1D, columns of ``(in, out)``)."""
        fam = self.a.family
        heads, kv, hd = self.attention_geometry(unit, tower)
        if fam.fused_qkv == "columns" and self.hf_conv1d:
            total = e.shape[1]
        else:
            total = e.shape[0]
        if fam.fused_qkv == "per-head":  # NeoX: rows (heads, 3, head_dim)
            if heads is None or total % (3 * heads):
                if not hd or total % (3 * hd):
                    hd = _guess_head_dim(total // 3)
                    self.head_dim_guessed.add(e.name)
                heads = total // (3 * hd)
            else:
                hd = total // (3 * heads)
            idx = torch.arange(total).view(heads, 3, hd)
            return [idx[:, p, :].reshape(-1).clone() for p in range(3)]
        if heads and kv and hd and (heads + 2 * kv) * hd == total:
            q, k = heads * hd, kv * hd
        elif unit in self.o_width and (total - self.o_width[unit]) % 2 == 0 and total > self.o_width[unit]:
            q = self.o_width[unit]
            k = (total - q) // 2
        else:
            q = k = total // 3
        return [slice(0, q), slice(q, q + k), slice(q + k, total)]

    def gqa_index(self, param: str, unit: str, tower: str, width: int, v_size: int | None):
        """The repeat map of an o projection of ``width`` inputs reading a v partition of
        ``v_size`` neurons: column ``(h, t)`` reads value neuron ``(h // (heads / kv_heads), t)``."""
        if v_size is None or width == v_size or width % v_size:
            return None
        group = width // v_size
        heads, kv, hd = self.attention_geometry(unit, tower)
        if not hd or v_size % hd or width % hd:
            hd = _guess_head_dim(v_size)
            self.head_dim_guessed.add(param)
        c = torch.arange(width)
        return ((c // hd) // group) * hd + c % hd

    def plan(self, e: TensorEntry, role: Role, tied_to: str | None) -> list[Block]:
        a, fam, name = self.a, self.a.family, e.name
        tower = tower_of(fam, name)
        stream = a.stream(tower)
        mod = module_name(name) or name
        r, u = role.role, role.unit
        conv1d = self.hf_conv1d and fam.name == "gpt2" and r in ("qkv", "o", "mlp_in", "mlp_out")
        lin_layout, lin_kind = ("in_out", "hf_conv1d") if conv1d else ("out_in", "linear")
        if r in ("q", "k", "v"):
            src = a.stream("encoder") if (r in ("k", "v") and is_cross_attention(u)) else stream
            return [a.add(e, src, a.part((r, u), mod), writer=mod)]
        if r == "qkv":
            rows = self.qkv_rows(e, u, tower)
            layout, kind = (lin_layout, lin_kind) if fam.fused_qkv == "columns" else ("out_in", "linear")
            return [a.add(e, stream, a.part((p, u), f"{mod}.{p}"), layout=layout, rows=rows[i], suffix=f"[{p}]",
                          kind=kind, writer=f"{mod}.{p}") for i, p in enumerate("qkv")]
        if r == "o":
            width = e.shape[0] if conv1d else e.shape[1]
            v_key = ("v", u)
            if v_key not in a.parts:
                a.part(v_key, f"{u}.v")
            index = self.gqa_index(name, u, tower, width, a.size(v_key))
            return [a.add(e, v_key, stream, layout=lin_layout, kind=lin_kind, src_index=index, writer=mod)]
        if r in ("gate", "up", "mlp_in"):
            return [a.add(e, stream, a.part(("hidden", u), mod), layout=lin_layout, kind=lin_kind, writer=mod)]
        if r == "gate_up":
            half = e.shape[0] // 2
            hid = a.part(("hidden", u), mod)
            return [a.add(e, stream, hid, rows=rows, suffix=f"[{p}]", writer=mod)
                    for p, rows in (("gate", slice(0, half)), ("up", slice(half, e.shape[0])))]
        if r in ("down", "mlp_out"):
            hid = ("hidden", u)
            if hid not in a.parts:
                a.part(hid, f"{u}.hidden")
            return [a.add(e, hid, stream, layout=lin_layout, kind=lin_kind, writer=mod)]
        if r in ("experts_gate_up", "experts_down"):
            return self.experts(e, role, stream)
        if r == "router":
            return [a.add(e, stream, a.part(("scores", mod), mod), writer=mod)]
        if r == "embed":
            return [a.add(e, a.part(("tokens", mod), f"{mod}.in", kind="input"), stream, layout="in_out",
                          kind="embedding", writer=mod)]
        if r == "patch":
            return [a.add(e, a.part(("pixels", mod), f"{mod}.in", kind="input"), stream, kind="conv", writer=mod)]
        if r == "pooler":
            return [a.add(e, stream, a.part(("pooler", tower), mod), writer=mod)]
        if r == "head":
            src = stream
            if leaf_name(u) == "classifier" and ("pooler", tower) in a.hints:
                src = a.part(("pooler", tower), a.hints[("pooler", tower)])
            return [a.add(e, src, a.part(("head", mod), mod), writer=mod)]
        if r == "mlm_transform":
            return [a.add(e, stream, a.part(("mlm", u), mod), writer=mod)]
        if r == "mlm_decoder":
            src = a.part(("mlm", u), a.hints[("mlm", u)]) if ("mlm", u) in a.hints else stream
            return [a.add(e, src, a.part(("head", mod), mod), writer=mod)]
        # a weight the table does not know: read the stream if it fits, else its own input
        self.unmatched.append(name)
        layout = "out_in"
        n_src = e.shape[1]
        src = stream if a.size(stream) in (None, n_src) else a.part(("cut", name, "src"), f"{mod}.in", n_src, "input")
        return [a.add(e, src, a.part(("head", mod), mod), layout=layout, writer=mod)]

    def experts(self, e: TensorEntry, role: Role, stream: tuple) -> list[Block]:
        """One block per expert slice of a transformers-5 fused expert tensor."""
        a, u = self.a, role.unit
        n_exp, d1, d2 = e.shape
        width = a.size(stream)
        out = []
        for x in range(n_exp):
            hid = a.part(("hidden", f"{u}.{x}"), f"{u}.{x}")
            if role.role == "experts_gate_up":  # (E, 2I, H), or (E, H, 2I) in some layouts
                layout = "out_in" if width in (None, d2) else "in_out"
                two_i = d1 if layout == "out_in" else d2
                half = two_i // 2
                for p, rows in (("gate", slice(0, half)), ("up", slice(half, two_i))):
                    out.append(a.add(e, stream, hid, layout=layout, rows=rows, expert=x, suffix=f"[{x}][{p}]",
                                     writer=f"{u}.{x}"))
            else:  # (E, H, I), or (E, I, H)
                layout = "out_in" if width in (None, d1) else "in_out"
                out.append(a.add(e, hid, stream, layout=layout, expert=x, suffix=f"[{x}]", writer=f"{u}.{x}"))
        return out


def family_graph(entries: list[TensorEntry], family: Family, how: str, config: Mapping[str, Any] | None,
                 builder: GraphBuilder, reason: Callable[[str, str], str | None],
                 ties: Mapping[str, str] | None = None,
                 on_mapped: Callable[[TensorEntry], None] | None = None) -> LayeredGraph:
    """The graph of a transformer of ``family`` from its named tensors.

    ``how`` says how the family was chosen (for the notes); ``config`` is ``config.json`` as a
    dict (or ``None``); ``reason(name, kind)`` gives a reason to skip a weight (include/exclude,
    embedding opt-in) or ``None``; ``ties`` maps a name to the name whose tensor it shares
    (found from storage when not given); ``on_mapped(entry)`` is called for every mapped
    in-memory tensor (e.g. to count NaN/Inf). Names that the config declares tied but the file
    leaves out (a tied ``lm_head``, T5/BART's ``encoder/decoder.embed_tokens``) are added, so a
    safetensors folder, a ``.bin`` folder and the module give the same blocks."""
    by_name = {e.name: e for e in entries}
    names = list(by_name)
    ties = dict(ties) if ties is not None else _storage_ties(entries)
    for alias, stored in tied_aliases(family, config, set(names)).items():
        src = by_name[stored]
        if alias in by_name and tuple(by_name[alias].shape) != tuple(src.shape):
            continue  # stored with another shape: not the tie the config describes
        if alias not in by_name:
            by_name[alias] = TensorEntry(alias, src.shape, src.dtype, src.load, in_memory=src.in_memory)
        ties.setdefault(alias, stored)
    ordered = sorted(by_name.values(), key=lambda e: _model_order_key(e.name))
    asm = _Assembler(family, config, names, builder.conv, builder)
    shapes = {e.name: tuple(e.shape) for e in ordered if e.is_tensor}
    planner = _Planner(asm, by_name, hf_conv1d_layout(shapes))
    aliased_of = {}
    for alias, stored in ties.items():
        aliased_of.setdefault(stored, []).append(alias)
    # roles first, so fused projections can use their o's width and o can find its v
    roles: dict[str, Role | str] = {}
    for e in ordered:
        skip = getattr(e, "skip_reason", None) or skip_reason_for_tensor(e.name, e.shape, e.dtype)
        role = role_of(e.name) if skip is None else None
        if skip is None and role is None:
            generic = rule_from_name(e.name, e.shape)
            skip = generic if isinstance(generic, str) else None
        roles[e.name] = skip if skip is not None else (role or Role("unmatched", module_name(e.name)))
        if not isinstance(role, Role):
            continue
        mod = module_name(e.name) or e.name
        if role.role == "o":
            planner.o_width[role.unit] = e.shape[0] if (planner.hf_conv1d and family.name == "gpt2") else e.shape[1]
        elif role.role in ("q", "k", "v"):
            asm.hints[(role.role, role.unit)] = mod
        elif role.role == "qkv":
            for p in "qkv":
                asm.hints[(p, role.unit)] = f"{mod}.{p}"
        elif role.role in ("gate", "up", "mlp_in", "gate_up"):
            asm.hints.setdefault(("hidden", role.unit), mod)
        elif role.role == "mlm_transform":
            asm.hints[("mlm", role.unit)] = mod
        elif role.role == "pooler":
            asm.hints[("pooler", tower_of(family, e.name))] = mod
    blocks_of: dict[str, list[str]] = {}
    for e in ordered:
        role = roles[e.name]
        if isinstance(role, str):
            builder.record(e, "skipped", "", role)
            continue
        conv1d = planner.hf_conv1d and family.name == "gpt2" and role.role in ("qkv", "o", "mlp_in", "mlp_out")
        kind = {"embed": "embedding", "shared_embed": "embedding", "patch": "conv", "score_bias": "embedding"}.get(
            role.role, "hf_conv1d" if conv1d else "linear")
        if role.role == "score_bias":
            builder.record(e, "skipped", kind, "relative-position bias of the attention scores (buckets -> heads): "
                           "attention scores are not weight edges")
            continue
        if role.role == "shared_embed" and aliased_of.get(e.name):
            builder.record(e, "skipped", kind, "token table shared by encoder and decoder: mapped under "
                           + ", ".join(aliased_of[e.name]) + " (the same tensor)")
            continue
        why = reason(e.name, kind)
        if why is not None:
            builder.record(e, "skipped", kind, why)
            continue
        blocks = planner.plan(e, role if role.role != "shared_embed" else Role("embed", role.unit), ties.get(e.name))
        tied = ties.get(e.name)
        note = f"tied: the same tensor as {tied}" if tied else ""
        if tied and e.name not in names:
            note += " (not stored in the checkpoint; declared tied by its config)"
        builder.record(e, "mapped", kind, note)
        blocks_of[e.name] = [b.name for b in blocks]
        if on_mapped is not None and e.in_memory:
            on_mapped(e)
    notes = builder.notes
    streams = sorted({p["name"] for k, p in asm.parts.items() if k[0] == "stream"})
    notes.append(f"topology from the graphnn rule table of the {family.name} family (chosen by {how}): "
                 f"residual stream(s) {', '.join(streams)}")
    if any(isinstance(r, Role) and r.role in ("q", "k", "qkv") for r in roles.values()):
        notes.append(SCORES_NOTE)
    if any(isinstance(r, Role) and r.role == "router" for r in roles.values()):
        notes.append(MOE_NOTE)
    if planner.head_dim_guessed:
        asm.warnings.append(
            f"{len(planner.head_dim_guessed)} attention weight(s) ({', '.join(sorted(planner.head_dim_guessed)[:3])}"
            f"{' ...' if len(planner.head_dim_guessed) > 3 else ''}) need the head size, which no config gives: "
            "head_dim was guessed from the shapes; pass a folder with config.json for an exact map")
    if planner.unmatched:
        asm.warnings.append(
            f"{len(planner.unmatched)} weight(s) are not in the {family.name} rule table and were joined by shape "
            f"(read the stream where the sizes fit): {', '.join(planner.unmatched[:5])}"
            f"{' ...' if len(planner.unmatched) > 5 else ''}")
    for msg in asm.warnings:
        warnings.warn(msg, TopologyWarning, stacklevel=4)
        notes.append(msg)
    for name, blks in blocks_of.items():
        builder.coverage[name]["blocks"] = ", ".join(blks)
    for name, why in asm.cut_params.items():
        rec = builder.coverage[name]
        rec["reason"] = "; ".join(filter(None, [rec["reason"], why]))
    return asm.build(list(builder.coverage.values()), builder.source, notes)
