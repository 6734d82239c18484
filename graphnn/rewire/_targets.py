"""Which weight tensors the re-initialisers touch, and their ``(n_out, fan_in)`` unit view.

Default selection (as the PA-rewiring authors' loop over ``Conv2d``/``Linear`` modules, widened to
every ``ConvNd``): the ``.weight`` of each ``nn.Linear`` (and subclasses, e.g. attention's
``out_proj``), ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` module. Never biases, norm
parameters or buffers. ``include`` globs (``fnmatch`` on fully qualified parameter names) replace
the default selection by *every* parameter with >= 2 dims that matches, whatever its module (e.g.
``"*in_proj_weight"``, ``"*embed*.weight"``; ``["*"]`` for all), except normalisation parameters;
``exclude`` globs then remove names. Buffers are never candidates.

Unit view: every target is seen as a matrix ``M`` of shape ``(n_out, numel / n_out)`` whose rows
are output units (Scabini et al.'s flattening). For Linear and ConvNd weights this is the stored
layout reshaped. ``ConvTranspose`` weights are stored ``(c_in, c_out/groups, *k)``; graphnn
permutes them to the layout of the equivalent convolution, ``(c_out, c_in/groups, *k)``, so that
rows are output channels there too (the authors never rewired transposed convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from ..extract.rules import NORM_TYPES, as_patterns as _as_patterns, matches_any as _matches
from ..graph import output_units

@dataclass
class WeightTarget:
    """One weight tensor to re-initialise. ``layout`` is ``"out_first"`` (rows of the stored
    tensor are output units) or ``"transposed"`` (ConvTranspose: ``(c_in, c_out/groups, *k)``)."""

    name: str
    tensor: torch.Tensor
    layout: str = "out_first"
    groups: int = 1

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
) -> list[WeightTarget]:
    """The weight tensors of ``module`` that a re-initialiser touches (see the module docstring),
    in registration order, each once even when tied."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    inc = _as_patterns(include, "include")
    exc = _as_patterns(exclude, "exclude")
    seen: set[int] = set()
    out: list[WeightTarget] = []
    owner_kind: dict[int, tuple[str, int]] = {}
    norm_params: set[int] = set()
    for mname, m in module.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, NORM_TYPES):
            norm_params.update(id(p) for p in m.parameters(recurse=False))
        if not isinstance(w, torch.Tensor) or not isinstance(w, nn.Parameter):
            continue
        if isinstance(m, _ConvTransposeNd):
            owner_kind[id(w)] = ("transposed", m.groups)
        elif isinstance(m, (nn.Linear, _ConvNd)):
            owner_kind[id(w)] = ("out_first", 1)
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        if isinstance(p, nn.parameter.UninitializedParameter):
            if id(p) in owner_kind or (inc and _matches(name, inc)):
                raise ValueError(
                    f"{name} is not initialised yet (lazy module): run one forward pass before re-initialising"
                )
            continue
        if inc:
            chosen = _matches(name, inc) and p.dim() >= 2 and id(p) not in norm_params
        else:
            chosen = id(p) in owner_kind and p.dim() >= 2
        if not chosen or (exc and _matches(name, exc)):
            continue
        if not p.is_floating_point():
            raise TypeError(f"{name} has dtype {p.dtype}; only floating-point weights can be re-initialised")
        layout, groups = owner_kind.get(id(p), ("out_first", 1))
        seen.add(id(p))
        out.append(WeightTarget(name, p, layout, groups))
    if inc and not out:
        candidates = [n for n, p in module.named_parameters() if p.dim() >= 2]
        raise ValueError(
            f"include={list(inc)} matched no parameter with >= 2 dims; parameters with >= 2 dims are: "
            + (", ".join(candidates[:20]) + (" ..." if len(candidates) > 20 else "") if candidates else "none")
        )
    return out


def rewirable_weights(
    module: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> list[str]:
    """Names of the parameters that ``pa_rewire_``, ``min_strength_variance_search_`` and
    ``hcore_reinit_`` would touch with these ``include``/``exclude`` globs.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
    ...                           torch.nn.Flatten(), torch.nn.Linear(8, 2))
    >>> rewirable_weights(net)
    ['0.weight', '3.weight']
    """
    return [t.name for t in select_targets(module, include, exclude)]


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


def targets_of(module_or_tensor, include=None, exclude=None) -> list[WeightTarget]:
    """The weights an in-place re-initialiser acts on: the selected weights of a module, or a
    bare tensor (``include``/``exclude`` only make sense for a module)."""
    if isinstance(module_or_tensor, nn.Module):
        return select_targets(module_or_tensor, include, exclude)
    if include is not None or exclude is not None:
        raise ValueError("include/exclude select parameters of a module; pass a module, or drop them for a tensor")
    return [tensor_target(module_or_tensor)]
