"""Graphs from ``nn.Module`` dataflow, traced with ``torch.fx``.

The trace is walked by :class:`graphnn.extract.dataflow.FeatureWalker`, which follows feature ids
(shapes propagated on the ``meta`` device): a mapped layer (Linear, ConvNd, ConvTransposeNd,
MultiheadAttention, Embedding, HF Conv1D, or ``F.linear``/``F.convNd`` on a parameter) writes a
new partition named after the module; splits, slices, shuffles and concatenations become index
maps; additions and elementwise products of two feature maps merge whole partitions of equal
size; feature-preserving operations keep the partition; anything else on the feature axis cuts
the chain with a ``TopologyWarning``. When the shapes cannot be propagated, the shape-less walk
of this module (:class:`_Walker`: merges, concatenations, everything else keeps the partition of
its first operand) is used with a ``TopologyWarning``. When tracing fails the caller falls back to
module registration order with shape matching.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn

from ..errors import TopologyWarning
from .builder import Concat, GraphBuilder
from .checkpoints import TensorEntry
from .dataflow import _FUNCTIONAL_LAYERS, functional_rule
from .rules import Rule, is_mapped_module, rules_for_module

_MERGE_OPS = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
              torch.add, torch.sub, torch.mul}
_MERGE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}
_CAT_OPS = {torch.cat, torch.concat, torch.hstack}
_MATMUL_OPS = {operator.matmul, torch.matmul, torch.bmm, torch.einsum}


class _Tracer(fx.Tracer):
    """Keeps every mapped layer (including HF Conv1D) as a leaf, and other torch.nn modules
    too unless they contain mapped layers (``nn.TransformerEncoderLayer`` is traced through,
    so its attention and feed-forward weights are not hidden inside a leaf)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_mapped_module(m):
            return True
        if any(is_mapped_module(sub) for sub in m.modules() if sub is not m):
            return False
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    return _Tracer().trace(model)


class _Walker:
    def __init__(self, model: nn.Module, builder: GraphBuilder, entries: dict[str, TensorEntry],
                 accept: Callable[[str, str], str | None]):
        self.model = model
        self.b = builder
        self.entries = entries
        self.accept = accept
        self.modules = dict(model.named_modules())
        self.value: dict[fx.Node, Any] = {}  # node -> partition id, Concat, ("mha", pid) or None
        self.uses: dict[str, int] = {}

    def part_of(self, arg) -> Any:
        if isinstance(arg, fx.Node):
            v = self.value.get(arg)
            return v if not isinstance(v, tuple) else None
        return None

    def first_part(self, args) -> Any:
        for a in _flatten(args):
            v = self.part_of(a)
            if v is not None:
                return v
        return None

    def walk(self, graph: fx.Graph) -> None:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for node in graph.nodes:
            if node.op == "placeholder":
                name = "input" if len(placeholders) == 1 else f"input.{node.target}"
                self.value[node] = self.b.new_partition(name, kind="input")
            elif node.op == "call_module":
                self.value[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.value[node] = self.call_function(node)
            else:  # get_attr, output
                self.value[node] = None

    # -- layers ---------------------------------------------------------------------------
    def layer(self, param: str, rule: Rule, src, out_name: str, part_srcs: list | None = None) -> Any:
        """Add one weight (if accepted) and return its output partition."""
        entry = self.entries[param]
        count = self.uses[param] = self.uses.get(param, 0) + 1
        reason = self.accept(param, rule.kind)
        if reason is not None:
            self.b.record(entry, "skipped", rule.kind, reason)
            return self.b.new_partition(out_name, rule.n_dst, spatial=rule.kind.startswith("conv"))
        self.b.record(entry, "mapped", rule.kind)
        name = out_name if count == 1 else f"{out_name}#{count}"
        return self.b.add_layer(entry, rule, src, name, name, part_srcs=part_srcs)

    def call_module(self, node: fx.Node) -> Any:
        mod = self.modules[node.target]
        src = self.part_of(node.args[0]) if node.args else None
        if not is_mapped_module(mod):
            return src  # feature-preserving (activation, norm, dropout, pooling, ...)
        rules = rules_for_module(mod)
        prefix = f"{node.target}." if node.target else ""
        if isinstance(mod, nn.MultiheadAttention):
            return self.attention(node, mod, rules, prefix)
        rule = rules.get("weight")
        if not isinstance(rule, Rule):
            return None
        out = self.layer(prefix + "weight", rule, src, node.target or "output")
        return out[-1] if isinstance(out, list) else out

    def attention(self, node: fx.Node, mod: nn.MultiheadAttention, rules: dict, prefix: str) -> Any:
        args = list(node.args) + [None] * 3
        q_src = self.part_of(node.kwargs.get("query", args[0]))
        k_src = self.part_of(node.kwargs.get("key", args[1]))
        v_src = self.part_of(node.kwargs.get("value", args[2]))
        name = node.target
        if isinstance(rules.get("in_proj_weight"), Rule):
            qkv = self.layer(prefix + "in_proj_weight", rules["in_proj_weight"], q_src, name,
                             part_srcs=[q_src, k_src, v_src])
            v_part = qkv[-1] if isinstance(qkv, list) else qkv
        else:  # kdim/vdim differ from embed_dim: three separate weights
            for local, src in (("q_proj_weight", q_src), ("k_proj_weight", k_src)):
                self.layer(prefix + local, rules[local], src, f"{name}.{local[0]}")
            v_part = self.layer(prefix + "v_proj_weight", rules["v_proj_weight"], v_src, f"{name}.v")
            v_part = v_part[-1] if isinstance(v_part, list) else v_part
        out_rule = rules_for_module(mod.out_proj).get("weight")
        out = self.layer(prefix + "out_proj.weight", out_rule, v_part, f"{name}.out_proj")
        out = out[-1] if isinstance(out, list) else out
        return ("mha", out)

    # -- functions ------------------------------------------------------------------------
    def call_function(self, node: fx.Node) -> Any:
        target = node.target
        if node.op == "call_function" and target is operator.getitem:
            src = node.args[0]
            v = self.value.get(src)
            if isinstance(v, tuple) and v[0] == "mha":
                return v[1] if node.args[1] == 0 else None
            return self.part_of(src)
        if node.op == "call_function" and target in _FUNCTIONAL_LAYERS:
            return self.functional_layer(node)
        is_merge = (node.op == "call_function" and target in _MERGE_OPS) or \
                   (node.op == "call_method" and target in _MERGE_METHODS)
        if is_merge:
            a, b = (self.part_of(x) for x in (node.args + (None, None))[:2])
            if isinstance(a, int) and isinstance(b, int):
                merged = self.b.merge(a, b)
                if merged is None:
                    self.b.notes.append(f"{node.name}: operands of different sizes were not merged")
                    return a
                return merged
            return a if a is not None else b
        if node.op == "call_function" and target in _CAT_OPS:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors", [])
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            parts = [self.part_of(t) for t in tensors]
            known = [p for p in parts if p is not None]
            if len(known) > 1 and dim in (1, -1) and len(known) == len(parts):
                members = []
                for p in known:
                    members += p.members if isinstance(p, Concat) else [p]
                return Concat(members)
            return known[0] if known else None
        if node.op == "call_function" and target in _MATMUL_OPS:
            tensor_args = [a for a in _flatten(node.args) if isinstance(a, fx.Node)]
            return self.part_of(tensor_args[-1]) if tensor_args else None
        return self.first_part(node.args)

    def functional_layer(self, node: fx.Node) -> Any:
        x = node.args[0] if node.args else node.kwargs.get("input")
        w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        src = self.part_of(x)
        if not (isinstance(w, fx.Node) and w.op == "get_attr" and w.target in self.entries):
            return None
        rule = functional_rule(node, self.entries[w.target].shape)
        if rule is None:
            return None
        mod_name = w.target.rsplit(".", 1)[0] if "." in w.target else w.target
        out = self.layer(w.target, rule, src, mod_name)
        return out[-1] if isinstance(out, list) else out


def _flatten(args) -> list:
    out = []
    for a in args if isinstance(args, (list, tuple)) else [args]:
        if isinstance(a, (list, tuple)):
            out += _flatten(a)
        else:
            out.append(a)
    return out


def walk_module(graph: fx.Graph, model: nn.Module, builder: GraphBuilder, entries: dict[str, TensorEntry],
                accept: Callable[[str, str], str | None], example_inputs: tuple | None = None) -> None:
    """Walk the traced ``graph`` of ``model`` and add its mapped layers to ``builder``
    (``accept(name, kind)`` returns a reason to skip a weight, or ``None``).

    The shapes of every node are first propagated on the ``meta`` device (no data, no memory)
    from ``example_inputs`` or from inputs guessed from the first layer each input reaches; the
    walk then follows *feature ids* through the dataflow (see :mod:`graphnn.extract.dataflow`),
    so splits, slices, shuffles, permutations and concatenations become exact index maps and
    anything else on the feature axis cuts the chain with a :class:`TopologyWarning`. When
    the shapes cannot be propagated the older shape-less walk is used, with a note."""
    from .dataflow import FeatureWalker, propagate_shapes

    try:
        shapes, consts, layouts = propagate_shapes(graph, model, example_inputs)
    except Exception as e:  # noqa: BLE001 - any failure of the meta run: keep the shape-less walk
        msg = (f"shapes could not be propagated through {type(model).__name__} on the meta device "
               f"({type(e).__name__}: {str(e)[:200]}); splits, slices, shuffles and concatenation axes "
               "were not checked. Pass example_inputs=... to check them")
        _Walker(model, builder, entries, accept).walk(graph)
        warnings.warn(msg, TopologyWarning, stacklevel=4)
        builder.notes.append(msg)
        return
    FeatureWalker(model, builder, entries, accept, shapes, consts, layouts).walk(graph)

