"""Short HTML summaries for Jupyter: what ``LayeredGraph._repr_html_`` and
``Analysis._repr_html_`` show (counts, a small table, the notes). Every name and note is
escaped; no script, no style sheet, nothing fetched."""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

#: Rows shown per table before "… and N more".
MAX_ROWS = 12
#: Notes shown open; more go into a collapsed list.
OPEN_NOTES = 3


def fmt(x: Any) -> str:
    """Display a number (the report's tables, the CLI's text tables and these summaries):
    integers with thousands separators, floats with 4 significant digits (scientific below 1e-3
    and from 1e5), booleans as yes/no, missing values (None, NaN, ``pd.NA``) as an en dash.
    numpy and torch scalars are read through ``.item()``."""
    if x is None or type(x).__name__ == "NAType":
        return "\u2013"
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, TypeError):
            pass
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "\u2013"
        if math.isinf(x):
            return "\u221e" if x > 0 else "-\u221e"
        return f"{x:.3e}" if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3) else f"{x:.4g}"
    return str(x)


def cell(value: Any) -> str:
    """One escaped table cell (:func:`fmt`)."""
    return html.escape(fmt(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], total: int, what: str) -> str:
    """An HTML table of at most :data:`MAX_ROWS` of ``rows`` (``total`` rows in all)."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        if i >= MAX_ROWS:
            break
        body.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>")
    more = (f"<tr><td colspan='{len(header)}'>\u2026 and {total - MAX_ROWS:,} more {html.escape(what)}</td></tr>"
            if total > MAX_ROWS else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}{more}</tbody></table>"


def notes(items: Sequence[str]) -> str:
    """The notes as a list: the first :data:`OPEN_NOTES` shown, the rest collapsed."""
    if not items:
        return ""
    shown = "".join(f"<li>{html.escape(str(n))}</li>" for n in items[:OPEN_NOTES])
    rest = items[OPEN_NOTES:]
    hidden = (f"<details><summary>{len(rest)} more note{'s' if len(rest) > 1 else ''}</summary><ul>"
              + "".join(f"<li>{html.escape(str(n))}</li>" for n in rest) + "</ul></details>") if rest else ""
    return f"<p><b>{len(items)} note{'s' if len(items) > 1 else ''}</b></p><ul>{shown}</ul>{hidden}"


def page(title: str, facts: Sequence[tuple[str, Any]], parts: Sequence[str]) -> str:
    """A ``<div>`` with a bold title, a line of ``label: value`` facts and the given parts."""
    line = " \u00b7 ".join(f"{html.escape(k)}: {cell(v)}" for k, v in facts)
    return f"<div><p><b>{html.escape(title)}</b></p><p>{line}</p>{''.join(parts)}</div>"


def graph_html(g) -> str:
    """The summary of a :class:`~graphnn.LayeredGraph`: counts, coverage, topology, the
    partitions and blocks (first rows) and the notes."""
    facts = [("partitions", len(g.partitions)), ("blocks", len(g.blocks)), ("neurons", g.num_nodes),
             ("edges", g.num_edges)]
    if g.coverage_fraction or len(g.coverage):
        facts.append(("mapped", f"{100 * g.coverage_fraction:.1f} % of entries"))
    topology = getattr(g, "topology", None)
    if topology:
        facts.append(("topology", topology))
    parts = [table(["partition", "size", "kind", "members"],
                   ((p.name, p.size, p.kind, len(p.members)) for p in g.partitions.values()),
                   len(g.partitions), "partitions"),
             table(["block", "src \u2192 dst", "shape", "kind"],
                   ((b.name, f"{b.src} \u2192 {b.dst}", f"{b.n_dst} \u00d7 {b.n_src}", b.kind) for b in g.blocks.values()),
                   len(g.blocks), "blocks"),
             notes(list(g.notes))]
    title = "LayeredGraph" + (f" of {g.source}" if g.source else "")
    return page(title, facts, parts)


_LAYER_COLUMNS = ("layer", "size", "kind", "role", "strength_mean", "strength_std", "centrality_max", "core_max")
_BLOCK_COLUMNS = ("block", "role", "edges", "J", "mean_abs_weight", "spectral_norm", "stable_rank", "ww_alpha")
_NULL_COLUMNS = ("layer", "scope", "metric", "observed", "null_mean", "z", "p")


def _frame_table(df, columns: Sequence[str], what: str) -> str:
    cols = [c for c in columns if c in df.columns]
    return table(cols, df[cols].itertuples(index=False, name=None), len(df), what)


def analysis_html(a) -> str:
    """The summary of an :class:`~graphnn.Analysis`: counts, the centrality solve, the first
    rows of the layer and block tables and, when computed, the null-model rows with the largest |z|."""
    facts = [("layers", len(a.layers)), ("neurons", len(a.neurons)), ("blocks", len(a.blocks)),
             ("runtime", f"{a.runtime_s:.2f} s")]
    info = a.centrality_info or {}
    if "eigenvalue" in info:
        facts.append(("leading eigenvalue", info["eigenvalue"]))
        facts.append(("converged", bool(info.get("converged"))))
    parts = [_frame_table(a.layers, _LAYER_COLUMNS, "layers"), _frame_table(a.blocks, _BLOCK_COLUMNS, "blocks")]
    null = getattr(a, "null", None)
    if null is not None and len(null) and "z" in null:
        top = null.reindex(null["z"].abs().sort_values(ascending=False, na_position="last").index)
        parts.append("<p><b>null model</b>: rows with the largest |z|</p>" + _frame_table(top, _NULL_COLUMNS, "rows"))
    return page("Analysis", facts, parts)
