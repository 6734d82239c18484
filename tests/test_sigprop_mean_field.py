"""Mean-field theory of graphnn.sigprop against closed forms, finite differences and the issue's
oracles (ReLU/He critical, PyTorch default init ordered, tanh phases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphnn.errors import InvalidParameterError
from graphnn.sigprop import mean_field as mf

QS = (0.01, 0.3, 1.0, 2.0, 3.0)
CS = (-0.95, -0.3, 0.0, 0.5, 0.9, 0.999, 1.0)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_quadrature_equals_closed_forms(act):
    """Gauss–Hermite (erf) and the split polar rule (ReLU) equal the closed forms to 1e-10."""
    qs = QS + ((10.0, 50.0) if act == "relu" else ())
    for q in qs:
        assert mf.second_moment(act, q) == pytest.approx(mf.closed_form(act, "second", q), abs=1e-10, rel=1e-10)
        assert mf.derivative_moment(act, q) == pytest.approx(mf.closed_form(act, "derivative", q), abs=1e-10)
        for c in CS:
            assert abs(mf.cross_moment(act, q, c) - mf.closed_form(act, "cross", q, c)) < 1e-10 * max(1, q)
            assert abs(mf.cross_moment(act, q, c, derivative=True)
                       - mf.closed_form(act, "cross_derivative", q, c)) < 1e-10


def test_closed_forms_against_monte_carlo():
    """The oracles themselves, against a large Monte Carlo sample (independent of both)."""
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 500_000))
    q, c = 1.7, 0.4
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    from scipy.special import erf

    assert np.mean(np.maximum(u1, 0) * np.maximum(u2, 0)) == pytest.approx(mf.closed_form("relu", "cross", q, c), rel=1e-2)
    assert np.mean(erf(u1) * erf(u2)) == pytest.approx(mf.closed_form("erf", "cross", q, c), rel=1e-2)
    d = 2 / math.sqrt(math.pi)
    assert np.mean(d * np.exp(-u1 ** 2) * d * np.exp(-u2 ** 2)) == pytest.approx(
        mf.closed_form("erf", "cross_derivative", q, c), rel=1e-2)


def test_relu_he_is_exactly_critical_and_default_linear_is_ordered():
    he = mf.mean_field("relu", 2.0)
    assert he.chi1 == pytest.approx(1.0, abs=1e-14)
    assert he.phase == "critical" and he.c_star == 1.0 and math.isinf(he.xi_c)
    default = mf.mean_field("relu", 1 / 3)  # nn.Linear default: U(±1/√fan_in) -> fan_in Var = 1/3
    assert default.chi1 == pytest.approx(1 / 6, abs=1e-14)
    assert default.phase == "ordered"


@pytest.mark.parametrize("sigma_w, phase", [(0.5, "ordered"), (1.0, "critical"), (2.0, "chaotic")])
def test_tanh_phases_without_bias(sigma_w, phase):
    assert mf.mean_field("tanh", sigma_w ** 2, 0.0).phase == phase


def test_fixed_points_are_fixed_and_chi_c_is_the_slope():
    """q* and c* are fixed points of their maps; χ_c is the derivative of the correlation map at
    c* and the length-map slope gives ξ_q (central finite differences as the oracle)."""
    for s2, b2 in ((4.0, 0.05), (3.0, 0.2), (2.5, 0.0)):
        r = mf.mean_field("tanh", s2, b2)
        assert r.q_converged
        assert mf.length_map("tanh", s2, b2, r.q_star) == pytest.approx(r.q_star, rel=1e-10)
        assert r.phase == "chaotic" and r.c_star < 1
        assert mf.correlation_map("tanh", s2, b2, r.q_star, r.c_star) == pytest.approx(r.c_star, abs=1e-9)
        h = 1e-5
        slope = (mf.correlation_map("tanh", s2, b2, r.q_star, r.c_star + h)
                 - mf.correlation_map("tanh", s2, b2, r.q_star, r.c_star - h)) / (2 * h)
        assert r.chi_c == pytest.approx(slope, rel=1e-6)
        assert r.xi_c == pytest.approx(-1 / math.log(slope), rel=1e-5)
        qslope = (mf.length_map("tanh", s2, b2, r.q_star + h) - mf.length_map("tanh", s2, b2, r.q_star - h)) / (2 * h)
        assert r.xi_q == pytest.approx(-1 / math.log(qslope), rel=1e-5)


def test_chi1_is_the_correlation_map_slope_at_one():
    s2, b2 = 1.5, 0.05  # ordered: c* = 1
    r = mf.mean_field("tanh", s2, b2)
    h = 1e-6
    slope = (1 - mf.correlation_map("tanh", s2, b2, r.q_star, 1 - h)) / h
    assert r.c_star == 1.0 and r.chi1 == pytest.approx(slope, rel=1e-4)


def test_edge_of_chaos_of_tanh_with_bias():
    """χ₁ increases through 1 with σ_w² (σ_b² = 0.05: the transition lies near σ_w² ≈ 1.76,
    Schoenholz et al. Fig. 1), and ξ_c peaks there."""
    grid = [1.0, 1.5, 1.7, 1.8, 2.0, 3.0]
    res = [mf.mean_field("tanh", s, 0.05) for s in grid]
    chis = [r.chi1 for r in res]
    assert all(a < b for a, b in zip(chis, chis[1:]))
    assert chis[2] < 1 < chis[3]
    xis = [r.xi_c for r in res]
    assert max(xis) in (xis[2], xis[3])


def test_leaky_relu_and_smooth_activations():
    lk = mf.mean_field("leaky_relu(0.2)", 2 / (1 + 0.2 ** 2))  # Kaiming gain for leaky ReLU
    assert lk.chi1 == pytest.approx(1.0, abs=1e-12)
    for name in ("gelu", "silu", "sigmoid", "identity"):
        r = mf.mean_field(name, 1.0, 0.1)
        assert math.isfinite(r.chi1) and r.phase in ("ordered", "critical", "chaotic")
    assert mf.mean_field("identity", 1.0).chi1 == pytest.approx(1.0, abs=1e-14)
    # GELU's χ₁ by brute-force quadrature (scipy.integrate.quad) at the fixed point
    from scipy import integrate, stats

    r = mf.mean_field("gelu", 2.0, 0.0)
    d = mf.activation("gelu").dphi
    val = integrate.quad(lambda z: d(np.sqrt(r.q_star) * z) ** 2 * stats.norm.pdf(z), -12, 12, limit=200)[0]
    assert r.chi1 == pytest.approx(2.0 * val, rel=1e-9)


def test_relu_unbounded_length_map():
    r = mf.mean_field("relu", 2.5, 0.1)
    assert math.isinf(r.q_star) and r.phase == "chaotic" and r.chi1 == pytest.approx(1.25)


@pytest.mark.parametrize("bad", [{"act": "softplus2"}, {"act": 3}, {"sigma_w2": -1.0}, {"sigma_w2": math.nan},
                                 {"sigma_b2": math.inf}])
def test_bad_parameters_are_usage_errors(bad):
    kwargs = {"act": "tanh", "sigma_w2": 1.0, "sigma_b2": 0.0, **bad}
    with pytest.raises(InvalidParameterError):
        mf.mean_field(kwargs.pop("act"), **kwargs)


@pytest.mark.parametrize("name", ["graphnn.sigprop.mean_field", "graphnn.sigprop.analysis"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
