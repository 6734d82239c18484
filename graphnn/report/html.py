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

from markupsafe import Markup

from . import figures, grouping, topology
from ..analyses.roles import clean_pair, name_role, with_roles
from .compare import available_metrics, compare_blocks, compare_layers, compare_layers_long
from .definitions import CONV_AGGREGATION, METRICS, describe_column
from .provenance import Provenance
from ..html_summary import fmt  # noqa: F401  (one number format; report code imports it from here)
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
    blocks = getattr(analysis, "blocks", None)
    keys += [k for k in ("spectral_norm", "stable_rank", "frobenius_norm", "ww_alpha")
             if blocks is not None and k in blocks.columns]
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
    show_roles = _has(layers, "layer_index", "role") and layers["layer_index"].notna().any()
    rows = []
    for rec in layers.to_dict("records"):
        name = str(rec["layer"])
        fed, fed_full = _fed_by(graph, name)
        rows.append({
            "layer": name, "kind": str(rec.get("kind", "")), "fed_by": fed, "fed_by_full": fed_full,
            "role": _role_text(rec) if show_roles else None,
            "cells": [fmt(rec[c]) for c in cols],
        })
    return {
        "columns": [{"key": c, "header": _HEADERS.get(c, c), "help": describe_column(c)} for c in cols],
        "rows": rows,
        "show_fed_by": graph is not None,
        "show_roles": bool(show_roles),
    }


def _role_text(rec: Mapping) -> str:
    """``3 · q`` (layer index and role), ``stream``, or an en dash."""
    li, role = clean_pair(rec.get("layer_index"), rec.get("role"))
    if li is None and role is None:
        return "\u2013"
    return " \u00b7 ".join(str(x) for x in (li, role) if x is not None)


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
    for key, header, cls in (("layer_index", "layer index", "num"), ("role", "role", ""),
                             ("edges", "edges", "num"), ("kind", "kind", ""), ("aggregation", "aggregation", ""),
                             ("J", "J", "num"), ("mean_abs_weight", "mean |w|", "num"),
                             ("spectral_norm", "spectral norm", "num"), ("stable_rank", "stable rank", "num"),
                             ("frobenius_norm", "Frobenius norm", "num"), ("ww_alpha", "WW \u03b1", "num")):
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
            elif c["key"] in ("kind", "aggregation", "role"):
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


#: Per-partition and per-block metrics drawn against the layer index when roles are known.
ROLE_LAYER_METRICS = ("strength_var", "abs_strength_mean", "centrality_mean", "core_mean")
ROLE_BLOCK_METRICS = ("J", "mean_abs_weight", "spectral_norm", "stable_rank")
_ROLE_TITLES = {"strength_var": "strength variance (partition)", "abs_strength_mean": "|strength| mean (partition)",
                "centrality_mean": "centrality mean (partition)", "core_mean": "core mean (partition)",
                "J": "J (weight tensor)", "mean_abs_weight": "mean |w| (weight tensor)",
                "spectral_norm": "spectral norm (weight tensor)", "stable_rank": "stable rank (weight tensor)"}


def _role_figures(layers_r: pd.DataFrame | None, blocks_r: pd.DataFrame | None) -> list[dict]:
    """Metric against layer index, one line per role (partitions, then weight tensors)."""
    out = []
    if grouping.is_layered(layers_r):
        ms = [m for m in ROLE_LAYER_METRICS if m in layers_r.columns]
        if ms:
            n_out = int(layers_r["layer_index"].isna().sum())
            out.append({"id": "fig-roles-layers", "title": "Partition metrics by layer and role",
                        "uri": figures.role_lines(layers_r, ms, _ROLE_TITLES),
                        "caption": "Each partition's metric against its transformer layer index, one line per role "
                                   "(q, k, v: attention projections' outputs; up/gate: MLP hidden units; ...). "
                                   f"{n_out} partition(s) without a layer index (residual stream, embeddings, head) "
                                   "are in the layer table only; several partitions of one role in one layer "
                                   "(experts) are averaged."})
    if grouping.is_layered(blocks_r):
        ms = [m for m in ROLE_BLOCK_METRICS if m in blocks_r.columns]
        if ms:
            out.append({"id": "fig-roles-blocks", "title": "Weight-tensor metrics by layer and role",
                        "uri": figures.role_lines(blocks_r, ms, _ROLE_TITLES),
                        "caption": "Each weight tensor's metric against its transformer layer index, one line per "
                                   "role (q, k, v, o: attention; up, gate, down: MLP). J = (Var of row sums + Var "
                                   "of column sums) / 2; spectral norm = largest singular value; stable rank = "
                                   "||W||_F^2 / ||W||_2^2 (when computed)."})
    return out


def _neuron_roles(neurons: pd.DataFrame, layers_r: pd.DataFrame | None) -> pd.DataFrame | None:
    """``neurons`` with ``layer_index``/``role`` (its own columns, else its partition's)."""
    if _has(neurons, "layer_index", "role") and neurons["layer_index"].notna().any():
        return neurons
    if layers_r is None or not _has(neurons, "layer"):
        return None
    by = dict(zip(layers_r["layer"].astype(str), zip(layers_r["layer_index"], layers_r["role"])))
    out = with_roles(neurons, "layer", lambda n: by.get(str(n), (None, None)))
    return out if out["layer_index"].notna().any() else None


def _single_figures(analysis, layers_r: pd.DataFrame | None = None, blocks_r: pd.DataFrame | None = None) -> list[dict]:
    n, lay = analysis.neurons, analysis.layers
    out = []
    role_figs = _role_figures(layers_r, blocks_r)
    out += role_figs
    # the partition metrics per role replace the per-partition figures (the weight-tensor figure
    # alone, when only block names carry a layer index, replaces none of them)
    partition_roles = any(f["id"] == "fig-roles-layers" for f in role_figs)
    big = len(lay) > figures.MAX_LAYERS_DRAWN
    sample_note = (f" Layers with more than {figures.MAX_POINTS_PER_LAYER:,} neurons are drawn from a "
                   f"seeded random sample of {figures.MAX_POINTS_PER_LAYER:,}.")
    band_note = (f" With {len(lay)} layers (more than {figures.MAX_LAYERS_DRAWN}) each layer is summarised by "
                 "its median, 25-75 % and 5-95 % percentiles along the layer axis.")
    neurons_r = _neuron_roles(n, layers_r) if partition_roles else None
    by_role = neurons_r is not None
    role_note = (" Neurons of partitions without a layer index (residual stream, embeddings, head) are left out; "
                 "the layer table has their numbers.")
    if by_role and _has(n, "strength"):
        out.append({"id": "fig-strength", "title": "Strength distribution by layer and role",
                    "uri": figures.role_bands(neurons_r, "strength", "strength (signed sum of weights)", zero_line=True),
                    "caption": "Signed total strength (in + out) of the neurons of each role against the layer index, one "
                               "panel per role: median (line), 25-75 % and 5-95 % of the neurons (bands; dashed line "
                               "at 0)." + role_note})
    elif _has(n, "strength"):
        out.append({"id": "fig-strength", "title": "Strength distribution per layer",
                    "uri": figures.strength_distribution(n, lay),
                    "caption": "Signed total strength (in + out) of every neuron, one box per layer "
                               "(box: quartiles, whiskers: 1st-99th percentile, outliers not drawn; dashed "
                               "line at 0)." + (band_note if big else sample_note + _KIND_NOTE)})
    if not partition_roles and _has(lay, "strength_var"):
        out.append({"id": "fig-variance", "title": "Strength variance per layer",
                    "uri": figures.strength_variance_per_layer(lay),
                    "caption": "Unbiased variance of the neurons' signed strength within each layer; a log "
                               "axis is used when the values span more than two decades." + ("" if big else _KIND_NOTE)})
    if by_role and _has(n, "centrality"):
        out.append({"id": "fig-centrality", "title": "Eigenvector centrality by layer and role",
                    "uri": figures.role_bands(neurons_r, "centrality", "eigenvector centrality"),
                    "caption": "Eigenvector centrality (|w| adjacency of the whole network) of the neurons of each "
                               "role against the layer index, one panel per role: median (line), 25-75 % and 5-95 % of "
                               "the neurons (bands)." + role_note})
    elif _has(n, "centrality"):
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


def _notes_banner(notes: Sequence[str]) -> dict | None:
    """All notes in one banner: identical notes once (with how many times they occurred), in
    the order first seen; ``None`` without notes."""
    counts: dict[str, int] = {}
    for n in notes:
        counts[str(n)] = counts.get(str(n), 0) + 1
    if not counts:
        return None
    items = [{"text": t, "count": c} for t, c in counts.items()]
    return {"count": len(notes), "distinct": len(items), "items": items}


def _graph_views(analysis, graph, layers_r: pd.DataFrame | None, metric: str) -> list[dict]:
    """The topology drawing (partition level) and, for small graphs, the neuron-level one."""
    if graph is None:
        return []
    roles = {}
    if layers_r is not None:
        roles = {str(n): (li, r) for n, li, r in zip(layers_r["layer"], layers_r["layer_index"], layers_r["role"])}
    blocks = getattr(analysis, "blocks", None)
    label = METRICS[metric][0] if metric in METRICS else metric
    svg, caption = topology.topology_svg(graph, blocks, roles, metric=metric, metric_label=label, svg_id="topology-svg")
    views = [{"id": "topology", "title": "Topology: partitions and weight tensors",
              "svg": Markup(svg) if svg else None, "caption": caption}]
    neurons = getattr(analysis, "neurons", None)
    column = "centrality" if neurons is not None and "centrality" in neurons else "core"
    if graph.num_nodes <= topology.MAX_NEURON_VIEW:
        nsvg, ncap = topology.neuron_svg(graph, neurons, column=column, svg_id="neuron-svg", roles=roles)
        views.append({"id": "topology-neurons", "title": "Neuron-level graph", "svg": Markup(nsvg) if nsvg else None,
                      "caption": ncap})
    return views


#: Null-model rows whose |z| reaches this are marked as differing from their null.
Z_MARK = 3.0


def _null_by_role(null: pd.DataFrame, layers_r: pd.DataFrame | None) -> str | None:
    """z against layer index, one line per role, one panel per (metric, scope): the
    transformer reading of the null-model frame; ``None`` without roles."""
    if layers_r is None or not _has(null, "layer", "scope", "metric", "z"):
        return None
    part = {str(n): (li, r) for n, li, r in zip(layers_r["layer"], layers_r["layer_index"], layers_r["role"])}
    rows = []
    for r in null.to_dict("records"):
        if r["scope"] == "layer":
            li, role = part.get(str(r["layer"]), (None, None))
        elif r["scope"] == "block":
            li, role = name_role(str(r["layer"]))
        else:
            continue
        li, role = clean_pair(li, role)
        if li is not None:
            rows.append({"layer_index": li, "role": role, "panel": f"{r['metric']} [{r['scope']}]", "z": r["z"]})
    if not rows:
        return None
    long = pd.DataFrame(rows)
    if long["layer_index"].nunique() < 2:
        return None
    panels = list(dict.fromkeys(long["panel"]))
    wide = long.pivot_table(index=["layer_index", "role"], columns="panel", values="z", aggfunc="mean").reset_index()
    wide["layer_index"] = pd.array(wide["layer_index"], dtype="Int64")
    return figures.role_lines(wide, panels, {p: f"z of {p}" for p in panels}, hlines=(-Z_MARK, 0.0, Z_MARK), log=False)


def _null_table(null: pd.DataFrame | None, layers_r: pd.DataFrame | None = None) -> dict | None:
    """The null-model frame (``a.null``): one row per (layer, metric), |z| >= :data:`Z_MARK`
    marked; a heatmap of z (at most ``figures.MAX_LAYERS_DRAWN`` rows), and for transformer
    names z against layer index per role."""
    if null is None or not isinstance(null, pd.DataFrame) or not len(null):
        return None
    cols = [c for c in ("layer", "scope", "metric", "observed", "null_mean", "null_std", "z", "p", "n", "kind", "note",
                        "layer_index", "role") if c in null.columns]  # the order of a.null and the JSON rows
    text_cols = ("layer", "role", "scope", "metric", "kind", "note")
    headers = {"null_mean": "null mean", "null_std": "null std", "layer_index": "layer index"}
    classes = {c: "name layer" for c in text_cols} | {"note": "wrap", "role": ""}
    rows = []
    flagged = 0
    for r in null.to_dict("records"):
        z = r.get("z")
        mark = z is not None and isinstance(z, (int, float, np.floating)) and np.isfinite(z) and abs(z) >= Z_MARK
        flagged += bool(mark)
        rows.append({"mark": bool(mark), "cells": [{"text": _null_cell(r[c], c in text_cols, c == "role"),
                                                    "cls": classes.get(c, "num")} for c in cols]})
    kinds = sorted({str(k) for k in null["kind"].dropna()}) if "kind" in null else []
    n = sorted({int(k) for k in null["n"].dropna()}) if "n" in null else []
    uri = None
    role_uri = _null_by_role(null, layers_r)
    if role_uri is None and _has(null, "layer", "scope", "metric", "z") and null["layer"].nunique() <= figures.MAX_LAYERS_DRAWN:
        uri = figures.null_z_heatmap(null, Z_MARK)
    return {"columns": [{"header": headers.get(c, c), "num": c not in text_cols} for c in cols],
            "rows": rows, "flagged": flagged, "total": len(rows), "z_mark": Z_MARK, "uri": uri, "role_uri": role_uri,
            "kinds": ", ".join(kinds) or "\u2013", "n": ", ".join(map(str, n)) or "\u2013"}


def _null_cell(value, text: bool, dash_when_empty: bool) -> str:
    """One cell of the null table: text as it is (an en dash for a missing role), numbers by
    :func:`fmt` (an en dash where missing)."""
    if not text:
        return fmt(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "\u2013" if dash_when_empty else ""
    return str(value)


#: ‖ΔW‖_F / ‖W_base‖_F is not shown where ‖W_base‖_F is at most this fraction of the largest.
DELTA_BASE_FLOOR = 1e-9


def _delta_section(graph, delta_norms: pd.DataFrame | None) -> dict | None:
    """Per-block ‖ΔW‖_F, ‖W_base‖_F and their ratio, from ``delta_norms`` or a ΔW graph's
    ``meta["norms"]``; a ratio is shown only where ‖W_base‖_F is not near zero (above
    :data:`DELTA_BASE_FLOOR` times the largest ‖W_base‖_F: blocks of very different sizes have
    norms that differ by orders of magnitude, and their ratios are still meaningful)."""
    meta = dict(getattr(graph, "meta", None) or {})
    if delta_norms is None and meta.get("norms") is not None:
        delta_norms = pd.DataFrame(meta["norms"])
    if delta_norms is None or not isinstance(delta_norms, pd.DataFrame) or not len(delta_norms):
        return None
    d = delta_norms
    base = pd.to_numeric(d.get("frobenius_base", pd.Series(np.nan, index=d.index)), errors="coerce").to_numpy(dtype=float)
    scale = float(np.nanmax(np.abs(base))) if np.isfinite(base).any() else 0.0
    rows = []
    for r, b in zip(d.to_dict("records"), base):
        rel = r.get("relative")
        if rel is None or not np.isfinite(b) or abs(b) <= DELTA_BASE_FLOOR * scale or b == 0:
            rel_text = "\u2013"
        else:
            rel_text = f"{100 * float(rel):.2f} %"
        rows.append([str(r.get("block", "")), fmt(r.get("frobenius_delta")), fmt(r.get("frobenius_base")), rel_text]
                    + ([fmt(r.get("max_abs_delta"))] if "max_abs_delta" in d else []))
    info = meta.get("delta") or {}
    return {"rows": rows, "has_max": "max_abs_delta" in d, "base": str(info.get("base", "")),
            "tuned": str(info.get("tuned", "")), "all_zero": meta.get("all_zero"),
            "changed": int((pd.to_numeric(d.get("frobenius_delta"), errors="coerce") > 0).sum())
            if "frobenius_delta" in d else None}


# -- public API ------------------------------------------------------------------------------
def render_report(analysis, provenance: Provenance, graph=None, *, title: str | None = None,
                  delta_norms: pd.DataFrame | None = None, topology_metric: str = "J") -> str:
    """HTML of one analysed checkpoint: provenance header, one banner with the graph's notes,
    summary, the topology drawing (partitions and blocks; neurons too for small graphs),
    metric definitions, the per-layer table, the figures (metric against layer index per role
    for transformer-like names), null-model z-scores (``analysis.null``) and the ΔW norms
    (``delta_norms``, or a ΔW graph's own) when present, the weight-tensor table (with spectral
    columns when computed) and the coverage (skipped parameters with reasons). ``graph`` (the
    extracted :class:`LayeredGraph`) adds coverage, topology and the blocks feeding each layer;
    ``topology_metric`` is the block column that colours the topology's edges."""
    layers_r = grouping.with_roles(analysis.layers, "layer", grouping.partition_role_function(analysis.layers, graph))
    blocks_r = grouping.with_roles(analysis.blocks, "block") if _has(analysis.blocks, "block") else None
    notes = list(getattr(graph, "notes", []) or [])
    cov = _coverage(graph)
    if cov and cov["nonfinite"]:
        notes.append("Non-finite weights (NaN/Inf) were found; results touching these tensors are not meaningful: "
                     + ", ".join(f"{r['name']} ({r['count']})" for r in cov["nonfinite"]))
    ctx = {
        "mode": "single",
        "title": title or f"graphnn report: {Path(provenance.source).name}",
        "subtitle": provenance.source,
        "provenance": _provenance_rows(provenance, analysis),
        "cards": _summary_cards(analysis, graph),
        "notes": _notes_banner(notes),
        "graph_views": _graph_views(analysis, graph, layers_r, topology_metric),
        "null": _null_table(getattr(analysis, "null", None), layers_r),
        "delta": _delta_section(graph, delta_norms),
        "definitions": _definitions(analysis),
        "layer_table": _layer_table(analysis, graph),
        "blocks_table": _blocks_table(analysis),
        "figures": _single_figures(analysis, layers_r, blocks_r),
        "coverage": cov,
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
    scales = {m: _scale(wide.loc[wide["metric"] == m, labels]) for m in metrics}
    show_roles = bool(wide["layer_index"].notna().any()) if "layer_index" in wide else False
    for layer in order:
        cells = []
        w = wide[wide["layer"] == layer].set_index("metric")
        for m in metrics:
            cells += [fmt(w.at[m, first]), fmt(w.at[m, last]),
                      _change_text(w.at[m, first], w.at[m, last], w.at[m, "rel_change"], scales[m])]
        rows.append({"layer": layer, "size": fmt(sizes[layer]) if sizes is not None else "", "cells": cells,
                     "role": _role_text(w.iloc[0].to_dict()) if show_roles and len(w) else None})
    compare_table = {
        "metrics": [{"key": m, "header": _HEADERS.get(m, m), "help": describe_column(m)} for m in metrics],
        "first": first, "last": last, "rows": rows, "show_roles": show_roles,
    }
    titles = {m: _HEADERS.get(m, m) for m in metrics}
    pre = "Before / after: " if mode == "rewire" else ""
    block_metrics = [m for m in ROLE_BLOCK_METRICS if all(_has(a.blocks, "block", m) for a in analyses.values())]
    block_wides = {m: compare_blocks(analyses, m) for m in block_metrics}
    role_figs = _comparison_role_figures(wide, block_wides, labels, pre)
    figs = role_figs or [{"id": "fig-compare-layers",
                          "title": pre + "per-layer metrics" if pre else "Per-layer metrics by checkpoint",
                          "uri": figures.compare_layer_metrics(long, order, metrics, titles),
                          "caption": "Each panel is one per-layer metric; one marker per checkpoint, layers aligned "
                                     "by name."}]
    if all(_has(a.neurons, "strength", "centrality", "core") for a in analyses.values()):
        figs.append({"id": "fig-compare-dist", "title": pre + "distributions over all neurons" if pre else "Distributions over all neurons",
                     "uri": figures.compare_distributions({k: a.neurons for k, a in analyses.items()}),
                     "caption": "Strength and centrality histograms (density, each checkpoint normalised on its "
                                "own; at most %s sampled neurons per layer) and the k-hypercore size against k."
                                % f"{figures.MAX_POINTS_PER_LAYER:,}"})
    has_j = all(_has(a.blocks, "block", "J") for a in analyses.values())
    if has_j and not role_figs:
        figs.append({"id": "fig-compare-j", "title": (pre + "strength variance J per weight tensor") if pre else "Strength variance J per weight tensor",
                     "uri": figures.compare_tensor_variance({k: a.blocks for k, a in analyses.items()}),
                     "caption": "J = (Var of row sums + Var of column sums) / 2 of each weight tensor "
                                "(Scabini et al.); PA rewiring lowers it while keeping every weight value."})
    if has_j:
        jt = block_wides.get("J")
        jt = compare_blocks(analyses, "J") if jt is None else jt
        jscale = _scale(jt[labels])
        block_roles = bool(jt["layer_index"].notna().any())
        blocks_table = {
            "columns": ([{"key": "role", "header": "layer \u00b7 role", "help": "transformer layer index and role, "
                          "read from the name", "cls": ""}] if block_roles else [])
            + [{"key": lab, "header": f"J {lab}", "help": describe_column("J"), "cls": "num"}
               for lab in labels]
            + [{"key": "rel_change", "header": "change", "help": "relative change of J, last vs first", "cls": "num"}],
            "rows": [{"block": str(r["block"]),
                      "cells": ([{"text": _role_text(r), "cls": ""}] if block_roles else [])
                      + [{"text": fmt(r[lab]), "cls": "num"} for lab in labels]
                      + [{"text": _change_text(r[first], r[last], r["rel_change"], jscale), "cls": "num"}]}
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
        "notes": _notes_banner([n for g in graphs.values() for n in (getattr(g, "notes", []) or [])]),
        "graph_views": _comparison_graph_views(analyses[last], graphs.get(last), last),
        "null": None,
        "delta": None,
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


def _comparison_graph_views(analysis, graph, label: str) -> list[dict]:
    """The topology drawings (:func:`_graph_views`) of the last checkpoint, titled with its label."""
    if graph is None:
        return []
    layers_r = grouping.with_roles(analysis.layers, "layer", grouping.partition_role_function(analysis.layers, graph))
    views = _graph_views(analysis, graph, layers_r, "J" if _has(analysis.blocks, "J") else "mean_abs_weight")
    for v in views:
        v["title"] += f" ({label})"
        v["caption"] = f"Drawn for {label}, the last checkpoint. " + v["caption"]
    return views


def _role_panels(wide: pd.DataFrame, key: str, metric_of, labels: Sequence[str], shown: Sequence[str],
                 kind: str) -> tuple[dict, dict, dict]:
    """Rows ``{name: {layer_index, role, "<metric>|<label>": value, "<metric>|change": %}}`` of a
    side-by-side table, the titles of the value panels and those of the change panels. The change is
    100 (last - first) / |first|, NaN where |first| is near zero (:func:`_is_near_zero`) against
    the largest |first| of the metric among the rows of the same role (the line it is drawn on)."""
    rows: dict[str, dict] = {}
    value_titles, change_titles = {}, {}
    pairs: dict[tuple[str, str], tuple[float, float]] = {}
    first, last = labels[0], labels[-1]
    for r in wide.to_dict("records"):
        m = metric_of(r)
        rec = rows.setdefault(str(r[key]), {"layer_index": r["layer_index"], "role": r["role"]})
        for lab in shown:
            rec[f"{m}|{lab}"] = r[lab]
            value_titles[f"{m}|{lab}"] = f"{_role_title(m, kind)}: {lab}"
        pairs[(str(r[key]), m)] = (_float(r[first]), _float(r[last]))
        change_titles[f"{m}|change"] = f"{_role_title(m, kind)}: % change"
    scales: dict[tuple[str, object], float] = {}
    for (name, m), (f, _) in pairs.items():
        k = (m, rows[name]["role"])
        scales[k] = max(scales.get(k, 0.0), abs(f) if np.isfinite(f) else 0.0)
    for (name, m), (f, l_) in pairs.items():
        ok = np.isfinite(f) and np.isfinite(l_) and not _is_near_zero(f, scales[(m, rows[name]["role"])])
        rows[name][f"{m}|change"] = 100 * (l_ - f) / abs(f) if ok else float("nan")
    return rows, value_titles, change_titles


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _role_title(metric: str, kind: str) -> str:
    return _ROLE_TITLES.get(metric, f"{_HEADERS.get(metric, metric)} ({kind})")


def _role_frame(rows: Mapping[str, dict]) -> pd.DataFrame:
    f = pd.DataFrame(list(rows.values()))
    f["layer_index"] = pd.array(f["layer_index"], dtype="Int64")
    return f


def _comparison_role_figures(wide: pd.DataFrame, block_wides: Mapping[str, pd.DataFrame], labels: Sequence[str],
                             pre: str) -> list[dict]:
    """For transformer names (:func:`graphnn.report.grouping.is_layered`): the compared metrics
    against layer index, one line per role, one panel per (metric, checkpoint) with a shared y
    axis per metric, for the partitions and the weight tensors, and the relative change from the
    first to the last checkpoint the same way; empty otherwise (the per-partition figures then)."""
    if "layer_index" not in wide or not grouping.is_layered(wide.drop_duplicates("layer")):
        return []
    shown = list(labels) if len(labels) <= 4 else [labels[0], labels[-1]]
    omitted = "" if len(shown) == len(labels) else (f" With {len(labels)} checkpoints only the first and the last "
                                                    "are drawn; the table has them all.")
    rows, vt, ct = _role_panels(wide, "layer", lambda r: r["metric"], labels, shown, "partition")
    out = [{"id": "fig-compare-roles-layers", "title": pre + "partition metrics by layer and role" if pre
            else "Partition metrics by layer and role",
            "uri": figures.role_lines(_role_frame(rows), list(vt), vt, ncols=len(shown), sharey="row"),
            "caption": "Each compared per-partition metric against the transformer layer index, one line per role, "
                       "one row of panels per metric and one column per checkpoint (a row shares its y axis). "
                       "Partitions without a layer index (residual stream, embeddings, head) are in the table only; "
                       "several partitions of one role in one layer (experts) are averaged." + omitted}]
    change_frames = [_role_frame(rows)]
    change_titles = dict(ct)
    bwide = {m: w for m, w in block_wides.items() if "layer_index" in w and grouping.is_layered(w)}
    if bwide:
        brows: dict[str, dict] = {}
        btitles: dict[str, str] = {}
        for m, w in bwide.items():
            r_, v_, c_ = _role_panels(w, "block", lambda r, m=m: m, labels, shown, "weight tensor")
            for name, rec in r_.items():
                brows.setdefault(name, {}).update(rec)
            btitles.update(v_)
            change_titles.update(c_)
        bframe = _role_frame(brows)
        out.append({"id": "fig-compare-roles-blocks", "title": pre + "weight-tensor metrics by layer and role" if pre
                    else "Weight-tensor metrics by layer and role",
                    "uri": figures.role_lines(bframe, list(btitles), btitles, ncols=len(shown), sharey="row"),
                    "caption": "Each weight tensor's J (= (Var of row sums + Var of column sums) / 2), mean |w| and, "
                               "when computed, spectral norm and stable rank against its transformer layer index, one "
                               "line per role (q, k, v, o: attention; up, gate, down: MLP), one column per checkpoint."
                               + omitted})
        change_frames.append(bframe)
    change = pd.concat(change_frames, ignore_index=True)
    change["layer_index"] = pd.array(change["layer_index"], dtype="Int64")
    out.append({"id": "fig-compare-roles-change", "title": pre + "relative change by layer and role" if pre
                else "Relative change by layer and role",
                "uri": figures.role_lines(change, list(change_titles), change_titles, hlines=(0.0,), log=False),
                "caption": f"100 (last \u2212 first) / |first| in %, {labels[-1]} against {labels[0]}, for the "
                           "partition metrics and the weight-tensor metrics above, one line per role (dashed line at "
                           "0). Where |first| is 0 or at most 1 % of the largest |first| of its line (the metric in "
                           "that role) a percentage says nothing, and no point is drawn; the tables give the "
                           "absolute change."})
    return out


#: A relative change is shown as a percentage only where |first| exceeds this fraction of the
#: largest |value| of the metric in the table (and is not 0); nearer zero a percentage says
#: nothing (a mean of 1e-6 becoming 3e-6 is "+200 %"), so the absolute change is shown, marked Δ.
NEAR_ZERO_REL = 1e-2


def _scale(values) -> float:
    """Largest finite |value| of a table block (0 when none)."""
    v = np.abs(pd.DataFrame(values).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float))
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


def _is_near_zero(first: float, scale: float) -> bool:
    """Whether ``first`` is 0 or at most :data:`NEAR_ZERO_REL` of ``scale`` (no percentage then)."""
    return first == 0 or abs(first) <= NEAR_ZERO_REL * scale


def _change_text(first, last, rel, scale: float) -> str:
    """``+12.3 %`` where ``first`` is clearly non-zero (see :data:`NEAR_ZERO_REL`), else the
    absolute change ``Δ +1.2e-06`` (an en dash when a value is missing)."""
    try:
        f, l_ = float(first), float(last)
    except (TypeError, ValueError):
        return "\u2013"
    if not (np.isfinite(f) and np.isfinite(l_)):
        return "\u2013"
    if _is_near_zero(f, scale) or rel is None or not np.isfinite(float(rel)):
        d = l_ - f
        return "\u0394 " + ("+" if d >= 0 else "") + fmt(d)
    return f"{100 * float(rel):+.1f} %"


def write_html(html: str, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``html`` to ``path`` atomically (a temporary file in the same folder, then moved into
    place), creating the folder if needed; returns the path. ``overwrite=False`` refuses an
    existing file (:class:`~graphnn.errors.RefusedOverwriteError`, also when another writer
    publishes it first)."""
    p = Path(path)
    atomic_write(p, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"), overwrite=overwrite)
    return p
