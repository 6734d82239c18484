"""Before/after tables of two signal-propagation results (e.g. a model and its PA rewiring)."""

from __future__ import annotations

import pandas as pd

#: Per-layer columns compared by default.
COMPARED = ("sigma_w2", "sigma_b2", "q_hat", "c_hat", "chi1_hat", "q_theory", "chi1_theory", "kurtosis")


def compare(before, after, columns=COMPARED, labels=("before", "after")) -> pd.DataFrame:
    """One row per layer present in both results (matched by ``param`` and ``layer``): every
    column of ``columns`` that either result has, as ``<column>_<label>``, and the change
    ``<column>_delta = after − before``; rows of one side only are kept with NaN on the other."""
    a, b = before.layers, after.layers
    keys = ["layer", "param"]
    cols = [c for c in columns if c in a.columns or c in b.columns]
    left = a[keys + [c for c in cols if c in a.columns]].rename(columns={c: f"{c}_{labels[0]}" for c in cols})
    right = b[keys + [c for c in cols if c in b.columns]].rename(columns={c: f"{c}_{labels[1]}" for c in cols})
    out = left.merge(right, on=keys, how="outer", sort=False)
    for c in cols:
        x, y = f"{c}_{labels[0]}", f"{c}_{labels[1]}"
        if x in out and y in out:
            out[f"{c}_delta"] = out[y] - out[x]
    order = keys + [f"{c}_{s}" for c in cols for s in (*labels, "delta") if f"{c}_{s}" in out]
    return out[order]
