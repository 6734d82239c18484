"""Render analyses into one self-contained HTML page (jinja2, inline CSS, PNG data URIs).

The page makes no network request: no script, no font, no stylesheet or image is fetched;
figures are embedded as ``data:`` URIs. :func:`render_report` covers one checkpoint,
:func:`render_comparison` several (``compare``) or a before/after pair (``rewire``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import numpy as np
import pandas as pd

from . import figures
from .compare import available_metrics, compare_blocks, compare_layers, compare_layers_long
from .definitions import CONV_AGGREGATION, METRICS, describe_column
from .provenance import Provenance
from ..atomic import atomic_write
from ..errors import InvalidParameterError
from ..validation import check_choice

#: Per-layer columns shown in the report's layer table, when the analysis has them.
LAYER_COLUMNS = (
    "size", "strength_mean", "strength_var", "abs_strength_mean",
    "centrality_mean", "centrality_max", "core_mean", "core_max",
)
_HEADERS = {
    "size": "neurons",
    "strength_mean": "strength mean",
    "strength_std": "strength std",
    "strength_var": "strength var",
    "abs_strength_mean": "|strength| mean",
    "centrality_mean": "centrality mean",
    "centrality_max": "centrality max",
    "core_mean": "core mean",
    "core_max": "core max",
}
_MAX_LISTED = 3  # block names listed per layer before "+N more"
_MAX_SKIPPED_ROWS = 500
_KIND_NOTE = (" Colours: grey = network input, orange = residual stream (merged by additions), "
              "green = concatenation, blue = other layers.")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("graphnn.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def fmt(x: Any) -> str:
    """Display a number: integers with thousands separators, floats with 4 significant digits,
    missing values as an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "\u2013"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isinf(x):
            return "\u221e" if x > 0 else "-\u221e"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3e}"
        return f"{x:.4g}"
    return str(x)


def _pct(x: float | None) -> str:
    return "\u2013" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _seconds(x: float | None) -> str:
    return "\u2013" if x is None else (f"{x:.2f} s" if x < 60 else f"{x / 60:.1f} min")


def _bytes(n: int | None) -> str:
    if n is None:
        return "\u2013"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


# -- context pieces --------------------------------------------------------------------------
def _definitions(analysis) -> list[dict]:
    keys = ["in_strength", "out_strength", "strength", "abs_strength", "strength_var", "J",
            "centrality", "core"]
    rows = [{"name": METRICS[k][0], "definition": METRICS[k][1], "convention": METRICS[k][2]} for k in keys]
    agg = set()
    if hasattr(analysis, "blocks") and "aggregation" in analysis.blocks:
        agg = {a for a in analysis.blocks["aggregation"].dropna().astype(str) if a and a != "None"}
    for a in sorted(agg):
        if a in CONV_AGGREGATION:
            rows.append({"name": f"conv aggregation '{a}'",
                         "definition": "A convolution kernel slice W[i, j, ...] becomes one channel-level edge.",
                         "convention": CONV_AGGREGATION[a]})
    return rows


def _fed_by(graph, layer: str) -> tuple[str, str]:
    if graph is None:
        return "", ""
    names = [b.name for b in graph.blocks_into(layer)]
    if not names:
        return "", ""
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f" (+{len(names) - _MAX_LISTED} more)"
    return shown, ", ".join(names)


def _layer_table(analysis, graph) -> dict:
    layers = analysis.layers
    cols = [c for c in LAYER_COLUMNS if c in layers.columns]
    rows = []
    for rec in layers.to_dict("records"):
        name = str(rec["layer"])
        fed, fed_full = _fed_by(graph, name)
        rows.append({
            "layer": name, "kind": str(rec.get("kind", "")), "fed_by": fed, "fed_by_full": fed_full,
            "cells": [fmt(rec[c]) for c in cols],
        })
    return {
        "columns": [{"key": c, "header": _HEADERS.get(c, c), "help": describe_column(c)} for c in cols],
        "rows": rows,
        "show_fed_by": graph is not None,
    }


def _blocks_table(analysis) -> dict:
    """One row per weight tensor: name, the layers it joins, shape, edges, kind, aggregation,
    J and mean |w| (whichever of these the analysis has)."""
    b = analysis.blocks
    cols: list[dict] = []
    if _has(b, "src", "dst"):
        cols.append({"key": "from_to", "header": "from \u2192 to", "help": "source layer \u2192 destination layer",
                     "cls": "fed"})
    if _has(b, "n_dst", "n_src"):
        cols.append({"key": "shape", "header": "n dst \u00d7 n src", "help": "block shape (destination x source neurons)",
                     "cls": "num"})
    for key, header, cls in (("edges", "edges", "num"), ("kind", "kind", ""), ("aggregation", "aggregation", ""),
                             ("J", "J", "num"), ("mean_abs_weight", "mean |w|", "num")):
        if key in b.columns:
            cols.append({"key": key, "header": header, "help": describe_column(key), "cls": cls})
    rows = []
    for r in b.to_dict("records"):
        cells = []
        for c in cols:
            if c["key"] == "from_to":
                text = f"{r['src']} \u2192 {r['dst']}"
            elif c["key"] == "shape":
                text = f"{fmt(r['n_dst'])} \u00d7 {fmt(r['n_src'])}"
            elif c["key"] in ("kind", "aggregation"):
                v = r[c["key"]]
                text = "\u2013" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)
            else:
                text = fmt(r[c["key"]])
            cells.append({"text": text, "cls": c["cls"]})
        rows.append({"block": str(r["block"]), "cells": cells})
    return {"columns": cols, "rows": rows}


def _coverage(graph) -> dict | None:
    if graph is None:
        return None
    cov = graph.coverage
    skipped = cov[cov["status"] != "mapped"]
    by_reason = []
    if len(skipped):
        for reason, grp in skipped.groupby(skipped["reason"].fillna("(no reason given)"), sort=False):
            names = grp["name"].astype(str).tolist()
            by_reason.append({"reason": reason, "count": len(grp), "numel": fmt(int(grp["numel"].sum())),
                              "examples": ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")})
    nonfinite = cov[cov["nonfinite"].fillna(0) > 0] if "nonfinite" in cov else cov.iloc[:0]
    return {
        "fraction": _pct(graph.coverage_fraction),
        "n_params": len(cov),
        "n_mapped": int((cov["status"] == "mapped").sum()),
        "n_skipped": len(skipped),
        "numel_total": fmt(int(cov["numel"].sum())),
        "numel_mapped": fmt(int(cov.loc[cov["status"] == "mapped", "numel"].sum())),
        "by_reason": by_reason,
        "skipped": [{"name": str(r["name"]), "shape": str(r["shape"]), "kind": str(r.get("kind") or ""),
                     "reason": str(r.get("reason") or "")} for r in skipped.head(_MAX_SKIPPED_ROWS).to_dict("records")],
        "skipped_truncated": max(0, len(skipped) - _MAX_SKIPPED_ROWS),
        "nonfinite": [{"name": str(r["name"]), "count": fmt(int(r["nonfinite"]))} for r in nonfinite.to_dict("records")],
    }


def _provenance_rows(p: Provenance, analysis=None) -> list[tuple[str, str]]:
    rows = [
        ("input", p.source),
        ("sha256", p.sha256 or "\u2013"),
        ("size", _bytes(p.size_bytes)),
        ("options", p.options_text()),
        ("runtime", _seconds(p.runtime_s)),
        ("graphnn", p.graphnn_version),
        ("python / torch", f"{p.python} / {p.torch}"),
        ("created", p.created),
    ]
    if analysis is not None:
        info = getattr(analysis, "centrality_info", None) or {}
        if info:
            rows.append(("centrality solver", ", ".join(f"{k} = {fmt(v)}" for k, v in info.items())))
    for k, v in p.extra.items():
        rows.append((k, v if isinstance(v, str) else fmt(v)))
    return rows


def _summary_cards(analysis, graph) -> list[tuple[str, str]]:
    cards = [("layers", fmt(len(analysis.layers))), ("weight tensors", fmt(len(analysis.blocks)))]
    if graph is not None:
        cards += [("neurons", fmt(graph.num_nodes)), ("edges", fmt(graph.num_edges)),
                  ("coverage", _pct(graph.coverage_fraction))]
    else:
        cards += [("neurons", fmt(len(analysis.neurons)))]
    return cards


def _has(df: pd.DataFrame, *cols: str) -> bool:
    return all(c in df.columns for c in cols)


def _single_figures(analysis) -> list[dict]:
    n, lay = analysis.neurons, analysis.layers
    out = []
    big = len(lay) > figures.MAX_LAYERS_DRAWN
    sample_note = (f" Layers with more than {figures.MAX_POINTS_PER_LAYER:,} neurons are drawn from a "
                   f"seeded random sample of {figures.MAX_POINTS_PER_LAYER:,}.")
    band_note = (f" With {len(lay)} layers (more than {figures.MAX_LAYERS_DRAWN}) each layer is summarised by "
                 "its median, 25-75 % and 5-95 % percentiles along the layer axis.")
    if _has(n, "strength"):
        out.append({"id": "fig-strength", "title": "Strength distribution per layer",
                    "uri": figures.strength_distribution(n, lay),
                    "caption": "Signed total strength (in + out) of every neuron, one box per layer "
                               "(box: quartiles, whiskers: 1st-99th percentile, outliers not drawn; dashed "
                               "line at 0)." + (band_note if big else sample_note + _KIND_NOTE)})
    if _has(lay, "strength_var"):
        out.append({"id": "fig-variance", "title": "Strength variance per layer",
                    "uri": figures.strength_variance_per_layer(lay),
                    "caption": "Unbiased variance of the neurons' signed strength within each layer; a log "
                               "axis is used when the values span more than two decades." + ("" if big else _KIND_NOTE)})
    if _has(n, "centrality"):
        out.append({"id": "fig-centrality", "title": "Eigenvector centrality per layer",
                    "uri": figures.centrality_per_layer(n, lay),
                    "caption": "Eigenvector centrality of every neuron on the |w| adjacency of the whole "
                               "network, one box per layer." + (band_note if big else sample_note + _KIND_NOTE)})
    if _has(n, "core"):
        out.append({"id": "fig-hypercore", "title": "Hypercore profile",
                    "uri": figures.hypercore_profile(n),
                    "caption": "Left: how many neurons have each k-hypercore number. Right: the size of the "
                               "k-hypercore (neurons with core number at least k) as k grows; the curve ends "
                               "at the innermost core."})
    return out


def _options(analysis) -> dict:
    return dict(getattr(analysis, "options", None) or {})


# -- public API ------------------------------------------------------------------------------
def render_report(analysis, provenance: Provenance, graph=None, *, title: str | None = None) -> str:
    """HTML of one analysed checkpoint: provenance header, summary, metric definitions, the
    per-layer table, the four figures, the weight-tensor table and the coverage (skipped
    parameters with reasons). ``graph`` (the extracted :class:`LayeredGraph`) adds coverage
    and the blocks feeding each layer."""
    ctx = {
        "mode": "single",
        "title": title or f"graphnn report: {Path(provenance.source).name}",
        "subtitle": provenance.source,
        "provenance": _provenance_rows(provenance, analysis),
        "cards": _summary_cards(analysis, graph),
        "notes": list(getattr(graph, "notes", []) or []),
        "definitions": _definitions(analysis),
        "layer_table": _layer_table(analysis, graph),
        "blocks_table": _blocks_table(analysis),
        "figures": _single_figures(analysis),
        "coverage": _coverage(graph),
        "checkpoints": [],
        "compare": None,
        "version": provenance.graphnn_version,
    }
    return _env().get_template("report.html.j2").render(**ctx)


def render_comparison(
    analyses: Mapping[str, Any],
    provenances: Mapping[str, Provenance],
    graphs: Mapping[str, Any] | None = None,
    *,
    title: str | None = None,
    mode: str = "compare",
    extra: Sequence[tuple[str, str]] = (),
    sections: Sequence[Mapping[str, Any]] = (),
) -> str:
    """HTML comparing several analysed checkpoints, aligned by layer name: a checkpoint table,
    the per-layer metrics side by side (first, last, relative change), before/after panels
    (per-layer metrics, pooled distributions, J per weight tensor), and each checkpoint's
    coverage. ``mode="rewire"`` titles the first checkpoint *before* and the last *after*;
    ``extra`` adds rows to the header (e.g. method and seed); ``sections`` adds figure cards after
    the others, each ``{"id", "title", "uri" (a PNG data URI), "caption"}`` with an optional
    ``"table": {"columns": [{"header", "num"}], "rows": [[cell, ...]]}``."""
    if len(analyses) < 2:
        raise InvalidParameterError("a comparison report needs at least two analyses")
    check_choice("mode", mode, ("compare", "rewire"))
    graphs = dict(graphs or {})
    labels = list(analyses)
    metrics = available_metrics(analyses)
    wide = compare_layers(analyses, metrics)
    long = compare_layers_long(analyses, metrics)
    order = list(dict.fromkeys(long["layer"]))
    first, last = labels[0], labels[-1]
    sizes = long.drop_duplicates("layer").set_index("layer")["size"] if "size" in long else None

    rows = []
    for layer in order:
        cells = []
        w = wide[wide["layer"] == layer].set_index("metric")
        for m in metrics:
            cells += [fmt(w.at[m, first]), fmt(w.at[m, last]), _signed_pct(w.at[m, "rel_change"])]
        rows.append({"layer": layer, "size": fmt(sizes[layer]) if sizes is not None else "", "cells": cells})
    compare_table = {
        "metrics": [{"key": m, "header": _HEADERS.get(m, m), "help": describe_column(m)} for m in metrics],
        "first": first, "last": last, "rows": rows,
    }
    titles = {m: _HEADERS.get(m, m) for m in metrics}
    pre = "Before / after: " if mode == "rewire" else ""
    figs = [{"id": "fig-compare-layers", "title": pre + "per-layer metrics" if pre else "Per-layer metrics by checkpoint",
             "uri": figures.compare_layer_metrics(long, order, metrics, titles),
             "caption": "Each panel is one per-layer metric; one marker per checkpoint, layers aligned by name."}]
    if all(_has(a.neurons, "strength", "centrality", "core") for a in analyses.values()):
        figs.append({"id": "fig-compare-dist", "title": pre + "distributions over all neurons" if pre else "Distributions over all neurons",
                     "uri": figures.compare_distributions({k: a.neurons for k, a in analyses.items()}),
                     "caption": "Strength and centrality histograms (density, each checkpoint normalised on its "
                                "own; at most %s sampled neurons per layer) and the k-hypercore size against k."
                                % f"{figures.MAX_POINTS_PER_LAYER:,}"})
    if all(_has(a.blocks, "block", "J") for a in analyses.values()):
        figs.append({"id": "fig-compare-j", "title": (pre + "strength variance J per weight tensor") if pre else "Strength variance J per weight tensor",
                     "uri": figures.compare_tensor_variance({k: a.blocks for k, a in analyses.items()}),
                     "caption": "J = (Var of row sums + Var of column sums) / 2 of each weight tensor "
                                "(Scabini et al.); PA rewiring lowers it while keeping every weight value."})
        jt = compare_blocks(analyses, "J")
        blocks_table = {
            "columns": [{"key": lab, "header": f"J {lab}", "help": describe_column("J"), "cls": "num"}
                        for lab in labels]
            + [{"key": "rel_change", "header": "change", "help": "relative change of J, last vs first", "cls": "num"}],
            "rows": [{"block": str(r["block"]),
                      "cells": [{"text": fmt(r[lab]), "cls": "num"} for lab in labels]
                      + [{"text": _signed_pct(r["rel_change"]), "cls": "num"}]}
                     for r in jt.to_dict("records")],
        }
    else:
        blocks_table = None

    figs += [dict(sec) for sec in sections]
    checkpoints = []
    for lab in labels:
        p, a, g = provenances[lab], analyses[lab], graphs.get(lab)
        checkpoints.append({
            "label": lab, "source": p.source, "sha256": p.sha256 or "\u2013", "size": _bytes(p.size_bytes),
            "layers": fmt(len(a.layers)), "edges": fmt(g.num_edges) if g is not None else "\u2013",
            "coverage": _pct(g.coverage_fraction) if g is not None else "\u2013",
            "runtime": _seconds(p.runtime_s),
        })
    p0 = provenances[first]
    prov_rows = [("options", p0.options_text()), ("graphnn", p0.graphnn_version),
                 ("python / torch", f"{p0.python} / {p0.torch}"), ("created", p0.created)]
    prov_rows += [(k, v) for k, v in extra]
    coverage = _coverage(graphs.get(last)) if graphs.get(last) is not None else None
    ctx = {
        "mode": mode,
        "title": title or ("graphnn rewiring report" if mode == "rewire" else "graphnn comparison report"),
        "subtitle": " \u2192 ".join(labels),
        "provenance": prov_rows,
        "cards": [("checkpoints", fmt(len(labels))), ("layers", fmt(len(order)))]
        + ([("neurons", fmt(graphs[last].num_nodes)), ("edges", fmt(graphs[last].num_edges))]
           if graphs.get(last) is not None else []),
        "notes": [n for g in graphs.values() for n in (getattr(g, "notes", []) or [])],
        "definitions": _definitions(analyses[last]),
        "layer_table": None,
        "blocks_table": blocks_table,
        "figures": figs,
        "coverage": coverage,
        "checkpoints": checkpoints,
        "compare": compare_table,
        "version": p0.graphnn_version,
    }
    return _env().get_template("report.html.j2").render(**ctx)


def _signed_pct(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "\u2013"
    return f"{100 * float(x):+.1f} %"


def write_html(html: str, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``html`` to ``path`` atomically (a temporary file in the same folder, then moved into
    place), creating the folder if needed; returns the path. ``overwrite=False`` refuses an
    existing file (:class:`~graphnn.errors.RefusedOverwriteError`, also when another writer
    publishes it first)."""
    p = Path(path)
    atomic_write(p, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"), overwrite=overwrite)
    return p
