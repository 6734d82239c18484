"""Eigenvector centrality on the |w| adjacency, through the block operator.

The adjacency is ``A = sum over blocks of (B + B^T)`` placed at (dst, src), with ``B = |W|``
(graph-model.md §3): undirected and non-negative (Perron–Frobenius needs non-negative weights,
so signs are dropped). A self-loop (diagonal entry of a block from a partition to itself)
therefore appears as ``2|w|`` on the diagonal, as in ``LayeredGraph.to_scipy()`` and igraph;
``networkx.eigenvector_centrality`` counts a self-loop once, so it differs on such graphs. A is
never materialised: ``(Ax)_l = sum_{blocks into l} |W| x_src + sum_{blocks out of l} |W|^T x_dst``.

The centrality is the eigenvector of the largest *algebraic* eigenvalue (a layered graph is
bipartite, its spectrum is symmetric, so "largest magnitude" would be ambiguous), with
non-negative entries. Solvers: a Lanczos iteration in torch with full reorthogonalisation that
stops as soon as its residual is below ``tol`` (CUDA default; runs anywhere), ARPACK
``eigsh(which="LA")`` on a ``LinearOperator``, or a dense eigendecomposition built from the
same operator for tiny graphs. The CPU default runs one Lanczos cycle (32 products: enough when
the leading eigenvalue is well separated, the usual case) and hands over to ARPACK, started
from the Lanczos estimate, when it is not enough. All start from the all-ones
vector, so when the leading eigenvalue is shared (e.g. two identical disconnected components)
the answer is the normalised projection of the all-ones vector on its eigenspace — the vector
that ``networkx``'s power iteration from its uniform start converges to. On a disconnected graph
the result lives on the component(s) with the largest eigenvalue and is 0 elsewhere (to within
the tolerance).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch

from ..errors import ConvergenceWarning
from ..graph import LayeredGraph
from ._blocks import NodeSpace, Placed, load_abs_blocks, place, resolve_device, resolve_dtype
from .strength import neuron_frame

NORMALISATIONS = ("l2", "max")
SOLVERS = ("auto", "arpack", "lanczos", "dense")
#: Graphs with at most this many neurons use the dense solver under ``solver="auto"``.
DENSE_MAX_NODES = 3
_DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
#: Lanczos steps tried first under ``solver="auto"`` on the CPU before ARPACK takes over.
_FIRST_CYCLE = 32


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual target by matrix precision: 1e-10 (float64), 1e-6 (float32)."""
    return _DEFAULT_TOL[dtype]


class BlockOperator:
    """``x -> A x`` for the symmetric non-negative adjacency of placed blocks; counts calls."""

    def __init__(self, n: int, placed: list[Placed], device: torch.device, dtype: torch.dtype):
        self.n, self.placed, self.device, self.dtype = n, placed, device, dtype
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        xs = x.to(self.device, self.dtype)
        y = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        for p in self.placed:
            b = p.block
            y_dst, y_src = b.matvecs(xs[p.src_off:p.src_off + b.n_src], xs[p.dst_off:p.dst_off + b.n_dst])
            y[p.dst_off:p.dst_off + b.n_dst] += y_dst
            y[p.src_off:p.src_off + b.n_src] += y_src
        return y


def _ones(n: int, device) -> torch.Tensor:
    return torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64, device=device)


def _dense(op: BlockOperator, tol: float):
    """Exact eigenpair from the n x n matrix assembled column by column (tiny graphs only)."""
    a = torch.stack([op(e) for e in torch.eye(op.n, dtype=torch.float64, device=op.device)], 1).cpu()
    a = 0.5 * (a + a.T)
    vals, vecs = torch.linalg.eigh(a)
    top = vals[-1].item()
    space = vecs[:, vals >= top - max(tol, 1e-12) * max(abs(top), 1.0)]
    x = space @ (space.T @ _ones(op.n, "cpu"))  # projection of the all-ones vector
    if x.norm() == 0:
        x = vecs[:, -1]
    return top, x / x.norm(), True


def _arpack(op: BlockOperator, tol: float, max_iter: int, v0: np.ndarray | None = None):
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = op.n
    ncv = min(n, 20)
    lin = LinearOperator((n, n), dtype=np.float64,
                         matvec=lambda v: op(torch.from_numpy(np.ascontiguousarray(v).reshape(-1))).cpu().numpy())
    v0 = np.full(n, 1.0 / math.sqrt(n)) if v0 is None else v0
    try:
        vals, vecs = eigsh(lin, k=1, which="LA", v0=v0, tol=tol, ncv=ncv,
                           maxiter=max(1, math.ceil(max_iter / ncv)))
        return float(vals[0]), torch.from_numpy(vecs[:, 0].copy()), True
    except ArpackNoConvergence as e:
        if e.eigenvectors is not None and e.eigenvectors.shape[1] > 0:
            return float(e.eigenvalues[0]), torch.from_numpy(e.eigenvectors[:, 0].copy()), False
        return None, None, False


def lanczos_top(op, n: int, tol: float, max_iter: int, device, ncv: int = 32):
    """Largest algebraic eigenpair of a symmetric operator by Lanczos with full
    reorthogonalisation, restarted from the Ritz vector every ``ncv`` steps and stopped as soon as
    the Ritz residual ``|beta_j y_j| / theta`` is below ``tol``; starts from the all-ones vector.
    Returns ``(eigenvalue, unit vector, converged, relative residual)``. Device-generic."""
    x = _ones(n, device)
    theta, resid, used = 0.0, math.inf, 0
    while used < max_iter:
        m = max(1, min(ncv, n, max_iter - used))
        basis = torch.zeros(m + 1, n, dtype=torch.float64, device=device)
        basis[0] = x
        alpha, beta = [], []
        for j in range(m):
            w = op(basis[j])
            used += 1
            a = torch.dot(w, basis[j]).item()
            w = w - a * basis[j]
            if j > 0:
                w = w - beta[-1] * basis[j - 1]
            for _ in range(2):  # full reorthogonalisation, twice is enough
                w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
            b = w.norm().item()
            alpha.append(a)
            beta.append(b)
            k = j + 1
            t = np.diag(alpha) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
            vals, vecs = np.linalg.eigh(t)
            theta, y = float(vals[-1]), vecs[:, -1]
            resid = abs(b * y[-1]) / max(abs(theta), 1e-300)
            invariant = b <= 1e-13 * max(abs(theta), max(beta[:-1], default=0.0), 1e-300)
            if resid <= tol or invariant or k == m:
                break
            basis[j + 1] = w / b
        x = torch.from_numpy(y).to(device) @ basis[:k]
        x = x / x.norm()
        if resid <= tol or invariant:
            return theta, x, True, resid
    return theta, x, False, resid


def _finish(x: torch.Tensor, normalise: str) -> np.ndarray:
    """Sign fixed non-negative (rounding noise below 0 clipped), then normalised."""
    x = x.detach().to("cpu", torch.float64)
    if x.sum() < 0:
        x = -x
    x = x.clamp_min(0.0)
    scale = x.norm() if normalise == "l2" else x.max()
    return (x / scale).numpy() if scale > 0 else x.numpy()


def check_options(normalise: str, solver: str, max_iter: int) -> None:
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise={normalise!r}: use 'l2' (unit Euclidean norm, as networkx) or "
                         "'max' (largest entry 1, as igraph)")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}: use one of {', '.join(SOLVERS)}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r}: give a positive number of matrix-vector products")


def leading_eigenvector(n: int, placed: list[Placed], *, normalise: str = "l2", tol: float | None = None,
                        max_iter: int = 10_000, solver: str = "auto", device: torch.device,
                        dtype: torch.dtype) -> tuple[np.ndarray, dict]:
    """The centrality vector (global node order) and its info dict on already loaded blocks."""
    check_options(normalise, solver, max_iter)
    tol = default_tol(dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol={tol!r}: give a positive relative tolerance, e.g. 1e-8")
    op = BlockOperator(n, placed, device, dtype)
    info = {"eigenvalue": 0.0, "iterations": 0, "converged": True, "residual": 0.0,
            "solver": solver, "normalise": normalise}
    total = sum(p.block.total() for p in placed)
    if n == 0:
        return np.zeros(0), info
    if total == 0.0:  # no edge has weight: A = 0, every vector is an eigenvector
        info["solver"] = "none (all weights are 0)"
        return _finish(_ones(n, "cpu"), normalise), info
    if solver == "auto" or (solver == "arpack" and n <= DENSE_MAX_NODES):  # ARPACK needs n > 2
        solver = "dense" if n <= DENSE_MAX_NODES else ("lanczos+arpack" if device.type == "cpu" else "lanczos")
    info["solver"] = solver
    if solver == "lanczos+arpack":  # one cheap Lanczos cycle; ARPACK takes over if it is not enough
        theta, x, ok, _ = lanczos_top(op, n, tol, min(max_iter, _FIRST_CYCLE), device, ncv=_FIRST_CYCLE)
        if ok:
            info["solver"] = "lanczos"
        elif op.calls < max_iter:
            t2, x2, ok = _arpack(op, tol, max_iter - op.calls, v0=x.cpu().numpy())
            info["solver"] = "lanczos+arpack"
            if x2 is not None:
                theta, x = t2, x2
    elif solver == "dense":
        theta, x, ok = _dense(op, tol)
    elif solver == "arpack":
        theta, x, ok = _arpack(op, tol, max_iter)
        if x is None:  # ARPACK gave nothing back: take the Lanczos estimate with the same budget
            theta, x, ok, _ = lanczos_top(op, n, tol, max_iter, device)
    else:
        theta, x, ok, _ = lanczos_top(op, n, tol, max_iter, device)
    iterations = op.calls
    x = x.to(device, torch.float64)
    resid = ((op(x) - theta * x).norm() / max(abs(theta), 1e-300)).item()
    info.update(eigenvalue=float(theta), iterations=int(iterations), converged=bool(ok), residual=resid)
    if not ok:
        warnings.warn(
            f"eigenvector centrality did not converge within max_iter={max_iter} matrix-vector "
            f"products (relative residual {resid:.2e} > tol={tol:g}); the result is an estimate. "
            "Raise max_iter, loosen tol, or use dtype=torch.float64; slow convergence means the "
            "leading eigenvalue is (nearly) shared, e.g. by disconnected parts of equal strength",
            ConvergenceWarning, stacklevel=3)
    return _finish(x, normalise), info


def eigenvector_centrality(
    g: LayeredGraph,
    normalise: str = "l2",
    tol: float | None = None,
    max_iter: int = 10_000,
    device: str | torch.device = "auto",
    *,
    solver: str = "auto",
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Eigenvector centrality of every neuron on the |w| adjacency (see the module docstring).

    Returns a DataFrame ``layer, neuron, centrality`` (non-negative; unit Euclidean norm for
    ``normalise="l2"`` as networkx, largest entry 1 for ``"max"`` as igraph). ``df.attrs``
    carries ``eigenvalue`` (of A, in weight units), ``iterations`` (matrix-vector products
    used), ``converged``, ``residual`` (``|Ax - λx| / λ``), ``solver`` and ``normalise``.

    ``tol``: relative residual target (default 1e-10 with float64 matrices, 1e-6 with
    float32); ``max_iter``: budget of matrix-vector products (ARPACK rounds it to whole
    restarts); ``solver``: ``"auto"`` (dense for tiny graphs; on the CPU a Lanczos cycle, then
    ARPACK if needed; Lanczos on CUDA), ``"arpack"``, ``"lanczos"`` or ``"dense"``;
    ``dtype``: precision of the |w| copies
    (``None``: float64 up to 4M edges, float32 above). Not converging is a
    :class:`~graphnn.errors.ConvergenceWarning`, never a silent answer.
    """
    check_options(normalise, solver, max_iter)
    dev = resolve_device(device)
    dt = resolve_dtype(g.num_edges, dtype)
    blocks = load_abs_blocks(g, dtype=dt, device=dev)
    space = NodeSpace.of_graph(g)
    x, info = leading_eigenvector(space.n, place(space, blocks), normalise=normalise, tol=tol,
                                  max_iter=max_iter, solver=solver, device=dev, dtype=dt)
    df = neuron_frame(g, {"centrality": x})
    df.attrs.update(info)
    return df
