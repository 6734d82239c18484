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
    legend = True  # on the first panel that has data
    for ax, (quantities, title, log) in zip(axes, panels):
        d = table[table["quantity"].isin(quantities)].dropna(subset=["value"])
        if len(d):
            sns.lineplot(data=d, x="depth", y="value", hue="model", style="source", markers=True, dashes=False,
                         ax=ax, legend=legend)
            legend = False
        else:
            ax.text(0.5, 0.5, "no values\n(activation unknown, or no module to run)", ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
        if quantities[0] == "chi1_theory":
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
        if log and len(d) and (d["value"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel("")
    fig.tight_layout()
    return table, fig


def to_html(results, title: str = "Signal propagation", notes=()) -> str:
    """A self-contained HTML page (no external resource: the figure is a PNG data URI) with the
    figure of :func:`section`, the network verdict(s) and the per-layer table(s)."""
    import base64
    import html
    import io

    import matplotlib.pyplot as plt

    if not isinstance(results, Mapping):
        results = {"model": results}
    _, fig = section(results)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    cols = ["layer", "param", "activation", "sigma_w2", "sigma_b2", "q_theory", "q_hat", "chi1_theory", "chi1_hat",
            "c_hat", "kurtosis", "xi_c", "phase", "theory"]
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem}}"
             "table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ccc;padding:.2rem .4rem}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<img alt='signal propagation per layer' src='data:image/png;base64,{png}'>"]
    for label, res in results.items():
        parts.append(f"<h2>{html.escape(str(label))}</h2>")
        parts.append(res.network.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
        shown = res.layers[[c for c in cols if c in res.layers.columns]]
        parts.append(shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
        for n in res.notes:
            parts.append(f"<p>{html.escape(n)}</p>")
    for n in notes:
        parts.append(f"<p>{html.escape(str(n))}</p>")
    parts.append("<p>Definitions: see graphnn.sigprop (σ̂_w² = mean over output units of the sum of squared "
                 "incoming weights; χ₁ = σ_w² E φ'(h)²: &lt; 1 ordered, = 1 critical, &gt; 1 chaotic; "
                 "ξ_c = −1/ln χ_c).</p></body></html>")
    return "\n".join(parts) + "\n"


#: Columns of the before/after table of :func:`comparison_section`, when the results have them.
SECTION_COLUMNS = ("sigma_w2", "chi1_theory", "chi1_hat", "q_hat")


def comparison_section(before, after, labels=("before", "after")) -> dict:
    """A report card (``{"id", "title", "uri", "caption", "table"}``, the form
    :func:`graphnn.report.html.render_comparison` takes in ``sections``) comparing two results:
    the figure of :func:`section` and a per-layer table of σ̂_w², χ₁ (theory and measured) and q̂
    before and after, with the network verdicts in the caption."""
    import matplotlib.pyplot as plt

    from ..report.figures import to_data_uri
    from .compare import compare

    _, fig = section({labels[0]: before, labels[1]: after})
    uri = to_data_uri(fig)
    plt.close(fig)
    wide = compare(before, after, columns=SECTION_COLUMNS, labels=labels)
    shown = [c for c in SECTION_COLUMNS if f"{c}_{labels[0]}" in wide and f"{c}_{labels[1]}" in wide
             and wide[[f"{c}_{labels[0]}", f"{c}_{labels[1]}"]].notna().any().any()]  # no all-empty columns
    columns = [{"header": "layer", "num": False}]
    for c in shown:
        columns += [{"header": f"{c} {labels[0]}", "num": True}, {"header": f"{c} {labels[1]}", "num": True}]

    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"

    rows = [[str(r["layer"])] + [cell(r[f"{c}_{lab}"]) for c in shown for lab in labels]
            for r in wide.to_dict("records")]
    verdicts = []
    for lab, res in zip(labels, (before, after)):
        net = res.network.iloc[0] if len(res.network) else None
        if net is not None and "phase" in res.network:
            verdicts.append(f"{lab}: {net['phase']}")
    caption = ("σ̂_w² = mean over output units of the sum of squared incoming weights; χ₁ = σ_w² E φ'(h)² "
               "(< 1 ordered, = 1 critical, > 1 chaotic), from the mean-field theory and, for a module, "
               "measured (χ̂₁). PA rewiring and rank-match keep every tensor's values, so σ̂_w² is unchanged. "
               + ("Network: " + "; ".join(verdicts) + ". " if verdicts else "")
               + ("" if before.empirical or after.empirical else
                  "Measured χ̂₁ and q̂ need the model itself, not only its checkpoints: `graphnn sigprop BEFORE "
                  "--module FACTORY --compare AFTER`."))
    return {"id": "fig-sigprop", "title": "Signal propagation before / after", "uri": uri, "caption": caption,
            "table": {"columns": columns, "rows": rows}}
