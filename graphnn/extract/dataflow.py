"""Following *feature ids* through a traced module: exact index maps, or a cut with a warning.

Every tensor of the traced forward pass gets an integer tensor of the same shape (``ids``; a
broadcast view, so it costs almost nothing) whose entries say which neuron of which partition
each position holds; ``-1`` (:data:`WILD`) marks positions that hold no neuron (constants, a
class token). Data-movement operations (view/reshape/flatten, transpose/permute, split/chunk/
unbind, slicing, index_select, cat/stack, repeat/expand, flip/roll, channel_shuffle) are applied
to ``ids`` exactly as to the tensor, so a layer reading the result knows, column by column, the
neuron it reads: a split is ``arange(a, b)``, a channel shuffle a permutation, a repeat a repeat
map (graph-model.md §2b). Shapes come from one run of the traced graph on the ``meta`` device
(no data, no memory).

Feature-preserving operations (activations, norms, dropout, pooling, reductions over other axes,
attention's token mixing) keep the ids along the feature axis. Additions and elementwise products
of two feature maps merge their partitions, but only whole partitions of equal size matched
neuron for neuron; two disjoint halves of one partition meeting elementwise (SwiGLU after a fused
gate/up projection and a chunk) fold it into one partition of half the size, each neuron written
by two rows of the fused weight (a ``dst_index``). Everything else that touches the feature axis (an op the walk does not know,
an unmapped layer with weights such as an LSTM, a size mismatch, a merge that is not one to one)
cuts the chain: the reading layer gets a new input partition, a :class:`TopologyWarning` names the
op and the module and says what to do, and ``g.notes`` and the reader's coverage row record it
(graph-model.md §2d).
"""

from __future__ import annotations

import operator
import re
import warnings
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import TopologyWarning
from .builder import Concat, GraphBuilder, Indexed
from .checkpoints import TensorEntry
from .rules import NORM_TYPES, RNN_TYPES, Rule, is_mapped_module, rules_for_module

#: an id for a position that holds no neuron (a constant, a class token, padding)
WILD = -1
#: spatial sizes tried, in order, when the input shape of a conv model has to be guessed
SPATIAL_GUESSES = (32, 28, 64, 224, 16, 8, 4, 96, 12, 20, 24, 48, 56, 112, 128, 256, 2, 1)
#: sequence length of guessed token inputs (prime, unlikely to equal a feature size)
SEQ_GUESS = 7

_FUNCTIONAL_LAYERS = {F.linear: "linear", F.conv1d: "conv", F.conv2d: "conv", F.conv3d: "conv"}


def functional_rule(node: fx.Node, shape: tuple[int, ...]) -> Rule | None:
    """The rule of ``F.linear``/``F.convNd(x, weight, ...)`` whose weight parameter has ``shape``
    (groups read from the call), or ``None`` when the shape does not fit the function."""
    kind = _FUNCTIONAL_LAYERS[node.target]
    if kind == "linear" and len(shape) == 2:
        return Rule("linear", shape[0], shape[1])
    if kind == "conv" and len(shape) >= 3:
        groups = int(node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1))
        return Rule("conv", shape[0], shape[1] * groups, groups=groups)
    return None
_MERGE = {"add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "truediv", "div", "div_",
          "itruediv", "maximum", "minimum"}
_MATMUL = {"matmul", "bmm", "__matmul__"}
_LAYOUT = {"view", "reshape", "flatten", "unflatten", "transpose", "permute", "t", "contiguous", "split",
           "chunk", "unbind", "narrow", "select", "index_select", "squeeze", "unsqueeze", "expand",
           "expand_as", "repeat", "repeat_interleave", "flip", "roll", "movedim", "moveaxis", "swapaxes",
           "swapdims", "clone", "cat", "concat", "concatenate", "hstack", "vstack", "stack", "tile",
           "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "tensor_split", "split_with_sizes", "view_as",
           "reshape_as"}
_CASTS = {"to", "float", "double", "half", "bfloat16", "type", "type_as", "cpu", "cuda", "detach",
          "requires_grad_", "dropout", "alpha_dropout", "identity"}
_NOT_TENSORS = {"size", "dim", "numel", "shape", "__len__", "getattr", "len"}
#: ops whose result along ``dim`` depends on the data: on the feature axis they cannot be mapped
_DATA_DEPENDENT = {"sort", "argsort", "topk", "gather", "scatter", "scatter_add", "take_along_dim",
                   "cumsum", "cumprod", "index_add", "masked_select"}
#: ops that act on every feature alone, or normalise/pool/reduce over other axes: they keep the
#: partition. Other ops that keep the shape are kept too, with a TopologyWarning.
_FEATURE_PRESERVING = re.compile(
    r"^(relu|relu6|gelu|silu|swish|mish|elu|selu|celu|leaky_relu|prelu|rrelu|glu_?|hardswish|hardsigmoid|"
    r"hardtanh|hardshrink|softshrink|tanhshrink|softsign|softplus|sigmoid|logsigmoid|tanh|threshold|"
    r"softmax|log_softmax|softmin|normalize|layer_norm|batch_norm|group_norm|instance_norm|rms_norm|"
    r"local_response_norm|dropout\d?d?|feature_alpha_dropout|abs|neg|exp|exp2|expm1|log|log2|log10|log1p|"
    r"pow|sqrt|rsqrt|square|reciprocal|sign|sgn|erf|erfc|erfinv|sin|cos|tan|sinh|cosh|atan|asin|acos|"
    r"floor|ceil|round|trunc|frac|clamp|clip|clamp_min|clamp_max|nan_to_num|masked_fill|where|lerp|"
    r"mean|sum|amax|amin|max|min|std|var|norm|prod|logsumexp|nansum|nanmean|"
    r"(adaptive_)?(avg|max|lp)_pool\dd|fractional_max_pool\dd|interpolate|upsample.*|pad|"
    r"zero_|fill_|zeros_like|ones_like|full_like|empty_like|rand_like|randn_like|float|"
    r"add|sub|mul|div|truediv|floordiv|neg|pos|rsub|radd|rmul|addcmul|addcdiv)_?$")
_LAYOUT_MODULES = (nn.Flatten, nn.Unflatten, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle, nn.Identity)


class Cut:
    """The value of a tensor whose features could not be mapped; ``msg`` says where and why.

    A cut is reported (TopologyWarning, notes) when it matters: when a layer reads it, or when it
    meets a mapped tensor in an op whose result cannot be exact. A per-token statistic that only
    scales the features back (``x * rsqrt(mean(x**2))`` of a hand-written RMSNorm: size 1 on the
    feature axis) changes no edge and is not reported."""

    def __init__(self, msg: str):
        self.msg = msg


# -- shapes ----------------------------------------------------------------------------------
def _input_for(m: nn.Module, spatial: int, position: int = 0):
    """``(shape, dtype, feature axis)`` of an input that ``m`` can read as its argument number
    ``position``, or ``None``; the dtype is that of the module's floating-point parameters."""
    spec = _input_shape(m, spatial, position)
    if spec is None:
        return None
    shape, dtype, axis = spec
    if dtype.is_floating_point:
        dtype = next((p.dtype for p in m.parameters() if p.is_floating_point()), dtype)
    return shape, dtype, axis


def _input_shape(m: nn.Module, spatial: int, position: int):
    if isinstance(m, nn.Linear):
        return (2, m.in_features), torch.float32, -1
    if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
        return (2, SEQ_GUESS, m.weight.shape[0]), torch.float32, -1
    if isinstance(m, nn.modules.conv._ConvNd):
        k = len(m.kernel_size)
        return (2, m.in_channels, *[spatial] * k), torch.float32, 1
    if isinstance(m, nn.MultiheadAttention):
        d = (m.embed_dim, m.kdim, m.vdim)[position] if position < 3 else m.embed_dim
        return ((2, SEQ_GUESS, d) if m.batch_first else (SEQ_GUESS, 2, d)), torch.float32, -1
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return (2, SEQ_GUESS), torch.long, None
    if isinstance(m, nn.RNNBase):
        return ((2, SEQ_GUESS, m.input_size) if m.batch_first else (SEQ_GUESS, 2, m.input_size)), torch.float32, -1
    if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
        return (2, SEQ_GUESS, m.normalized_shape[0]), torch.float32, -1
    if isinstance(m, nn.BatchNorm2d):
        return (2, m.num_features, spatial, spatial), torch.float32, 1
    if isinstance(m, nn.BatchNorm1d):
        return (2, m.num_features), torch.float32, 1
    return None


def _guess_input(ph: fx.Node, modules: dict, spatial: int, params: dict):
    """The input the first layer reached from placeholder ``ph`` can read (breadth first)."""
    seen, frontier = set(), [ph]
    while frontier:
        n = frontier.pop(0)
        for u in n.users:
            if u in seen:
                continue
            seen.add(u)
            if u.op == "call_module":
                position = next((i for i, a in enumerate(u.args) if a is n), 0)
                g = _input_for(modules[u.target], spatial, position)
                if g is not None:
                    return g
            elif u.op == "call_function" and u.target in _FUNCTIONAL_LAYERS:
                w = u.args[1] if len(u.args) > 1 else u.kwargs.get("weight")
                if isinstance(w, fx.Node) and w.op == "get_attr" and w.target in params:
                    shape, dt = tuple(params[w.target].shape), params[w.target].dtype
                    if u.target is F.linear:
                        return (2, shape[1]), dt, -1
                    groups = u.args[6] if len(u.args) > 6 else u.kwargs.get("groups", 1)
                    return (2, shape[1] * int(groups), *[spatial] * (len(shape) - 2)), dt, 1
            frontier.append(u)
    return None


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[fx.Node, Any] = {}
        self.consts: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.shapes[n] = _shape_tree(out)
        if not _has_tensor(out):
            self.consts[n] = out
        return out


def _shape_tree(x):
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
        return type(x)(_shape_tree(v) for v in x) if type(x) in (list, tuple) else tuple(_shape_tree(v) for v in x)
    return None


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


def propagate_shapes(graph: fx.Graph, model: nn.Module, example_inputs=None):
    """Run ``graph`` once on the ``meta`` device: ``(shapes, consts, layouts)`` where ``shapes``
    maps each node to its output shape (a tuple, or a tuple of them), ``consts`` the nodes whose
    value holds no tensor (sizes, shape arithmetic) to that value, and ``layouts`` each
    placeholder to the axis that holds its features (``None``: not a feature tensor). Inputs are
    ``example_inputs`` (moved to ``meta``) or guessed from the first layer each input reaches,
    trying the spatial sizes of :data:`SPATIAL_GUESSES`, then the Linear-like inputs with a token
    axis ``(2, SEQ_GUESS, features)``. Raises the last error when no run succeeds."""
    from torch.nn.utils.stateless import _reparametrize_module

    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    params = dict(gm.named_parameters(remove_duplicate=False))
    buffers = dict(gm.named_buffers(remove_duplicate=False))
    meta = {k: torch.empty_like(v, device="meta") for k, v in {**params, **buffers}.items()}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    last: Exception | None = None
    tried: set = set()
    attempts = [(spatial, tokens) for tokens in (False, True) for spatial in SPATIAL_GUESSES]
    for spatial, tokens in attempts:
        layouts, inputs = {}, []
        if example_inputs is not None:
            if tried:
                break
            given = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            for n, t in zip(placeholders, given):
                guess = _guess_input(n, modules, spatial, params)
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 1:
                    axis = guess[2] if guess and guess[2] is not None else -1
                    layouts[n] = axis % t.dim() if -t.dim() <= axis < t.dim() else t.dim() - 1
                else:
                    layouts[n] = None
                inputs.append(t.to("meta") if isinstance(t, torch.Tensor) else t)
            tried.add(None)
        else:
            for n in placeholders:
                guess = _guess_input(n, modules, spatial, params)
                if guess is None:
                    if n.args:  # an optional argument: its default
                        inputs.append(n.args[0])
                        layouts[n] = None
                        continue
                    raise ValueError(f"cannot guess a shape for the input {n.target!r}: pass example_inputs=...")
                shape, dtype, axis = guess
                if tokens and len(shape) == 2 and axis == -1:  # (batch, tokens, features)
                    shape = (shape[0], SEQ_GUESS, shape[1])
                inputs.append(torch.zeros(shape, dtype=dtype, device="meta"))
                layouts[n] = None if axis is None else axis % len(shape)
            key = tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else repr(t) for t in inputs)
            if key in tried:  # this guess does not depend on the spatial size / token axis
                continue
            tried.add(key)
        rec = _Recorder(gm)
        try:
            with torch.no_grad(), _reparametrize_module(gm, meta):
                rec.run(*inputs)
            return rec.shapes, rec.consts, layouts
        except Exception as e:  # noqa: BLE001 - try the next guess
            last = e
    raise last if last is not None else RuntimeError("no input could be guessed")


# -- the walk ----------------------------------------------------------------------------------
def _name_of(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _flat(args) -> list:
    out = []
    for a in args if isinstance(args, (list, tuple)) else [args]:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        elif isinstance(a, dict):
            out += _flat(list(a.values()))
        else:
            out.append(a)
    return out


def _place(line: torch.Tensor, shape: tuple, axis: int) -> torch.Tensor:
    view = [1] * len(shape)
    view[axis] = line.numel()
    return line.view(view).expand(shape)


def compact(ids: torch.Tensor, keep: tuple[int, ...] = ()) -> torch.Tensor:
    """``ids`` narrowed to one entry along every broadcast (stride-0) axis not in ``keep``: the
    same information in a tensor that is usually tiny (ids are mostly expanded lines)."""
    for ax in range(ids.dim()):
        if ids.shape[ax] > 1 and ids.stride(ax) == 0 and ax not in keep:
            ids = ids.narrow(ax, 0, 1)
    return ids


def _lines(ids: torch.Tensor, axis: int) -> torch.Tensor:
    """``ids`` as rows along ``axis``: ``(-1, size of axis)`` (broadcast axes counted once)."""
    axis = axis % ids.dim()
    ids = compact(ids, keep=(axis,))
    return ids.movedim(axis, -1).reshape(-1, ids.shape[axis])


def _varies(ids: torch.Tensor, axis: int) -> bool:
    """Whether the ids change along ``axis`` (wildcards ignored)."""
    axis = axis % ids.dim()
    if ids.shape[axis] <= 1 or ids.stride(axis) == 0:
        return False
    rows = _lines(ids, axis)
    rows = rows[(rows != WILD).any(1)]
    if rows.numel() == 0:
        return False
    first = rows.max(1, keepdim=True).values
    return bool(((rows != first) & (rows != WILD)).any())


def separate(ids: torch.Tensor):
    """``(axis, line)`` when the ids change along one axis only (the feature axis; ``line`` the
    ids along it, from a row without wildcards), ``(None, line)`` for a single feature, ``None``
    when features are spread over several axes (e.g. between a shuffle's view and reshape)."""
    ids = compact(ids)
    varying = [ax for ax in range(ids.dim()) if ids.shape[ax] > 1 and _varies(ids, ax)]
    if not varying:
        valid = ids[ids != WILD]
        return (None, valid[:1]) if valid.numel() else None
    if len(varying) > 1:
        return None
    ax = varying[0]
    rows = _lines(ids, ax)
    full = rows[(rows != WILD).all(1)]
    if full.numel() == 0 or not bool((full == full[0]).all()):
        return None
    return ax, full[0]


class FeatureWalker:
    """Walks a traced graph with propagated shapes, following feature ids (module docstring)."""

    def __init__(self, model: nn.Module, builder: GraphBuilder, entries: dict[str, TensorEntry],
                 accept: Callable[[str, str], str | None], shapes: dict, consts: dict, layouts: dict):
        self.model, self.b, self.entries, self.accept = model, builder, entries, accept
        self.shapes, self.consts, self.layouts = shapes, consts, layouts
        self.modules = dict(model.named_modules())
        self.value: dict[fx.Node, Any] = {}
        self.uses: dict[str, int] = {}
        self.starts: list[int] = []
        self.pids: list[int] = []
        self.next_id = 0
        self._owner: torch.Tensor | None = None
        self.folds: dict[int, tuple[int, torch.Tensor]] = {}
        self._start: torch.Tensor | None = None
        self.node: fx.Node | None = None
        self._said: set[str] = set()
        self._token_inputs: dict[fx.Node, int] = {}

    # -- ids -------------------------------------------------------------------------------
    def feat(self, pid: int, shape, axis: int) -> torch.Tensor | None:
        """Fresh ids for partition ``pid`` laid along ``axis`` of ``shape``."""
        if not isinstance(shape, tuple) or not shape or any(not isinstance(s, int) for s in shape):
            return None
        axis = axis % len(shape)
        size = shape[axis]
        self.starts.append(self.next_id)
        self.pids.append(pid)
        line = torch.arange(self.next_id, self.next_id + size)
        self.next_id += size
        return _place(line, shape, axis)

    def decode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global ids -> (root partition ids, neuron indices)."""
        if self._owner is None or self._owner.numel() != self.next_id:
            sizes = torch.diff(torch.tensor(self.starts + [self.next_id]))
            self._owner = torch.repeat_interleave(torch.arange(len(self.starts)), sizes)
            self._start = torch.tensor(self.starts)
        k = self._owner[ids]
        roots = torch.tensor([self.b.find(p) for p in self.pids])
        roots, local = roots[k], ids - self._start[k]
        while self.folds and any(int(r) in self.folds for r in torch.unique(roots).tolist()):
            for p, (q, fold) in self.folds.items():
                hit = roots == p
                if bool(hit.any()):
                    roots = torch.where(hit, torch.full_like(roots, self.b.find(q)), roots)
                    local = torch.where(hit, fold[local.clamp(0, fold.numel() - 1)], local)
        return roots, local

    # -- messages --------------------------------------------------------------------------
    def where(self, node: fx.Node | None = None) -> str:
        node = node or self.node
        if node is None:
            return type(self.model).__name__
        if node.op == "call_module":
            return f"module '{node.target}' ({type(self.modules[node.target]).__name__})"
        stack = node.meta.get("nn_module_stack") or {}
        mod = list(stack)[-1] if stack else ""
        owner = f"module '{mod}'" if mod else f"{type(self.model).__name__}.forward"
        return f"{owner}, op {_name_of(node.target)!r} (fx node '{node.name}')"

    def cut(self, what: str, advice: str = "") -> Cut:
        """A cut value, reported only where it matters (see :class:`Cut`)."""
        msg = (f"{self.where()}: {what}; the chain is cut there (the next layer reads a new input partition)"
               + (f". {advice}" if advice else
                  ". If this op only moves or selects features, rewrite it with view/reshape/permute/"
                  "split/cat/index_select, or pass example_inputs=...; otherwise the graph is exact up to this cut"))
        return Cut(msg)

    def cut_now(self, what: str, advice: str = "") -> Cut:
        """A cut a layer meets: reported at once."""
        c = self.cut(what, advice)
        self.say(c.msg)
        return c

    def meet(self, cut: Cut, arg, features: torch.Tensor) -> None:
        """A cut operand ``arg`` combined elementwise with mapped ``features``: exact (and silent)
        when the cut value has size 1 on the feature axis (a per-token scale), reported otherwise."""
        shape = self.shapes.get(arg) if isinstance(arg, fx.Node) else None
        sep = separate(features) if isinstance(features, torch.Tensor) else None
        if isinstance(shape, tuple) and sep is not None and sep[0] is not None:
            axis = sep[0] - features.dim()  # from the right, as broadcasting aligns
            if -len(shape) <= axis and shape[axis] == 1:
                return
            if len(shape) < -axis:  # no feature axis at all: broadcast along it
                return
        self.say(cut.msg)

    def say(self, msg: str, warn: bool = True) -> None:
        if msg in self._said:
            return
        self._said.add(msg)
        self.b.notes.append(msg)
        if warn:
            warnings.warn(msg, TopologyWarning, stacklevel=5)

    # -- walking ---------------------------------------------------------------------------
    def walk(self, graph: fx.Graph) -> None:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for node in graph.nodes:
            self.node = node
            if node.op == "placeholder":
                name = "input" if len(placeholders) == 1 else f"input.{node.target}"
                axis, shape = self.layouts.get(node), self.shapes.get(node)
                if axis is None or not isinstance(shape, tuple):
                    self.value[node] = None
                    continue
                pid = self.b.new_partition(name, shape[axis], kind="input",
                                           spatial=len(shape) >= 3 and axis == 1)
                self.value[node] = self.feat(pid, shape, axis)
            elif node.op == "call_module":
                self.value[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.value[node] = self.call(node)
            else:  # get_attr, output
                self.value[node] = None

    def val(self, arg):
        return self.value.get(arg) if isinstance(arg, fx.Node) else None

    # -- reading ---------------------------------------------------------------------------
    def read(self, arg, axis: int, rule: Rule, reader: str):
        """The source of a layer reading ``arg`` along ``axis``: ``(view, cut message)`` where
        ``view`` is a partition id, an Indexed view or a Concat, or ``None`` (a new partition)."""
        v = self.val(arg)
        if isinstance(v, Cut):
            self.say(v.msg)
            return None, v.msg
        if not isinstance(v, torch.Tensor):
            return None, None
        if v.dim() == 0:
            return None, None
        axis = axis % v.dim()
        n = v.shape[axis]
        rows = _lines(v, axis)
        rows = torch.unique(rows[(rows != WILD).any(1)], dim=0)
        if rows.numel() == 0:
            return None, None
        if (rows == WILD).any():
            return None, self.cut_now(f"layer {reader} reads features mixed with constants (some columns hold no "
                                  "neuron)").msg
        if rows.shape[0] > 1:
            merged = self._merge_rows(rows)
            if merged is None:
                return None, self.cut_now(f"layer {reader} reads positions that hold different neurons in different "
                                      "rows (features spread over several axes, e.g. a cat/stack of unrelated "
                                      "maps or a reshape that mixes the feature axis with another)").msg
            rows = merged
        r = rows[0]
        if n != rule.n_src:
            return None, self.cut_now(f"layer {reader} expects {rule.n_src} inputs but reads {n} features").msg
        roots, local = self.decode(r)
        if rule.kind in ("linear", "hf_conv1d"):
            flat = self._flatten_view(r)
            if flat is not None:
                return flat, None
        return self._view_of(roots, local), None

    def _merge_rows(self, rows: torch.Tensor):
        """Rows that hold the same neuron indices of different, equal-sized partitions (a cat or
        stack along a non-feature axis, read by one layer): their partitions are merged (the same
        neurons see both, as in a residual addition); ``None`` when that is not the case."""
        decoded = [self.decode(r) for r in rows]
        local0 = decoded[0][1]
        roots = []
        for pr, loc in decoded:
            if not torch.equal(loc, local0) or not bool((pr == pr[0]).all()):
                return None
            roots.append(int(pr[0]))
        size = self.b.size(roots[0])
        if any(self.b.size(x) != size for x in roots) or local0.numel() != size:
            return None
        first = roots[0]
        for x in roots[1:]:
            first = self.b.merge(first, x)
        self.say(f"{self.where()}: tensors of {len(set(roots))} partitions stacked along a non-feature axis are read "
                 "by one layer: their partitions are merged (the same neurons read both)", warn=False)
        return rows[:1]

    def _flatten_view(self, r: torch.Tensor):
        """A Linear after a flatten of a spatial map: runs of one channel repeated ``P`` times,
        read through the flatten rule (positions aggregated), when the channels are whole
        partitions in order."""
        n = r.numel()
        p = int((r != r[0]).nonzero()[0]) if bool((r != r[0]).any()) else n
        if p <= 1 or n % p:
            return None
        grid = r.view(-1, p)
        if not bool((grid == grid[:, :1]).all()):
            return None
        roots, local = self.decode(grid[:, 0])
        view = self._view_of(roots, local)
        members = view.members if isinstance(view, Concat) else [view]
        if any(isinstance(m, Indexed) for m in members) or isinstance(view, tuple):
            return None
        if not all(self.b.is_spatial(m) for m in members):
            return None
        return view

    def _view_of(self, roots: torch.Tensor, local: torch.Tensor):
        """The builder view for columns reading ``(roots[j], local[j])``."""
        order: list[int] = []
        for x in roots.tolist():
            if not order or order[-1] != x:
                order.append(x)
        if len(order) == 1:
            x = order[0]
            if local.numel() == self.b.size(x) and torch.equal(local, torch.arange(local.numel())):
                return x
            return Indexed(x, local)
        if len(set(order)) == len(order):  # contiguous runs of distinct partitions
            members, start = [], 0
            for x in order:
                k = int((roots == x).sum())
                loc = local[start:start + k]
                members.append(x if k == self.b.size(x) and torch.equal(loc, torch.arange(k)) else Indexed(x, loc))
                start += k
            return Concat(members)
        distinct = list(dict.fromkeys(order))
        offsets, total = {}, 0
        for x in distinct:
            offsets[x] = total
            total += self.b.size(x)
        index = torch.tensor([offsets[x] for x in roots.tolist()]) + local
        return ("indexed-concat", Concat(distinct), index)

    # -- layers ----------------------------------------------------------------------------
    def layer(self, param: str, rule: Rule, src, out_name: str, cut_msg: str | None = None,
              part_srcs: list | None = None):
        entry = self.entries[param]
        count = self.uses[param] = self.uses.get(param, 0) + 1
        reason = self.accept(param, rule.kind)
        if reason is not None:
            self.b.record(entry, "skipped", rule.kind, reason)
            return self.b.new_partition(out_name, rule.n_dst, spatial=rule.kind.startswith("conv"))
        note = f"reads a new input partition: {cut_msg}" if cut_msg else ""
        self.b.record(entry, "mapped", rule.kind, note)
        name = out_name if count == 1 else f"{out_name}#{count}"
        src_index = None
        if isinstance(src, tuple) and src and src[0] == "indexed-concat":
            src, src_index = src[1], src[2]
        out = self.b.add_layer(entry, rule, src, name, name, part_srcs=part_srcs, src_index=src_index)
        return out

    def call_module(self, node: fx.Node):
        mod = self.modules[node.target]
        x = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        if is_mapped_module(mod):
            return self.mapped_module(node, mod, x)
        if isinstance(mod, RNN_TYPES) or (not isinstance(mod, NORM_TYPES) and any(
                p.dim() >= 2 for p in mod.parameters())):
            return self.cut(f"{type(mod).__name__} has weight parameters that graphnn does not map, so its "
                            "output does not pass its input through",
                            "Its weights are listed as skipped in the coverage table (recurrent and other "
                            "unmapped layers are not graph edges in this version); the graph is exact up to it")
        if isinstance(mod, _LAYOUT_MODULES):
            return self.layout(node, lambda ids: mod(ids) if not isinstance(mod, nn.ChannelShuffle)
                               else F.channel_shuffle(ids.contiguous(), mod.groups))
        return self.generic(node, type(mod).__name__, known=type(mod).__module__.startswith("torch.nn."))

    def mapped_module(self, node: fx.Node, mod: nn.Module, x):
        rules = rules_for_module(mod)
        prefix = f"{node.target}." if node.target else ""
        if isinstance(mod, nn.MultiheadAttention):
            return self.attention(node, mod, rules, prefix)
        rule = rules.get("weight")
        if not isinstance(rule, Rule):
            return None
        if rule.kind == "embedding":
            src, msg = self.token_input(x, rule), None
            axis = -1
        else:
            axis = 1 if rule.kind in ("conv", "conv_transpose") else -1
            src, msg = self.read(x, axis, rule, f"'{node.target}'")
        out = self.layer(prefix + "weight", rule, src, node.target or "output", msg)
        return self.write(node, out, axis)

    def token_input(self, x, rule: Rule):
        if isinstance(x, fx.Node) and x.op == "placeholder":
            if x not in self._token_inputs:
                self._token_inputs[x] = self.b.new_partition("input" if not self.b.names else f"input.{x.target}",
                                                             rule.n_src, kind="input")
            pid = self._token_inputs[x]
            return pid if self.b.size(pid) == rule.n_src else None
        return None

    def write(self, node: fx.Node, out, axis: int, shape=None):
        pid = out[-1] if isinstance(out, list) else out
        shape = self.shapes.get(node) if shape is None else shape
        if isinstance(shape, list) or (isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)):
            shape = shape[0]
        return self.feat(pid, shape, axis) if isinstance(shape, tuple) else None

    def attention(self, node: fx.Node, mod: nn.MultiheadAttention, rules: dict, prefix: str):
        args = list(node.args) + [None] * 3
        srcs, msgs = [], []
        for i, key in enumerate(("query", "key", "value")):
            arg = node.kwargs.get(key, args[i])
            src, msg = self.read(arg, -1, Rule("linear", mod.embed_dim, mod.embed_dim if i == 0 else
                                               (mod.kdim if i == 1 else mod.vdim)), f"'{node.target}' ({key})")
            if isinstance(src, tuple):
                src, msg = None, self.cut(f"'{node.target}' ({key}) reads an interleaved concatenation").msg
            srcs.append(src)
            msgs.append(msg)
        name = node.target
        cut_msg = next((m for m in msgs if m), None)
        if isinstance(rules.get("in_proj_weight"), Rule):
            qkv = self.layer(prefix + "in_proj_weight", rules["in_proj_weight"], srcs[0], name, cut_msg,
                             part_srcs=srcs)
            v_part = qkv[-1] if isinstance(qkv, list) else qkv
        else:
            for local, src, msg in (("q_proj_weight", srcs[0], msgs[0]), ("k_proj_weight", srcs[1], msgs[1])):
                self.layer(prefix + local, rules[local], src, f"{name}.{local[0]}", msg)
            v_part = self.layer(prefix + "v_proj_weight", rules["v_proj_weight"], srcs[2], f"{name}.v", msgs[2])
            v_part = v_part[-1] if isinstance(v_part, list) else v_part
        out_rule = rules_for_module(mod.out_proj).get("weight")
        out = self.layer(prefix + "out_proj.weight", out_rule, v_part, f"{name}.out_proj")
        shape = self.shapes.get(node)
        first = shape[0] if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple) else None
        return (self.write(node, out, -1, shape=first), None)

    def functional_layer(self, node: fx.Node):
        x = node.args[0] if node.args else node.kwargs.get("input")
        w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if not (isinstance(w, fx.Node) and w.op == "get_attr" and w.target in self.entries):
            return self.cut(f"{_name_of(node.target)} with a weight that is not a parameter of the model",
                            "Use an nn.Module layer (or F.linear/F.conv on a registered parameter)")
        rule = functional_rule(node, self.entries[w.target].shape)
        if rule is None:
            return None
        axis = 1 if rule.kind == "conv" else -1
        mod_name = w.target.rsplit(".", 1)[0] if "." in w.target else w.target
        src, msg = self.read(x, axis, rule, f"'{mod_name}'")
        return self.write(node, self.layer(w.target, rule, src, mod_name, msg), axis)

    # -- functions -------------------------------------------------------------------------
    def call(self, node: fx.Node):
        t = node.target
        name = _name_of(t)
        if node.op == "call_function" and t is operator.getitem:
            return self.getitem(node)
        if node.op == "call_function" and t in _FUNCTIONAL_LAYERS:
            return self.functional_layer(node)
        if node.op == "call_function" and t is getattr and len(node.args) > 1:
            attr = node.args[1]
            base = self.val(node.args[0])
            if attr in ("values", "indices") and isinstance(base, (tuple, list)) and len(base) == 2:
                return base[0 if attr == "values" else 1]  # torch.sort/topk/max(...).values
            if isinstance(base, Cut) and attr in ("values", "indices", "T", "mT", "H", "mH"):
                return base
            if attr in ("real", "imag", "data"):
                return base
            if attr in ("T", "mT", "H", "mH") and isinstance(self.val(node.args[0]), torch.Tensor):
                return self.layout(node, lambda ids: getattr(ids, {"H": "T", "mH": "mT"}.get(attr, attr)))
            return None
        if name in _NOT_TENSORS or not isinstance(self.shapes.get(node), (tuple, list)):
            return None
        if name in _MERGE:
            return self.merge(node, node.args[0] if node.args else None,
                              node.args[1] if len(node.args) > 1 else node.kwargs.get("other"))
        if name in _MATMUL:
            return self.matmul(node)
        if name == "scaled_dot_product_attention":
            v = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
            return self.token_mix(node, v)
        if name in _LAYOUT:
            return self.layout(node)
        if name in _CASTS:
            return self.val(node.args[0]) if node.args else None
        return self.generic(node, name)

    def getitem(self, node: fx.Node):
        base, idx = node.args[0], node.args[1]
        v = self.val(base)
        if isinstance(v, (tuple, list)):
            try:
                return v[self.arg(idx)]
            except Exception:  # noqa: BLE001
                return None
        if isinstance(v, Cut) or v is None:
            return v
        return self.layout(node)

    def arg(self, a, wild_shape=None):
        """A node argument for an op applied to ids: feature ids, a recorded constant, a module
        attribute (an index buffer), or ``WILD`` ids for a tensor without features."""
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a) if type(a) in (list, tuple) else tuple(self.arg(x) for x in a)
        if isinstance(a, dict):
            return {k: self.arg(x) for k, x in a.items()}
        if isinstance(a, slice):
            return slice(self.arg(a.start), self.arg(a.stop), self.arg(a.step))
        if not isinstance(a, fx.Node):
            return a
        if a in self.consts:
            return self.consts[a]
        v = self.value.get(a)
        if isinstance(v, torch.Tensor) or isinstance(v, (tuple, list)):
            return v
        if a.op == "get_attr":
            obj = self.model
            for part in a.target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor) and not obj.is_floating_point():
                return obj.detach().cpu()
        shape = self.shapes.get(a)
        if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape):
            return torch.full(shape, WILD, dtype=torch.int64)
        raise _Unmappable(f"argument '{a.name}' has no value the walk can use")

    def layout(self, node: fx.Node, fn: Callable | None = None):
        """Apply a data-movement op to the ids (exact index maps)."""
        tensors = [self.val(a) for a in _flat(node.args) + _flat(list(node.kwargs.values())) if isinstance(a, fx.Node)]
        if any(isinstance(v, Cut) for v in tensors) and not any(isinstance(v, torch.Tensor) for v in tensors):
            return next(v for v in tensors if isinstance(v, Cut))
        for v in tensors:  # a cut moved together with mapped features (e.g. concatenated): inexact
            if isinstance(v, Cut):
                self.say(v.msg)
        if not any(isinstance(v, torch.Tensor) or isinstance(v, (tuple, list)) and any(
                isinstance(x, torch.Tensor) for x in v) for v in tensors):
            return None
        name = _name_of(node.target)
        try:
            args = self.arg(list(node.args))
            kwargs = self.arg(dict(node.kwargs))
            if fn is not None:
                out = fn(args[0])
            elif node.target is operator.getitem:
                out = args[0][args[1]]
            elif node.op == "call_method":
                self_ = args[0]
                meth = {"view": "reshape", "view_as": "reshape_as"}.get(name, name)
                out = getattr(self_, meth)(*args[1:], **kwargs)
            else:
                fn_ = {torch.Tensor.view: torch.reshape}.get(node.target, node.target)
                if name == "channel_shuffle":
                    args[0] = args[0].contiguous()
                out = fn_(*args, **kwargs)
        except _Unmappable as e:
            return self.cut(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001 - an op the ids cannot follow
            return self.cut(f"{name} could not be followed on the feature ids ({type(e).__name__}: {str(e)[:120]})")
        want = self.shapes.get(node)
        got = _shape_tree(out)
        if got != want and not (isinstance(want, tuple) and isinstance(got, tuple) and list(got) == list(want)):
            return self.cut(f"{name} gave ids of shape {got} but the tensor has {want}")
        return out

    def merge(self, node: fx.Node, a, b):
        """An elementwise op of two operands: partitions merged neuron for neuron, or a cut."""
        va, vb = self.val(a), self.val(b)
        out_shape = self.shapes.get(node)
        ta, tb = isinstance(va, torch.Tensor), isinstance(vb, torch.Tensor)
        if not ta and not tb:
            return va if isinstance(va, Cut) else (vb if isinstance(vb, Cut) else None)
        if not isinstance(out_shape, tuple):
            return None
        try:
            if ta != tb:
                if isinstance(vb if ta else va, Cut):
                    self.meet(vb if ta else va, b if ta else a, va if ta else vb)
                return torch.broadcast_to(va if ta else vb, out_shape)
            A, B = torch.broadcast_to(va, out_shape), torch.broadcast_to(vb, out_shape)
        except RuntimeError:
            return self.cut(f"{_name_of(node.target)} broadcasts a feature map over another axis")
        # work on the axes where either operand changes (the others are broadcast)
        keep = tuple(ax for ax in range(A.dim()) if A.stride(ax) != 0 or B.stride(ax) != 0)
        A, B = compact(A, keep), compact(B, keep)
        both = (A != WILD) & (B != WILD)
        out = torch.where(A == WILD, B, A).expand(out_shape)
        if not bool(both.any()):
            return out
        pairs = torch.unique(torch.stack([A[both], B[both]]), dim=1)
        ra, la = self.decode(pairs[0])
        rb, lb = self.decode(pairs[1])
        if torch.equal(ra, rb) and torch.equal(la, lb):
            return out  # the same neurons (e.g. x + x, or already merged)
        if not torch.equal(la, lb):
            folded = self._fold_halves(ra, la, rb, lb)
            if folded:
                return out
            return self.cut(f"{_name_of(node.target)} combines different neurons position by position (e.g. two "
                            "halves of one layer's output, or a permuted copy)",
                            "Give each operand its own layer (e.g. separate gate and up projections) so the "
                            "product can merge whole partitions")
        for x in torch.unique(ra).tolist():
            partners = torch.unique(rb[ra == x]).tolist()
            if len(partners) != 1:
                return self.cut(f"{_name_of(node.target)} combines one partition with several others")
            y = partners[0]
            sx, sy = self.b.size(x), self.b.size(y)
            covered = torch.unique(la[ra == x]).numel()
            if sx != sy or covered != sx:
                return self.cut(f"{_name_of(node.target)} of partitions of different sizes or of only part of a "
                                f"partition ({covered} of {sx} and {sy} neurons): merges join whole partitions of "
                                "equal size only")
        for x in torch.unique(ra).tolist():
            y = int(torch.unique(rb[ra == x])[0])
            if self.b.find(x) != self.b.find(y):
                self.b.merge(x, y)
        return out

    def _fold_halves(self, ra, la, rb, lb) -> bool:
        """``op(h[..., I], h[..., J])`` of two disjoint parts of one partition ``P`` that together
        cover it, neuron ``I[k]`` meeting ``J[k]`` (SwiGLU's ``act(gate) * up`` after a fused
        projection and a chunk): ``P`` folds into a partition of ``|I|`` neurons, neuron ``k``
        written by rows ``I[k]`` and ``J[k]`` (a ``dst_index`` on the blocks writing ``P``;
        readers of ``P`` get the matching ``src_index``). False when the operands are not such."""
        roots = torch.unique(torch.cat([ra, rb]))
        if roots.numel() != 1:
            return False
        p = int(roots[0])
        size = self.b.size(p)
        n = la.numel()
        if (torch.unique(la).numel() != n or torch.unique(lb).numel() != n or 2 * n != size
                or torch.unique(torch.cat([la, lb])).numel() != size):
            return False
        fold = torch.empty(size, dtype=torch.int64)
        fold[la] = torch.arange(n)
        fold[lb] = torch.arange(n)
        q = self.b.new_partition(self.b.names[p] + ".folded", n)
        # the folded partition takes the name of P (which no block touches any more)
        self.b.names[p], self.b.names[q] = self.b.names[q], self.b.names[p]
        self.b.spatial[q] = self.b.spatial[p]
        for spec in self.b.blocks:
            if self.b.find(spec["dst"]) == p:
                rows = spec["dst_index"] if spec["dst_index"] is not None else torch.arange(spec["n_dst"])
                spec["dst"], spec["dst_index"] = q, fold[rows]
            if self.b.find(spec["src"]) == p:
                cols = spec["src_index"] if spec["src_index"] is not None else torch.arange(spec["n_src"])
                spec["src"], spec["src_index"] = q, fold[cols]
        self.folds[p] = (q, fold)
        self.say(f"{self.where()}: two halves of '{self.b.names[q]}' meet elementwise (gate and up of a fused "
                 f"projection): they are one partition of {n} neurons, each written by two rows of the fused weight",
                 warn=False)
        return True

    def matmul(self, node: fx.Node):
        a, b = node.args[0], node.args[1]
        va, vb = self.val(a), self.val(b)
        out = self.shapes.get(node)
        ta, tb = isinstance(va, torch.Tensor), isinstance(vb, torch.Tensor)
        if isinstance(b, fx.Node) and b.op == "get_attr" and ta:
            return self.cut(f"matmul with the parameter '{b.target}', which graphnn does not map",
                            "Use nn.Linear or F.linear(x, weight) so the weight becomes a block")
        if ta and tb:
            if (va.dim() >= 1 and _varies(va, -1)) or (vb.dim() >= 2 and _varies(vb, -2)):
                self.say("attention scores (q @ k^T) are not weight edges: q and k are sinks of the weight graph",
                         warn=False)
                return None
            return self.cut("matmul of two feature maps along a non-feature axis")
        if tb and vb.dim() >= 2:
            return self.token_mix(node, b)
        if ta:
            if _varies(va, -1):
                return self.cut("matmul contracts the feature axis with data (not a weight)")
            return torch.broadcast_to(va[..., :1], out) if isinstance(out, tuple) else None
        return va if isinstance(va, Cut) else (vb if isinstance(vb, Cut) else None)

    def token_mix(self, node: fx.Node, v):
        """Attention's token mixing ``probs @ v``: the features of ``v`` are kept when they do not
        lie on the mixed (token) axis."""
        vv = self.val(v)
        out = self.shapes.get(node)
        if not isinstance(vv, torch.Tensor):
            return vv if isinstance(vv, Cut) else None
        if _varies(vv, -2):
            return self.cut("token mixing over an axis that holds features")
        try:
            return torch.broadcast_to(vv.narrow(-2, 0, 1), out)
        except (RuntimeError, TypeError):
            return self.cut("token mixing to a shape the features cannot follow")

    def generic(self, node: fx.Node, name: str, known: bool = False):
        """Any other op: feature-preserving when the feature axis survives with its size."""
        tensor_args = [a for a in _flat(node.args) + _flat(list(node.kwargs.values())) if isinstance(a, fx.Node)]
        vals = [self.val(a) for a in tensor_args]
        feats = [(a, v) for a, v in zip(tensor_args, vals) if isinstance(v, torch.Tensor)]
        if not feats:
            return next((v for v in vals if isinstance(v, Cut)), None)
        for a, v in zip(tensor_args, vals):
            if isinstance(v, Cut):
                self.meet(v, a, feats[0][1])
        if len(feats) >= 2 and len({id(v) for _, v in feats}) >= 2:
            return self.merge(node, feats[0][0], feats[1][0])
        ids = feats[0][1]
        out = self.shapes.get(node)
        if isinstance(out, (list, tuple)) and out and isinstance(out[0], tuple):  # (values, indices)
            first = self._transfer(node, name, ids, out[0], known)
            return (first,) + (None,) * (len(out) - 1) if not isinstance(first, Cut) else first
        return self._transfer(node, name, ids, out, known)

    def _transfer(self, node: fx.Node, name: str, ids: torch.Tensor, out, known: bool = False):
        if not isinstance(out, tuple):
            return None
        if name in _DATA_DEPENDENT:
            sep = separate(ids)
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 and isinstance(node.args[1], int) else None)
            if sep is not None and sep[0] is not None and isinstance(dim, int) and dim % ids.dim() == sep[0]:
                return self.cut(f"{name} along the feature axis depends on the data")
        if not known and not _FEATURE_PRESERVING.match(name.lstrip("_")):
            self.say(f"{self.where(node)}: {name} is not an op graphnn knows; its output was taken to hold the "
                     "features of its input where the feature axis keeps its size. If it mixes or reorders "
                     "features, rewrite it with view/permute/index_select or map the layer before and after "
                     "separately")
        if tuple(ids.shape) == out:
            return ids
        sep = separate(ids)
        if sep is None:
            return self.cut(f"{name} changes the shape {tuple(ids.shape)} -> {out} of a tensor whose features are "
                            "spread over several axes")
        axis, line = sep
        if axis is None:
            return torch.full(out, int(line[0]), dtype=torch.int64)
        for c in (axis, axis - ids.dim() + len(out)):
            if 0 <= c < len(out) and out[c] == ids.shape[axis]:
                return _place(line, out, c)
        return self.cut(f"{name} changes the feature axis (shape {tuple(ids.shape)} -> {out}, features on axis "
                        f"{axis})")


class _Unmappable(Exception):
    pass
