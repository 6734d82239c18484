"""The graph itself, drawn: partitions as nodes, blocks as edges, as inline SVG.

:func:`partition_graph` builds the partition-level ``networkx.DiGraph`` of a
:class:`~graphnn.LayeredGraph` (one node per partition, one edge per ``(src, dst)`` pair of
partitions joined by at least one block). :func:`topology_svg` lays it out with networkx and
writes a self-contained ``<svg>`` element (no external reference, no script), one ``<g
class="node" data-partition=...>`` per partition and one ``<path class="edge" data-src=...
data-dst=...>`` per pair, each with a ``<title>`` tooltip:

* node area is proportional to the partition's neurons; its colour is its kind (grey: network
  input, orange: residual stream, green: concatenation, blue: other features);
* edge width is proportional to the mean |w| of its blocks (to the number of edges where no
  mean |w| is known); its colour is a chosen block metric (``J`` by default), averaged over the
  pair's blocks weighted by their edges, on a log scale when the values span more than two decades.

Layout: when most partitions have a transformer layer index (``layer_index`` from the roles),
layer index runs left to right and role top to bottom, and partitions without an index (the
residual stream, embeddings, head) sit on a *shared* row below. Otherwise the graph is drawn
by depth (:func:`partition_depths`, ``networkx.multipartite_layout``). :func:`neuron_svg` draws a
small graph (at most ``MAX_NEURON_VIEW`` neurons) neuron by neuron, coloured by a neuron metric.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd

from .labels import short_label

#: Partition graphs above this many nodes are not drawn by depth (the caption says so) ...
MAX_TOPOLOGY_PARTITIONS = 300
#: ... nor above this many in the (layer index, role) grid, which stays readable for longer.
MAX_TOPOLOGY_PARTITIONS_GRID = 1200
#: Graphs with at most this many neurons also get the neuron-level drawing.
MAX_NEURON_VIEW = 2000
#: ... and at most this many structural edges (they are all read to find the strongest).
MAX_NEURON_VIEW_EDGES = 2_000_000
#: Strongest edges drawn in the neuron-level view.
NEURON_VIEW_EDGES = 2500

KIND_COLORS = {"input": "#8c8c8c", "features": "#4c72b0", "residual": "#dd8452", "concat": "#55a868"}
_WIDTH = 1000
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"


# -- the partition-level graph ---------------------------------------------------------------
def partition_graph(g, blocks: pd.DataFrame | None = None, metric: str = "J") -> nx.DiGraph:
    """One node per partition (attributes ``size``, ``kind``, ``order``: position in network
    order) and one edge per ``(src, dst)`` pair with blocks (attributes ``blocks``: their names,
    ``edges``: structural edges summed, ``mean_abs_weight`` and ``metric``: the blocks' values
    from the analysis table ``blocks``, averaged weighted by edges; NaN where unknown)."""
    G = nx.DiGraph()
    for k, (name, p) in enumerate(g.partitions.items()):
        G.add_node(name, size=int(p.size), kind=str(p.kind), order=k, members=tuple(p.members))
    table = _block_values(blocks, metric)
    for b in g.blocks.values():
        e = int(b.num_edges)
        mw, mv = table.get(b.name, (math.nan, math.nan))
        if G.has_edge(b.src, b.dst):
            d = G[b.src][b.dst]
            d["blocks"].append(b.name)
            d["_acc"].append((e, mw, mv))
            d["edges"] += e
        else:
            G.add_edge(b.src, b.dst, blocks=[b.name], edges=e, _acc=[(e, mw, mv)])
    for _, _, d in G.edges(data=True):
        acc = d.pop("_acc")
        d["mean_abs_weight"] = _weighted_mean([(e, w) for e, w, _ in acc])
        d["metric"] = _weighted_mean([(e, v) for e, _, v in acc])
    G.graph["metric"] = metric
    return G


def _block_values(blocks: pd.DataFrame | None, metric: str) -> dict[str, tuple[float, float]]:
    if blocks is None or "block" not in getattr(blocks, "columns", ()):
        return {}
    mw = blocks["mean_abs_weight"] if "mean_abs_weight" in blocks else pd.Series(np.nan, index=blocks.index)
    mv = blocks[metric] if metric in blocks else pd.Series(np.nan, index=blocks.index)
    return {str(n): (float(w), float(v)) for n, w, v in zip(blocks["block"], pd.to_numeric(mw, errors="coerce"),
                                                            pd.to_numeric(mv, errors="coerce"))}


def _weighted_mean(pairs: Sequence[tuple[int, float]]) -> float:
    ok = [(e, v) for e, v in pairs if v is not None and np.isfinite(v)]
    tot = sum(e for e, _ in ok)
    if not ok:
        return math.nan
    if tot == 0:
        return float(np.mean([v for _, v in ok]))
    return float(sum(e * v for e, v in ok) / tot)


def partition_depths(G: nx.DiGraph) -> dict[str, int]:
    """Depth of every partition: the longest path to it from a partition with no forward
    in-edge, over *forward* edges only (source earlier than destination in network order).
    Edges back to an earlier partition (writes into a residual stream) and self-loops do not add
    depth, so the depth is defined on every graph, cyclic or not."""
    order = nx.get_node_attributes(G, "order")
    dag = nx.DiGraph()
    dag.add_nodes_from(G.nodes)
    dag.add_edges_from((u, v) for u, v in G.edges if order[u] < order[v])
    depth: dict[str, int] = {}
    for n in nx.topological_sort(dag):
        depth[n] = max((depth[p] + 1 for p in dag.predecessors(n)), default=0)
    return depth


# -- layout ----------------------------------------------------------------------------------
def _roles_of(names: Sequence[str], roles: Mapping[str, tuple[Any, Any]] | None) -> dict[str, tuple[int | None, str | None]]:
    out = {}
    for n in names:
        li, role = (roles or {}).get(n, (None, None))
        li = None if li is None or (isinstance(li, float) and math.isnan(li)) or li is pd.NA else int(li)
        role = None if role is None or (isinstance(role, float) and math.isnan(role)) or role is pd.NA else str(role)
        out[n] = (li, role)
    return out


def layout(G: nx.DiGraph, roles: Mapping[str, tuple[Any, Any]] | None = None) -> tuple[dict[str, tuple[float, float]], dict]:
    """Positions in abstract units (x: column, y: row, down) and a description of the grid:
    ``{"mode": "roles"|"depth", "columns": [(x, label)], "rows": [(y, label)]}``."""
    names = list(G.nodes)
    r = _roles_of(names, roles)
    indexed = [n for n in names if r[n][0] is not None]
    if names and len(indexed) >= 0.5 * len(names) and len({r[n][0] for n in indexed}) >= 2:
        return _role_layout(G, names, r)
    return _depth_layout(G)


def _role_layout(G, names, r):
    role_rank: dict[str, int] = {}
    for n in names:
        li, role = r[n]
        if li is not None:
            role_rank.setdefault(role or "other", len(role_rank))
    cells: dict[tuple[int, int], list[str]] = {}
    shared = []
    for n in names:
        li, role = r[n]
        if li is None:
            shared.append(n)
        else:
            cells.setdefault((li, role_rank[role or "other"]), []).append(n)
    layer_ids = sorted({li for li, _ in cells})
    col = {li: k for k, li in enumerate(layer_ids)}
    pos = {}
    for (li, rr), members in cells.items():
        for k, n in enumerate(members):  # several partitions in one cell (experts): spread them
            off = 0.0 if len(members) == 1 else (k / (len(members) - 1) - 0.5) * 0.6
            pos[n] = (float(col[li]), float(rr) + off)
    n_rows = len(role_rank)
    if shared:
        span = max(len(layer_ids) - 1, 1)
        streams = [n for n in shared if G.nodes[n]["kind"] == "residual"]
        others = [n for n in shared if n not in streams]
        for k, n in enumerate(streams):  # the residual stream(s) in the middle, between two columns
            pos[n] = (_between_columns(span * (k + 1) / (len(streams) + 1), span), n_rows + 0.6)
        for k, n in enumerate(others):   # embeddings, heads, ...: spread over the row, off the middle
            x = span * (k + 0.5) / len(others) if len(others) > 1 else span * 0.85
            if streams and abs(x - span / 2) < 0.15 * span:
                x = x + 0.2 * span if x >= span / 2 else x - 0.2 * span
            pos[n] = (_between_columns(min(max(x, 0.0), span), span), n_rows + 0.6)
    rows = [(float(v), k) for k, v in role_rank.items()] + ([(n_rows + 0.6, "shared")] if shared else [])
    return pos, {"mode": "roles", "columns": [(float(col[li]), str(li)) for li in layer_ids], "rows": rows,
                 "n_cols": len(layer_ids), "n_rows": n_rows + (1.2 if shared else 0)}


def _between_columns(x: float, span: float) -> float:
    """``x`` moved half a column when it falls on a column, so that the edges of a shared
    partition do not run along that column's own nodes."""
    if abs(x - round(x)) < 0.2:
        x = x + 0.5 if x + 0.5 <= span else x - 0.5
    return x


def _depth_layout(G):
    depth = partition_depths(G)
    H = nx.DiGraph()
    for n in G.nodes:  # in network order, so each column lists its partitions in that order
        H.add_node(n, depth=depth[n])
    if not len(H):
        return {}, {"mode": "depth", "columns": [], "rows": [], "n_cols": 0, "n_rows": 0}
    per_col: dict[int, int] = {}
    for n in H.nodes:
        per_col[depth[n]] = per_col.get(depth[n], 0) + 1
    tallest = max(per_col.values())
    raw = nx.multipartite_layout(H, subset_key="depth", align="vertical", scale=1.0)
    pos = {}
    # networkx places each column's partitions evenly and centred; keep its order, in unit steps
    for d in per_col:
        col = sorted((n for n in H.nodes if depth[n] == d), key=lambda n: -raw[n][1])
        start = (tallest - len(col)) / 2
        for k, n in enumerate(col):
            pos[n] = (float(d), start + k)
    n_cols = max(depth.values()) + 1
    return pos, {"mode": "depth", "columns": [(float(d), str(d)) for d in range(n_cols)], "rows": [],
                 "n_cols": n_cols, "n_rows": tallest}


# -- colours ---------------------------------------------------------------------------------
def _colormap(values: np.ndarray, cmap: str = "viridis"):
    """A function value -> hex colour over the finite values (log scale when all are positive
    and span more than two decades), and ``(lo, hi, log)`` for the legend."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    v = values[np.isfinite(values)]
    cm = colormaps[cmap]
    if not v.size:
        return (lambda x: "#9aa3b5"), None
    lo, hi = float(v.min()), float(v.max())
    log = bool(lo > 0 and hi / lo > 100)

    def t(x: float) -> float:
        if hi == lo:
            return 0.5
        if log:
            return (math.log10(x) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return (x - lo) / (hi - lo)

    def colour(x: float) -> str:
        if x is None or not np.isfinite(x) or (log and x <= 0):
            return "#9aa3b5"
        return to_hex(cm(0.1 + 0.8 * min(max(t(x), 0.0), 1.0)))

    return colour, (lo, hi, log, [to_hex(cm(0.1 + 0.8 * k / 8)) for k in range(9)])


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "\u2013"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-2):
        return f"{x:.2e}"
    return f"{x:.3g}"


# -- SVG -------------------------------------------------------------------------------------
def topology_svg(g, blocks: pd.DataFrame | None = None, roles: Mapping[str, tuple[Any, Any]] | None = None,
                 metric: str = "J", metric_label: str | None = None, svg_id: str = "topology") -> tuple[str | None, str]:
    """``(svg, caption)`` of the partition-level graph; ``svg`` is ``None`` when the graph has
    more than :data:`MAX_TOPOLOGY_PARTITIONS` partitions (the caption says why). ``roles`` maps a
    partition name to ``(layer_index, role)``; ``metric`` is the column of ``blocks`` that
    colours the edges."""
    G = partition_graph(g, blocks, metric)
    n = G.number_of_nodes()
    pos, grid = layout(G, roles) if n <= MAX_TOPOLOGY_PARTITIONS_GRID else ({}, {"mode": "depth"})
    limit = MAX_TOPOLOGY_PARTITIONS_GRID if grid["mode"] == "roles" else MAX_TOPOLOGY_PARTITIONS
    if n > limit:
        return None, (f"The graph has {n:,} partitions, more than the {limit:,} drawn here"
                      + (" by depth (names without transformer layer indices)" if limit == MAX_TOPOLOGY_PARTITIONS else "")
                      + "; the layer and weight-tensor tables list them all (graphnn.report.topology.partition_graph "
                      "gives the networkx graph to draw a part of it).")
    label = metric_label or metric
    svg = _draw(G, pos, grid, label, svg_id)
    mode = ("Columns are transformer layers (layer index) and rows roles; partitions without a layer index "
            "(residual stream, embeddings, head) sit on the shared row."
            if grid["mode"] == "roles" else
            "Columns are depths: the longest chain of forward edges from a partition nobody feeds; edges back "
            "to an earlier partition (writes into a residual stream) are drawn as arcs.")
    caption = (f"{n} partitions and {G.number_of_edges()} (source, destination) pairs of the weight graph. "
               "Node area is proportional to the partition's neurons; colour: grey = network input, orange = "
               "residual stream, green = concatenation, blue = other layers. Edge width is proportional to the "
               f"mean |w| of its weight tensors, edge colour shows {label} (legend; grey: not computed). "
               + mode + " Hover a node or an edge for its name and numbers.")
    return svg, caption


def _draw(G: nx.DiGraph, pos, grid, metric_label: str, svg_id: str) -> str:
    n_cols, n_rows = max(grid["n_cols"], 1), max(grid["n_rows"], 1)
    left = 110 if grid["mode"] == "roles" else 40
    top, right, bottom = 34, 30, 58
    sizes = np.array([G.nodes[n]["size"] for n in G.nodes], dtype=float)
    col_step = (_WIDTH - left - right) / max(n_cols - 1, 1) if n_cols > 1 else 0.0
    if grid["mode"] == "roles":
        row_step = 58.0 if n_rows <= 20 else max(12.0, 1400.0 / n_rows)
    else:  # tall columns (many unconnected parts at one depth) shrink to at most ~1,400 px
        row_step = max(26.0, min(60.0, 640.0 / max(n_rows, 1))) if n_rows <= 50 else max(6.0, 1400.0 / n_rows)
    r_max = max(4.0, min(16.0, 0.42 * min(col_step or 40.0, row_step)))
    height = int(top + bottom + row_step * max(n_rows - 1, 0) + 2 * r_max + 10)
    height = max(height, 160)

    def xy(name):
        x, y = pos[name]
        cx = left + (x * col_step if n_cols > 1 else (_WIDTH - left - right) / 2)
        return cx, top + r_max + y * row_step

    smax = sizes.max() if sizes.size else 1.0
    radius = {n: max(2.5, r_max * math.sqrt(G.nodes[n]["size"] / smax)) if smax > 0 else 2.5 for n in G.nodes}
    ew = np.array([d["mean_abs_weight"] for _, _, d in G.edges(data=True)], dtype=float)
    ecount = np.array([d["edges"] for _, _, d in G.edges(data=True)], dtype=float)
    width_by = ew if np.isfinite(ew).any() else ecount
    wmax = np.nanmax(width_by) if width_by.size and np.isfinite(width_by).any() else 1.0
    colour, legend = _colormap(np.array([d["metric"] for _, _, d in G.edges(data=True)], dtype=float))

    out = [f'<svg class="topology" id="{svg_id}" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
           f'role="img" aria-label="partition graph" font-family="{_FONT}">']
    out.append(f'<defs><marker id="{svg_id}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
               'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5b6578"/></marker></defs>')
    # grid labels
    if grid["mode"] == "roles":
        for x, lab in grid["columns"]:
            cx = left + x * col_step if n_cols > 1 else (_WIDTH - left - right) / 2
            out.append(f'<text x="{cx:.1f}" y="16" font-size="11" text-anchor="middle" fill="#5b6578">{escape(lab)}</text>')
        out.append(f'<text x="{left - 10}" y="16" font-size="11" text-anchor="end" fill="#5b6578">layer</text>')
        for y, lab in grid["rows"]:
            cy = top + r_max + y * row_step
            out.append(f'<text x="{left - 30}" y="{cy + 4:.1f}" font-size="11" text-anchor="end" '
                       f'fill="#1d2433">{escape(short_label(lab, 12))}</text>')
    else:
        for x, lab in grid["columns"]:
            cx = left + x * col_step if n_cols > 1 else (_WIDTH - left - right) / 2
            out.append(f'<text x="{cx:.1f}" y="16" font-size="11" text-anchor="middle" fill="#5b6578">depth {escape(lab)}</text>')
    # edges
    out.append('<g class="edges" fill="none">')
    for (u, v, d), w in zip(G.edges(data=True), width_by):
        x1, y1 = xy(u)
        x2, y2 = xy(v)
        sw = 0.7 + 4.3 * (float(w) / wmax if np.isfinite(w) and wmax > 0 else 0.3)
        path = _edge_path(x1, y1, x2, y2, radius[u], radius[v], back=G.nodes[u]["order"] >= G.nodes[v]["order"],
                          grid_mode=grid["mode"], col_step=col_step or 1.0)
        tip = (f"{u} \u2192 {v}\n{len(d['blocks'])} weight tensor(s): {', '.join(d['blocks'][:4])}"
               + (" \u2026" if len(d["blocks"]) > 4 else "")
               + f"\nedges: {d['edges']:,}; mean |w|: {_fmt(d['mean_abs_weight'])}; {metric_label}: {_fmt(d['metric'])}")
        out.append(f'<path class="edge" data-src="{escape(u)}" data-dst="{escape(v)}" d="{path}" '
                   f'stroke="{colour(d["metric"])}" stroke-width="{sw:.2f}" stroke-opacity="0.75" '
                   f'marker-end="url(#{svg_id}-arrow)"><title>{escape(tip)}</title></path>')
    out.append("</g>")
    # nodes
    out.append('<g class="nodes">')
    for n in G.nodes:
        cx, cy = xy(n)
        a = G.nodes[n]
        tip = f"{n}\n{a['kind']}, {a['size']:,} neurons" + (
            f"\nmerged: {', '.join(a['members'][:6])}" + (" \u2026" if len(a["members"]) > 6 else "")
            if len(a["members"]) > 1 else "")
        out.append(f'<g class="node" data-partition="{escape(n)}"><circle cx="{cx:.1f}" cy="{cy:.1f}" '
                   f'r="{radius[n]:.1f}" fill="{KIND_COLORS.get(a["kind"], KIND_COLORS["features"])}" '
                   f'stroke="#fff" stroke-width="1"/><title>{escape(tip)}</title></g>')
    out.append("</g>")
    out.append('<g class="labels" font-size="10" fill="#1d2433" text-anchor="middle">')
    n_role_rows = sum(1 for _, lab in grid["rows"] if lab != "shared")
    for n in G.nodes:
        if grid["mode"] == "roles" and pos[n][1] < n_role_rows:
            continue  # the grid's headers already say layer and role
        cx, cy = xy(n)
        if row_step < 24 and grid["mode"] == "depth":
            continue  # too dense to label: the tooltips name every node
        chars = int(max(10, min(40, (col_step or 300) / 6.2))) if grid["mode"] == "depth" else 40
        out.append(f'<text x="{cx:.1f}" y="{cy + radius[n] + 11:.1f}">{escape(short_label(n, chars))}</text>')
    out.append("</g>")
    out.append(_legend(legend, metric_label, height, svg_id))
    out.append("</svg>")
    return "".join(out)


def _edge_path(x1, y1, x2, y2, r1, r2, back: bool, grid_mode: str, col_step: float) -> str:
    """A quadratic curve from the rim of the source circle to the rim of the destination's;
    self-loops are small loops above the node, back edges bend the other way."""
    if abs(x1 - x2) < 1e-6 and abs(y1 - y2) < 1e-6:
        return (f"M{x1 - r1 * 0.7:.1f},{y1 - r1 * 0.7:.1f} C{x1 - r1 - 18:.1f},{y1 - r1 - 26:.1f} "
                f"{x1 + r1 + 18:.1f},{y1 - r1 - 26:.1f} {x1 + r1 * 0.7:.1f},{y1 - r1 * 0.7:.1f}")
    dx, dy = x2 - x1, y2 - y1
    dist = math.hypot(dx, dy)
    if back:
        bend = -0.22 * dist if grid_mode == "depth" else -0.08 * dist
    elif grid_mode == "depth":  # forward: straight to the next column, bent when it skips columns
        bend = 0.0 if abs(dy) > 0.5 * abs(dx) or abs(dx) < 1.5 * col_step else 0.15 * dist
    else:
        bend = 0.08 * dist
    mx, my = (x1 + x2) / 2 - dy / dist * bend, (y1 + y2) / 2 + dx / dist * bend

    def rim(x, y, r, tx, ty):
        ddx, ddy = tx - x, ty - y
        dd = math.hypot(ddx, ddy) or 1.0
        return x + ddx / dd * r, y + ddy / dd * r

    sx, sy = rim(x1, y1, r1, mx, my)
    ex, ey = rim(x2, y2, r2 + 1.5, mx, my)
    return f"M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}"


def _legend(legend, label: str, height: int, svg_id: str) -> str:
    y = height - 22
    parts = ['<g class="legend" font-size="10" fill="#1d2433">']
    x = 30
    for kind, name in (("input", "input"), ("residual", "residual stream"), ("concat", "concatenation"),
                       ("features", "layer")):
        parts.append(f'<circle cx="{x}" cy="{y}" r="5" fill="{KIND_COLORS[kind]}"/>'
                     f'<text x="{x + 9}" y="{y + 3.5}" text-anchor="start">{name}</text>')
        x += 22 + 6 * len(name)
    if legend is not None:
        lo, hi, log, stops = legend
        gx = _WIDTH - 330
        parts.append(f'<defs><linearGradient id="{svg_id}-grad">'
                     + "".join(f'<stop offset="{k / (len(stops) - 1):.3f}" stop-color="{c}"/>' for k, c in enumerate(stops))
                     + "</linearGradient></defs>")
        parts.append(f'<text x="{gx - 8}" y="{y + 3.5}" text-anchor="end">edge colour: {escape(label)}'
                     f'{" (log)" if log else ""}</text>')
        parts.append(f'<rect x="{gx}" y="{y - 5}" width="160" height="10" fill="url(#{svg_id}-grad)"/>')
        parts.append(f'<text x="{gx}" y="{y + 17}" text-anchor="start">{_fmt(lo)}</text>'
                     f'<text x="{gx + 160}" y="{y + 17}" text-anchor="end">{_fmt(hi)}</text>')
    parts.append("</g>")
    return "".join(parts)


# -- neuron-level view -----------------------------------------------------------------------
def neuron_svg(g, neurons: pd.DataFrame | None, column: str = "centrality", svg_id: str = "neurons",
               roles: Mapping[str, tuple[Any, Any]] | None = None) -> tuple[str | None, str]:
    """``(svg, caption)``: every neuron as a dot and the :data:`NEURON_VIEW_EDGES` strongest
    edges by |w| (each block contributing in proportion to its edges) as lines; dots coloured
    by ``column`` of ``neurons``. Neurons sit where :func:`layout` puts their partition: by
    depth (partitions of one depth stacked, one column per depth), or, for transformer roles,
    as a small patch in the partition's (layer, role) cell. ``svg`` is ``None`` (with the
    reason) above :data:`MAX_NEURON_VIEW` neurons or :data:`MAX_NEURON_VIEW_EDGES` edges, or
    when the weights cannot be read."""
    n_nodes, n_edges = int(g.num_nodes), int(g.num_edges)
    if n_nodes > MAX_NEURON_VIEW or n_edges > MAX_NEURON_VIEW_EDGES or n_nodes == 0:
        return None, (f"{n_nodes:,} neurons and {n_edges:,} edges: the neuron-level drawing is made for at most "
                      f"{MAX_NEURON_VIEW:,} neurons and {MAX_NEURON_VIEW_EDGES:,} edges.")
    G = partition_graph(g)
    names = list(g.partitions)
    sizes = [g.partitions[n].size for n in names]
    offsets = np.cumsum([0] + sizes)
    pos, grid = layout(G, roles)
    xs, ys = np.zeros(n_nodes), np.zeros(n_nodes)
    headers: list[str] = []
    labels: list[tuple[float, float, str, str]] = []
    if grid["mode"] == "roles":
        n_cols, n_rows = max(grid["n_cols"], 1), max(grid["n_rows"], 1)
        left, right, top, bottom = 110, 30, 34, 40
        col_step = (_WIDTH - left - right) / max(n_cols - 1, 1)
        row_step = 58.0
        height = int(top + bottom + row_step * n_rows + 20)
        cell_w, cell_h = min(0.7 * col_step, 60.0), 0.7 * row_step
        clean = _roles_of(names, roles)
        for k, n in enumerate(names):
            x, y = pos[n]
            cx, cy = left + x * col_step, top + 20 + y * row_step
            side = max(1, math.ceil(math.sqrt(sizes[k] * cell_w / cell_h)))
            i = np.arange(sizes[k])
            rows_used = math.ceil(sizes[k] / side)
            xs[offsets[k]:offsets[k + 1]] = cx - cell_w / 2 + (i % side + 0.5) * cell_w / side
            ys[offsets[k]:offsets[k + 1]] = cy - cell_h / 2 + (i // side + 0.5) * cell_h / max(rows_used, 1)
            if clean[n][0] is None:  # the shared row: no grid header names it
                labels.append((cx, cy + cell_h / 2 + 11, short_label(n, 30), "middle"))
        unit = min(cell_w, cell_h) / max(math.sqrt(max(sizes)), 1)
        for x, lab in grid["columns"]:
            headers.append(f'<text x="{left + x * col_step:.1f}" y="16" font-size="11" text-anchor="middle" '
                           f'fill="#5b6578">{escape(lab)}</text>')
        headers.append(f'<text x="{left - 10}" y="16" font-size="11" text-anchor="end" fill="#5b6578">layer</text>')
        for y, lab in grid["rows"]:
            headers.append(f'<text x="{left - 46}" y="{top + 24 + y * row_step:.1f}" font-size="11" text-anchor="end" '
                           f'fill="#1d2433">{escape(short_label(lab, 12))}</text>')
        where = "each partition a patch in its (layer index, role) cell, the shared row below"
    else:
        depth = partition_depths(G)
        n_cols = max(depth.values()) + 1
        gap = 6.0
        col_total = {d: sum(sizes[k] + gap for k, n in enumerate(names) if depth[n] == d) for d in range(n_cols)}
        tallest = max(col_total.values())
        left, right, top, bottom = 40, 150 if n_cols > 1 else 40, 28, 40
        height = 520
        unit = (height - top - bottom) / max(tallest, 1)
        col_step = (_WIDTH - left - right) / max(n_cols - 1, 1)
        fill = {d: 0.0 for d in range(n_cols)}
        for k, n in enumerate(names):
            d = depth[n]
            start = top + (tallest - col_total[d]) / 2 * unit + fill[d] * unit
            cx = left + (d * col_step if n_cols > 1 else (_WIDTH - left - right) / 2)
            xs[offsets[k]:offsets[k + 1]] = cx
            ys[offsets[k]:offsets[k + 1]] = start + (np.arange(sizes[k]) + 0.5) * unit
            fill[d] += sizes[k] + gap
            labels.append((cx + 6, start + 0.5 * unit + 3, short_label(n, 24), "start"))
        for d in range(n_cols):
            cx = left + (d * col_step if n_cols > 1 else (_WIDTH - left - right) / 2)
            headers.append(f'<text x="{cx:.1f}" y="14" font-size="11" text-anchor="middle" fill="#5b6578">depth {d}</text>')
        where = "one column per depth, partitions of one depth stacked and labelled at their first neuron"
    try:
        edges = _strongest_edges(g, NEURON_VIEW_EDGES)
    except Exception as exc:  # noqa: BLE001 - a meta-device graph or an unreadable file: no drawing, say why
        return None, f"The neuron-level drawing needs the weights, which could not be read ({type(exc).__name__}: {exc})."
    values = np.full(n_nodes, np.nan)
    if neurons is not None and column in getattr(neurons, "columns", ()):
        pos_of = {n: offsets[k] for k, n in enumerate(names)}
        for layer, grp in neurons.groupby("layer", sort=False):
            if str(layer) in pos_of:
                idx = pos_of[str(layer)] + grp["neuron"].to_numpy(dtype=int)
                values[idx] = grp[column].to_numpy(dtype=float)
    colour, legend = _colormap(values, "magma")
    r = max(1.0, min(3.5, unit * 0.45))
    out = [f'<svg class="topology neurons" id="{svg_id}" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" '
           f'height="{height}" role="img" aria-label="neuron graph" font-family="{_FONT}">']
    out += headers
    out.append('<g class="edges" stroke="#4c5a78" stroke-width="0.5">')
    if len(edges[0]):
        wmax = float(edges[2].max()) or 1.0
        for a, b, w in zip(*edges):
            out.append(f'<line x1="{xs[b]:.1f}" y1="{ys[b]:.1f}" x2="{xs[a]:.1f}" y2="{ys[a]:.1f}" '
                       f'stroke-opacity="{0.06 + 0.4 * w / wmax:.2f}"/>')
    out.append('</g><g class="nodes">')
    for i in range(n_nodes):
        out.append(f'<circle cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{r:.1f}" fill="{colour(values[i])}"/>')
    out.append("</g>")
    for x, y, text, anchor in labels:
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" text-anchor="{anchor}" fill="#1d2433">'
                   f'{escape(text)}</text>')
    if legend is not None:
        lo, hi, log, stops = legend
        gx, y = _WIDTH - 330, height - 16
        out.append(f'<defs><linearGradient id="{svg_id}-grad">'
                   + "".join(f'<stop offset="{k / (len(stops) - 1):.3f}" stop-color="{c}"/>' for k, c in enumerate(stops))
                   + "</linearGradient></defs>")
        out.append(f'<text x="{gx - 8}" y="{y + 3.5}" font-size="10" text-anchor="end">{escape(column)}'
                   f'{" (log)" if log else ""}</text><rect x="{gx}" y="{y - 5}" width="160" height="10" '
                   f'fill="url(#{svg_id}-grad)"/><text x="{gx + 166}" y="{y + 3.5}" font-size="10">'
                   f'{_fmt(lo)} \u2013 {_fmt(hi)}</text>')
    out.append("</svg>")
    caption = (f"All {n_nodes:,} neurons ({where}), coloured by {column}; the {len(edges[0]):,} strongest of "
               f"{n_edges:,} edges by |w| (each weight tensor contributing in proportion to its edges; darker = "
               "stronger).")
    return "".join(out), caption


def _strongest_edges(g, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (dst, src) node indices and |w| of about ``limit`` strongest edges, each block
    keeping its top share (proportional to its edges, at least one)."""
    total = max(int(g.num_edges), 1)
    rows, cols, vals = [], [], []
    for r, c, v in g._edge_arrays("abs"):
        k = min(len(v), max(1, int(round(limit * len(v) / total))))
        if k < len(v):
            top = np.argpartition(v, len(v) - k)[len(v) - k:]
            r, c, v = r[top], c[top], v[top]
        rows.append(r)
        cols.append(c)
        vals.append(v)
    if not rows:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
