"""The HTML report: self-contained, the right numbers in the right rows, provenance, figures
that decode, bounded size for big models, no leaked matplotlib state.

Report rendering is tested on analyses whose numbers this file computes itself (numpy on the
weight matrices, networkx for centrality and cores), so a wrong row, a swapped column or a
mis-formatted value shows up as a mismatch with an independent computation. The end-to-end
test at the bottom runs the real ``graphnn.analyse`` on a checkpoint file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import matplotlib
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import graphnn
from graphnn.report import (
    Provenance,
    compare_blocks,
    compare_layers,
    render_comparison,
    render_report,
    sha256_of,
    write_html,
)
from graphnn.report import figures
from graphnn.report.html import fmt
from graphnn.report.pipeline import checkpoint_labels

torch.set_num_threads(1)


# -- an analysis computed independently in this file -----------------------------------------
def independent_analysis(g: graphnn.LayeredGraph) -> SimpleNamespace:
    """The Analysis tables, computed here from the matrices: strengths with numpy, centrality
    with networkx (|w|, unit L2 norm), cores as networkx core numbers of the |w| > 0 graph."""
    ins = {n: np.zeros(p.size) for n, p in g.partitions.items()}
    outs = {n: np.zeros(p.size) for n, p in g.partitions.items()}
    absd = {n: np.zeros(p.size) for n, p in g.partitions.items()}
    brow = []
    for b in g.blocks.values():
        m = b.matrix(torch.float64).numpy()
        ins[b.dst] += m.sum(1)
        outs[b.src] += m.sum(0)
        absd[b.dst] += np.abs(m).sum(1)
        absd[b.src] += np.abs(m).sum(0)
        vr, vc = m.sum(1).var(ddof=1), m.sum(0).var(ddof=1)
        brow.append(dict(block=b.name, param=b.param, src=b.src, dst=b.dst, n_dst=b.n_dst, n_src=b.n_src,
                         edges=b.num_edges, kind=b.kind, aggregation=b.aggregation, J=0.5 * (vr + vc),
                         var_rows=vr, var_cols=vc, mean_abs_weight=np.abs(m).mean()))
    G = g.to_networkx(weight="abs")
    cent = nx.eigenvector_centrality(G, weight="weight", max_iter=5000, tol=1e-12)
    core = nx.core_number(G)
    rows = []
    for n, p in g.partitions.items():
        for i in range(p.size):
            rows.append((n, i, ins[n][i], outs[n][i], ins[n][i] + outs[n][i], absd[n][i], cent[(n, i)],
                         float(core[(n, i)])))
    neurons = pd.DataFrame(rows, columns=["layer", "neuron", "in_strength", "out_strength", "strength",
                                          "abs_strength", "centrality", "core"])
    layers = []
    for n, p in g.partitions.items():
        d = neurons[neurons["layer"] == n]
        r = {"layer": n, "size": p.size, "kind": p.kind}
        for c in ("strength", "abs_strength", "centrality", "core"):
            r[f"{c}_mean"] = d[c].mean()
            r[f"{c}_std"] = d[c].std()
            r[f"{c}_var"] = d[c].var()
            r[f"{c}_max"] = d[c].max()
        layers.append(r)
    return SimpleNamespace(neurons=neurons, layers=pd.DataFrame(layers), blocks=pd.DataFrame(brow),
                           centrality_info={"eigenvalue": 1.0, "iterations": 1, "converged": True},
                           options={"normalise": "l2"}, runtime_s=0.01)


def mlp_graph(seed=0, sizes=(6, 5, 4, 3)) -> graphnn.LayeredGraph:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())][:-1])
    return graphnn.extract({k: v.clone() for k, v in net.state_dict().items()})


# -- a small HTML inspector (stdlib parser) --------------------------------------------------
class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table = None
        self._in_tbody = False
        self._row = None
        self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tbody" and self._table:
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


def assert_self_contained(html: str) -> Page:
    page = Page(html)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), f"<{tag}> in the report"
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            if key in attrs:
                v = attrs[key] or ""
                assert v.startswith("#") or v.startswith("data:"), f"<{tag} {key}={v[:60]!r}> loads something"
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    assert styles, "CSS must be inline"
    for css in styles:
        assert "url(" not in css and "@import" not in css
    assert "http://" not in html and "https://" not in html
    return page


def decoded_images(page: Page) -> list[Image.Image]:
    out = []
    for tag, attrs in page.tags:
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,")
            img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            img.load()
            assert img.width > 100 and img.height > 100
            out.append(img)
    return out


# -- single report ---------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.LayerNorm(5),
                              torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    path = tmp_path / "mlp.safetensors"
    graphnn.extract.save_state_dict(net.state_dict(), path)
    return path


def test_single_report_is_self_contained_with_right_numbers(checkpoint):
    g = graphnn.extract(checkpoint)
    a = independent_analysis(g)
    prov = Provenance.for_path(checkpoint, options={"conv": "l2", "include": ["*"]}, runtime_s=1.25)
    html = render_report(a, prov, g, title="A <small> & test")
    page = assert_self_contained(html)
    assert "A &lt;small&gt; &amp; test" in html  # user text is escaped

    # one row per partition, in partition order, with the layer's numbers
    rows = page.tables["layer-table"]
    assert [r[0] for r in rows] == list(g.partitions)
    for r, (name, p) in zip(rows, g.partitions.items()):
        strength = np.zeros(p.size)
        for b in g.blocks_into(name):
            strength += b.matrix(torch.float64).numpy().sum(1)
        for b in g.blocks_out_of(name):
            strength += b.matrix(torch.float64).numpy().sum(0)
        assert r[1] == p.kind
        assert r[2] == fmt(p.size)
        assert r[3] == fmt(strength.mean())           # strength mean
        assert r[4] == fmt(strength.var(ddof=1))      # strength var

    # provenance: version, path, sha256 of the file's bytes, options, runtime
    text = " ".join(page.text)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in text
    assert str(checkpoint) in text and graphnn.__version__ in text
    assert 'include = ["*"]' in text and "1.25 s" in text
    # coverage: share and every skipped parameter with its reason
    cov = g.coverage
    skipped = cov[cov["status"] == "skipped"]
    assert len(skipped) > 0
    assert f"{100 * g.coverage_fraction:.1f} %" in text
    listed = {r[0]: r[3] for r in page.tables["skipped-table"]}
    assert listed == dict(zip(skipped["name"], skipped["reason"]))
    # figures: the four of the issue, each a decodable PNG
    assert len(decoded_images(page)) == 4
    for fid in ("fig-strength", "fig-variance", "fig-centrality", "fig-hypercore"):
        assert f'id="{fid}"' in html
    # every metric is defined, with its sign convention
    defs = page.tables.get("block-table")
    assert defs is not None and [r[0] for r in defs] == list(g.blocks)
    for word in ("eigenvector centrality", "k-hypercore number", "strength variance", "Signed", "|w|"):
        assert word in text


def test_rendering_leaves_no_matplotlib_state():
    import matplotlib.pyplot as plt

    g = mlp_graph()
    a = independent_analysis(g)
    backend = matplotlib.get_backend()
    rc = {k: matplotlib.rcParams[k] for k in ("font.size", "axes.titlesize", "axes.facecolor", "axes.grid")}
    render_report(a, Provenance(source="x"), g)
    assert plt.get_fignums() == []
    assert matplotlib.get_backend() == backend
    assert {k: matplotlib.rcParams[k] for k in rc} == rc


def test_report_without_graph_still_renders():
    g = mlp_graph()
    html = render_report(independent_analysis(g), Provenance(source="model.pt"))
    page = assert_self_contained(html)
    assert len(page.tables["layer-table"]) == len(g.partitions)
    assert "skipped-table" not in page.tables


def big_analysis(n_layers: int, huge_layer: int) -> SimpleNamespace:
    """Many layers, one of them very wide: the shapes of a large model's tables."""
    rng = np.random.default_rng(0)
    sizes = [64] * n_layers
    sizes[n_layers // 2] = huge_layer
    names = [f"stage{i // 4}.unit.dense{i % 4}" for i in range(n_layers)]  # no transformer roles
    neurons = pd.concat([pd.DataFrame({"layer": n, "neuron": np.arange(s), "strength": rng.normal(size=s),
                                       "abs_strength": rng.random(s), "centrality": rng.random(s) / 100,
                                       "core": rng.random(s) * 10})
                         for n, s in zip(names, sizes)], ignore_index=True)
    g = neurons.groupby("layer", sort=False)
    layers = pd.DataFrame({"layer": names, "size": sizes, "kind": "features",
                           "strength_mean": g["strength"].mean().values, "strength_var": g["strength"].var().values,
                           "centrality_mean": g["centrality"].mean().values, "core_max": g["core"].max().values})
    blocks = pd.DataFrame({"block": [f"{n}.weight" for n in names[1:]], "J": rng.random(n_layers - 1)})
    return SimpleNamespace(neurons=neurons, layers=layers, blocks=blocks, centrality_info={}, options={})


def test_many_layers_and_huge_layers_keep_the_report_small():
    a = big_analysis(n_layers=150, huge_layer=300_000)
    html = render_report(a, Provenance(source="big.safetensors"))
    page = assert_self_contained(html)
    assert len(page.tables["layer-table"]) == 150
    assert len(decoded_images(page)) == 4
    assert len(html.encode()) < 2_000_000
    assert "percentiles" in html  # the caption says how layers were summarised


def test_sampling_caps_points_per_layer_and_is_reproducible():
    a = big_analysis(n_layers=3, huge_layer=50_000)
    s1 = figures.sample_per_layer(a.neurons, limit=1000, seed=1)
    s2 = figures.sample_per_layer(a.neurons, limit=1000, seed=1)
    assert s1.equals(s2)
    counts = s1.groupby("layer", sort=False).size()
    assert counts.max() == 1000 and counts.min() == 64
    assert not s1.duplicated(["layer", "neuron"]).any()


def test_core_size_profile_matches_brute_force():
    rng = np.random.default_rng(5)
    core = rng.integers(0, 6, size=40).astype(float) / 2  # many ties
    k, size = figures.core_size_profile(core)
    assert list(k) == sorted(set(core))
    for kk, ss in zip(k, size):
        assert ss == sum(c >= kk for c in core)


@pytest.mark.parametrize("value, text", [
    (None, "\u2013"), (float("nan"), "\u2013"), (3, "3"), (1234567, "1,234,567"), (np.int64(12), "12"),
    (0.123456, "0.1235"), (1.5e-5, "1.500e-05"), (2.5e7, "2.500e+07"), (0.0, "0"), (True, "yes"),
])
def test_number_format(value, text):
    assert fmt(value) == text


# -- comparison ------------------------------------------------------------------------------
def fake_layers(names, values, metric="strength_var"):
    return SimpleNamespace(layers=pd.DataFrame({"layer": names, "size": [4] * len(names), metric: values}))


def test_compare_layers_aligns_by_name_not_position():
    a = fake_layers(["in", "h1", "h2"], [1.0, 2.0, 4.0])
    b = fake_layers(["h2", "in", "h3"], [2.0, 3.0, 7.0])  # other order, h1 missing, h3 new
    wide = compare_layers({"a": a, "b": b}, ["strength_var"])
    assert list(wide["layer"]) == ["in", "h1", "h2", "h3"]
    w = wide.set_index("layer")
    assert w.loc["in", "a"] == 1.0 and w.loc["in", "b"] == 3.0
    assert w.loc["h2", "change"] == -2.0 and w.loc["h2", "rel_change"] == -0.5
    assert np.isnan(w.loc["h1", "b"]) and np.isnan(w.loc["h1", "change"])
    assert np.isnan(w.loc["h3", "a"])
    with pytest.raises(ValueError, match="at least two"):
        compare_layers({"a": a})
    with pytest.raises(ValueError, match="share none"):
        compare_layers({"a": fake_layers(["x"], [1.0], "other"), "b": fake_layers(["x"], [2.0], "other")})


def test_compare_three_checkpoints_change_is_last_minus_first():
    xs = {f"e{i}": fake_layers(["x", "y"], [1.0 + i, 10.0 - i]) for i in range(3)}
    w = compare_layers(xs, ["strength_var"]).set_index("layer")
    assert list(w.columns[:4]) == ["metric", "e0", "e1", "e2"]
    assert w.loc["x", "change"] == 2.0 and w.loc["y", "change"] == -2.0
    assert w.loc["x", "rel_change"] == pytest.approx(2.0)


def test_comparison_report_before_after(tmp_path):
    g1, g2 = mlp_graph(seed=0), mlp_graph(seed=1)
    a1, a2 = independent_analysis(g1), independent_analysis(g2)
    provs = {"before": Provenance(source="b.pt", sha256="1" * 64), "after": Provenance(source="a.pt", sha256="2" * 64)}
    html = render_comparison({"before": a1, "after": a2}, provs, {"before": g1, "after": g2},
                             mode="rewire", extra=[("method", "pa"), ("seed", "7")])
    page = assert_self_contained(html)
    rows = page.tables["layer-table"]
    assert [r[0] for r in rows] == list(g1.partitions)
    # the strength-variance columns hold before, after and the relative change
    metrics = ["strength_mean", "strength_var", "centrality_mean", "core_max"]
    j = 2 + 3 * metrics.index("strength_var")
    for r, name in zip(rows, g1.partitions):
        v1 = a1.layers.set_index("layer").at[name, "strength_var"]
        v2 = a2.layers.set_index("layer").at[name, "strength_var"]
        assert r[j] == fmt(v1) and r[j + 1] == fmt(v2)
        scale = max(a1.layers["strength_var"].abs().max(), a2.layers["strength_var"].abs().max())
        if abs(v1) > 1e-2 * scale:  # a percentage only away from zero (html.NEAR_ZERO_REL)
            assert r[j + 2] == f"{100 * (v2 - v1) / abs(v1):+.1f} %"
        else:
            assert r[j + 2] == "\u0394 " + ("+" if v2 >= v1 else "") + fmt(v2 - v1)
    jt = {r[0]: r[1:] for r in page.tables["block-table"]}
    cb = compare_blocks({"before": a1, "after": a2}).set_index("block")
    for name, cells in jt.items():
        assert cells[0] == fmt(cb.at[name, "before"]) and cells[1] == fmt(cb.at[name, "after"])
    text = " ".join(page.text)
    assert "Before / after" in text and "pa" in text and "seed" in text
    assert len(decoded_images(page)) == 3
    assert [r[0] for r in page.tables["checkpoint-table"]] == ["before", "after"]


def test_checkpoint_labels_are_short_and_unique(tmp_path):
    assert checkpoint_labels(["/r/e1/model.pt", "/r/e2/model.pt"]) == ["e1/model", "e2/model"]
    assert checkpoint_labels(["a/x.pt", "b/y.safetensors"]) == ["x", "y"]
    assert checkpoint_labels(["a/x.pt", "a/x.safetensors"]) == ["x.pt", "x.safetensors"]


# -- provenance and writing ------------------------------------------------------------------
def test_sha256_of_file_and_folder(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert sha256_of(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.safetensors").write_bytes(b"1")
    (d / "index.json").write_text(json.dumps({"weight_map": {}}))
    h1 = sha256_of(d)
    (d / "a.safetensors").write_bytes(b"2")
    h2 = sha256_of(d)
    (d / "a.safetensors").rename(d / "b.safetensors")
    h3 = sha256_of(d)
    assert len({h1, h2, h3}) == 3


def test_write_html_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    write_html("<p>old</p>", out)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_html("<p>new</p>", out)
    assert out.read_text() == "<p>old</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


# -- end to end with the real analysis -------------------------------------------------------
def test_report_file_with_real_analysis(checkpoint, tmp_path):
    from graphnn.report import report_file

    out = tmp_path / "sub" / "report.html"
    res = report_file(checkpoint, out, title="mlp")
    html = out.read_text()
    page = assert_self_contained(html)
    assert len(page.tables["layer-table"]) == len(res.graph.partitions)
    assert len(decoded_images(page)) == 4
    assert res.provenance.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert res.provenance.runtime_s > 0
    # the table shows the real analysis's per-layer numbers
    lay = res.analysis.layers.set_index("layer")
    for r in page.tables["layer-table"]:
        assert r[3] == fmt(lay.at[r[0], "strength_mean"])
