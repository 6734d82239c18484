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
row costs one sort and a few vector operations. CPU tensors run in numpy, one at a time; CUDA
tensors in torch, those with the same unit-matrix shape, dtype and device together (row ``t``
of each at once). On the CPU the columns of a row are put in exactly the ascending order
of the float64 keys ``E_j / p_j``, equal keys by column index (the lower index is drawn first),
by a radix sort with an exact fix-up (2-3x faster than numpy's float64 argsort); the pass
works on a contiguous float32/float64/bfloat16/float16 tensor's own memory, a tile of rows or
columns at a time (no full-size working copy). One random stream
(``np.random.default_rng(seed)`` on the CPU, a ``torch.Generator`` seeded with ``seed``
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
#: The same for one matrix on the CPU: 1 MB, still in cache when read (numpy draws a large array
#: ~1.5x slower per entry). For one matrix the values drawn do not depend on the chunk size
#: (numpy's stream fills them in order); for a stack they do, so a stack keeps _DRAW_BUDGET.
_DRAW_BUDGET_ONE = 1 << 17
#: Entries of stacked unit matrices processed together (fast mode, torch/CUDA path).
_BATCH_BUDGET = 1 << 25
#: Entries of the row tile a CPU pass converts and sorts at once (fast mode).
_TILE_BUDGET = 1 << 20
#: Odd-even transposition rounds of the exact fix-up of a row's order before it is sorted whole.
_FIXUP_ROUNDS = 32
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
# draws are batched. On CUDA the pass runs in torch, tensors of one shape stacked together.
# On the CPU it runs in numpy, row tile by row tile, on the tensor's own memory where it can:
#
# * the column order of a row is exactly ``np.argsort(E / p, kind="stable")`` (float64 keys; equal
#   keys keep column order), computed as a two-digit radix sort (numpy's 16-bit radix argsort, low
#   half then high half) of the keys' float32 bit patterns, which order non-negative keys like the
#   keys themselves except where two keys round to the same float32; those few adjacent pairs
#   are put in exact float64 order by odd-even transposition (:func:`_exact_order`);
# * a row's values are sorted in their own dtype (bfloat16/float16 as 16-bit integers whose order
#   is the values' order: one radix pass) and scattered in float32 (float64 for float64 tensors);
# * the second pass (over columns) reads and writes tiles of columns: no transposed copy of the
#   matrix, no sorted copy of it, and for a contiguous CPU tensor no working copy at all.


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.take_along_axis(a, idx, axis=-1)`` for 1-D or 2-D ``a`` (2-D through flat indices:
    about 2.5x faster for short rows)."""
    if a.ndim == 1:
        return a[idx]
    return a.reshape(-1)[idx + (np.arange(a.shape[0]) * a.shape[1])[:, None]]


def _radix_argsort_u32(u: np.ndarray) -> np.ndarray:
    """``np.argsort(u, axis=-1, kind="stable")`` for uint32 ``u`` (1-D or 2-D, contiguous rows)
    as two stable 16-bit radix argsorts, least significant half first."""
    halves = u.view(np.uint16)  # little-endian: (low, high) pairs
    if np.little_endian:
        lo, hi = halves[..., 0::2], halves[..., 1::2]
    else:  # pragma: no cover - big-endian hosts
        lo, hi = halves[..., 1::2], halves[..., 0::2]
    o1 = np.argsort(lo, axis=-1, kind="stable")
    return _take(o1, np.argsort(_take(hi, o1), axis=-1, kind="stable"))


def _fix_up_(ks: np.ndarray, order: np.ndarray, c: int) -> None:
    """Sort each length-``c`` segment of the flat ``ks`` (``order`` moved alongside) by exact
    value, in place, by swapping adjacent strictly descending pairs (odd-even transposition on
    the descents only): equal keys never pass each other, so their relative order is kept. After
    :data:`_FIXUP_ROUNDS` rounds a segment still out of order is sorted by a stable argsort."""
    n = ks.size
    desc = np.flatnonzero(ks[:-1] > ks[1:])
    if n != c and desc.size:
        desc = desc[desc % c != c - 1]  # pairs across two segments are not compared
    parity = 0
    for _ in range(_FIXUP_ROUNDS):
        if not desc.size:
            return
        on = (desc & 1) == parity
        sel, rest = desc[on], desc[~on]
        parity ^= 1
        if not sel.size:
            continue
        nxt = sel + 1
        ks[sel], ks[nxt] = ks[nxt], ks[sel]
        order[sel], order[nxt] = order[nxt], order[sel]
        cand = np.concatenate((rest, sel - 1, nxt))
        cand = cand[(cand >= 0) & (cand < n - 1)]
        if n != c:
            cand = cand[cand % c != c - 1]
        cand = np.unique(cand)
        desc = cand[ks[cand] > ks[cand + 1]]
    for s in np.unique(desc // c) * c:  # rounds exhausted (many equal float32 keys): exact sort
        p = np.argsort(ks[s:s + c], kind="stable")
        ks[s:s + c], order[s:s + c] = ks[s:s + c][p], order[s:s + c][p]


def _exact_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, axis=-1, kind="stable")`` for float64 ``keys`` >= 0 (+0.0, not -0.0;
    1-D, or 2-D row by row): exact, equal keys by position (see the section comment)."""
    with np.errstate(over="ignore"):  # keys above float32's range become inf: still in order
        return _exact_order_quiet(keys)


def _exact_order_quiet(keys: np.ndarray) -> np.ndarray:
    """:func:`_exact_order` for a caller that has float overflow warnings off."""
    # float32(key) is a non-decreasing function of a key >= 0 (rounding is monotone), and so are
    # the bits of a non-negative float32
    order = _radix_argsort_u32(keys.astype(np.float32).view(np.uint32))
    ks = _take(keys, order)
    if not (ks[..., 1:] < ks[..., :-1]).any():
        return order
    c = keys.shape[-1]
    if ks.ndim == 1:
        _fix_up_(ks, order, c)
    else:
        flat_k, flat_o = ks.reshape(-1), order.reshape(-1)  # fresh contiguous arrays: views
        _fix_up_(flat_k, flat_o, c)
    return order


def _contiguous_rows(src: np.ndarray) -> np.ndarray:
    """``src`` (B, k, c) when its rows are contiguous, else a C-contiguous copy made a block of
    columns at a time (``src`` is then a tile of the transposed matrix: the block stays in cache
    while the strided reads fill it)."""
    if src.strides[-1] == src.itemsize:
        return src
    out = np.empty(src.shape, src.dtype)
    for j in range(0, src.shape[-1], 1024):
        out[..., j:j + 1024] = src[..., j:j + 1024]
    return out


def _float_tile(raw: np.ndarray, bits: str | None) -> np.ndarray:
    """The values of ``raw`` (contiguous rows) as float32/float64 (``raw`` itself for floats)."""
    if bits is None:
        return raw
    if bits == "bfloat16":  # bfloat16 = the high half of a float32
        wide = raw.astype(np.int32)
        wide <<= 16
        return wide.view(np.float32)
    return raw.view(np.float16).astype(np.float32)


def _store_tile(dst: np.ndarray, tile: np.ndarray, bits: str | None) -> None:
    """Write a tile back into ``dst`` (exact: its values are the dtype's own)."""
    if bits is None:
        if tile is not dst:
            np.copyto(dst, tile)
    elif bits == "bfloat16":
        np.copyto(dst, tile.view(np.int32) >> 16, casting="unsafe")
    else:
        np.copyto(dst.view(np.float16), tile, casting="same_kind")


def _sorted_rows(raw: np.ndarray, tile: np.ndarray, bits: str | None) -> np.ndarray:
    """Each row of the tile sorted ascending, as the tile's float dtype. 16-bit patterns are
    sorted as int16 keys whose order is the values' order (sign-magnitude to two's complement:
    flip the magnitude bits of negative values) by numpy's radix sort; -0 comes before +0."""
    if bits is None:
        return np.sort(tile, axis=-1)
    x = raw.astype(np.int16, copy=True)
    flip = x >> 15
    flip &= 0x7FFF
    x ^= flip
    x.sort(axis=-1, kind="stable")
    np.right_shift(x, 15, out=flip)
    flip &= 0x7FFF
    x ^= flip  # the same map undoes itself
    return _float_tile(x, bits)


def _pa_pass_race_numpy_(m: np.ndarray, rng: np.random.Generator, bits: str | None = None) -> None:
    """One PA pass over axis 1 of the stacked matrices ``m`` (B, r, c), in place; ``m`` may be
    a strided view (the transpose of the first pass's array). ``m`` holds float32/float64
    values, or with ``bits`` (``"bfloat16"``, ``"float16"``) int16 bit patterns of those
    values (pass 1 then works on a bfloat16 tensor's own memory)."""
    b, r, c = m.shape
    if r < 2:
        return
    acc = np.zeros((b, c), dtype=np.float64)
    p = np.empty((b, c), dtype=np.float64)
    keys = np.empty((b, c), dtype=np.float64)
    chunk = max(1, (_DRAW_BUDGET if b > 1 else _DRAW_BUDGET_ONE) // (b * c))
    step = max(1, min(r, _TILE_BUDGET // (b * c)))
    rows = np.arange(b)[:, None]
    draws, buf, start, prev = None, None, 0, None
    with np.errstate(over="ignore"):  # once for every row's float32 cast of its keys
        for t0 in range(0, r, step):
            src = m[:, t0:t0 + step]
            raw = _contiguous_rows(src)
            tile = _float_tile(raw, bits)
            srt = _sorted_rows(raw, tile, bits)  # a row is only permuted when its turn comes
            for i in range(tile.shape[1]):
                t = t0 + i
                if t == 0:
                    continue
                if draws is None or t - start >= draws.shape[1]:
                    start, n = t, min(chunk, r - t)
                    if buf is None or n != chunk:
                        buf = np.empty((b, n, c), dtype=np.float64)
                    draws = rng.standard_exponential(out=buf)  # into a reused, cache-sized buffer
                acc += tile[:, i - 1] if i else prev
                if b == 1:  # 1-D views: fewer and cheaper numpy calls (the same arithmetic)
                    np.add(acc[0], abs(acc[0].min()) + 1.0, out=p[0])
                    np.divide(draws[0, t - start], p[0], out=keys[0])
                    tile[0, i][_exact_order_quiet(keys[0])] = srt[0, i]
                else:
                    np.add(acc, np.abs(acc.min(axis=1, keepdims=True)) + 1.0, out=p)
                    np.divide(draws[:, t - start], p, out=keys)
                    tile[rows, i, _exact_order_quiet(keys)] = srt[:, i]
            prev = tile[:, -1].copy()
            _store_tile(src, tile, bits)


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


def _two_passes_numpy_(m: np.ndarray, rng: np.random.Generator, bits: str | None = None) -> np.ndarray:
    """Both passes on ``m`` (B, r, c) in place (the second on its transpose, a view); returns ``m``."""
    _pa_pass_race_numpy_(m, rng, bits)
    _pa_pass_race_numpy_(m.transpose(0, 2, 1), rng, bits)
    return m


def _two_passes_torch_(m: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    _pa_pass_race_torch_(m, gen)
    mt = m.transpose(1, 2).contiguous()
    _pa_pass_race_torch_(mt, gen)
    return mt.transpose(1, 2)


#: torch dtypes the CPU pass works on in place (int16 bit patterns for the 16-bit floats).
_NUMPY_KIND = {torch.float32: None, torch.float64: None, torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _numpy_of(t: torch.Tensor) -> np.ndarray:
    """A numpy array on ``t``'s memory (a CPU tensor of a dtype in :data:`_NUMPY_KIND`)."""
    return t.numpy() if _NUMPY_KIND[t.dtype] is None else t.view(torch.int16).numpy()


def _rewire_one_numpy_(tg: WeightTarget, rng: np.random.Generator) -> None:
    """Both passes on the CPU for one tensor, on its own memory when its unit matrix is a view of
    it (no working copy), else on the unit matrix's copy, written back. Dtypes outside
    :data:`_NUMPY_KIND` (float8) go through a float32 copy. One tensor at a time: stacking
    tensors of one shape (as on CUDA) was slower on the CPU, for small and large ones alike."""
    u = tg.units()
    work = u.detach().to("cpu")  # no copy for a CPU tensor
    if work.dtype not in _NUMPY_KIND:
        work = work.to(torch.float32)
    _two_passes_numpy_(_numpy_of(work)[None], rng, _NUMPY_KIND[work.dtype])
    if work.untyped_storage().data_ptr() != tg.tensor.untyped_storage().data_ptr():
        tg.write_units_(work.to(u.device, u.dtype))
    # else: work is a view of the tensor (its unit matrix), rewired in place


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in ``t``, checked a few million entries at a time (no full-size mask)."""
    flat = t.detach().reshape(-1)
    step = 1 << 22
    return all(bool(torch.isfinite(flat[i:i + step]).all()) for i in range(0, flat.numel(), step))


def _rewire_fast_(targets: list[WeightTarget], seed: int | None, device) -> None:
    groups: dict[tuple, list[tuple[WeightTarget, torch.Tensor | None]]] = defaultdict(list)
    for tg in targets:
        u = tg.units()
        dev = u.device if device == "auto" else torch.device(device)
        on_numpy = torch.device(dev).type == "cpu" and not _TORCH_ON_CPU
        # the CPU path takes each unit matrix when its turn comes (a copy, for transposed
        # layouts, is not held for the whole call)
        groups[(tuple(u.shape), u.dtype, str(dev))].append((tg, None if on_numpy else u))
        del u
    rng = np.random.default_rng(seed)  # CPU stream; seed=None -> OS entropy
    gens: dict[str, torch.Generator] = {}
    for (shape, dtype, dev), members in groups.items():
        if torch.device(dev).type == "cpu" and not _TORCH_ON_CPU:
            for tg, _ in members:
                _rewire_one_numpy_(tg, rng)
            continue
        per_batch = max(1, _BATCH_BUDGET // (shape[0] * shape[1]))
        for i in range(0, len(members), per_batch):
            batch = members[i : i + per_batch]
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
        if not _all_finite(tg.tensor):
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
