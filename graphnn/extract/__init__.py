"""``graphnn.extract``: models and checkpoint files become :class:`~graphnn.LayeredGraph`.

The module itself is callable: ``graphnn.extract(source, ...)`` is :func:`extract`, and the
loaders live beside it (``graphnn.extract.load_state_dict``, ``graphnn.extract.save_state_dict``).
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any, Iterable, Mapping

from torch import nn

from ..errors import NonFiniteWeightsWarning, NothingMappableError, TopologyWarning, UnsupportedSourceError
from ..graph import LayeredGraph, count_nonfinite
from .builder import GraphBuilder
from .checkpoints import (
    TensorEntry,
    atomic_write,
    entries_from_state_dict,
    load_state_dict,
    open_checkpoint,
    save_state_dict,
    torch_load,
    unwrap_state_dict,
)
from .module import trace as trace_module, walk_module
from .rules import Rule, skip_reason_for_tensor
from .selection import Selection, WeightRecord, read_config, records_from_entries, select_weights, tie_groups
from .state_dict import chain
from .families import family_of
from .family_graph import family_graph
from .hf import module_config

#: ``g.topology`` values (graph-model.md §2d): how the dataflow was obtained.
TOPOLOGY_TRACED = "traced module (torch.fx)"
TOPOLOGY_REGISTRATION = "module registration order (torch.fx failed)"
TOPOLOGY_FORWARD = "traced module (one forward pass recorded; torch.fx failed)"
TOPOLOGY_CHAINING = "shape chaining (inferred from names and shapes)"
CHAINING_NOTE = ("topology was inferred from parameter names and shapes (no known architecture family): "
                 "consecutive blocks are joined where shapes agree; pass the model itself or a Hugging Face "
                 "folder with config.json for exact dataflow")

__all__ = ["extract", "load_state_dict", "save_state_dict", "open_checkpoint", "atomic_write", "torch_load",
           "unwrap_state_dict", "select_weights", "WeightRecord"]


# the one selection policy (include/exclude globs, embedding opt-in) lives in .selection
_Selection = Selection


def extract(
    source: Any,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    conv: str = "l2",
    include_embeddings: bool = False,
    trust: bool = False,
    trace: bool = True,
    example_inputs: Any = None,
) -> LayeredGraph:
    """Extract the layered weight graph of a model or checkpoint.

    Parameters
    ----------
    source : an ``nn.Module``; a state_dict (mapping of names to tensors, optionally wrapped in
        ``{"state_dict": ...}``/``{"model": ...}``); or a path to a ``.pt/.pth/.bin`` file, a
        ``.safetensors`` file, or a folder with sharded weights and an index file.
    include, exclude : glob pattern(s) on parameter names (``fnmatch``, e.g. ``"layer4.*"``).
    conv : aggregation of a conv kernel slice ``W[i, j, ...]`` into one channel-level edge
        weight: ``"l2"`` (default), ``"l1"`` or ``"sum"`` (signed). Also used for a Linear that
        reads a flattened conv map (over the positions of each channel).
    include_embeddings : map embedding tables as ``d x vocab`` blocks (off by default).
    trust : allow a full unpickle of a ``.pt`` file that ``weights_only=True`` refuses. That runs
        code stored in the file: only for files you trust.
    trace : for modules, follow the dataflow with ``torch.fx`` (residual additions merge
        partitions, concatenations stack them); ``False`` uses registration order.
    example_inputs : for modules, a tensor or a tuple of tensors (the forward's positional
        arguments) whose shapes are used to follow the dataflow (run on the ``meta`` device: no
        computation, no memory); by default shapes are guessed from the first layer each input
        reaches. Needed only when the guess fails (a TopologyWarning says so), and where torch.fx
        cannot trace the module (control flow on tensor values, item assignment): the dataflow is
        then recorded from one forward pass on these inputs (real or ``meta`` tensors) instead of
        falling back to registration order. transformers models of a known family need neither:
        they follow the family rule table (``g.topology`` says which way was used).

    Returns
    -------
    LayeredGraph, with a coverage table of every parameter (mapped or skipped, and why).
    Checkpoint files are read lazily: only names and shapes now, tensors when analysed.

    Raises
    ------
    CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError,
    NothingMappableError, UnsupportedSourceError (see :mod:`graphnn.errors`).

    Examples
    --------
    >>> import torch, graphnn
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    >>> g = graphnn.extract(net)
    >>> {name: b.shape for name, b in g.blocks.items()}
    {'0.weight': (8, 3), '2.weight': (4, 8)}
    """
    selection = _Selection(include, exclude, include_embeddings)
    if isinstance(source, nn.Module):
        builder = GraphBuilder(conv, source=type(source).__name__)
        g = _from_transformers_module(source, builder, selection)
        if g is not None:
            return g
        topology = _from_module(source, builder, selection, trace, example_inputs)
    elif isinstance(source, Mapping):
        builder = GraphBuilder(conv, source="state_dict")
        entries = entries_from_state_dict(unwrap_state_dict(source))
        g = _from_family(entries, None, builder, selection, "the state_dict's parameter names")
        if g is not None:
            return g
        topology = _from_entries(entries, builder, selection)
    elif isinstance(source, (str, os.PathLike)):
        builder = GraphBuilder(conv, source=os.fspath(source))
        config = read_config(source) if os.path.isdir(source) else None
        entries = open_checkpoint(source, trust=trust)
        g = _from_family(entries, config, builder, selection, "config.json" if config else "the checkpoint's names")
        if g is None and config is not None:
            g = _from_meta_model(entries, config, builder, selection)
        if g is not None:
            return g
        topology = _from_entries(entries, builder, selection, config)
    else:
        raise UnsupportedSourceError(
            f"cannot extract a graph from a {type(source).__name__}: pass an nn.Module, a state_dict "
            "(mapping of parameter names to tensors) or the path of a .pt/.pth/.bin/.safetensors "
            "checkpoint or a Hugging Face model folder"
        )
    if not builder.blocks:
        _raise_nothing_mappable(builder)
    g = builder.build()
    g.topology = topology
    return g


def _from_family(entries: list[TensorEntry], config, builder: GraphBuilder, selection: _Selection, where: str,
                 ties=None, origin: str | None = None) -> LayeredGraph | None:
    """The graph from the family rule table (graph-model.md §2c) when the config or the names
    identify a known transformer family, else ``None``. Sets ``g.topology`` to
    ``"family rules: <family> (<where the names came from>)"``."""
    family, how = family_of(config, (e.name for e in entries))
    if family is None:
        return None
    g = family_graph(entries, family, f"{how} in {where}", config, builder, selection.reason, ties=ties,
                     on_mapped=lambda e: _count_nonfinite(builder, e))
    if not g.blocks:
        _raise_nothing_mappable(builder)
    g.topology = f"family rules: {family.name} ({origin or where})"
    return g


def _from_meta_model(entries: list[TensorEntry], config: dict, builder: GraphBuilder,
                     selection: _Selection) -> LayeredGraph | None:
    """A folder whose ``config.json`` names no family of the rule table, with transformers
    installed: the model is built from the config on the ``meta`` device, its dataflow recorded
    from one forward pass there, and the file's lazy tensors attached to its blocks by name.
    ``None`` (with a note) when transformers is missing, the model cannot be built or run on
    ``meta``, or its parameter names are not the file's (transformers renames some keys)."""
    from .hf import meta_inputs, meta_model

    if not isinstance(config.get("model_type"), str):
        return None
    try:
        model = meta_model(config)
        inputs = meta_inputs(model, config)
    except ImportError:
        return None
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds of errors for odd configs
        builder.notes.append(f"config.json: transformers could not build the model on the meta device "
                             f"({type(e).__name__}: {str(e)[:150]}); topology from names and shapes instead")
        return None
    if inputs is None:
        return None
    files = {e.name: e for e in entries}
    meta = GraphBuilder(builder.conv, source=builder.source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            topology = _from_module(model, meta, selection, True, inputs)
        except Exception as e:  # noqa: BLE001 - a model that does not run on meta
            builder.notes.append(f"config.json: the {type(model).__name__} built on the meta device did not run "
                                 f"({type(e).__name__}: {str(e)[:150]}); topology from names and shapes instead")
            return None
    # a tied weight that the files store under another of its names (save_pretrained keeps one)
    first: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(p), []).append(name)
    tied_to = {}
    for names in first.values():
        stored = next((n for n in names if n in files), None)
        for n in names:
            if n not in files and stored is not None:
                files[n] = TensorEntry(n, files[stored].shape, files[stored].dtype, files[stored].load)
                tied_to[n] = stored
    missing = sorted({s["entry"].name for s in meta.blocks} - set(files))
    if topology != TOPOLOGY_FORWARD and topology != TOPOLOGY_TRACED or missing or not meta.blocks:
        if missing:
            builder.notes.append(f"config.json: the {type(model).__name__} built from it names {len(missing)} weight(s) "
                                 f"the files do not hold ({', '.join(missing[:3])}); topology from names and shapes "
                                 "instead")
        return None
    for w in caught:
        if issubclass(w.category, TopologyWarning):
            warnings.warn(str(w.message), TopologyWarning, stacklevel=4)
    g = meta.build()
    for b in g.blocks.values():
        f = files[b.param]
        b._load, b.dtype, b._on_load = f.load, f.dtype, None
    mrec = {r["name"]: r for r in meta.coverage.values()}
    for e in list(entries) + [files[n] for n in tied_to]:
        r = mrec.get(e.name)
        if r is None:
            builder.record(e, "skipped", "", getattr(e, "skip_reason", None) or skip_reason_for_tensor(e.name, e.shape, e.dtype)
                           or f"not a parameter of the {type(model).__name__} built from config.json")
        else:
            reason = r["reason"] if e.name not in tied_to else (
                f"tied: the same tensor as {tied_to[e.name]} (not stored in the checkpoint)")
            builder.record(e, r["status"], r["kind"], reason)
            builder.coverage[e.name]["blocks"] = r["blocks"]
    notes = builder.notes + [n for n in meta.notes if "could not trace" not in n] + [
        f"topology from the {type(model).__name__} that config.json describes, built on the meta device and run once "
        "there (no weights read); the file's tensors are attached by name"]
    out = LayeredGraph(list(g.partitions.values()), list(g.blocks.values()), coverage=list(builder.coverage.values()),
                       source=builder.source, notes=notes)
    out.topology = f"meta-traced config ({type(model).__name__}, one forward pass on the meta device)"
    return out


def _from_transformers_module(model: nn.Module, builder: GraphBuilder, selection: _Selection) -> LayeredGraph | None:
    """A transformers ``PreTrainedModel`` of a known family: the family rules applied to its
    named parameters and config. torch.fx does not trace these models and registration order
    would lose every residual, so the rule table is used first (the same one as for their
    checkpoints, so module and file give one graph). Tied parameters are found by identity.
    ``None`` for other modules."""
    config = module_config(model)
    if config is None:
        return None
    entries, first, ties = [], {}, {}
    for name, p in model.named_parameters(remove_duplicate=False):
        entries.append(TensorEntry(name, tuple(p.shape), p.dtype, (lambda p=p: p.detach()), in_memory=True))
        if id(p) in first:
            ties[name] = first[id(p)]
        else:
            first[id(p)] = name
    return _from_family(entries, config, builder, selection, f"the {type(model).__name__} config", ties=ties,
                        origin=f"transformers module {type(model).__name__}")


def _count_nonfinite(builder: GraphBuilder, entry: TensorEntry) -> None:
    count = count_nonfinite(entry.load())
    builder.coverage[entry.name]["nonfinite"] = count
    if count:
        warnings.warn(f"{entry.name}: {count} NaN/Inf weights (counted in the coverage table)",
                      NonFiniteWeightsWarning, stacklevel=4)


def _from_entries(entries: list[TensorEntry], builder: GraphBuilder, selection: Selection,
                  config: dict | None = None) -> str:
    layers: list[tuple[TensorEntry, Rule]] = []
    by_name = {e.name: e for e in entries}
    for rec in records_from_entries(entries, selection, config):
        if not rec.stored:  # declared tied by config.json, not held by the files
            continue
        e = by_name[rec.name]
        if rec.rule is None:
            builder.record(e, "skipped", "", rec.reason)
            continue
        if not rec.selected:
            builder.record(e, "skipped", rec.kind, rec.reason)
            continue
        builder.record(e, "mapped", rec.kind)
        layers.append((e, rec.rule))
        if e.in_memory:
            _count_nonfinite(builder, e)
    chain(builder, layers)
    if layers:
        builder.notes.append(CHAINING_NOTE)
    _warn_chain_cuts(builder)
    return TOPOLOGY_CHAINING


def _warn_chain_cuts(builder: GraphBuilder) -> None:
    """One TopologyWarning for the layers that names-and-shapes chaining could not join to the
    layer before them; each such layer's coverage row says so too."""
    if not builder.cuts:
        return
    for name in builder.cuts:
        rec = builder.coverage.get(name)
        if rec is not None and not rec.get("reason"):
            rec["reason"] = "topology cut: its input size matches no earlier layer; reads a new partition (see notes)"
    first = next(n for n in builder.notes if n.startswith(builder.cuts[0] + ":"))
    msg = (f"topology inferred from names and shapes: {len(builder.cuts)} layer(s) could not be joined to "
           f"the layer before them and start new components (first: {first}). If this is a Hugging Face "
           "model, keep its config.json beside the weights so its family rules apply; or extract the live "
           "module (graphnn.extract(model)) to trace the real dataflow")
    builder.notes.append(msg)
    warnings.warn(msg, TopologyWarning, stacklevel=4)


def _from_module(model: nn.Module, builder: GraphBuilder, selection: _Selection, trace: bool,
                 example_inputs: Any = None) -> str:
    rules: dict[str, Rule | str] = {r.name: r.rule or r.reason for r in select_weights(model)}
    # every name of a tied parameter (e.g. an LM head sharing the embedding matrix) is an entry
    entries = {name: TensorEntry(name, tuple(p.shape), p.dtype, (lambda p=p: p.detach()), in_memory=True)
               for name, p in model.named_parameters(remove_duplicate=False)}
    graph, recorded, topology = None, None, TOPOLOGY_TRACED
    if trace:
        try:
            graph = trace_module(model)
        except Exception as e:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
            why = f"torch.fx could not trace {type(model).__name__} ({type(e).__name__}: {str(e)[:200]})"
            recorded = _record_forward(model, example_inputs, builder, why)
    if graph is None:
        topology = TOPOLOGY_REGISTRATION if recorded is None else TOPOLOGY_FORWARD
    if recorded is not None:
        from .forward_trace import walk_recorded

        walk_recorded(recorded, model, builder, entries, selection.reason)
    elif graph is not None:
        walk_module(graph, model, builder, entries, selection.reason, example_inputs=example_inputs)
    else:
        layers = []
        for name, e in entries.items():
            rule = rules.get(name)
            if isinstance(rule, Rule):
                reason = selection.reason(name, rule.kind)
                builder.record(e, "skipped" if reason else "mapped", rule.kind, reason or "")
                if reason is None:
                    layers.append((e, rule))
        chain(builder, layers)
    unused = []
    for name, e in entries.items():
        rule = rules.get(name, "parameter not owned by any module graphnn knows")
        if name not in builder.coverage:
            if isinstance(rule, str):
                builder.record(e, "skipped", "", rule)
            else:
                builder.record(e, "skipped", rule.kind, "not used in the traced forward pass")
                unused.append(name)
        if builder.coverage[name]["status"] == "mapped":
            _count_nonfinite(builder, e)
    if unused:
        warnings.warn(f"{len(unused)} layer weight(s) were not reached by the traced forward pass and are not "
                      f"mapped: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}", TopologyWarning,
                      stacklevel=3)
    return topology


def _record_forward(model: nn.Module, example_inputs: Any, builder: GraphBuilder, why: str):
    """Where torch.fx fails: one forward pass on ``example_inputs``, recorded as a graph
    (:class:`~graphnn.extract.forward_trace.Recorded`); without inputs, or if the run cannot be
    recorded, ``None`` and a TopologyWarning (registration order is used)."""
    on_meta = False
    if example_inputs is None and module_config(model) is not None:  # a transformers model: its main input
        from .hf import meta_inputs

        example_inputs, on_meta = meta_inputs(model, module_config(model)), True
    if example_inputs is not None:
        from .forward_trace import record_forward

        try:
            recorded = record_forward(model, example_inputs, on_meta=on_meta)
        except Exception as e:  # noqa: BLE001 - the model's own errors and unrecordable values alike
            why += f"; the forward pass on example_inputs could not be recorded either ({type(e).__name__}: {str(e)[:200]})"
        else:
            builder.notes.append(f"{why}; the dataflow was recorded from one forward pass on "
                                 + ("meta inputs built from its config" if on_meta else "example_inputs") + " instead")
            if recorded.skipped:
                msg = (f"the forward pass of {type(model).__name__} used {', '.join(recorded.skipped)}, which the "
                       "recorded graph does not follow: the features it writes keep their old source")
                warnings.warn(msg, TopologyWarning, stacklevel=4)
                builder.notes.append(msg)
            return recorded
    msg = (f"{why}; blocks are ordered by module registration and joined where shapes agree"
           + ("" if example_inputs is not None else
              ". Pass example_inputs=(a tensor of the input's shape, ...) to follow one forward pass instead"))
    warnings.warn(msg, TopologyWarning, stacklevel=4)
    builder.notes.append(msg)
    return None


def _raise_nothing_mappable(builder: GraphBuilder) -> None:
    recs = list(builder.coverage.values())
    lines = [f"  {r['name']} {r['shape']}: {r['reason']}" for r in recs[:40]]
    if len(recs) > 40:
        lines.append(f"  ... and {len(recs) - 40} more")
    raise NothingMappableError(
        f"nothing in {builder.source or 'the source'} could be mapped to a graph block "
        f"({len(recs)} entries seen):\n" + ("\n".join(lines) if lines else "  (no tensors at all)")
        + "\ngraphnn maps Linear, Conv, ConvTranspose, attention projections and (opt-in) embedding "
        "weights; check include/exclude patterns, or pass include_embeddings=True."
    )


class _CallableModule(types.ModuleType):
    """Lets ``graphnn.extract(...)`` call :func:`extract` while ``graphnn.extract.<loader>``
    keeps working."""

    def __call__(self, source: Any, **options: Any) -> LayeredGraph:
        return extract(source, **options)


sys.modules[__name__].__class__ = _CallableModule
