"""Tracing a module by running it once, where ``torch.fx`` cannot (graph-model.md §2d way 1).

``torch.fx`` traces with symbolic proxies, so Python control flow on tensor values or shapes
(``if x.sum() > 0``, ``for i in range(x.shape[1])``), item assignment and many library models
stop it. :func:`record_forward` instead runs ``model(*example_inputs)`` once under a
``TorchFunctionMode`` and writes down, as an ``fx.Graph`` of the same form ``torch.fx`` gives,
every torch function and tensor method applied outside the leaf modules, and every call of a leaf
module (the layers graphnn maps, and torch.nn modules without mapped children, as
:class:`~graphnn.extract.module._Tracer` decides). Control flow is resolved by the run: the graph
is the path these inputs took (values that only steered it, such as the ``x.sum()`` of an ``if``,
are dropped with the graph's dead code). Tensors are matched to the nodes that made them by identity.
The graph is then walked like a traced one (:func:`graphnn.extract.module.walk_module`), so
residual additions, gated products, splits, concatenations and cuts follow the same rules.

Inputs may live on the ``meta`` device (no computation, no memory) when the model does, or be
small real tensors. Item assignment (``x[..., i] = y``) is not recorded: the trace says so.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from .dataflow import _has_tensor
from .module import _Tracer

#: Tensor dunder methods recorded as the ``operator`` function torch.fx would record; the flag
#: says the operands are swapped (``2 + x`` calls ``x.__radd__(2)``).
_DUNDER = {
    "__add__": (operator.add, False), "__radd__": (operator.add, True), "__iadd__": (operator.iadd, False),
    "__sub__": (operator.sub, False), "__rsub__": (operator.sub, True), "__isub__": (operator.isub, False),
    "__mul__": (operator.mul, False), "__rmul__": (operator.mul, True), "__imul__": (operator.imul, False),
    "__truediv__": (operator.truediv, False), "__rtruediv__": (operator.truediv, True),
    "__itruediv__": (operator.itruediv, False), "__matmul__": (operator.matmul, False),
    "__rmatmul__": (operator.matmul, True), "__getitem__": (operator.getitem, False),
    "__neg__": (operator.neg, False), "__pow__": (operator.pow, False), "__floordiv__": (operator.floordiv, False),
    "__mod__": (operator.mod, False), "__and__": (operator.and_, False), "__or__": (operator.or_, False),
}


class UntraceableForward(RuntimeError):
    """The forward pass used something the recorder cannot write into a graph."""


def _shape_tree(x):
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
        return tuple(_shape_tree(v) for v in x)
    return None


@dataclass
class Recorded:
    """A recorded forward pass: the ``graph``, the output ``shapes`` of its nodes (from the run
    itself, so no second run on ``meta`` is needed), the feature axis of each placeholder
    (``layouts``; ``None`` for token ids and other non-float inputs) and what was ``skipped``."""

    graph: fx.Graph
    shapes: dict
    layouts: dict
    skipped: list


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.graph = fx.Graph()
        self.node_of: dict[int, fx.Node] = {}
        self.alive: list[Any] = []  # tensors seen, kept alive so that their ids stay unique
        self.attr_of = {id(t): n for n, t in [*model.named_parameters(remove_duplicate=False),
                                               *model.named_buffers(remove_duplicate=False)]}
        self.attr_nodes: dict[str, fx.Node] = {}
        self.depth = 0
        self.skipped: list[str] = []
        self.shapes: dict[fx.Node, Any] = {}
        self.pending: list = []

    # -- values -> graph arguments ------------------------------------------------------------
    def arg(self, x):
        if isinstance(x, torch.Tensor):
            node = self.node_of.get(id(x))
            if node is not None:
                return node
            name = self.attr_of.get(id(x))
            if name is not None:
                if name not in self.attr_nodes:
                    self.attr_nodes[name] = self.graph.get_attr(name)
                    self.shapes[self.attr_nodes[name]] = tuple(x.shape)
                return self.attr_nodes[name]
            raise UntraceableForward(
                f"a tensor of shape {tuple(x.shape)} that is neither an input, a parameter, a buffer nor the result "
                "of a recorded operation (a constant kept outside the module?)")
        if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
            return type(x)(self.arg(v) for v in x) if type(x) in (list, tuple) else tuple(self.arg(v) for v in x)
        if isinstance(x, dict):
            return {k: self.arg(v) for k, v in x.items()}
        return x

    def bind(self, value, node: fx.Node) -> None:
        """Map the tensors of ``value`` (a tensor or nested tuples of them) to ``node`` or to
        ``getitem`` nodes of it."""
        self.shapes[node] = _shape_tree(value)
        if isinstance(value, torch.Tensor):
            self.node_of[id(value)] = node
            self.alive.append(value)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if _has_tensor(v):
                    self.bind(v, self.graph.call_function(operator.getitem, (node, i)))

    # -- torch functions ----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth or not _has_tensor(out):
            return out
        name = getattr(func, "__name__", "")
        if name == "__setitem__":
            self.skipped.append("item assignment (x[...] = y)")
            return out
        a, kw = self.arg(args), self.arg(kwargs)
        if name == "__get__" and hasattr(getattr(func, "__self__", None), "__name__"):  # x.T, x.mT, ...
            node = self.graph.call_function(getattr, (a[0], func.__self__.__name__))
        elif name in _DUNDER and getattr(torch.Tensor, name, None) is func:
            op, swap = _DUNDER[name]
            node = self.graph.call_function(op, tuple(reversed(a)) if swap else a, kw)
        elif name and getattr(torch.Tensor, name, None) is func:
            node = self.graph.call_method(name, a, kw)
        else:
            node = self.graph.call_function(func, a, kw)
        self.bind(out, node)
        return out

    # -- leaf modules -------------------------------------------------------------------------
    def before(self, qualname: str):
        def hook(module, args, kwargs):
            if self.depth == 0:
                self.pending.append((qualname, self.arg(args), self.arg(kwargs)))
            self.depth += 1
        return hook

    def after(self):
        def hook(module, args, kwargs, out):
            self.depth -= 1
            if self.depth == 0:
                qualname, a, kw = self.pending.pop()
                self.bind(out, self.graph.call_module(qualname, a, kw))
        return hook


def _drop_dead_code(graph: fx.Graph) -> None:
    """Remove the nodes whose values reach neither the output nor a module: what only steered
    control flow (the ``x.sum()`` of an ``if``). In-place methods are kept."""
    for node in reversed(list(graph.nodes)):
        if node.users or node.op not in ("call_function", "call_method", "get_attr"):
            continue
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if node.op == "call_method" and name.endswith("_") and not name.startswith("__"):
            continue
        if node.op == "call_function" and name.startswith("i") and getattr(operator, name, None) is node.target:
            continue  # operator.iadd and friends
        graph.erase_node(node)


def record_forward(model: nn.Module, example_inputs, on_meta: bool = False) -> Recorded:
    """Run ``model(*example_inputs)`` once (no gradients) and return the ``fx.Graph`` of what it
    did, with ``call_module`` nodes for leaf modules and ``get_attr`` nodes for parameters and
    buffers, the shapes the run saw and what could not be recorded (:class:`Recorded`).
    ``on_meta``: run with the parameters, buffers and inputs swapped for ``meta`` tensors of the
    same shapes (nothing is computed; the module is unchanged afterwards).
    Raises :class:`UntraceableForward` (or the model's own error)."""
    import contextlib

    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not on_meta:
        return _record(model, inputs)
    from torch.nn.utils.stateless import _reparametrize_module

    tensors = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}
    meta, seen = {}, {}
    for k, v in tensors.items():  # tied names share one meta tensor, so ties stay ties
        meta[k] = seen.setdefault(id(v), torch.empty_like(v, device="meta"))
    inputs = tuple(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_reparametrize_module(model, meta))
        return _record(model, inputs)


def _record(model: nn.Module, inputs: tuple) -> Recorded:
    from .dataflow import _guess_input

    rec = _Recorder(model)
    tracer = _Tracer()
    handles = []
    for qualname, m in model.named_modules():
        if qualname and tracer.is_leaf_module(m, qualname):
            handles.append(m.register_forward_pre_hook(rec.before(qualname), with_kwargs=True))
            handles.append(m.register_forward_hook(rec.after(), with_kwargs=True))
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    placeholders = []
    for name, x in zip(names, inputs):
        ph = rec.graph.placeholder(name)
        placeholders.append((ph, x))
        if isinstance(x, torch.Tensor):
            rec.node_of[id(x)] = ph
            rec.shapes[ph] = tuple(x.shape)
    try:
        with torch.no_grad(), rec:
            out = model(*inputs)
        rec.graph.output(rec.arg(out))
    finally:
        for h in handles:
            h.remove()
    _drop_dead_code(rec.graph)
    rec.graph.lint()
    modules = dict(model.named_modules())
    params = dict(model.named_parameters(remove_duplicate=False))
    layouts = {}
    for ph, x in placeholders:  # the feature axis of each input, as the dataflow walk expects it
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            guess = _guess_input(ph, modules, x.shape[-1] if x.dim() > 2 else 1, params)
            # the first layer's own input rank tells a conv's channel axis (1) from a Linear's (last)
            layouts[ph] = guess[2] if guess and guess[2] is not None and len(guess[0]) == x.dim() else x.dim() - 1
        else:
            layouts[ph] = None
    return Recorded(rec.graph, rec.shapes, layouts, sorted(set(rec.skipped)))


def walk_recorded(recorded: Recorded, model: nn.Module, builder, entries: dict,
                  accept: Callable[[str, str], str | None]) -> None:
    """Add the layers of a recorded forward pass to ``builder`` with the dataflow walk of
    :mod:`graphnn.extract.dataflow` (the shapes come from the run)."""
    from .dataflow import FeatureWalker

    FeatureWalker(model, builder, entries, accept, recorded.shapes, {}, recorded.layouts).walk(recorded.graph)
