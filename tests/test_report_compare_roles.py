"""Transformer names in the comparison and rewiring reports and in every table: a 12-layer
GPT-2-shaped model (tiny widths, built from a transformers config) before and after perturbing
the weights of its block 5.

Asserted: the comparison report draws the compared metrics against the layer index, one line per
role (the frames handed to ``figures.role_lines`` hold the analyses' own numbers for partitions
and tensors named by hand), the relative change follows the near-zero rule (per role in the
figure, per metric in the table) and is exactly 0 for the unchanged tensors; the report has the
last checkpoint's topology SVG, one notes banner and a layer · role column, and passes the
headless-Chromium checks of test_browser.py; the rewire form gets the same figures; ``describe``'s
and ``compare``'s JSON/CSV and the null-model frame end with ``layer_index`` and ``role``,
checked on names read by hand and against docs/json.md.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import graphnn
from graphnn.report import figures
from graphnn.report.compare import compare_layers
from graphnn.report.html import NEAR_ZERO_REL, fmt, render_comparison
from graphnn.report.pipeline import compare_files, write_comparison

T = pytest.importorskip("transformers")

from test_cli_json import check_rows, documented, run, run_many  # noqa: E402  (shared helpers)
from test_report import assert_self_contained, decoded_images  # noqa: E402

N_LAYERS = 12
PERTURBED = 5
LABELS = ("before", "perturbed")
METRICS = ("strength_mean", "strength_var", "centrality_mean", "core_max")
BLOCK_METRICS = ("J", "mean_abs_weight", "spectral_norm", "stable_rank")


def partition_names(i: int) -> dict[str, str]:
    """GPT-2's partitions of block ``i``, by role, written out by hand."""
    return {"q": f"transformer.h.{i}.attn.c_attn.q", "k": f"transformer.h.{i}.attn.c_attn.k",
            "v": f"transformer.h.{i}.attn.c_attn.v", "up": f"transformer.h.{i}.mlp.c_fc"}


def block_names(i: int) -> dict[str, str]:
    """GPT-2's weight tensors (blocks) of block ``i``, by role, written out by hand."""
    return {"q": f"transformer.h.{i}.attn.c_attn.weight[q]", "k": f"transformer.h.{i}.attn.c_attn.weight[k]",
            "v": f"transformer.h.{i}.attn.c_attn.weight[v]", "o": f"transformer.h.{i}.attn.c_proj.weight",
            "up": f"transformer.h.{i}.mlp.c_fc.weight", "down": f"transformer.h.{i}.mlp.c_proj.weight"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    cfg = T.GPT2Config(n_embd=32, n_layer=N_LAYERS, n_head=4, n_positions=16, vocab_size=64,
                       bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(cfg)
    root = tmp_path_factory.mktemp("gpt2-12")
    model.save_pretrained(root / "before")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.transformer.h[PERTURBED].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(root / "perturbed")
    return root / "before", root / "perturbed"


@pytest.fixture(scope="module")
def compared(folders):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compare_files(list(folders), labels=list(LABELS), device="cpu")


@pytest.fixture(scope="module")
def report(compared, tmp_path_factory):
    """The comparison report, and every frame its per-role figures were drawn from."""
    calls = []
    original = figures.role_lines

    def recording(frame, metrics, titles, *args, **kwargs):
        calls.append((frame.copy(), list(metrics), dict(titles), kwargs))
        return original(frame, metrics, titles, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(figures, "role_lines", recording)
    try:
        out = write_comparison(compared, tmp_path_factory.mktemp("report") / "compare.html")
    finally:
        mp.undo()
    return out, calls


def layer_value(compared, label: str, layer: str, metric: str) -> float:
    layers = compared[label].analysis.layers.set_index("layer")
    return float(layers.at[layer, metric])


def block_value(compared, label: str, block: str, metric: str) -> float:
    blocks = compared[label].analysis.blocks.set_index("block")
    return float(blocks.at[block, metric])


def row_of(frame: pd.DataFrame, i: int, role: str, column: str) -> float:
    rows = frame[(frame["layer_index"] == i) & (frame["role"] == role) & frame[column].notna()]
    assert len(rows) == 1, (i, role, column, len(rows))
    return float(rows[column].iloc[0])


def expected_change(first: float, last: float, line_scale: float) -> float:
    """100 (last - first) / |first|, NaN where |first| is 0 or at most 1 % of ``line_scale``."""
    if first == 0 or abs(first) <= NEAR_ZERO_REL * line_scale:
        return math.nan
    return 100 * (last - first) / abs(first)


def test_the_report_draws_metrics_against_layer_index_per_role(compared, report):
    out, calls = report
    page = assert_self_contained(out.read_text(encoding="utf-8"))
    ids = [a.get("id") for tag, a in page.tags if tag == "section"]
    for fid in ("topology", "fig-compare-roles-layers", "fig-compare-roles-blocks", "fig-compare-roles-change",
                "fig-compare-dist"):
        assert fid in ids, fid
    assert "fig-compare-layers" not in ids and "fig-compare-j" not in ids  # no per-partition sawtooth
    assert len(calls) == 3 and len(decoded_images(page)) == 4
    partitions, blocks, change = (c[0] for c in calls)  # in page order
    assert calls[0][1] == [f"{m}|{lab}" for m in METRICS for lab in LABELS]
    assert calls[1][1] == [f"{m}|{lab}" for m in BLOCK_METRICS for lab in LABELS]
    assert calls[0][3] == calls[1][3] == {"ncols": 2, "sharey": "row"}  # one row per metric, y shared
    for i in range(N_LAYERS):
        for role, name in partition_names(i).items():
            for m in METRICS:
                for lab in LABELS:
                    assert row_of(partitions, i, role, f"{m}|{lab}") == layer_value(compared, lab, name, m)
        for role, name in block_names(i).items():
            for m in BLOCK_METRICS:
                for lab in LABELS:
                    assert row_of(blocks, i, role, f"{m}|{lab}") == block_value(compared, lab, name, m)
    # the change panels: the near-zero rule along each (metric, role) line
    assert calls[2][3] == {"hlines": (0.0,), "log": False}
    for m in METRICS:
        for role in ("q", "k", "v", "up"):
            firsts = [layer_value(compared, "before", partition_names(i)[role], m) for i in range(N_LAYERS)]
            scale = max(abs(f) for f in firsts)
            for i, f in enumerate(firsts):
                last = layer_value(compared, "perturbed", partition_names(i)[role], m)
                got = change.loc[(change["layer_index"] == i) & (change["role"] == role)
                                 & change[f"{m}|before"].notna(), f"{m}|change"]
                assert len(got) == 1
                want = expected_change(f, last, scale)
                assert (math.isnan(want) and math.isnan(got.iloc[0])) or got.iloc[0] == pytest.approx(want, rel=1e-12)
    for m in BLOCK_METRICS:  # tensors outside block 5 are unchanged: exactly 0 % there
        for i in range(N_LAYERS):
            for role, name in block_names(i).items():
                got = change.loc[(change["layer_index"] == i) & (change["role"] == role)
                                 & change[f"{m}|before"].notna(), f"{m}|change"].iloc[0]
                if i != PERTURBED:
                    assert got == 0.0
                else:
                    f, last = (block_value(compared, lab, name, m) for lab in LABELS)
                    assert got == pytest.approx(100 * (last - f) / abs(f), rel=1e-12) and got != 0


def test_the_report_tables_topology_and_near_zero_rule(compared, report):
    out, _ = report
    html = out.read_text(encoding="utf-8")
    page = assert_self_contained(html)
    g = compared["perturbed"].graph
    assert 'id="topology-svg"' in html and "Topology: partitions and weight tensors (perturbed)" in html
    nodes = [a for tag, a in page.tags if tag == "g" and "node" in (a.get("class") or "").split()]
    assert len(nodes) == len(g.partitions)
    assert sum(tag == "details" and "notes" in (a.get("class") or "").split() for tag, a in page.tags) == 1
    rows = {r[0]: r for r in page.tables["layer-table"]}
    assert list(rows) == list(g.partitions)
    assert rows["transformer.h.3.attn.c_attn.q"][2] == "3 \u00b7 q"
    assert rows["transformer.h.7.mlp.c_fc"][2] == "7 \u00b7 up"
    assert rows["transformer.stream"][2] == "stream" and rows["lm_head"][2] == "head"
    analyses = {k: r.analysis for k, r in compared.items()}
    wide = compare_layers(analyses, list(METRICS))
    kinds = set()
    for k, m in enumerate(METRICS):
        w = wide[wide["metric"] == m].set_index("layer")
        scale = float(np.nanmax(np.abs(w[list(LABELS)].to_numpy(dtype=float))))
        for name, r in rows.items():
            f, last = float(w.at[name, "before"]), float(w.at[name, "perturbed"])
            cells = r[3 + 3 * k: 6 + 3 * k]
            assert cells[:2] == [fmt(f), fmt(last)]
            if f != 0 and abs(f) > NEAR_ZERO_REL * scale:
                assert cells[2] == f"{100 * (last - f) / abs(f):+.1f} %"
                kinds.add("%")
            else:
                assert cells[2] == "\u0394 " + ("+" if last >= f else "") + fmt(last - f)
                kinds.add("\u0394")
    assert kinds == {"%", "\u0394"}  # both forms occur in this table
    jt = {r[0]: r for r in page.tables["block-table"]}
    assert jt["transformer.h.3.attn.c_attn.weight[k]"][1] == "3 \u00b7 k"
    assert jt["transformer.h.9.mlp.c_proj.weight"][1] == "9 \u00b7 down"
    j = {lab: compared[lab].analysis.blocks.set_index("block")["J"] for lab in LABELS}
    jscale = max(float(v.abs().max()) for v in j.values())
    for name, r in jt.items():
        f, last = float(j["before"][name]), float(j["perturbed"][name])
        near_zero = f == 0 or abs(f) <= NEAR_ZERO_REL * jscale
        assert r[-1] == ("\u0394 " + ("+" if last >= f else "") + fmt(last - f) if near_zero
                         else f"{100 * (last - f) / abs(f):+.1f} %")
        if not name.startswith(f"transformer.h.{PERTURBED}."):
            assert r[-1] in ("+0.0 %", "\u0394 +0")  # the same tensor in both checkpoints


def test_the_rewire_form_gets_the_same_figures(compared, monkeypatch):
    for name in ("role_lines", "compare_distributions"):  # what is drawn is checked above; only the page here
        monkeypatch.setattr(figures, name, lambda *a, **k: "data:image/png;base64,")
    analyses = {"before": compared["before"].analysis, "after": compared["perturbed"].analysis}
    html = render_comparison(analyses, {"before": compared["before"].provenance,
                                        "after": compared["perturbed"].provenance},
                             {"before": compared["before"].graph, "after": compared["perturbed"].graph},
                             mode="rewire", extra=[("method", "pa")])
    page = assert_self_contained(html)
    ids = [a.get("id") for tag, a in page.tags if tag == "section"]
    assert {"topology", "fig-compare-roles-layers", "fig-compare-roles-blocks", "fig-compare-roles-change"} <= set(ids)
    assert "Before / after: partition metrics by layer and role" in html
    assert "Topology: partitions and weight tensors (after)" in html


def test_the_comparison_report_in_headless_chromium(compared, report, tmp_path):
    test_browser = pytest.importorskip("test_browser")
    if test_browser.CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    out, _ = report
    g = compared["perturbed"].graph
    facts = test_browser.check_page(out, tmp_path / "profile", "compare-transformer", len(g.partitions), 4)
    assert facts["notesBanners"] == 1
    assert facts["topologyNodes"] == len(g.partitions)
    assert facts["topologyEdges"] == len({(b.src, b.dst) for b in g.blocks.values()})
    assert facts["layerNames"] == list(g.partitions)


@pytest.fixture(scope="module")
def cli_outputs(folders, tmp_path_factory):
    before, after = folders
    csv = tmp_path_factory.mktemp("describe") / "parameters.csv"
    described, cmp_json, null, described_csv = run_many(
        ("describe", before, "--format", "json"),
        ("compare", before, after, "--format", "json", "--label", "before", "--label", "perturbed", "--device", "cpu"),
        ("analyse", before, "--null", "2", "--seed", "0", "--table", "null", "--format", "json", "--device", "cpu",
         "--no-spectral"),
        ("describe", before, "-o", csv))
    for r in (described, cmp_json, null, described_csv):
        assert r.returncode == 0, r.stderr
    return json.loads(described.stdout), json.loads(cmp_json.stdout), pd.read_csv(csv), json.loads(null.stdout)


def test_describe_tables_carry_the_roles(cli_outputs):
    doc, _, csv, _ = cli_outputs
    docs = documented()
    assert doc["schema_version"] == 2
    for table in ("parameters", "partitions", "blocks"):
        spec = docs[f"describe: {table} rows"]
        check_rows(doc[table], spec, table, set(spec))
        assert list(doc[table][0])[-2:] == ["layer_index", "role"], table
    params = {p["name"]: (p["layer_index"], p["role"]) for p in doc["parameters"]}
    assert params["transformer.h.3.attn.c_attn.weight"] == (3, "qkv")
    assert params["transformer.h.11.mlp.c_proj.weight"] == (11, "down")
    assert params["transformer.h.0.ln_1.weight"] == (0, "norm")
    assert params["transformer.wte.weight"] == (None, "embed")
    blocks = {b["block"]: (b["layer_index"], b["role"]) for b in doc["blocks"]}
    for i in (0, 3, 11):
        for role, name in block_names(i).items():
            assert blocks[name] == (i, role)
    parts = {p["layer"]: (p["layer_index"], p["role"]) for p in doc["partitions"]}
    for i in (0, 3, 11):
        for role, name in partition_names(i).items():
            assert parts[name] == (i, role)
    assert parts["transformer.stream"] == (None, "stream") and parts["lm_head"] == (None, "head")
    assert list(csv.columns[-2:]) == ["layer_index", "role"]
    row = csv[csv["name"] == "transformer.h.3.attn.c_attn.weight"].iloc[0]
    assert row["layer_index"] == 3 and row["role"] == "qkv"


def test_compare_table_carries_the_roles(compared, cli_outputs):
    _, doc, _, _ = cli_outputs
    spec = documented()["compare: layers rows"]
    spec = {**{k: v for k, v in spec.items() if k != "LABEL"}, **{lab: spec["LABEL"] for lab in LABELS}}
    check_rows(doc["layers"], spec, "compare layers", set(spec))
    assert list(doc["layers"][0])[-2:] == ["layer_index", "role"]
    rows = {(r["layer"], r["metric"]): r for r in doc["layers"]}
    for i in (0, PERTURBED, 11):
        for role, name in partition_names(i).items():
            r = rows[(name, "strength_var")]
            assert (r["layer_index"], r["role"]) == (i, role)
            assert r["before"] == pytest.approx(layer_value(compared, "before", name, "strength_var"), rel=1e-12)
            assert r["perturbed"] == pytest.approx(layer_value(compared, "perturbed", name, "strength_var"), rel=1e-12)
    assert (rows[("transformer.stream", "core_max")]["layer_index"], rows[("transformer.stream", "core_max")]["role"]) \
        == (None, "stream")
    assert doc["schema_version"] == 2


def test_null_model_frame_carries_the_roles(compared):
    g = compared["before"].graph
    df = graphnn.null_model(g, "strength", n=2, seed=0)
    assert list(df.columns[-2:]) == ["layer_index", "role"] and str(df["layer_index"].dtype) == "Int64"
    by = {(r["layer"], r["scope"]): (None if pd.isna(r["layer_index"]) else int(r["layer_index"]), r["role"])
          for r in df.to_dict("records")}
    assert by[("transformer.h.3.attn.c_attn.weight[q]", "block")] == (3, "q")
    assert by[("transformer.h.8.mlp.c_proj.weight", "block")] == (8, "down")
    assert by[("transformer.h.3.attn.c_attn.v", "layer")] == (3, "v")
    assert by[("transformer.h.10.mlp.c_fc", "layer")] == (10, "up")
    assert by[("transformer.stream", "layer")] == (None, "stream")
    assert by[("lm_head", "layer")] == (None, "head")
    # every block and layer row has the role the analysis tables give the same name
    a = compared["before"].analysis
    tables = {"block": a.blocks.set_index("block"), "layer": a.layers.set_index("layer")}
    for (name, scope), (li, role) in by.items():
        if scope in tables:
            t = tables[scope]
            want_li = t.at[name, "layer_index"]
            assert li == (None if pd.isna(want_li) else int(want_li)) and role == t.at[name, "role"], name


def test_null_rows_in_the_json_carry_the_roles(cli_outputs):
    rows = cli_outputs[3]["null"]
    spec = documented()["analyse: null rows"]
    check_rows(rows, spec, "null", set(spec))
    assert list(rows[0])[-2:] == ["layer_index", "role"]
    by = {(r["layer"], r["scope"], r["metric"]): (r["layer_index"], r["role"]) for r in rows}
    assert by[("transformer.h.4.attn.c_attn.weight[k]", "block", "strength_variance")] == (4, "k")
    assert by[("transformer.h.4.mlp.c_fc", "layer", "centrality_gini")] == (4, "up")
    assert by[("(network)", "network", "max_core")] == (None, None)


def test_null_model_network_rows_have_no_role():
    g = graphnn.extract(torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)))
    df = graphnn.null_model(g, ["centrality"], n=2, seed=0)
    net = df[df["scope"] == "network"]
    assert len(net) and net["layer_index"].isna().all() and net["role"].isna().all()
    assert df["layer_index"].isna().all()  # an MLP's names carry no transformer role



def test_the_reports_null_table_has_the_role_columns(compared):
    """The HTML null table ends with layer index and role like a.null and the JSON rows, with the
    roles of names read by hand."""
    from graphnn.report.html import render_report
    from graphnn.report.provenance import Provenance
    from test_report import Page

    entry = compared["before"]
    a = graphnn.analyse(entry.graph, null=2, seed=0, centrality=False, core=False, spectral=False)
    html = render_report(a, Provenance(source="before"), entry.graph)
    table = re.search(r'<table id="null-table">.*?</table>', html, flags=re.S).group(0)
    headers = [h.strip() for h in re.findall(r"<th\b[^>]*>(.*?)</th>", table, flags=re.S)]
    assert headers[-2:] == ["layer index", "role"] and headers[0] == "layer"
    rows = {(r[0], r[1]): (r[-2], r[-1]) for r in Page(html).tables["null-table"]}
    assert len(rows) == len(a.null)
    assert rows[("transformer.h.3.attn.c_attn.weight[q]", "block")] == ("3", "q")
    assert rows[("transformer.h.8.mlp.c_proj.weight", "block")] == ("8", "down")
    assert rows[("transformer.h.10.mlp.c_fc", "layer")] == ("10", "up")
    assert rows[("transformer.stream", "layer")] == ("\u2013", "stream")
    assert rows[("lm_head", "layer")] == ("\u2013", "head")


def test_compare_delta_json_norms_carry_the_roles(folders, tmp_path):
    from typer.testing import CliRunner

    from graphnn.cli import app

    out = tmp_path / "delta.json"
    r = CliRunner().invoke(app, ["compare", *map(str, folders), "--delta", "-o", str(out), "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    for table in ("norms", "layers", "blocks", "neurons"):
        assert list(doc[table][0])[-2:] == ["layer_index", "role"], table
    norms = {n["block"]: n for n in doc["norms"]}
    for i in (0, PERTURBED, 11):
        for role, name in block_names(i).items():
            assert (norms[name]["layer_index"], norms[name]["role"]) == (i, role)
            assert (norms[name]["frobenius_delta"] > 0) == (i == PERTURBED), name  # only block 5 changed
    assert (norms["lm_head.weight"]["layer_index"], norms["lm_head.weight"]["role"]) == (None, "head")
