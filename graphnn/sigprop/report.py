"""A report section for signal propagation: a tidy table and a seaborn figure.

:func:`section` takes one :class:`~graphnn.sigprop.SignalPropagation` (or a mapping
``{label: result}``, e.g. ``{"before": ..., "after": ...}`` around a rewiring) and returns

* a tidy DataFrame with one row per (model, layer, quantity): columns ``model``, ``depth`` (the
  layer's position, 0-based, in forward order), ``layer``, ``param``, ``quantity`` (``sigma_w2``,
  ``sigma_b2``, ``q_theory``, ``q_hat``, ``chi1_theory``, ``chi1_hat``, ``c_hat``, ``kurtosis``),
  ``source`` (``weights``, ``theory`` or ``empirical``) and ``value``;
* a matplotlib figure drawn with seaborn: χ₁ per layer (theory and empirical, the critical line
  χ₁ = 1 dashed), the second moment q per layer (log scale) and σ̂_w² per layer.

seaborn and matplotlib are imported only when this is called.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

QUANTITIES = {"sigma_w2": "weights", "sigma_b2": "weights", "q_theory": "theory", "q_hat": "empirical",
              "chi1_theory": "theory", "chi1_hat": "empirical", "c_hat": "empirical", "kurtosis": "empirical"}


def tidy(results) -> pd.DataFrame:
    """The long table of :func:`section` (no plotting)."""
    if not isinstance(results, Mapping):
        results = {"model": results}
    frames = []
    for label, res in results.items():
        t = res.layers.reset_index(drop=True)
        have = [q for q in QUANTITIES if q in t.columns]
        long = t.assign(depth=range(len(t)))[["depth", "layer", "param", *have]].melt(
            id_vars=["depth", "layer", "param"], var_name="quantity", value_name="value")
        long.insert(0, "model", label)
        long["source"] = long["quantity"].map(QUANTITIES)
        frames.append(long)
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "depth", "layer", "param", "quantity", "source", "value"]]


def section(results):
    """``(tidy table, figure)``: see the module docstring."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = tidy(results)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    panels = ((("chi1_theory", "chi1_hat"), "χ₁ to the next layer", False),
              (("q_theory", "q_hat"), "second moment q", True),
              (("sigma_w2",), "σ̂_w² (weights)", False))
    for ax, (quantities, title, log) in zip(axes, panels):
        d = table[table["quantity"].isin(quantities)].dropna(subset=["value"])
        if len(d):
            sns.lineplot(data=d, x="depth", y="value", hue="model", style="source", markers=True, dashes=False,
                         ax=ax, legend=ax is axes[0])
        if quantities[0] == "chi1_theory":
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
        if log and len(d) and (d["value"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel("")
    fig.tight_layout()
    return table, fig
