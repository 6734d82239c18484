"""Spectral columns of a block: spectral norm, stable rank and Frobenius norm of its signed
``(n_dst, n_src)`` matrix, and (optionally) WeightWatcher's power-law exponent α per layer.

The matrix is the block's :meth:`~graphnn.Block.matrix` as stored (matrix space), entries
outside a grouped conv's diagonal groups set to 0:

* a Linear (or HF ``Conv1D``, transposed) block: the layer's own weight, so these are the
  singular values of the linear map the layer applies;
* an index-mapped block (grouped-query attention's ``o_proj``, a slice of a concatenation):
  the matrix before the index map, i.e. parallel edges are *not* merged (merging columns that
  reach one neuron would sum them and change the singular values);
* a conv block: the channel matrix after the kernel aggregation (``conv="l2"``: entry
  ``(i, j)`` is ``‖W[i, j, ...]‖₂``), not the convolution operator; a Linear after a flatten
  likewise uses the aggregated channel matrix;
* a fused tensor split into blocks (``c_attn.weight[q]``): each part on its own.

Definitions: ``spectral_norm`` σ₁ = largest singular value (‖W‖₂), ``frobenius_norm``
‖W‖_F = sqrt(Σ w²), ``stable_rank`` = ‖W‖²_F / ‖W‖²₂ (between 1 and rank(W); NaN for an
all-zero matrix). All in the weights' own units (float64 results).

σ₁ of a block with at most :data:`DENSE_MAX_ENTRIES` entries comes from
``torch.linalg.matrix_norm(ord=2)`` (a full SVD, float64). Larger blocks use Lanczos on a Gram
matrix ``G`` (``WᵀW``; ``WWᵀ`` for a very wide block or on a GPU, see :func:`_gram_operator`)
with full reorthogonalisation, from a fixed pseudo-random start (``torch.Generator`` seeded with 0, so the same on every run), until
the Ritz residual ``‖G y − θ y‖ ≤ tol · θ``; then σ₁ = sqrt(θ) (the residual bound puts an
eigenvalue of G within ``tol · θ`` of θ, so σ₁ is within ``tol / 2`` relative). float64 weights
(up to :data:`FLOAT64_MAX_ENTRIES` entries) are multiplied in float64 with ``tol`` = 1e-10;
float32 and lower-precision weights in float32 (no copy of the block) with ``tol`` =
1e-5: σ₁ within 5e-6 relative by the bound, ~1e-8 as measured on Gaussian blocks. The basis is
float64 and fully reorthogonalised. Each step costs one product with ``W`` and one with
``Wᵀ`` (on the CPU fused, one pass over memory: :func:`_gram_operator`); Gaussian blocks (the
hard case: clustered top singular values) take ~45 steps at 2000 × 2000, ~80 at 4096 × 4096.

Cost, measured on a shared 2-core machine (one thread, float32 Gaussian MLPs, medians of 3,
noisy): on 1.1e7 edges (2500-2000-2000-1000) the spectral columns take 0.65-1 s next to
0.3-0.7 s for the rest of ``analyse`` (2-3 times the rest: random blocks are the slow case); on 5e7 edges (three 4096 × 4096 blocks) 4.3-5.8 s (~1.6 s per block,
~80 Lanczos steps) next to 1.4-3.1 s; no extra peak memory (half-precision weights are converted to
float32 one row chunk at a time). ``spectral=False`` (CLI ``--no-spectral``) skips them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from .._pages import is_registered, release_pages
from ..errors import ConvergenceWarning, InvalidParameterError, MissingDependencyError

#: Blocks with at most this many entries get a full SVD.
DENSE_MAX_ENTRIES = 1 << 18
#: float64 weights above this many entries are multiplied in float32 too (a float64 copy would be large).
FLOAT64_MAX_ENTRIES = 1 << 22
#: Bytes of the row chunks of the fused CPU Gram product (about an L2 cache).
CHUNK_BYTES = 1 << 21
#: A wide block (n_src > n_dst) is iterated on WᵀW (fused) up to this many columns, on WWᵀ above.
WIDE_FUSED_MAX = 1 << 15
#: Lanczos steps before giving up (a :class:`ConvergenceWarning`; the estimate is then a lower bound).
MAX_STEPS = 400
SPECTRAL_COLUMNS = ("spectral_norm", "stable_rank", "frobenius_norm")
#: ``spectral="auto"`` computes the columns up to this many edges (about 10 s of CPU at 1e8 edges:
#: each large block costs a few dozen products, so a multi-GB checkpoint would be read that many
#: more times); above it they are left out unless asked for with ``spectral=True``.
AUTO_MAX_EDGES = 100_000_000
METHODS = ("auto", "dense", "lanczos")


def resolve_spectral(num_edges: int, spectral: bool | str) -> bool:
    """``spectral`` of :func:`graphnn.analyse`: ``True``/``False`` as given, ``"auto"`` -> on up to
    :data:`AUTO_MAX_EDGES` edges. Anything else raises
    :class:`~graphnn.errors.InvalidParameterError`."""
    if spectral == "auto":
        return num_edges <= AUTO_MAX_EDGES
    if not isinstance(spectral, bool):
        raise InvalidParameterError(f"spectral={spectral!r}: use True, False or 'auto' (on up to "
                                    f"{AUTO_MAX_EDGES:,} edges)")
    return spectral


def spectral_norm(w: torch.Tensor, *, method: str = "auto", tol: float | None = None,
                  max_steps: int = MAX_STEPS, name: str = "matrix") -> float:
    """Largest singular value of the 2-D tensor ``w`` (float). ``method``: ``"dense"``
    (``torch.linalg.matrix_norm(ord=2)``), ``"lanczos"`` (module docstring) or ``"auto"``
    (dense up to :data:`DENSE_MAX_ENTRIES` entries). ``tol``: the Lanczos relative residual
    (default 1e-10 for float64 weights, 1e-5 for others). NaN when ``w`` has NaN/Inf entries."""
    if method not in METHODS:
        raise InvalidParameterError(f"method={method!r}: use one of {', '.join(METHODS)}")
    if w.dim() != 2:
        raise InvalidParameterError(f"{name}: expected a 2-D matrix, got shape {tuple(w.shape)}")
    if w.numel() == 0:
        return 0.0
    if not _all_finite(w):
        return float("nan")
    if min(w.shape) == 1:  # a single row or column: its Euclidean norm, exactly
        return float(torch.linalg.vector_norm(w, dtype=torch.float64))
    if method == "dense" or (method == "auto" and w.numel() <= DENSE_MAX_ENTRIES):
        return float(torch.linalg.matrix_norm(w.to(torch.float64), ord=2))
    return _lanczos_norm(w, tol=tol, max_steps=max_steps, name=name)


def _all_finite(w: torch.Tensor) -> bool:
    """Whether ``w`` has no NaN/Inf: one float64 sum decides (NaN and Inf propagate), an exact
    check only when that sum is not finite (a float64 overflow of finite values)."""
    if math.isfinite(float(w.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(w).all())


def _gram_operator(w: torch.Tensor, dt: torch.dtype) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(x -> G x, dim G)`` in dtype ``dt`` for a Gram matrix with the same nonzero spectrum as
    ``WᵀW``. On the CPU, with ``C`` the orientation of ``W`` whose rows are contiguous in memory
    (``W``, or ``Wᵀ`` for a transposed view such as HF ``Conv1D``'s), ``G = CᵀC`` applied row
    chunk by row chunk (``Σ_chunks Rᵀ (R x)``: each chunk of about :data:`CHUNK_BYTES` is read
    once for both products, from cache the second time; half-precision chunks are converted to
    ``dt`` one at a time, never the whole block), unless ``C`` is so wide (more than
    :data:`WIDE_FUSED_MAX` columns) that its basis vectors would be large: then the two plain
    products of the smaller Gram matrix (of a ``dt`` copy), as on a GPU."""
    if w.device.type == "cpu":
        c = w if w.stride(1) == 1 else (w.T if w.stride(0) == 1 else w.contiguous())
        n, m = c.shape
        if m <= WIDE_FUSED_MAX:
            rows = max(1, CHUNK_BYTES // max(1, m * c.element_size()))

            def fused(x: torch.Tensor) -> torch.Tensor:
                out = torch.zeros(m, dtype=dt)
                for i in range(0, n, rows):
                    r = c[i:i + rows]
                    r = r if r.dtype == dt else r.to(dt)
                    out.addmv_(r.T, r @ x)
                return out

            return fused, m
    a = w if w.dtype == dt else w.to(dt)
    n, m = a.shape
    if n >= m:
        return (lambda x: a.T @ (a @ x)), m
    return (lambda x: a @ (a.T @ x)), n


def _lanczos_norm(w: torch.Tensor, *, tol: float | None, max_steps: int, name: str) -> float:
    dt = torch.float64 if w.dtype == torch.float64 and w.numel() <= FLOAT64_MAX_ENTRIES else torch.float32
    tol = (1e-10 if dt == torch.float64 else 1e-5) if tol is None else float(tol)
    apply, d = _gram_operator(w, dt)
    gen = torch.Generator().manual_seed(0)
    steps = min(max_steps, d)
    basis = torch.zeros(min(steps, 64) + 1, d, dtype=torch.float64, device=w.device)  # grown as needed
    q = torch.randn(d, generator=gen, dtype=torch.float64).to(w.device)
    basis[0] = q / torch.linalg.vector_norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    for j in range(steps):
        z = apply(basis[j].to(dt)).to(torch.float64)
        alphas.append(float(basis[j] @ z))
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            z = z - basis[:j + 1].T @ (basis[:j + 1] @ z)
        beta = float(torch.linalg.vector_norm(z))
        top, vec = _top_ritz(alphas, betas)
        theta = max(top, 0.0)
        if beta * abs(vec) <= tol * theta or beta <= 1e-300 or theta == 0.0:
            return math.sqrt(theta)
        betas.append(beta)
        if j + 1 >= basis.shape[0]:
            basis = torch.cat([basis, torch.zeros_like(basis)])
        basis[j + 1] = z / beta
    if steps < d:
        warnings.warn(f"{name}: the spectral norm did not converge in {steps} Lanczos steps (tolerance {tol:g}); "
                      "the value is a lower bound", ConvergenceWarning, stacklevel=3)
    return math.sqrt(theta)


def _top_ritz(alphas: list[float], betas: list[float]) -> tuple[float, float]:
    """Largest eigenvalue of the Lanczos tridiagonal matrix and the last entry of its unit
    eigenvector (the residual of that Ritz pair is ``beta * |entry|``)."""
    if len(alphas) == 1:
        return alphas[0], 1.0
    from scipy.linalg import eigh_tridiagonal

    k = len(alphas) - 1
    evals, evecs = eigh_tridiagonal(np.asarray(alphas), np.asarray(betas), select="i", select_range=(k, k))
    return float(evals[-1]), float(evecs[-1, -1])


def block_spectrum(w: torch.Tensor, *, method: str = "auto", name: str = "matrix") -> dict[str, float]:
    """``spectral_norm``, ``stable_rank`` and ``frobenius_norm`` of one block's matrix ``w``
    (masked: non-edges already 0); see the module docstring for the definitions. float8 weights
    are read through a float32 copy (exact; torch has no float8 arithmetic)."""
    if w.dtype.is_floating_point and w.element_size() == 1:
        w = w.float()
    fro = float(torch.linalg.vector_norm(w, dtype=torch.float64)) if w.numel() else 0.0
    if not math.isfinite(fro):
        return dict.fromkeys(SPECTRAL_COLUMNS, float("nan"))
    sigma = spectral_norm(w, method=method, name=name) if fro > 0 else 0.0
    return {"spectral_norm": sigma, "stable_rank": (fro / sigma) ** 2 if sigma > 0 else float("nan"),
            "frobenius_norm": fro}


def graph_spectrum(g, *, method: str = "auto") -> pd.DataFrame:
    """:func:`block_spectrum` of every block of ``g``: a frame ``block, param,
    spectral_norm, stable_rank, frobenius_norm`` (the columns :func:`graphnn.analyse` adds to
    its block table)."""
    from ._blocks import masked

    recs = []
    for b in g.blocks.values():
        raw = b.tensor()
        recs.append({"block": b.name, "param": b.param,
                     **block_spectrum(masked(b, b.matrix(tensor=raw)), method=method, name=b.name)})
        release_pages(raw)  # a memory-mapped parameter: the pages the SVD/Lanczos read leave RSS
    return pd.DataFrame(recs, columns=["block", "param", *SPECTRAL_COLUMNS])


# -- WeightWatcher ---------------------------------------------------------------------------------
class _GraphTensors(dict):
    """The graph's mapped parameters as the ``dict`` WeightWatcher reads (``name -> tensor``),
    each tensor read from its block when WeightWatcher asks for it.

    WeightWatcher goes through the layers in order, reading a layer's weight several times
    before it moves on. When it asks for another parameter, the tensors handed out for the
    previous one give back their resident pages (:func:`graphnn._pages.release_pages`: a
    memory-mapped checkpoint does not stay resident; a no-op for tensors in ordinary memory);
    :meth:`release` does so for the last one. Releasing never changes values: a page read again
    is read from the file."""

    def __init__(self, g):
        super().__init__()
        self._blocks = {}
        self._key = None
        self._handed: list[torch.Tensor] = []
        for b in g.blocks.values():
            self._blocks.setdefault(b.param, b)
            dict.__setitem__(self, b.param, None)

    def __getitem__(self, key):
        t = self._blocks[key].tensor()
        if key != self._key:
            self.release()
            self._key = key
        if is_registered(t) and all(h.data_ptr() != t.data_ptr() for h in self._handed):
            self._handed.append(t)  # (heap tensors, e.g. a ΔW block's, are not held: nothing to give back)
        return t.detach().to("cpu")

    def release(self) -> None:
        """Give back the pages of the tensors handed out so far."""
        handed, self._handed = self._handed, []
        for t in handed:
            release_pages(t)

    def values(self):  # pragma: no cover - WeightWatcher reads by key
        return [self[k] for k in self]

    def items(self):  # pragma: no cover
        return [(k, self[k]) for k in self]


@contextlib.contextmanager
def _quiet():
    """WeightWatcher prints its progress on stdout and logs at INFO: keep both off graphnn's
    stdout (where data goes) and its warnings out of the user's."""
    ww_log = logging.getLogger("weightwatcher")
    level = ww_log.level
    ww_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        ww_log.setLevel(level)


def weightwatcher_alpha(source: Any) -> pd.DataFrame:
    """WeightWatcher's per-layer power-law exponent α (``weightwatcher`` package, ``pip install
    'graphnn[weightwatcher]'``), from ``WeightWatcher(model=...).analyze()``: a frame ``param,
    ww_alpha`` with ``param`` the weight's name (``<layer longname>.weight``). ``source``: an
    ``nn.Module``, a state dict, or a :class:`~graphnn.LayeredGraph` (its mapped parameters,
    read one at a time). Layers WeightWatcher skips (too small; names that do not end in
    ``.weight``, such as MHA's ``in_proj_weight`` or 3-D expert tensors) are absent. The fits
    are WeightWatcher's own; graphnn only joins them."""
    try:
        with _quiet():
            import weightwatcher as ww
    except ImportError as e:
        raise MissingDependencyError(
            "the WeightWatcher alpha column needs the weightwatcher package: pip install 'graphnn[weightwatcher]' "
            "(or leave weightwatcher=False)") from e
    from ..graph import LayeredGraph

    model = _GraphTensors(source) if isinstance(source, LayeredGraph) else source
    if isinstance(model, Mapping) and not isinstance(model, dict):
        model = dict(model)
    try:
        with _quiet():
            details = ww.WeightWatcher(model=model).analyze()
    finally:
        if isinstance(model, _GraphTensors):
            model.release()
    if details is None or len(details) == 0 or "alpha" not in details:
        return pd.DataFrame({"param": pd.Series([], dtype=object), "ww_alpha": pd.Series([], dtype="float64")})
    names = details["longname"] if "longname" in details else details["name"]
    return pd.DataFrame({"param": [f"{n}.weight" for n in names.astype(str)],
                         "ww_alpha": details["alpha"].astype("float64").to_numpy()})


def join_weightwatcher(blocks: pd.DataFrame, alphas: pd.DataFrame) -> pd.DataFrame:
    """``blocks`` with a ``ww_alpha`` column joined by ``param`` (NaN where WeightWatcher has
    no value; every block of a split tensor gets the tensor's α)."""
    by_param = dict(zip(alphas["param"], alphas["ww_alpha"]))
    out = blocks.copy()
    out["ww_alpha"] = out["param"].map(by_param).astype("float64")
    return out
