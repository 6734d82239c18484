"""The report's drawings of the graph and its transformer-friendly reading.

The topology SVG is checked against graphs built by hand in this file (which partitions, which
(source, destination) pairs, which depths, which widths); labels, the notes banner, near-zero
relative changes and the null-model / ΔW / spectral sections against values computed here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import graphnn
from graphnn.graph import LayeredGraph
from graphnn.report import Provenance, render_comparison, render_report
from graphnn.report import topology
from graphnn.report.html import NEAR_ZERO_REL, _change_text, fmt
from graphnn.report.labels import short_label

torch.set_num_threads(1)


class Svg(HTMLParser):
    """Nodes (``g.node``), edges (``path.edge``), circles and lines of an SVG fragment."""

    def __init__(self, text: str):
        super().__init__()
        self.nodes: list[str] = []
        self.edges: list[tuple[str, str, dict]] = []
        self.circles: list[dict] = []
        self.lines = 0
        self.titles: list[str] = []
        self._title = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "")
        if tag == "g" and cls == "node":
            self.nodes.append(a["data-partition"])
        elif tag == "path" and cls == "edge":
            self.edges.append((a["data-src"], a["data-dst"], a))
        elif tag == "circle":
            self.circles.append(a)
        elif tag == "line":
            self.lines += 1
        elif tag == "title":
            self._title = []

    def handle_endtag(self, tag):
        if tag == "title" and self._title is not None:
            self.titles.append("".join(self._title))
            self._title = None

    def handle_data(self, data):
        if self._title is not None:
            self._title.append(data)


def hand_graph() -> tuple[LayeredGraph, dict]:
    """in(4) -> mid(3) twice (two tensors, one pair), mid -> out(2), in -> side(2) -> out,
    out -> mid (a write back to an earlier partition) and mid -> mid (a self-loop)."""
    gen = torch.Generator().manual_seed(0)

    def w(r, c, scale):
        return scale * torch.randn(r, c, generator=gen, dtype=torch.float64)

    ws = {"a": ("in", "mid", w(3, 4, 1.0)), "a2": ("in", "mid", w(3, 4, 3.0)), "b": ("mid", "out", w(2, 3, 0.5)),
          "c": ("in", "side", w(2, 4, 2.0)), "d": ("side", "out", w(2, 2, 1.5)), "back": ("out", "mid", w(3, 2, 0.2)),
          "loop": ("mid", "mid", w(3, 3, 0.7))}
    g = LayeredGraph.from_matrices({"in": 4, "mid": 3, "side": 2, "out": 2}, ws)
    return g, ws


def test_svg_has_one_node_per_partition_and_one_edge_per_pair():
    g, ws = hand_graph()
    svg, caption = topology.topology_svg(g)
    s = Svg(svg)
    assert sorted(s.nodes) == sorted(["in", "mid", "side", "out"])
    pairs = Counter((u, v) for u, v, _ in s.edges)
    assert set(pairs) == {("in", "mid"), ("mid", "out"), ("in", "side"), ("side", "out"), ("out", "mid"), ("mid", "mid")}
    assert max(pairs.values()) == 1  # the two tensors in -> mid are one edge
    assert "4 partitions and 6 (source, destination) pairs" in caption
    # the pair's tooltip names both of its tensors and their summed edge count
    tip = next(t for t in s.titles if t.startswith("in \u2192 mid"))
    assert "a, a2" in tip and "edges: 24" in tip
    assert not re.search(r"\s(href|src)=\"(?!#)", svg) and "http" not in svg and "<script" not in svg


def test_node_area_and_edge_width_follow_neurons_and_mean_abs_weight():
    g, ws = hand_graph()
    # mean |w| per block, as the analysis table would give it, computed here
    blocks = pd.DataFrame({"block": list(ws), "mean_abs_weight": [float(t.abs().mean()) for _, _, t in ws.values()],
                           "J": [1.0 + k for k in range(len(ws))]})
    s = Svg(topology.topology_svg(g, blocks)[0])
    radius = {n: float(c["r"]) for n, c in zip(s.nodes, s.circles[: len(s.nodes)])}
    assert radius["in"] / radius["out"] == pytest.approx(math.sqrt(4 / 2), rel=0.02)
    assert radius["mid"] / radius["in"] == pytest.approx(math.sqrt(3 / 4), rel=0.02)
    # width = 0.7 + 4.3 * m / max(m), m = the pair's mean |w| weighted by the edges of its tensors
    pair_w = {}
    for name, (u, v, t) in ws.items():
        pair_w.setdefault((u, v), []).append((t.numel(), float(t.abs().mean())))
    m = {k: sum(e * x for e, x in vs) / sum(e for e, _ in vs) for k, vs in pair_w.items()}
    top = max(m.values())
    for u, v, a in s.edges:
        assert float(a["stroke-width"]) == pytest.approx(0.7 + 4.3 * m[(u, v)] / top, abs=0.01)
    # edge colour is the J metric: the pair with the largest J gets the top of the colour scale
    colours = {(u, v): a["stroke"] for u, v, a in s.edges}
    assert colours[("mid", "mid")] != colours[("in", "mid")]


def test_depth_layout_by_hand():
    g, _ = hand_graph()
    G = topology.partition_graph(g)
    assert topology.partition_depths(G) == {"in": 0, "mid": 1, "side": 1, "out": 2}
    pos, grid = topology.layout(G)
    assert grid["mode"] == "depth"
    assert pos["in"][0] < pos["mid"][0] == pos["side"][0] < pos["out"][0]
    assert pos["mid"][1] != pos["side"][1]


def test_role_layout_puts_layers_in_columns_and_the_stream_on_its_own_row():
    torch.manual_seed(0)
    names = {"model.stream": 8}
    ws = {}
    for i in range(3):
        for r in ("q", "k", "v"):
            names[f"model.layers.{i}.{r}_proj"] = 8
            ws[f"model.layers.{i}.{r}_proj.weight"] = ("model.stream", f"model.layers.{i}.{r}_proj", torch.randn(8, 8))
        ws[f"model.layers.{i}.o_proj.weight"] = (f"model.layers.{i}.v_proj", "model.stream", torch.randn(8, 8))
    g = LayeredGraph.from_matrices(names, ws)
    roles = {n: (None, "stream") if n == "model.stream" else (int(n.split(".")[2]), n.split(".")[3][0]) for n in names}
    G = topology.partition_graph(g)
    pos, grid = topology.layout(G, roles)
    assert grid["mode"] == "roles"
    for i in range(3):
        xs = {pos[f"model.layers.{i}.{r}_proj"][0] for r in "qkv"}
        assert xs == {float(i)}
        assert [pos[f"model.layers.{i}.{r}_proj"][1] for r in "qkv"] == [0.0, 1.0, 2.0]
    assert pos["model.stream"][1] > max(y for n, (x, y) in pos.items() if n != "model.stream")
    s = Svg(topology.topology_svg(g, roles=roles)[0])
    assert len(s.nodes) == len(names) and len(s.edges) == len(ws)


def test_too_many_partitions_are_not_drawn_and_the_caption_says_so():
    n = topology.MAX_TOPOLOGY_PARTITIONS + 1
    parts = {f"p{i}": 1 for i in range(n)}
    ws = {f"w{i}": (f"p{i}", f"p{i + 1}", torch.ones(1, 1)) for i in range(n - 1)}
    svg, caption = topology.topology_svg(LayeredGraph.from_matrices(parts, ws))
    assert svg is None and f"{n:,} partitions" in caption and str(topology.MAX_TOPOLOGY_PARTITIONS) in caption


def test_neuron_view_draws_every_neuron_and_the_strongest_edges():
    g, ws = hand_graph()
    neurons = pd.DataFrame([(n, i, float(k * 10 + i)) for k, (n, p) in enumerate(g.partitions.items())
                            for i in range(p.size)], columns=["layer", "neuron", "centrality"])
    svg, caption = topology.neuron_svg(g, neurons)
    s = Svg(svg)
    assert len(s.circles) == g.num_nodes
    assert s.lines == g.num_edges  # fewer edges than the drawing's limit: all of them
    # the neuron with the largest value has the top colour of the scale, the smallest the bottom
    fills = [c["fill"] for c in s.circles]
    from matplotlib import colormaps
    from matplotlib.colors import to_hex
    assert fills[-1] == to_hex(colormaps["magma"](0.9)) and fills[0] == to_hex(colormaps["magma"](0.1))
    big = LayeredGraph.from_matrices({"a": 3000}, {})
    assert topology.neuron_svg(big, None)[0] is None


def test_strongest_edges_are_each_blocks_largest_weights():
    gen = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(20, 30, generator=gen), torch.randn(10, 20, generator=gen)
    g = LayeredGraph.from_matrices({"a": 30, "b": 20, "c": 10}, {"w1": ("a", "b", w1), "w2": ("b", "c", w2)})
    rows, cols, vals = topology._strongest_edges(g, 80)  # 800 edges: 60 from w1, 20 from w2
    assert len(vals) == 80
    for w, k, off_dst, off_src in ((w1, 60, 30, 0), (w2, 20, 50, 30)):
        expected = np.sort(np.abs(w.numpy()).ravel())[-k:]
        sel = (rows >= off_dst) & (rows < off_dst + w.shape[0])
        assert np.allclose(np.sort(vals[sel]), expected)
        r, c = rows[sel] - off_dst, cols[sel] - off_src
        assert np.allclose(np.abs(w.numpy()[r, c]), vals[sel])


# -- labels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, width, expected", [
    ("model.layers.3.mlp.down_proj", 24, "model.layers.3\u2026down_proj"),
    ("model.layers.13.self_attn.q_proj", 28, "model.layers.13\u2026q_proj"),
    ("encoder.layer.5.attention.output.dense", 28, "encoder.layer.5\u2026output.dense"),
    ("short.name", 44, "short.name"),
])
def test_short_label_keeps_start_and_end(name, width, expected):
    assert short_label(name, width) == expected


@pytest.mark.parametrize("name", ["transformer.h.11.attn.c_attn.q", "model.decoder.layers.11.encoder_attn.k_proj",
                                  "x" * 80, "features.denseblock4.denselayer16.conv2", "a.b"])
@pytest.mark.parametrize("width", [12, 20, 28, 44])
def test_short_label_never_cuts_an_end(name, width):
    out = short_label(name, width)
    assert len(out) <= max(width, 5)
    if len(name) <= width:
        assert out == name
    else:
        pieces = out.split("\u2026")
        assert 2 <= len(pieces) <= 3 and all(pieces)
        assert name.startswith(pieces[0]) and name.endswith(pieces[-1])
        assert all(p in name for p in pieces)
        digits = re.search(r"\.(\d+)\.", name)
        if digits and width >= 20:
            assert re.search(rf"(^|[.\u2026]){digits.group(1)}([.\u2026]|$)", out), out  # the layer index stays


# -- page pieces -----------------------------------------------------------------------------
def small_analysis(g) -> SimpleNamespace:
    """A minimal analysis of ``g``: per-layer sizes and strength variance computed here."""
    rows = []
    for name, p in g.partitions.items():
        s = np.zeros(p.size)
        for b in g.blocks_into(name):
            s += b.matrix(torch.float64).numpy().sum(1)
        for b in g.blocks_out_of(name):
            s += b.matrix(torch.float64).numpy().sum(0)
        rows.append({"layer": name, "size": p.size, "kind": p.kind, "strength_var": s.var(ddof=1) if p.size > 1 else 0.0})
    blocks = pd.DataFrame({"block": list(g.blocks), "src": [b.src for b in g.blocks.values()],
                           "dst": [b.dst for b in g.blocks.values()],
                           "mean_abs_weight": [float(b.matrix().abs().mean()) for b in g.blocks.values()]})
    neurons = pd.DataFrame([(n, i) for n, p in g.partitions.items() for i in range(p.size)], columns=["layer", "neuron"])
    return SimpleNamespace(layers=pd.DataFrame(rows), blocks=blocks, neurons=neurons, centrality_info={}, options={})


def test_notes_are_one_banner_with_a_count():
    g, _ = hand_graph()
    g.notes[:] = ["first note", "second note", "first note"]
    html = render_report(small_analysis(g), Provenance(source="x"), g)
    assert html.count('<details class="notes"') == 1 and 'class="note"' not in html
    assert "3 notes" in html and "(2 distinct)" in html and "&times;2" in html
    banner = re.search(r'<details class="notes".*?</details>', html, flags=re.S).group(0)
    assert banner.count("<li>") == 2
    g.notes[:] = []
    assert '<details class="notes"' not in render_report(small_analysis(g), Provenance(source="x"), g)


def test_topology_section_in_the_report():
    g, _ = hand_graph()
    html = render_report(small_analysis(g), Provenance(source="x"), g)
    assert html.count('<svg class="topology') == 2  # partition level, and neurons (11 neurons)
    s = Svg(re.search(r'<svg class="topology" id="topology-svg".*?</svg>', html, flags=re.S).group(0))
    assert sorted(s.nodes) == sorted(g.partitions) and len(s.edges) == 6
    assert 'xmlns="http' not in html


@pytest.mark.parametrize("first, last, scale, expected", [
    (2.0, 3.0, 4.0, "+50.0 %"),
    (-2.0, -1.0, 4.0, "+50.0 %"),
    (1e-9, 3e-9, 1.0, "\u0394 +2.000e-09"),   # |first| <= 1 % of the scale: absolute change
    (-0.1, -1.05, 25.6, "\u0394 -0.95"),       # a signed mean near 0 next to means of ~25
    (0.0, 0.5, 1.0, "\u0394 +0.5"),
    (0.02, 0.01, 1.0, "-50.0 %"),             # 2 % of the scale: a percentage again
    (float("nan"), 1.0, 1.0, "\u2013"),
])
def test_near_zero_changes_are_not_percentages(first, last, scale, expected):
    rel = (last - first) / abs(first) if first else float("nan")
    assert NEAR_ZERO_REL == 1e-2
    assert _change_text(first, last, rel, scale) == expected


def test_comparison_shows_absolute_change_for_a_near_zero_layer():
    names = ["a", "b"]
    mk = lambda vals: SimpleNamespace(layers=pd.DataFrame({"layer": names, "size": [3, 3], "strength_var": vals}),
                                      blocks=pd.DataFrame({"block": ["w"], "J": [1.0]}),
                                      neurons=pd.DataFrame({"layer": [], "neuron": []}), options={})
    html = render_comparison({"e0": mk([1e-8, 2.0]), "e1": mk([5e-8, 3.0])},
                             {"e0": Provenance(source="e0"), "e1": Provenance(source="e1")})
    assert "+50.0 %" in html            # b: 2 -> 3
    assert "+400.0 %" not in html       # a: 1e-8 -> 5e-8 is not shown as a percentage ...
    assert "\u0394 +4.000e-08" in html   # ... but as its absolute change


def test_null_delta_and_spectral_sections_appear_when_present_and_not_otherwise():
    g, ws = hand_graph()
    a = small_analysis(g)
    plain = render_report(a, Provenance(source="x"), g)
    assert 'id="null-model"' not in plain and 'id="delta"' not in plain and "spectral norm" not in plain
    # spectral columns: their values in the weight-tensor table
    sv = {n: torch.linalg.matrix_norm(t, ord=2).item() for n, (_, _, t) in ws.items()}
    a.blocks["spectral_norm"] = [sv[n] for n in a.blocks["block"]]
    a.blocks["stable_rank"] = [(torch.linalg.matrix_norm(t) ** 2 / sv[n] ** 2).item() for n, (_, _, t) in ws.items()]
    a.null = pd.DataFrame({"layer": ["in", "mid", "out"], "scope": "layer", "metric": "strength_variance",
                           "observed": [1.0, 5.0, 2.0], "null_mean": [1.0, 1.0, 1.0], "null_std": [1.0, 1.0, 1.0],
                           "z": [0.0, 4.0, 1.0], "p": [0.9, 0.01, 0.4], "n": 99, "kind": "shuffle"})
    norms = pd.DataFrame({"block": ["a", "b"], "param": ["a", "b"], "frobenius_delta": [0.5, 0.0],
                          "frobenius_base": [2.0, 1e-9], "relative": [0.25, 0.0]})
    html = render_report(a, Provenance(source="x"), g, delta_norms=norms)
    assert "spectral norm" in html and "stable rank" in html
    for n in ws:
        assert fmt(sv[n]) in html
    null_rows = re.search(r'<table id="null-table">.*?</table>', html, flags=re.S).group(0)
    assert null_rows.count("<tr") == 4 and null_rows.count('class="mark"') == 1  # only |z| = 4 >= 3
    assert "1 of 3" in html and 'alt="null-model z-scores"' in html
    delta = re.search(r'<table id="delta-table">.*?</table>', html, flags=re.S).group(0)
    assert "25.00 %" in delta and delta.count("\u2013") == 1  # b: base norm ~ 0, no ratio shown
    assert "1 of 2 tensors changed" in html


def test_delta_graph_norms_and_all_zero_flag_come_from_the_graph():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    g = graphnn.extract(net)
    d = graphnn.delta(g, graphnn.extract(net))
    html = render_report(graphnn.analyse(d), Provenance(source="delta"), d)
    assert 'id="delta"' in html and "zero in every matched tensor" in html
    assert re.search(r'<table id="delta-table">.*?</table>', html, flags=re.S).group(0).count("<tr") == 1 + len(d.blocks)


def test_roles_group_the_figures_and_are_absent_for_plain_names():
    g, _ = hand_graph()
    a = small_analysis(g)
    html = render_report(a, Provenance(source="x"), g)
    assert "fig-roles-layers" not in html and 'id="fig-variance"' in html
    # role columns given by the analysis (as graphnn.analyse adds them): one line per role
    a.layers["layer_index"] = pd.array([None, 0, 1, 1], dtype="Int64")
    a.layers["role"] = [None, "q", "q", "k"]
    html = render_report(a, Provenance(source="x"), g)
    assert 'id="fig-roles-layers"' in html and 'id="fig-variance"' not in html
    assert "0 \u00b7 q" in html  # the layer table shows layer index and role
    # null-model z against layer index per role, instead of the heatmap
    a.null = pd.DataFrame({"layer": ["mid", "side", "out"], "scope": "layer", "metric": "strength_variance",
                           "observed": 1.0, "null_mean": 0.0, "null_std": 1.0, "z": [1.0, 2.0, 4.0], "p": 0.1,
                           "n": 9, "kind": "shuffle"})
    html = render_report(a, Provenance(source="x"), g)
    assert 'alt="null-model z-scores by layer and role"' in html and 'alt="null-model z-scores"' not in html


def test_neuron_view_follows_the_role_grid():
    torch.manual_seed(0)
    names = {"model.stream": 6}
    ws = {}
    for i in range(2):
        for r in ("q", "v"):
            names[f"model.layers.{i}.{r}_proj"] = 4
            ws[f"model.layers.{i}.{r}_proj.weight"] = ("model.stream", f"model.layers.{i}.{r}_proj", torch.randn(4, 6))
    g = LayeredGraph.from_matrices(names, ws)
    roles = {n: (None, "stream") if n == "model.stream" else (int(n.split(".")[2]), n.split(".")[3][0]) for n in names}
    s = Svg(topology.neuron_svg(g, None, roles=roles)[0])
    assert len(s.circles) == g.num_nodes and s.lines == g.num_edges
    cx = [float(c["cx"]) for c in s.circles]
    cy = [float(c["cy"]) for c in s.circles]
    off = dict(zip(names, np.cumsum([0] + list(names.values()))))
    part = lambda n: slice(off[n], off[n] + names[n])
    # layer 0 left of layer 1, q above v, the stream below both
    assert max(cx[part("model.layers.0.q_proj")]) < min(cx[part("model.layers.1.q_proj")])
    assert max(cy[part("model.layers.0.q_proj")]) < min(cy[part("model.layers.0.v_proj")])
    assert min(cy[part("model.stream")]) > max(cy[part("model.layers.1.v_proj")])


def test_grid_layout_draws_more_partitions_than_the_depth_limit():
    n_layers = topology.MAX_TOPOLOGY_PARTITIONS // 2 + 1  # 2 partitions per layer + the stream: > the depth limit
    names = {"m.stream": 2}
    ws = {}
    for i in range(n_layers):
        names[f"m.layers.{i}.up"] = 2
        names[f"m.layers.{i}.q"] = 1
        ws[f"m.layers.{i}.up.weight"] = ("m.stream", f"m.layers.{i}.up", torch.ones(2, 2))
        ws[f"m.layers.{i}.q.weight"] = ("m.stream", f"m.layers.{i}.q", torch.ones(1, 2))
    g = LayeredGraph.from_matrices(names, ws)
    roles = {n: (None, "stream") if n == "m.stream" else (int(n.split(".")[2]), n.split(".")[3]) for n in names}
    svg, _ = topology.topology_svg(g, roles=roles)
    assert svg is not None and len(Svg(svg).nodes) == len(names) > topology.MAX_TOPOLOGY_PARTITIONS
    assert topology.topology_svg(g)[0] is None  # without roles: by depth, over its limit


def test_report_file_passes_analysis_options(tmp_path):
    from graphnn.report import report_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    path = tmp_path / "m.safetensors"
    graphnn.extract.save_state_dict(net.state_dict(), path)
    res = report_file(path, tmp_path / "r.html", analyse_options={"null": 9, "seed": 0})
    html = (tmp_path / "r.html").read_text()
    assert res.analysis.null is not None and 'id="null-table"' in html
    rows = re.search(r'<table id="null-table">.*?</table>', html, flags=re.S).group(0).count("<tr") - 1
    assert rows == len(res.analysis.null)


def test_gpt2_shaped_report_without_a_browser():
    """The 12-layer GPT-2 report's structure (the browser test looks at it in Chromium too):
    one banner, one topology node per partition and one edge per (src, dst) pair, per-role
    line plots instead of per-partition bars, and the roles in the layer table."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=12, n_head=2, n_positions=16, vocab_size=64,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    g = graphnn.extract(transformers.GPT2LMHeadModel(cfg).eval())
    html = render_report(graphnn.analyse(g, centrality=False), Provenance(source="gpt2"), g)
    assert html.count('<details class="notes"') == 1
    s = Svg(re.search(r'<svg class="topology" id="topology-svg".*?</svg>', html, flags=re.S).group(0))
    assert sorted(s.nodes) == sorted(g.partitions)
    assert sorted((u, v) for u, v, _ in s.edges) == sorted({(b.src, b.dst) for b in g.blocks.values()})
    assert 'id="fig-roles-layers"' in html and 'id="fig-roles-blocks"' in html and 'id="fig-variance"' not in html
    for i in (0, 11):
        assert f"{i} \u00b7 q" in html and f"{i} \u00b7 up" in html


def test_short_labels_stay_distinct():
    from graphnn.report.labels import short_labels

    names = [f"model.layers.3.{mid}.attention.output.dense_projection" for mid in ("alpha_block", "beta_block")]
    names.append("model.layers.4.mlp.some_long_module_name.down_proj")
    assert short_label(names[0], 30) == short_label(names[1], 30)
    labs = short_labels(names, 30)
    assert len(set(labs)) == 3
    assert labs[2] == short_label(names[2], 30)  # a name without a twin keeps its short label


def test_many_unconnected_parts_keep_the_drawing_bounded():
    parts = {f"p{i}": 2 for i in range(240)}
    ws = {f"w{i}": (f"p{2 * i}", f"p{2 * i + 1}", torch.ones(2, 2)) for i in range(120)}
    svg, _ = topology.topology_svg(LayeredGraph.from_matrices(parts, ws))
    height = float(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    assert height <= 1600 and len(Svg(svg).nodes) == 240


def test_block_roles_alone_keep_the_per_partition_variance_figure():
    """Only the weight-tensor names carry a layer index (partitions a, b, c do not): the role
    figure of the tensors is added, and the per-partition figures (strength variance among them)
    stay, since no per-role partition figure replaces them."""
    import re

    from graphnn.report.html import render_report
    from graphnn.report.provenance import Provenance

    gen = torch.Generator().manual_seed(0)
    g = graphnn.LayeredGraph.from_matrices(
        {"a": 6, "b": 5, "c": 4},
        {"model.layers.0.mlp.up_proj.weight": ("a", "b", torch.randn(5, 6, generator=gen)),
         "model.layers.1.mlp.up_proj.weight": ("b", "c", torch.randn(4, 5, generator=gen))})
    html = render_report(graphnn.analyse(g), Provenance(source="test"), g)
    ids = set(re.findall(r'id="(fig-[a-z-]+)"', html))
    assert "fig-roles-blocks" in ids and "fig-roles-layers" not in ids
    assert "fig-variance" in ids


def test_a_role_keeps_its_marker_whatever_other_roles_a_figure_has():
    from graphnn.report.figures import role_markers

    a, b = role_markers(["q", "k", "v"]), role_markers(["embed", "q", "custom"])
    assert a["q"] == b["q"] and set(b) == {"embed", "q", "custom"}
    assert len(set(role_markers(["q", "k", "v", "o", "gate", "up", "down"]).values())) == 7
