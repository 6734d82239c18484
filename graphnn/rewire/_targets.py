"""Which weight tensors the re-initialisers touch, and their ``(n_out, fan_in)`` unit view.

Selection is graphnn's one policy, :func:`graphnn.extract.select_weights`: the tensors that
:func:`graphnn.extract` maps to blocks (``describe``'s "mapped" rows), i.e. the weights of Linear,
ConvNd, ConvTransposeNd, HF ``Conv1D`` and ``MultiheadAttention`` (its fused ``in_proj_weight`` and
``out_proj``), embeddings only with ``include_embeddings=True``; never biases, norm parameters,
buffers or RNN/LSTM/GRU weights. ``include`` globs (``fnmatch`` on fully qualified names) keep
only the weights they match; ``exclude`` globs remove names. A tensor tied under several names
(an LM head sharing the embedding matrix) is one target, re-initialised once, selected when one of
its names is (an LM head is a Linear) and none is excluded.

Unit view: every target is seen as a matrix ``M`` of shape ``(n_out, numel / n_out)`` whose rows
are output units (Scabini et al.'s flattening). For Linear and ConvNd weights this is the stored
layout reshaped. HF ``Conv1D`` weights are stored ``(in, out)`` and ``ConvTranspose`` weights
``(c_in, c_out/groups, *k)``; graphnn permutes them so that rows are output units there too (the
authors never rewired transposed convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..extract.rules import as_patterns as _as_patterns, matches_any as _matches
from ..graph import output_units


@dataclass
class WeightTarget:
    """One weight tensor to re-initialise. ``layout`` is ``"out_first"`` (rows of the stored
    tensor are output units) or ``"transposed"`` (HF ``Conv1D`` ``(in, out)``, ConvTranspose
    ``(c_in, c_out/groups, *k)``); ``aliases`` are the other names of a tied tensor."""

    name: str
    tensor: torch.Tensor
    layout: str = "out_first"
    groups: int = 1
    aliases: tuple[str, ...] = ()

    def units(self) -> torch.Tensor:
        """The ``(n_out, fan_in)`` matrix of output units; a view when the layout allows it,
        otherwise a copy (write it back with :meth:`write_units_`)."""
        return output_units(self.tensor.detach(), self.layout == "transposed", self.groups)

    def write_units_(self, m: torch.Tensor) -> None:
        """Write a ``(n_out, fan_in)`` matrix back into the tensor (in place)."""
        w = self.tensor
        with torch.no_grad():
            if self.layout == "out_first":
                w.copy_(m.reshape(w.shape))
                return
            g = self.groups
            cin, cout_g = w.shape[0], w.shape[1]
            k = w.shape[2:]
            v = m.reshape(g, cout_g, cin // g, *k).transpose(1, 2)
            w.copy_(v.reshape(w.shape))


def select_targets(
    module: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    include_embeddings: bool = False,
) -> list[WeightTarget]:
    """The weight tensors of ``module`` that a re-initialiser touches (see the module docstring),
    in registration order, each once even when tied."""
    from ..extract.selection import select_weights, tie_groups

    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    records = select_weights(module, include, exclude, include_embeddings)
    params = dict(module.named_parameters(remove_duplicate=False))
    out: list[WeightTarget] = []
    for g in tie_groups(records):
        if not g.selected:
            continue
        p = params[g.primary.name]
        if not p.is_floating_point():
            raise TypeError(f"{g.primary.name} has dtype {p.dtype}; only floating-point weights can be re-initialised")
        out.append(WeightTarget(g.names[0], p, g.primary.layout, g.primary.groups, g.names[1:]))
    out += fused_expert_targets(module, params, include, exclude)
    if include and not out:
        weights = [r.name for r in records if r.is_weight]
        raise InvalidParameterError(
            f"include={list(_as_patterns(include, 'include'))}, exclude={list(_as_patterns(exclude, 'exclude'))} "
            "matched no parameter to re-initialise; the weights graphnn maps are: "
            + (", ".join(weights[:20]) + (" ..." if len(weights) > 20 else "") if weights else "none")
            + ("" if include_embeddings else " (embeddings need include_embeddings=True)")
        )
    return out


def fused_expert_targets(module: nn.Module, params: dict, include=None, exclude=None) -> list[WeightTarget]:
    """Targets for the 3-D fused expert tensors of transformers-5 mixture-of-experts modules
    (``experts.gate_up_proj`` ``(E, 2I, H)``, ``experts.down_proj`` ``(E, H, I)``, or their
    ``(E, in, out)`` layouts): one target per expert slice, and for ``gate_up_proj`` one for each
    half, the same layers as the graph's per-expert blocks (``name[e][gate]``, ``name[e]``).
    Each target is a view, so rewiring it rewires the parameter in place."""
    from ..extract.families import role_of

    inc, exc = _as_patterns(include, "include"), _as_patterns(exclude, "exclude")
    hidden = getattr(getattr(module, "config", None), "hidden_size", None)
    out: list[WeightTarget] = []
    for name, p in params.items():
        role = role_of(name)
        if role is None or role.role not in ("experts_gate_up", "experts_down") or p.dim() != 3:
            continue
        if (inc and not _matches(name, inc)) or (exc and _matches(name, exc)):
            continue
        n_exp, d1, d2 = p.shape
        if role.role == "experts_gate_up":
            out_in = hidden in (None, d2)
            half = (d1 if out_in else d2) // 2
            for e in range(n_exp):
                for part, rows in (("gate", slice(0, half)), ("up", slice(half, 2 * half))):
                    view = p[e, rows, :] if out_in else p[e, :, rows]
                    out.append(WeightTarget(f"{name}[{e}][{part}]", view, "out_first" if out_in else "transposed"))
        else:
            out_in = hidden in (None, d1)
            out += [WeightTarget(f"{name}[{e}]", p[e], "out_first" if out_in else "transposed") for e in range(n_exp)]
    return out


def rewirable_weights(
    module: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    include_embeddings: bool = False,
) -> list[str]:
    """Names of the tensors that ``pa_rewire_`` and ``min_strength_variance_search_`` touch with
    these options (a tied tensor under its first name): the weights :func:`graphnn.extract` maps.
    ``hcore_reinit_`` (no include/exclude) redraws those of them that the traced forward pass
    reaches (the mapped rows of the graph's coverage table).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
    ...                           torch.nn.Flatten(), torch.nn.Linear(8, 2))
    >>> rewirable_weights(net)
    ['0.weight', '3.weight']
    """
    return [t.name for t in select_targets(module, include, exclude, include_embeddings)]


def tensor_target(tensor: torch.Tensor, name: str = "tensor") -> WeightTarget:
    """A bare tensor as a target (first axis = output units)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.nn.Module or a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}: only tensors with >= 2 dims are weights "
            "(biases and norm parameters are not rewired)"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"{name} has dtype {tensor.dtype}; only floating-point weights can be re-initialised")
    return WeightTarget(name, tensor)


def targets_of(module_or_tensor, include=None, exclude=None, include_embeddings: bool = False) -> list[WeightTarget]:
    """The weights an in-place re-initialiser acts on: the selected weights of a module, or a
    bare tensor (``include``/``exclude``/``include_embeddings`` only make sense for a module)."""
    if isinstance(module_or_tensor, nn.Module):
        return select_targets(module_or_tensor, include, exclude, include_embeddings)
    if include is not None or exclude is not None or include_embeddings:
        raise InvalidParameterError(
            "include/exclude/include_embeddings select parameters of a module; pass a module, or drop them for a tensor")
    return [tensor_target(module_or_tensor)]
