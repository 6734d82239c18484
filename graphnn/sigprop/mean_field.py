"""Mean-field signal propagation of wide random networks (Poole et al. 2016; Schoenholz et al. 2017).

A layer ``h^l = W^l φ(h^{l-1}) + b^l`` with i.i.d. weights of variance ``σ_w² / fan_in`` and biases
of variance ``σ_b²`` maps the pre-activation second moment ``q`` (mean of ``h_i²`` over units) and the
correlation ``c`` of two inputs' pre-activations as

* length map       ``q ↦ σ_w² ∫Dz φ(√q z)² + σ_b²``                  (fixed point ``q*``)
* correlation map  ``c ↦ (σ_w² ∫Dz₁Dz₂ φ(u₁)φ(u₂) + σ_b²) / q*``,
  ``u₁ = √q* z₁``, ``u₂ = √q* (c z₁ + √(1-c²) z₂)``                   (fixed point ``c*``)
* ``χ₁ = σ_w² ∫Dz φ'(√q* z)²``: the slope of the correlation map at ``c = 1`` and the mean squared
  singular value of the layer Jacobian ``∂h^{l+1}/∂h^l`` (per unit). ``χ₁ < 1``: ordered (inputs
  converge), ``= 1``: critical (edge of chaos), ``> 1``: chaotic (nearby inputs decorrelate).
* ``χ_c = σ_w² ∫Dz₁Dz₂ φ'(u₁)φ'(u₂)`` at the stable fixed point ``c*`` (1 when ``χ₁ ≤ 1``); depth scales ``ξ_c = -1/ln χ_c`` and
  ``ξ_q = -1/ln(dq_map/dq at q*)``, where by Stein's lemma
  ``dq_map/dq = σ_w² ∫Dz φ(√q z) φ'(√q z) z / √q`` (= ``χ₁ + σ_w² ∫Dz φφ''``, Schoenholz et al.'s form,
  without needing ``φ''``). An infinite depth scale means critical (no exponential decay).

``∫Dz`` is the standard Gaussian measure. Smooth activations (tanh, erf, GELU, SiLU, sigmoid) are
integrated by Gauss–Hermite quadrature (``n`` nodes per dimension, tensor product in 2-D).
Positively homogeneous piecewise-linear ones (ReLU, LeakyReLU, identity) have a kink at 0 where
Gauss–Hermite converges slowly in 2-D; for them the 1-D integrals use Gauss–Hermite with an even
number of nodes (exact: the integrands are ``z²`` or a constant on each half-line, and the nodes
are symmetric), and the 2-D integrals use polar coordinates: ``E[f(r a(θ)) g(r b(θ))] =
E[r²] · (1/2π) ∫ f(a(θ)) g(b(θ)) dθ`` for degree-1 homogeneous ``f, g`` (degree 0 for ``φ'``),
with Gauss–Legendre on the arcs between the zero crossings, which is exact to rounding.
The closed forms of ReLU (arc-cosine kernel, Cho & Saul 2009) and erf (Williams 1997) are in
:func:`closed_form` as oracles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..errors import InvalidParameterError

#: Default number of Gauss–Hermite nodes per dimension.
NODES = 200
#: |χ₁ − 1| ≤ this (relative) counts as critical.
CRITICAL_TOL = 0.05
_SQRT_PI = math.sqrt(math.pi)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation for the mean-field maps. ``homogeneous``: positively
    homogeneous of degree 1 with a kink at 0 only (``φ(a u) = a φ(u)`` for ``a > 0``)."""

    name: str
    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray], np.ndarray]
    homogeneous: bool = False


def _erf(u):
    from scipy.special import erf  # lazy: ``import graphnn`` does not pay for scipy

    return erf(u)


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _gelu(u):
    return 0.5 * u * (1.0 + _erf(u / math.sqrt(2.0)))


def _dgelu(u):
    return 0.5 * (1.0 + _erf(u / math.sqrt(2.0))) + u * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _leaky(slope: float) -> Activation:
    return Activation(f"leaky_relu({slope:g})", lambda u: np.where(u > 0, u, slope * u),
                      lambda u: np.where(u > 0, 1.0, slope), homogeneous=True)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float), homogeneous=True),
    "identity": Activation("identity", lambda u: u, lambda u: np.ones_like(u), homogeneous=True),
    "tanh": Activation("tanh", np.tanh, lambda u: 1.0 / np.cosh(u) ** 2),
    "erf": Activation("erf", _erf, lambda u: 2.0 / _SQRT_PI * np.exp(-u * u)),
    "gelu": Activation("gelu", _gelu, _dgelu),
    "silu": Activation("silu", lambda u: u * _sigmoid(u), lambda u: _sigmoid(u) * (1 + u * (1 - _sigmoid(u)))),
    "sigmoid": Activation("sigmoid", _sigmoid, lambda u: _sigmoid(u) * (1 - _sigmoid(u))),
}


def activation(name: str | Activation) -> Activation:
    """The :class:`Activation` called ``name``: one of :data:`ACTIVATIONS` or
    ``"leaky_relu(<slope>)"`` (``"leaky_relu"`` alone: slope 0.01, PyTorch's default)."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise InvalidParameterError(f"activation must be a name such as 'relu' or 'tanh', not {name!r}")
    key = name.strip().lower()
    if key in ACTIVATIONS:
        return ACTIVATIONS[key]
    if key.startswith("leaky_relu"):
        rest = key[len("leaky_relu"):].strip("() ")
        try:
            return _leaky(float(rest) if rest else 0.01)
        except ValueError:
            pass
    raise InvalidParameterError(
        f"unknown activation {name!r}: use one of {', '.join(sorted(ACTIVATIONS))} or 'leaky_relu(0.01)'")


# -- quadrature -------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``z`` and weights ``w`` with ``Σ w f(z) ≈ ∫Dz f(z)`` (standard normal)."""
    x, w = np.polynomial.hermite.hermgauss(n)
    return math.sqrt(2.0) * x, w / _SQRT_PI


@lru_cache(maxsize=16)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def gauss_1d(f: Callable[[np.ndarray], np.ndarray], n: int = NODES) -> float:
    """``∫Dz f(z)`` by ``n``-node Gauss–Hermite quadrature."""
    z, w = _hermite(n)
    return float(np.dot(w, f(z)))


def _even(n: int) -> int:
    return n + (n % 2)


def _polar_2d(f, g, c: float, degree: int, n: int) -> float:
    """``E[f(z₁) g(c z₁ + s z₂)]`` for positively homogeneous ``f, g`` of total degree
    ``degree`` (0 or 2) with kinks at 0: ``E[r^degree] (1/2π) ∫ f(cos θ) g(cos(θ - α)) dθ`` where
    ``cos α = c``; Gauss–Legendre on the arcs between the zeros of ``cos θ`` and ``cos(θ - α)``."""
    alpha = math.acos(max(-1.0, min(1.0, c)))
    cuts = sorted({(k * math.pi / 2 + shift) % (2 * math.pi) for k in (1, 3) for shift in (0.0, alpha)})
    edges = [0.0] + cuts + [2 * math.pi]
    x, w = _legendre(n)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        if b - a < 1e-15:
            continue
        th = 0.5 * (b - a) * x + 0.5 * (a + b)
        total += 0.5 * (b - a) * float(np.dot(w, f(np.cos(th)) * g(np.cos(th - alpha))))
    radial = 2.0 if degree == 2 else 1.0  # E[r²] = 2, E[r⁰] = 1 for a 2-D standard normal
    return radial * total / (2 * math.pi)


def _gauss_2d(f, g, q: float, c: float, n: int) -> float:
    z, w = _hermite(n)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    u1 = math.sqrt(q) * z[:, None]
    u2 = math.sqrt(q) * (c * z[:, None] + s * z[None, :])
    return float(w @ (f(u1) * g(u2)) @ w)


def second_moment(act: str | Activation, q: float, n: int = NODES) -> float:
    """``∫Dz φ(√q z)²``."""
    a = activation(act)
    n = _even(n) if a.homogeneous else n
    return gauss_1d(lambda z: a.phi(math.sqrt(q) * z) ** 2, n)


def derivative_moment(act: str | Activation, q: float, n: int = NODES) -> float:
    """``∫Dz φ'(√q z)²``."""
    a = activation(act)
    n = _even(n) if a.homogeneous else n
    return gauss_1d(lambda z: a.dphi(math.sqrt(q) * z) ** 2, n)


def cross_moment(act: str | Activation, q: float, c: float, n: int = NODES, derivative: bool = False) -> float:
    """``∫Dz₁Dz₂ φ(u₁)φ(u₂)`` (``derivative=True``: ``φ'(u₁)φ'(u₂)``) with ``u₁, u₂`` of variance
    ``q`` and correlation ``c``."""
    a = activation(act)
    f = a.dphi if derivative else a.phi
    if a.homogeneous:
        scale = 1.0 if derivative else q  # φ(√q x) = √q φ(x): two factors give q; φ' is scale free
        return scale * _polar_2d(f, f, c, 0 if derivative else 2, max(n, 16))
    return _gauss_2d(f, f, q, c, n)


# -- maps and fixed points ----------------------------------------------------------------------
def length_map(act, sigma_w2: float, sigma_b2: float, q: float, n: int = NODES) -> float:
    """``σ_w² ∫Dz φ(√q z)² + σ_b²``."""
    return sigma_w2 * second_moment(act, q, n) + sigma_b2


def length_map_slope(act, sigma_w2: float, q: float, n: int = NODES) -> float:
    """``d(length map)/dq = σ_w² ∫Dz φ(√q z) φ'(√q z) z / √q`` (Stein's lemma form); at ``q = 0``
    the limit ``σ_w² φ'(0)²``."""
    a = activation(act)
    if q <= 0:
        return sigma_w2 * float(a.dphi(np.array([0.0]))[0]) ** 2
    r = math.sqrt(q)
    nn_ = _even(n) if a.homogeneous else n
    return sigma_w2 * gauss_1d(lambda z: a.phi(r * z) * a.dphi(r * z) * z, nn_) / r


def correlation_map(act, sigma_w2: float, sigma_b2: float, q_star: float, c: float, n: int = NODES) -> float:
    """``(σ_w² ∫Dz₁Dz₂ φ(u₁)φ(u₂) + σ_b²) / q'`` where ``q' = σ_w² ∫Dz φ(√q* z)² + σ_b²`` is the
    length map at ``q*`` (equal to ``q*`` at the fixed point, and numerically safe when ``q*`` is
    tiny); 1 when ``q' = 0``."""
    denom = length_map(act, sigma_w2, sigma_b2, q_star, n)
    if denom <= 0:
        return 1.0
    return (sigma_w2 * cross_moment(act, q_star, c, n) + sigma_b2) / denom


def fixed_point_q(act, sigma_w2: float, sigma_b2: float, q0: float = 1.0, tol: float = 1e-12,
                  max_iter: int = 5_000, n: int = NODES) -> tuple[float, int, bool]:
    """Iterate the length map from ``q0``: ``(q*, iterations, converged)``. ``q* = inf`` when the
    second moment grows without bound (e.g. ReLU with ``σ_w² > 2``)."""
    q = float(q0)
    for i in range(1, max_iter + 1):
        nxt = length_map(act, sigma_w2, sigma_b2, q, n)
        if not math.isfinite(nxt) or nxt > 1e150:
            return math.inf, i, False
        if abs(nxt - q) <= tol * max(1.0, abs(q)):
            return nxt, i, True
        q = nxt
    return q, max_iter, False


def fixed_point_c(act, sigma_w2: float, sigma_b2: float, q_star: float, chi1: float | None = None,
                  n: int = NODES) -> float:
    """The stable fixed point ``c*`` of the correlation map: 1 when ``χ₁ ≤ 1`` (ordered or
    critical: nearby inputs converge), otherwise the root of ``map(c) = c`` below 1 (Brent's
    method on ``[-1 + 1e-7, 1 - 1e-7]``; the map's slope at 1 is ``χ₁ > 1``, so it lies below the
    diagonal just under 1)."""
    if not math.isfinite(q_star):
        return math.nan
    if chi1 is None:
        chi1 = sigma_w2 * derivative_moment(act, q_star, n)
    if chi1 <= 1 + 1e-9:
        return 1.0
    from scipy.optimize import brentq

    def gap(c):
        return correlation_map(act, sigma_w2, sigma_b2, q_star, c, n) - c

    lo, hi = -1.0 + 1e-7, 1.0 - 1e-7
    if gap(lo) * gap(hi) > 0:
        return math.nan
    return float(brentq(gap, lo, hi, xtol=1e-13, rtol=1e-13))


def phase_of(chi1: float, tol: float = CRITICAL_TOL) -> str:
    """``"ordered"`` (``χ₁ < 1 - tol``), ``"critical"`` (``|χ₁ - 1| ≤ tol``), ``"chaotic"``
    (``χ₁ > 1 + tol``), ``"unknown"`` for NaN."""
    if chi1 is None or math.isnan(chi1):
        return "unknown"
    if chi1 < 1 - tol:
        return "ordered"
    if chi1 > 1 + tol:
        return "chaotic"
    return "critical"


def depth_scale(slope: float) -> float:
    """``-1 / ln(slope)`` for ``0 < slope < 1``; ``inf`` at 1 (and for slopes above 1, where
    perturbations grow instead of decaying: no finite decay depth), 0 for slope 0."""
    if not math.isfinite(slope):
        return math.nan
    if slope <= 0:
        return 0.0
    if abs(slope - 1.0) < 1e-12 or slope > 1:
        return math.inf
    return -1.0 / math.log(slope)


@dataclass(frozen=True)
class MeanField:
    """The mean-field description of one layer repeated at depth (fields: see the module
    docstring). ``xi_c`` uses ``χ_c`` at ``c*``; at ``c* = 1`` that is ``χ₁``."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    q_converged: bool
    chi1: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str

    def as_dict(self) -> dict:
        return asdict(self)


def mean_field(act, sigma_w2: float, sigma_b2: float = 0.0, *, q0: float = 1.0,
               n: int = NODES, tol: float = CRITICAL_TOL) -> MeanField:
    """Fixed points, ``χ₁``, ``χ_c``, ``ξ_q``, ``ξ_c`` and the phase for weight variance ``σ_w²``
    (``fan_in · Var(W)``) and bias variance ``σ_b²``.

    >>> mf = mean_field("relu", 2.0)      # He initialisation
    >>> mf.chi1, mf.phase
    (1.0, 'critical')
    >>> mean_field("tanh", 0.25).phase, mean_field("tanh", 4.0).phase
    ('ordered', 'chaotic')
    """
    a = activation(act)
    for what, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise InvalidParameterError(f"{what} must be a finite number >= 0, not {v!r}")
    sigma_w2, sigma_b2 = float(sigma_w2), float(sigma_b2)
    q_star, _, conv = fixed_point_q(a, sigma_w2, sigma_b2, q0, n=n)
    if not math.isfinite(q_star):
        chi1 = sigma_w2 * derivative_moment(a, 1.0, n) if a.homogeneous else math.nan
        return MeanField(a.name, sigma_w2, sigma_b2, q_star, False, chi1, math.nan, math.nan, math.nan,
                         math.nan, phase_of(chi1, tol) if math.isfinite(chi1) else "unbounded")
    chi1 = sigma_w2 * derivative_moment(a, q_star, n)
    c_star = fixed_point_c(a, sigma_w2, sigma_b2, q_star, chi1, n=n)
    if q_star <= 0 or c_star == 1.0:
        chi_c = chi1
    else:
        chi_c = sigma_w2 * cross_moment(a, q_star, c_star, n, derivative=True)
    xi_q = depth_scale(length_map_slope(a, sigma_w2, q_star, n))
    xi_c = depth_scale(chi_c)
    if not a.homogeneous:  # Gauss–Hermite accuracy: the same integral with 3/4 of the nodes
        coarse = sigma_w2 * derivative_moment(a, q_star, (3 * n) // 4)
        if abs(coarse - chi1) > 1e-6 * max(1.0, abs(chi1)):
            import warnings

            from ..errors import ConvergenceWarning

            warnings.warn(f"Gauss–Hermite quadrature for {a.name} at q* = {q_star:.3g} is accurate to about "
                          f"{abs(coarse - chi1):.1e} only (steep activation at large q); pass n= more nodes "
                          "(at most ~300)", ConvergenceWarning, stacklevel=2)
    return MeanField(a.name, sigma_w2, sigma_b2, q_star, conv, chi1, c_star, chi_c, xi_q, xi_c, phase_of(chi1, tol))


# -- closed forms (oracles) ------------------------------------------------------------------------
def closed_form(act: str, what: str, q: float, c: float = 1.0) -> float:
    """Exact Gaussian integrals for ``act`` in ``("relu", "erf")``; ``what`` is
    ``"second"`` (``∫Dz φ(√q z)²``), ``"derivative"`` (``∫Dz φ'(√q z)²``), ``"cross"``
    (``E φ(u₁)φ(u₂)``) or ``"cross_derivative"`` (``E φ'(u₁)φ'(u₂)``), with ``Var u = q`` and
    ``corr(u₁, u₂) = c``.

    ReLU (arc-cosine kernel): ``q/2``, ``1/2``, ``q (√(1-c²) + (π - arccos c) c) / 2π``,
    ``(π - arccos c) / 2π``. erf: ``(2/π) arcsin(2q/(1+2q))``, ``(4/π) / √(1+4q)``,
    ``(2/π) arcsin(2qc/(1+2q))``, ``(4/π) / √((1+2q)² - 4q²c²)``."""
    if act == "relu":
        th = math.acos(max(-1.0, min(1.0, c)))
        return {"second": q / 2, "derivative": 0.5,
                "cross": q * (math.sqrt(max(0.0, 1 - c * c)) + (math.pi - th) * c) / (2 * math.pi),
                "cross_derivative": (math.pi - th) / (2 * math.pi)}[what]
    if act == "erf":
        return {"second": 2 / math.pi * math.asin(2 * q / (1 + 2 * q)),
                "derivative": 4 / math.pi / math.sqrt(1 + 4 * q),
                "cross": 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q)),
                "cross_derivative": 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)}[what]
    raise InvalidParameterError(f"closed forms exist here for 'relu' and 'erf', not {act!r}")
