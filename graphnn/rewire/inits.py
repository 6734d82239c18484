"""Base initialisers of ``variance-search`` and ``hcore``, by name or as callables.

``init`` may be a callable that fills a tensor in place (``torch.nn.init.orthogonal_``, a
``functools.partial``), the name of a ``torch.nn.init`` function whose arguments other than the
tensor all have defaults (``"kaiming_normal_"`` or ``"kaiming_normal"``, ``"xavier_uniform"``,
``"orthogonal"``, ``"trunc_normal"``, ...; fan-in/fan-out from the stored shape by torch's rule),
or ``"match"``: a normal draw with the tensor's own mean and standard deviation (float64, over all
its entries, taken before the first draw), which keeps the scale of a checkpoint whose weights are
not Kaiming-scaled (a Llama with std 0.02 redrawn with ``kaiming_normal_`` gets std ~0.09).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from ..errors import InvalidParameterError

MATCH = "match"


def init_names() -> list[str]:
    """Every accepted name: ``"match"`` and the ``torch.nn.init`` functions usable with defaults."""
    out = [MATCH]
    for name in sorted(dir(torch.nn.init)):
        fn = getattr(torch.nn.init, name)
        if name.startswith("_") or not name.endswith("_") or not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters.values())[1:]
        if all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params):
            out.append(name)
    return out


def init_name(init) -> str:
    """The name recorded in provenance files: ``"match"``, ``torch.nn.init.<name>`` or the
    callable's qualified name."""
    if isinstance(init, str):
        return MATCH if init == MATCH else f"torch.nn.init.{_torch_name(init)}"
    mod = getattr(init, "__module__", None)
    qual = getattr(init, "__qualname__", None) or repr(init)
    return f"{mod}.{qual}" if mod else qual


def _torch_name(name: str) -> str:
    names = init_names()
    for cand in (name, name + "_"):
        if cand in names and cand != MATCH:
            return cand
    for cand in (name, name + "_"):
        fn = getattr(torch.nn.init, cand, None)
        if cand.endswith("_") and not cand.startswith("_") and inspect.isfunction(fn):
            needed = [p.name for p in list(inspect.signature(fn).parameters.values())[1:]
                      if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            raise InvalidParameterError(
                f"init={name!r}: torch.nn.init.{cand} needs {', '.join(needed)} besides the tensor, so it cannot be "
                f"given by name; pass a callable, e.g. functools.partial(torch.nn.init.{cand}, "
                + ", ".join(f"{n}=..." for n in needed) + ")")
    raise InvalidParameterError(
        f"init={name!r} is not an initialiser graphnn knows: use 'match' or a torch.nn.init function whose "
        f"other arguments have defaults ({', '.join(n for n in names if n != MATCH)}), or pass a callable "
        "(e.g. functools.partial(torch.nn.init.constant_, val=0.1))")


def check_init(init) -> str | Callable:
    """``init`` normalised (a known name, or a callable); a usage error otherwise."""
    if isinstance(init, str):
        return MATCH if init == MATCH else _torch_name(init)
    if callable(init):
        return init
    raise InvalidParameterError(
        f"init must be 'match', a torch.nn.init name (e.g. 'kaiming_normal_') or a callable that fills a tensor "
        f"in place, not {init!r}")


def bind_init(init, tensor: torch.Tensor, name: str = "tensor") -> Callable[[torch.Tensor], torch.Tensor]:
    """The in-place initialiser to call on ``tensor`` (and its redraws): for ``"match"`` a normal
    draw with ``tensor``'s current mean and std, otherwise the named or given function.

    >>> import torch
    >>> w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02 + 0.5
    >>> draw = bind_init("match", w)
    >>> _ = torch.manual_seed(1); _ = draw(w)
    >>> round(float(w.mean()), 2), round(float(w.std()), 3)
    (0.5, 0.02)
    >>> bind_init("kaiming_normal", w) is torch.nn.init.kaiming_normal_
    True
    """
    init = check_init(init)
    if init == MATCH:
        t = tensor.detach()
        if t.numel() < 2:
            raise InvalidParameterError(f"init='match' needs at least 2 entries to measure a std; {name} has {t.numel()}")
        t64 = t.to(torch.float64)
        mean, std = float(t64.mean()), float(t64.std())
        if not (torch.isfinite(torch.tensor([mean, std])).all()):
            raise InvalidParameterError(
                f"init='match' cannot use {name}: its mean/std are not finite (NaN/Inf weights); pass another init")

        def match_(w: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return w.normal_(mean, std)
        match_.__name__ = "match"
        return match_
    if isinstance(init, str):
        return getattr(torch.nn.init, init)
    return init
