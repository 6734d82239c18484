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
from the Lanczos estimate, when it is not enough. Each connected component is solved on its own
(its top eigenvector is unique, Perron–Frobenius), started from its all-ones vector, so the
answer does not depend on the solver; Lanczos takes its first product, ``A`` times that vector
(the component's |w| strengths), from the exact sums instead of computing it. When the
leading eigenvalue is shared by several components (e.g. two identical disconnected parts) the
answer is the normalised projection of the all-ones vector on their eigenspace — the vector
that ``networkx``'s power iteration from its uniform start converges to. On a disconnected graph the result lives on the component(s) with the
largest eigenvalue and is 0 elsewhere.

Cost (CPU): each product reads every block once from memory (both ``|W| x`` and ``|W|^T y``
from one cache-sized chunk, see :meth:`AbsBlock.accumulate`); besides the products there is one
pass for the exact sums and the zero-free lines (components), fused with making the |W| copy
on small graphs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch

from .._pages import release_pages
from ..errors import ConvergenceWarning, DisconnectedGraphWarning
from ..graph import LayeredGraph
from ..validation import check_bool, check_choice, check_number
from ._blocks import NodeSpace, Placed, load_abs_blocks, place, resolve_device, resolve_dtype
from .components import component_labels, index_map
from .strength import neuron_frame

NORMALISATIONS = ("l2", "max")
SOLVERS = ("auto", "arpack", "lanczos", "dense")
#: Components of at most this many neurons are solved densely by every solver (ARPACK needs > 2).
DENSE_MAX_NODES = 3
#: Under ``solver="auto"``, components of at most this many neurons are solved densely.
DENSE_COMPONENT_MAX = 64
_DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
#: Lanczos steps tried first under ``solver="auto"`` on the CPU before ARPACK takes over.
_FIRST_CYCLE = 32


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual target by matrix precision: 1e-10 (float64), 1e-6 (float32)."""
    return _DEFAULT_TOL[dtype]


class BlockOperator:
    """``x -> A x`` for the symmetric non-negative adjacency of placed blocks; counts calls.

    ``x`` is copied into one reused vector of the compute dtype and every block adds its two
    products into one reused float64 vector through views made once (no per-block slicing or
    temporaries per call); the result is a fresh float64 vector."""

    def __init__(self, n: int, placed: list[Placed], device: torch.device, dtype: torch.dtype):
        self.n, self.placed, self.device, self.dtype = n, placed, device, dtype
        self.calls = 0
        self._plan = None

    def _make_plan(self) -> None:
        self._x = torch.empty(self.n, dtype=self.dtype, device=self.device)
        self._y = torch.empty(self.n, dtype=torch.float64, device=self.device)
        self._plan = []
        for p in self.placed:
            b = p.block
            src, dst = slice(p.src_off, p.src_off + b.n_src), slice(p.dst_off, p.dst_off + b.n_dst)
            views = (self._x[src], self._x[dst], self._y[dst], self._y[src])
            steps = b.product_steps(*views) if hasattr(b, "product_steps") else None
            self._plan += steps if steps is not None else [(b.accumulate, views)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self._plan is None:
            self._make_plan()
        self._x.copy_(x.reshape(-1))
        self._y.zero_()
        for step, args in self._plan:
            step(*args)
        return self._y.clone()


def _ones(n: int, device) -> torch.Tensor:
    return torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64, device=device)


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


#: Lanczos keeps the operator's outputs ``A v_j`` of a cycle (to give ``A x`` of its Ritz vector
#: without one more product) while they take at most this many bytes.
KEEP_PRODUCTS_BYTES = 1 << 28


def lanczos_top(op, n: int, tol: float, max_iter: int, device, ncv: int = 32, x0: torch.Tensor | None = None,
                first_product: torch.Tensor | None = None):
    """Largest algebraic eigenpair of a symmetric operator by Lanczos with full
    reorthogonalisation, restarted from the Ritz vector every ``ncv`` steps and stopped as soon as
    the Ritz residual ``|beta_j y_j| / theta`` is below ``tol``; starts from ``x0`` (unit norm;
    default the all-ones vector); ``first_product``, when given, is ``op(x0)`` already known
    (e.g. a strength vector: ``A`` times the all-ones vector), so the first step costs no product.
    Returns ``(eigenvalue, unit vector x, converged, relative
    residual, A x)``: ``A x`` is the same combination of the operator's own outputs as ``x`` of
    the basis (no extra product), or ``None`` when keeping them would take more than
    ``KEEP_PRODUCTS_BYTES``. Device-generic."""
    x = _ones(n, device) if x0 is None else x0.to(device, torch.float64)
    theta, resid, used, ax = 0.0, math.inf, 0, None
    while used < max_iter:
        m = max(1, min(ncv, n, max_iter - used))
        basis = torch.zeros(m + 1, n, dtype=torch.float64, device=device)
        prods = torch.empty(m, n, dtype=torch.float64, device=device) if m * n * 8 <= KEEP_PRODUCTS_BYTES else None
        basis[0] = x
        alpha, beta = [], []
        for j in range(m):
            if first_product is not None:  # known: no product
                w, first_product = first_product.to(device, torch.float64).clone(), None
            else:
                w = op(basis[j])
                used += 1
            if prods is not None:
                prods[j] = w
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
        yt = torch.from_numpy(y).to(device)
        x = yt @ basis[:k]
        norm = x.norm()
        x = x / norm
        ax = None if prods is None else (yt @ prods[:k]) / norm
        if resid <= tol or invariant:
            return theta, x, True, resid, ax
    return theta, x, False, resid, ax


def _finish(x: torch.Tensor, normalise: str) -> np.ndarray:
    """Sign fixed non-negative (rounding noise below 0 clipped), then normalised."""
    x = x.detach().to("cpu", torch.float64)
    if x.sum() < 0:
        x = -x
    x = x.clamp_min(0.0)
    scale = x.norm() if normalise == "l2" else x.max()
    return (x / scale).numpy() if scale > 0 else x.numpy()


def check_options(normalise: str, solver: str, max_iter: int, tol: float | None = None,
                  per_component: bool = False) -> None:
    """Usage errors (:class:`~graphnn.errors.InvalidParameterError`) for bad centrality options:
    ``normalise`` 'l2' (unit Euclidean norm, as networkx) or 'max' (largest entry 1, as igraph)."""
    check_choice("normalise", normalise, NORMALISATIONS)
    check_choice("solver", solver, SOLVERS)
    check_number("max_iter", max_iter, integer=True, positive=True)
    check_number("tol", tol, positive=True, allow_none=True)
    check_bool("per_component", per_component)


class _Restricted:
    """The operator restricted to the neurons of one component and divided by ``scale``:
    ``x -> m * A (m * x) / scale`` (eigenvalues of order 1 whatever the weights' scale, so that
    no norm of a solver under- or overflows)."""

    def __init__(self, op: BlockOperator, mask: torch.Tensor, scale: float = 1.0):
        self.op, self.n = op, op.n
        self.mask, self.out_mask = mask, mask / scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x.to(self.mask.device, torch.float64) * self.mask) * self.out_mask


def _small_matrices(placed: list[Placed], n: int, comps: list[np.ndarray]) -> list[np.ndarray]:
    """The dense |w| adjacency of each component in ``comps`` (node arrays), gathered from the
    blocks in one pass: ``A = B + B^T`` with ``B[dst, src] = |W|`` (parallel edges summed)."""
    which = np.full(n, -1, dtype=np.int64)
    pos = np.zeros(n, dtype=np.int64)
    for k, nodes in enumerate(comps):
        which[nodes] = k
        pos[nodes] = np.arange(len(nodes))
    mats = [np.zeros((len(c), len(c))) for c in comps]
    for p in placed:
        rg, cg = index_map(p, "dst"), index_map(p, "src")
        ri, ci = np.nonzero(which[rg] >= 0)[0], np.nonzero(which[cg] >= 0)[0]
        if not len(ri) or not len(ci):
            continue
        dev = p.block.device
        cols = torch.as_tensor(ci, device=dev)
        step = max(1, (1 << 18) // len(ci))
        for i in range(0, len(ri), step):
            r = ri[i:i + step]
            sub = p.block.rows(torch.as_tensor(r, device=dev)).index_select(1, cols)
            sub = sub.to(torch.float64).cpu().numpy()
            same = which[rg[r]][:, None] == which[cg[ci]][None, :]  # other pairs are 0 anyway
            a, b = np.nonzero(same & (sub != 0))
            for k in np.unique(which[rg[r[a]]]):
                sel = which[rg[r[a]]] == k
                np.add.at(mats[k], (pos[rg[r[a[sel]]]], pos[cg[ci[b[sel]]]]), sub[a[sel], b[sel]])
        release_pages(getattr(p.block, "w", None))  # rows read from a memory-mapped matrix
    return [m + m.T for m in mats]


def _dense_perron(a: np.ndarray) -> tuple[float, np.ndarray]:
    """Top eigenpair of a small symmetric non-negative matrix of a connected graph."""
    vals, vecs = np.linalg.eigh(a)
    x = vecs[:, -1]
    return float(vals[-1]), (-x if x.sum() < 0 else x)


def _iterative_perron(op: BlockOperator, nodes: np.ndarray, solver: str, tol: float, max_iter: int,
                      device: torch.device, strength: np.ndarray):
    """Top eigenpair of one component by Lanczos and/or ARPACK, started from the component's
    all-ones vector; Lanczos takes its first product, ``A`` times that vector, from ``strength``
    (the component's exact |w| strengths) instead of computing it. Returns ``(eigenvalue, unit
    vector on nodes, converged, solver used, A x on nodes or None)``."""
    idx = torch.as_tensor(nodes, device=device)
    mask = torch.zeros(op.n, dtype=torch.float64, device=device)
    mask[idx] = 1.0
    x0 = mask / math.sqrt(len(nodes))
    first = torch.zeros(op.n, dtype=torch.float64, device=device)
    first[idx] = torch.as_tensor(strength, dtype=torch.float64, device=device)
    scale = float(first.max())  # the largest strength: an upper bound on the eigenvalue
    first = first / (scale * math.sqrt(len(nodes)))  # A x0 for the operator A / scale
    sub = _Restricted(op, mask, scale)
    budget = max(1, max_iter)
    ax = None
    if solver == "lanczos+arpack":  # one cheap Lanczos cycle; ARPACK takes over if it is not enough
        start_calls = op.calls
        theta, x, ok, _, ax = lanczos_top(sub, op.n, tol, min(budget, _FIRST_CYCLE), device, ncv=_FIRST_CYCLE,
                                          x0=x0, first_product=first)
        used = "lanczos"
        spent = op.calls - start_calls
        if not ok and spent < budget:
            t2, x2, ok = _arpack(sub, tol, budget - spent, v0=x.cpu().numpy())
            used = "lanczos+arpack"
            if x2 is not None:
                theta, x, ax = t2, x2, None
    elif solver == "arpack":
        theta, x, ok = _arpack(sub, tol, budget, v0=x0.cpu().numpy())
        used = "arpack"
        if x is None:  # ARPACK gave nothing back: take the Lanczos estimate with the same budget
            theta, x, ok, _, ax = lanczos_top(sub, op.n, tol, budget, device, x0=x0, first_product=first)
    else:
        theta, x, ok, _, ax = lanczos_top(sub, op.n, tol, budget, device, x0=x0, first_product=first)
        used = "lanczos"
    x = x.to(device, torch.float64)[idx]
    ax = None if ax is None else ax.to(device, torch.float64)[idx] * scale
    unit = x.norm() * (-1 if x.sum() < 0 else 1)
    return float(theta) * scale, x / unit, ok, used, (None if ax is None else ax / unit)


def leading_eigenvector(n: int, placed: list[Placed], *, normalise: str = "l2", tol: float | None = None,
                        max_iter: int = 10_000, solver: str = "auto", device: torch.device,
                        dtype: torch.dtype, per_component: bool = False) -> tuple[np.ndarray, dict]:
    """The centrality vector (global node order) and its info dict on already loaded blocks
    (see :func:`component_eigenvectors`)."""
    check_options(normalise, solver, max_iter, tol, per_component)
    tol = default_tol(dtype) if tol is None else float(tol)
    op = BlockOperator(n, placed, device, dtype)
    if n == 0:
        return np.zeros(0), _info(solver, normalise, per_component)
    total = sum(p.block.total() for p in placed)
    strength = torch.zeros(n, dtype=torch.float64)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        strength.index_add_(0, torch.from_numpy(index_map(p, "dst")), dst_sums.cpu().to(torch.float64))
        strength.index_add_(0, torch.from_numpy(index_map(p, "src")), src_sums.cpu().to(torch.float64))
    return component_eigenvectors(
        op, component_labels(n, placed), strength.numpy(), total=total, normalise=normalise, tol=tol,
        max_iter=max_iter, solver=solver, device=device, per_component=per_component,
        small_matrices=lambda comps: _small_matrices(placed, n, comps))


def _info(solver: str, normalise: str, per_component: bool) -> dict:
    return {"eigenvalue": 0.0, "iterations": 0, "converged": True, "residual": 0.0,
            "solver": solver, "normalise": normalise, "per_component": bool(per_component)}


def component_eigenvectors(op, labels: np.ndarray, strength: np.ndarray, *, total: float, normalise: str,
                           tol: float, max_iter: int, solver: str, device: torch.device, per_component: bool,
                           small_matrices=None) -> tuple[np.ndarray, dict]:
    """The centrality vector from an operator ``op`` (``x -> A x``, counting ``op.calls``), the
    component ``labels`` of its nodes, their |w| ``strength`` and the sum of all |w| ``total``.

    Each component's top eigenvector is unique (Perron–Frobenius) and solved on its own, started
    from its all-ones vector, so no solver can mix the components of a shared eigenvalue
    differently. A component whose largest strength (an upper bound on its eigenvalue) is below
    the largest mean strength of any component (a lower bound on the top eigenvalue) cannot hold
    the top eigenvalue and is skipped unless ``per_component``. ``small_matrices(list of node
    arrays)`` gives small components' dense adjacencies (solved by ``eigh``); without it every
    component is solved iteratively. Used by one process and by :mod:`graphnn.distributed`."""
    n = len(labels)
    info = _info(solver, normalise, per_component)
    sizes = np.bincount(labels)
    info.update(components=int(len(sizes)), largest_components=sorted(sizes.tolist(), reverse=True)[:10])
    if total == 0.0:  # no edge has weight: A = 0, every vector is an eigenvector
        info["solver"] = "none (all weights are 0)"
        return _finish(_ones(n, "cpu"), normalise), info
    bound = np.zeros(len(sizes))  # largest strength: an upper bound on the component's eigenvalue
    np.maximum.at(bound, labels, strength)
    lower = np.bincount(labels, weights=strength) / sizes  # Rayleigh quotient of its ones vector
    order = np.argsort(labels, kind="stable")
    members = np.split(order, np.cumsum(sizes)[:-1])
    tie = max(2 * tol, 1e-12)
    floor = 0.0 if per_component else lower.max() * (1 - tie)  # no eigenvalue below it can be the top
    candidates = [int(c) for c in np.flatnonzero((bound > 0) & (bound >= floor))]

    small_max = {"auto": DENSE_COMPONENT_MAX, "dense": n}.get(solver, DENSE_MAX_NODES)
    iterative = "lanczos+arpack" if solver == "auto" and device.type == "cpu" else (
        "lanczos" if solver == "auto" else solver)
    # component -> (eigenvalue, unit vector on its nodes, converged, A times that vector or None)
    solved: dict[int, tuple[float, torch.Tensor, bool, torch.Tensor | None]] = {}
    used: set[str] = set()
    small = [c for c in candidates if sizes[c] <= small_max] if small_matrices is not None else []
    for c, a in zip(small, small_matrices([members[c] for c in small]) if small else []):
        theta, x = _dense_perron(a)
        solved[c] = (theta, torch.from_numpy(x), True, torch.from_numpy(a @ x))
        used.add("dense")
    for c in candidates:
        if c not in solved:
            theta, x, ok, how, ax = _iterative_perron(op, members[c], iterative, tol, max(1, max_iter - op.calls),
                                                      device, strength[members[c]])
            solved[c] = (theta, x.cpu(), ok, None if ax is None else ax.cpu())
            used.add(how)
    best = max(v[0] for v in solved.values())

    x = torch.zeros(n, dtype=torch.float64)
    ok = all(v[2] for v in solved.values())
    tied = [c for c, v in solved.items() if v[0] >= best - tie * abs(best)]
    if per_component:
        comp_values = np.zeros(len(sizes))
        for c, (theta, u, _, _) in solved.items():
            x[torch.from_numpy(members[c])] = torch.as_tensor(_finish(u, normalise))
            comp_values[c] = theta
        info["component_eigenvalues"] = comp_values.tolist()
        resid = max(_residual(op, [(members[c], 1.0, u, au)], th, n, device) for c, (th, u, _, au) in solved.items())
    else:
        parts = []
        for c in tied:  # projection of the all-ones vector on the shared top eigenspace
            u, au = solved[c][1], solved[c][3]
            norm = u.clamp_min(0.0).norm()
            u, au = u / norm, (None if au is None else au / norm)
            coef = float(u.clamp_min(0.0).sum())
            x[torch.from_numpy(members[c])] += coef * u.clamp_min(0.0)
            parts.append((members[c], coef, u, au))
        resid = _residual(op, parts, best, n, device)
    info.update(eigenvalue=float(best), iterations=int(op.calls), converged=bool(ok), residual=resid,
                solver="+".join(sorted(used)) if solver == "auto" else solver,
                tied_components=len(tied))
    if solver == "auto" and used <= {"lanczos", "lanczos+arpack"}:
        info["solver"] = "lanczos+arpack" if "lanczos+arpack" in used else "lanczos"
    if not ok:
        warnings.warn(
            f"eigenvector centrality did not converge within max_iter={max_iter} matrix-vector "
            f"products (relative residual {resid:.2e} > tol={tol:g}); the result is an estimate. "
            "Raise max_iter, loosen tol, or use dtype=torch.float64; slow convergence means the "
            "leading eigenvalue is (nearly) shared, e.g. by disconnected parts of equal strength",
            ConvergenceWarning, stacklevel=4)
    outside = n - sum(int(sizes[c]) for c in tied)
    if not per_component and len(sizes) > 1 and outside > n / 2:
        listed = ", ".join(str(s) for s in info["largest_components"])
        warnings.warn(
            f"the graph falls apart into {len(sizes)} connected components (largest sizes: {listed}); "
            f"eigenvector centrality lives on the {len(tied)} component(s) with the largest eigenvalue, "
            f"so {outside} of {n} neurons get 0. Pass per_component=True to normalise each component "
            "on its own, or select one part with include=/exclude=", DisconnectedGraphWarning, stacklevel=4)
    return (x.numpy() if per_component else _finish(x, normalise)), info


def _residual(op, parts: list, theta: float, n: int, device) -> float:
    """Relative residual ``|A x - theta x| / (theta |x|)`` of the returned vector ``x = sum of
    coef * max(u, 0)`` over ``parts`` (``(nodes, coef, u, A u or None)``, one per component).

    ``A u`` is combined from the solvers' own products when every part has them (no product
    here); rounding noise below 0 that the result clips is then accounted for by the bound
    ``|A d| <= theta |d|`` for the clipped part ``d`` (the top eigenvalue of a non-negative
    symmetric matrix is its norm), so the figure is exact or a slight over-estimate. Otherwise
    it costs one product."""
    xc = torch.zeros(n, dtype=torch.float64)
    for nodes, coef, u, _ in parts:
        xc[torch.from_numpy(nodes)] += coef * u.clamp_min(0.0)
    norm = xc.norm()
    if norm == 0:
        return 0.0
    scale = max(abs(theta), 1e-300)
    if any(au is None for *_, au in parts):
        return ((op((xc / norm).to(device)).cpu() - theta * xc / norm).norm() / scale).item()
    r = torch.zeros(n, dtype=torch.float64)
    clipped = 0.0
    for nodes, coef, u, au in parts:
        r[torch.from_numpy(nodes)] += coef * (au - theta * u)
        clipped += float((coef * (u - u.clamp_min(0.0))).norm()) ** 2
    return (float(r.norm()) + 2 * scale * math.sqrt(clipped)) / (float(norm) * scale)


def eigenvector_centrality(
    g: LayeredGraph,
    normalise: str = "l2",
    tol: float | None = None,
    max_iter: int = 10_000,
    device: str | torch.device = "auto",
    *,
    solver: str = "auto",
    dtype: torch.dtype | None = None,
    per_component: bool = False,
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

    Disconnected graphs: the vector lives on the connected component(s) with the largest
    eigenvalue (components whose eigenvalues agree to within ``2 * tol`` share it, weighted as
    networkx's power iteration from the uniform start weights them) and is 0 elsewhere; when
    that leaves most neurons at 0 a :class:`~graphnn.errors.DisconnectedGraphWarning` says so.
    ``per_component=True`` instead normalises each component's own top eigenvector on its own
    (neurons without edges get 0) and adds a ``component`` column (components numbered by their
    first neuron); ``df.attrs["component_eigenvalues"]`` lists each component's eigenvalue.
    ``df.attrs`` also carries ``components`` (their number), ``largest_components`` (sizes)
    and ``tied_components`` (how many share the top eigenvalue).

    Examples
    --------
    >>> import torch, graphnn
    >>> w = torch.ones(2, 2)
    >>> g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 2, "c": 2, "d": 2},
    ...                                        {"x": ("a", "b", w), "y": ("c", "d", 2 * w)})
    >>> graphnn.eigenvector_centrality(g)["centrality"].round(3).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    >>> graphnn.eigenvector_centrality(g, per_component=True)["centrality"].round(3).tolist()
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    """
    check_options(normalise, solver, max_iter, tol, per_component)
    dev = resolve_device(device)
    dt = resolve_dtype(g.num_edges, dtype)
    blocks = load_abs_blocks(g, dtype=dt, device=dev)
    space = NodeSpace.of_graph(g)
    placed = place(space, blocks)
    x, info = leading_eigenvector(space.n, placed, normalise=normalise, tol=tol, max_iter=max_iter,
                                  solver=solver, device=dev, dtype=dt, per_component=per_component)
    columns = {"centrality": x}
    if per_component:
        columns["component"] = component_labels(space.n, placed)
    df = neuron_frame(g, columns)
    df.attrs.update(info)
    return df
