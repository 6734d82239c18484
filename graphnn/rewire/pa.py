"""Preferential-attachment (PA) rewiring of weight tensors (Scabini, De Baets & Bruno, 2022/2024).

Each weight tensor is seen as ``M`` of shape ``(n_out, numel / n_out)`` (rows = output units; see
:mod:`graphnn.rewire._targets` for the ConvTranspose layout). One *pass* on a matrix ``A`` with
``r`` rows and ``c`` columns leaves row 0 alone and, for ``t = 1 .. r-1`` in order:

1. ``acc += A[t-1]`` (running signed column sums of the rows already rewired, float64);
2. ``p = acc + |min(acc)| + 1`` (positive selection weights);
3. draws an ordering ``pi`` of the ``c`` columns by weighted sampling without replacement;
4. writes the values of row ``t`` in ascending order to the columns in drawn order
   (``A[t, pi[q]] = sorted(A[t])[q]``): the most negative value goes to the column drawn first.

Pass 1 runs on ``M`` (every output unit keeps its multiset of weights, hence its in-strength),
pass 2 on ``M.T`` (every column keeps its multiset, hence the column sums reached by pass 1), so
the tensor's multiset of values never changes and both strength variances drop.

Modes
-----
``"faithful"``: numpy, ``Generator.choice(c, size=c, replace=False, p=p / p.sum())`` with a fresh
``np.random.default_rng(seed)`` for each pass of each tensor, as the authors' code does: with the
same seed graphnn reproduces their tensors value for value. The authors treat every *falsy* seed
(``False``, ``None`` and also ``0``) as "unseeded"; in graphnn only ``None`` means fresh OS
entropy, and ``0`` is an ordinary seed. About 0.2-0.5 s for a 512 x 512 tensor on one CPU core.

``"fast"``: the same distribution, different draws. Weighted sampling without replacement
equals sorting ``E_j / p_j`` ascending with ``E_j ~ Exp(1)`` i.i.d. (the exponential race), so each
row costs one argsort and a few vector operations; all tensors with the same unit-matrix shape,
dtype and device are processed together (row ``t`` of each at once). CPU tensors run in numpy
(its SIMD argsort is ~2.5x faster than torch's on the CPU), CUDA tensors in torch. One random
stream (``np.random.default_rng(seed)`` on the CPU, a ``torch.Generator`` seeded with ``seed``
per CUDA device) serves the whole call, so a tensor's draws depend on which tensors are rewired
with it; results are reproducible for a seed on a device, and differ between CPU and CUDA.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError
from ..validation import check_choice, check_device, check_seed
from ._targets import WeightTarget, targets_of

MODES = ("faithful", "fast")

#: Float64 entries of exponential draws generated at once per group (fast mode): 32 MB.
_DRAW_BUDGET = 1 << 22
#: Entries of stacked unit matrices processed together (fast mode).
_BATCH_BUDGET = 1 << 25
#: Run CPU tensors through the torch (CUDA) code path too; for tests of that path without a GPU.
_TORCH_ON_CPU = False


def _check_seed(seed) -> int | None:
    """``None`` or a non-negative int (:func:`graphnn.validation.check_seed`)."""
    return check_seed("seed", seed)


# -- faithful (numpy) --------------------------------------------------------------------------
def _pa_pass_numpy_(a: np.ndarray, seed: int | None) -> None:
    """One PA pass over the rows of ``a`` (in place; ``a`` may be a transposed view)."""
    rng = np.random.default_rng(seed)
    r, c = a.shape
    acc = np.zeros(c, dtype=np.float64)
    for t in range(1, r):
        acc += a[t - 1]
        p = acc + np.abs(np.min(acc)) + 1.0
        p /= np.sum(p)
        order = rng.choice(c, size=c, replace=False, p=p)
        a[t, order] = np.sort(a[t])


def _rewire_faithful_(target: WeightTarget, seed: int | None) -> None:
    units = target.units()
    src_dtype = units.dtype
    work_dtype = src_dtype if src_dtype in (torch.float32, torch.float64) else torch.float32
    a = units.detach().to("cpu", work_dtype, copy=True).numpy()
    _pa_pass_numpy_(a, seed)
    _pa_pass_numpy_(a.T, seed)
    target.write_units_(torch.from_numpy(a).to(units.device, src_dtype))


# -- fast (exponential race) -------------------------------------------------------------------
# Weighted sampling without replacement with weights p equals ordering the columns by E_j / p_j
# ascending, E_j ~ Exp(1) i.i.d. (p needs no normalisation). Rows of a pass stay sequential; the
# draws, the sorts of the row values and everything across tensors of one shape are batched.
# On the CPU the pass runs in numpy, whose SIMD argsort is ~2.5x faster than torch's there (and
# the argsort is most of the work); on CUDA it runs in torch.


def _pa_pass_race_numpy_(m: np.ndarray, rng: np.random.Generator) -> None:
    """One PA pass over axis 1 of the stacked matrices ``m`` (B, r, c), in place."""
    b, r, c = m.shape
    if r < 2:
        return
    sorted_rows = np.sort(m[:, 1:], axis=2)  # a row is only permuted when its turn comes
    acc = np.zeros((b, c), dtype=np.float64)
    chunk = max(1, _DRAW_BUDGET // (b * c))
    rows = np.arange(b)[:, None]
    draws, start = None, 0
    for t in range(1, r):
        if draws is None or t - start >= draws.shape[1]:
            start = t
            draws = rng.standard_exponential(size=(b, min(chunk, r - t), c))
        acc += m[:, t - 1]
        p = acc + (np.abs(acc.min(axis=1, keepdims=True)) + 1.0)
        order = np.argsort(draws[:, t - start] / p, axis=1)
        if b == 1:
            m[0, t, order[0]] = sorted_rows[0, t - 1]
        else:
            m[rows, t, order] = sorted_rows[:, t - 1]


def _pa_pass_race_torch_(m: torch.Tensor, gen: torch.Generator) -> None:
    """One PA pass over dim 1 of the stacked matrices ``m`` (B, r, c), in place (any device)."""
    b, r, c = m.shape
    if r < 2:
        return
    sorted_rows = m[:, 1:].sort(dim=2).values
    acc = torch.zeros(b, c, dtype=torch.float64, device=m.device)
    chunk = max(1, _DRAW_BUDGET // (b * c))
    draws, start = None, 0
    for t in range(1, r):
        if draws is None or t - start >= draws.shape[1]:
            start = t
            n = min(chunk, r - t)
            draws = torch.empty(b, n, c, dtype=torch.float64, device=m.device).exponential_(generator=gen)
        acc.add_(m[:, t - 1])
        p = acc + acc.amin(dim=1, keepdim=True).abs_().add_(1.0)
        order = torch.argsort(draws[:, t - start] / p, dim=1)
        m[:, t].scatter_(1, order, sorted_rows[:, t - 1])


def _two_passes_numpy_(m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _pa_pass_race_numpy_(m, rng)
    mt = np.ascontiguousarray(m.transpose(0, 2, 1))
    _pa_pass_race_numpy_(mt, rng)
    return mt.transpose(0, 2, 1)


def _two_passes_torch_(m: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    _pa_pass_race_torch_(m, gen)
    mt = m.transpose(1, 2).contiguous()
    _pa_pass_race_torch_(mt, gen)
    return mt.transpose(1, 2)


def _rewire_fast_(targets: list[WeightTarget], seed: int | None, device) -> None:
    groups: dict[tuple, list[tuple[WeightTarget, torch.Tensor]]] = defaultdict(list)
    for tg in targets:
        u = tg.units()
        dev = u.device if device == "auto" else torch.device(device)
        groups[(tuple(u.shape), u.dtype, str(dev))].append((tg, u))
    rng = np.random.default_rng(seed)  # CPU stream; seed=None -> OS entropy
    gens: dict[str, torch.Generator] = {}
    for (shape, dtype, dev), members in groups.items():
        per_batch = max(1, _BATCH_BUDGET // (shape[0] * shape[1]))
        for i in range(0, len(members), per_batch):
            batch = members[i : i + per_batch]
            if torch.device(dev).type == "cpu" and not _TORCH_ON_CPU:
                work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
                m = np.stack([u.detach().to("cpu", work).numpy() for _, u in batch])
                out = torch.from_numpy(_two_passes_numpy_(m, rng))
            else:
                if dev not in gens:
                    gens[dev] = torch.Generator(device=dev)
                    if seed is None:
                        gens[dev].seed()
                    else:
                        gens[dev].manual_seed(seed)
                m = torch.stack([u.detach().to(dev) for _, u in batch])
                out = _two_passes_torch_(m, gens[dev])
            for k, (tg, u) in enumerate(batch):
                tg.write_units_(out[k].to(u.device, u.dtype))


def _check_device(device, mode: str):
    """``"auto"`` (each tensor where it lives) or the device string checked by
    :func:`graphnn.validation.check_device`; ``faithful`` runs on the CPU only."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return "auto"
    try:
        kind = torch.device(device.strip() if isinstance(device, str) else device).type
    except (RuntimeError, TypeError, ValueError):
        kind = None  # check_device says why
    if mode == "faithful" and kind not in (None, "cpu"):
        raise InvalidParameterError(
            f"mode='faithful' runs numpy on the CPU and cannot use device={device!r}; "
            "use mode='fast' to rewire on a GPU"
        )
    return str(check_device(device))


def rewire_targets_(targets: list[WeightTarget], seed=None, mode: str = "faithful", device="auto") -> None:
    """PA-rewire a list of targets in place (shared by modules, tensors and checkpoints)."""
    seed = _check_seed(seed)
    check_choice("mode", mode, MODES)
    device = _check_device(device, mode)
    for tg in targets:
        if not bool(torch.isfinite(tg.tensor.detach()).all()):
            raise ValueError(
                f"{tg.name} has NaN/Inf weights: PA rewiring needs finite weights (initialise the "
                "layer first, or exclude it with exclude=...)"
            )
    if mode == "faithful":
        for tg in targets:
            _rewire_faithful_(tg, seed)
    else:
        _rewire_fast_(targets, seed, device)


def pa_rewire_(
    module_or_tensor: nn.Module | torch.Tensor,
    seed: int | None = None,
    mode: str = "faithful",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    device: str | torch.device = "auto",
    include_embeddings: bool = False,
):
    """PA-rewire weights in place and return ``module_or_tensor`` (like ``torch.nn.init``).

    Parameters
    ----------
    module_or_tensor : an ``nn.Module`` (the weights :func:`graphnn.extract` maps: Linear, ConvNd,
        ConvTransposeNd, HF Conv1D, attention projections; see
        :func:`graphnn.rewire.rewirable_weights`) or one tensor with >= 2 dims (first axis = output units).
    seed : non-negative int, or ``None`` for fresh OS entropy (not reproducible). ``0`` is an
        ordinary seed (the authors' code treats it as "unseeded").
    mode : ``"faithful"`` (numpy, the authors' random stream) or ``"fast"`` (exponential race,
        same distribution, different draws, batched; CUDA capable). See the module docstring.
    include, exclude : ``fnmatch`` globs on fully qualified parameter names (modules only).
        ``include`` keeps only the weights it matches; ``exclude`` removes names.
    device : ``"auto"`` (where each tensor lives), ``"cpu"`` or ``"cuda[:i]"``; ``fast`` only.

    A bad option (seed, mode, device, or ``mode="faithful"`` with a GPU device) raises
    :class:`~graphnn.errors.InvalidParameterError`.
    include_embeddings : also rewire embedding tables (modules only; as in :func:`graphnn.extract`).

    The values of every rewired tensor are a permutation of its values before (sorted values are
    equal exactly); biases, norm parameters and buffers are never touched. Apply it to weights at
    their real scale, right after the base initialiser: the ``+1`` in ``p`` makes the preference
    scale dependent.

    >>> import torch, graphnn
    >>> layer = torch.nn.Linear(64, 32)
    >>> before = layer.weight.detach().clone()
    >>> _ = graphnn.rewire.pa_rewire_(layer, seed=1)
    >>> torch.equal(layer.weight.detach().flatten().sort().values, before.flatten().sort().values)
    True
    >>> bool(layer.weight.sum(1).var() < before.sum(1).var())
    True
    """
    targets = targets_of(module_or_tensor, include, exclude, include_embeddings)
    rewire_targets_(targets, seed=seed, mode=mode, device=device)
    return module_or_tensor
