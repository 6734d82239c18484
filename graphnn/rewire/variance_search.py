"""Random search for the initial draw with the lowest strength variance (Scabini et al. §1.4).

Per weight tensor, independently: draw it ``trials`` times with the base initialiser, compute
``J = (Var(row sums) + Var(column sums)) / 2`` of its ``(n_out, fan_in)`` unit matrix (signed
sums, unbiased variances) and keep the draw with the lowest ``J``. The authors' README allows
running PA rewiring after it (in that order).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn

from ..analyses.strength import tensor_strength_variance
from ._targets import WeightTarget, targets_of
from .inits import bind_init, check_init, init_name
from ..validation import check_number
from .pa import _check_seed


def _check_trials(trials) -> int:
    """A positive int (:func:`graphnn.validation.check_number`)."""
    return check_number("trials", trials, integer=True, positive=True)


@contextlib.contextmanager
def seeded(seed: int | None, tensors: Iterable[torch.Tensor] = ()):
    """Run the block with torch's global RNG seeded with ``seed`` and restore the caller's RNG
    state afterwards (CPU and the CUDA devices of ``tensors``); ``seed=None`` leaves the global
    RNG alone (like ``torch.nn.init``)."""
    if seed is None:
        yield
        return
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def search_targets_(targets: list[WeightTarget], init: Callable, trials: int, seed) -> list[dict]:
    """Run the search on each target in order; returns one record per target with ``J`` of
    the first draw and of the kept one (``J_first``, ``J_best``) and the kept trial's index."""
    trials = _check_trials(trials)
    seed = _check_seed(seed)
    init = check_init(init)
    records = []
    with seeded(seed, [t.tensor for t in targets]), torch.no_grad():
        for tg in targets:
            w = tg.tensor
            draw = bind_init(init, w, tg.name)
            best_j, best, best_k, first_j = float("inf"), None, -1, None
            for k in range(trials):
                draw(w)
                j = tensor_strength_variance(tg.units())[0]
                if first_j is None:
                    first_j = j
                if j < best_j:
                    best_j, best, best_k = j, w.detach().clone(), k
            if best is None:
                raise ValueError(
                    f"{tg.name}: every one of the {trials} draws of {init_name(init)} gave a "
                    "NaN/Inf strength variance; check the initialiser (the tensor is left as its last draw)")
            w.copy_(best)
            records.append({"name": tg.name, "J_first": first_j, "J_best": best_j, "best_trial": best_k})
    return records


def min_strength_variance_search_(
    module_or_tensor: nn.Module | torch.Tensor,
    init: str | Callable[[torch.Tensor], torch.Tensor] = torch.nn.init.kaiming_normal_,
    trials: int = 100,
    seed: int | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    include_embeddings: bool = False,
):
    """Redraw each weight tensor ``trials`` times with ``init`` and keep the draw with the lowest
    strength variance ``J``; in place, returns ``module_or_tensor``.

    ``init`` is a callable, a ``torch.nn.init`` name or ``"match"`` (a normal draw with the tensor's
    own mean and std; see :mod:`graphnn.rewire.inits`). It is called on the parameter itself, so
    fan-in/fan-out come from its stored shape by ``torch.nn.init``'s rule
    (``fan_in = shape[1] * prod(shape[2:])``). ``seed`` seeds torch's
    global RNG for the search (the caller's RNG state is restored afterwards); ``None`` uses the
    global RNG as it is. Selection (``include``/``exclude``/``include_embeddings``) as in
    :func:`pa_rewire_`; biases and
    norm parameters are untouched. Cost: ``trials`` initialiser calls per tensor.

    >>> import torch, graphnn
    >>> layer = torch.nn.Linear(100, 50)
    >>> _ = graphnn.rewire.min_strength_variance_search_(layer, trials=20, seed=0)
    """
    targets = targets_of(module_or_tensor, include, exclude, include_embeddings)
    search_targets_(targets, init, trials, seed)
    return module_or_tensor
