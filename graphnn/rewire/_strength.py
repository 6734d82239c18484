"""Strength variance of a weight tensor (Scabini et al.), as used by the re-initialisers.

Defers to ``graphnn.analyses.strength.tensor_strength_variance`` when it exists; the fallback
below follows the same definition: flatten to ``(n_out, numel/n_out)``, signed row sums
(in-strengths) and column sums (out-strengths), unbiased variances, ``J = (var_rows + var_cols)/2``.
"""

from __future__ import annotations

import torch


def _fallback(tensor: torch.Tensor) -> tuple[float, float, float]:
    m = tensor.detach().reshape(tensor.shape[0], -1).to(torch.float64)
    rows, cols = m.sum(dim=1), m.sum(dim=0)
    var_rows = float(rows.var()) if rows.numel() > 1 else 0.0
    var_cols = float(cols.var()) if cols.numel() > 1 else 0.0
    return 0.5 * (var_rows + var_cols), var_rows, var_cols


def strength_variance(units: torch.Tensor) -> tuple[float, float, float]:
    """``(J, var_rows, var_cols)`` of a ``(n_out, fan_in)`` unit matrix (or any >= 2-D tensor,
    flattened by its first axis)."""
    try:
        from graphnn.analyses.strength import tensor_strength_variance
    except ImportError:
        return _fallback(units)
    j, vr, vc = tensor_strength_variance(units)
    return float(j), float(vr), float(vc)
