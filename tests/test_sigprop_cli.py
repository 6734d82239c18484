"""``graphnn sigprop``: checkpoint (theory only, says so), factory modules (empirical), --module,
--compare before/after PA rewiring, table/csv/json, -o, and usage errors (exit 2). In-process
with typer's runner (fast); the values are checked against the library call."""

from __future__ import annotations

import json
import math
import textwrap

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import graphnn
from graphnn.cli import app

FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))

    def rewired():
        import graphnn
        model = make()
        graphnn.rewire.pa_rewire_(model, seed=1)
        return model

    not_a_model = 3
""")


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "nets.py").write_text(FACTORY)
    import importlib.util

    spec = importlib.util.spec_from_file_location("nets_for_test", tmp_path / "nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt = tmp_path / "m.pt"
    torch.save(mod.make().state_dict(), ckpt)
    rew = tmp_path / "r.pt"
    torch.save(mod.rewired().state_dict(), rew)
    return tmp_path, mod, ckpt, rew


def run(*args):
    res = CliRunner().invoke(app, ["sigprop", *map(str, args)])
    return res.exit_code, res.stdout, res.stderr


def test_checkpoint_gives_theory_and_says_empirical_needs_a_model(files):
    tmp, mod, ckpt, _ = files
    code, out, err = run(ckpt, "--activation", "tanh", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["empirical"] is False and any("needs the model" in n for n in doc["notes"])
    lib = graphnn.signal_propagation(mod.make(), activation=None)
    got = pd.DataFrame(doc["layers"])
    assert got["sigma_w2"].tolist() == pytest.approx(lib.layers["sigma_w2"].tolist(), rel=1e-12)
    assert got["chi1_star"].iloc[:2].tolist() == pytest.approx(lib.layers["chi1_star"].iloc[:2].tolist(), rel=1e-9)
    assert "needs the model" in err
    code, out, _ = run(ckpt)
    assert code == 0 and "not run" in out and "sigma_w2" in out


def test_factory_runs_the_empirical_part_and_matches_the_library(files):
    tmp, mod, _, _ = files
    code, out, err = run(f"{tmp / 'nets.py'}:make", "--format", "csv", "--batch", "32", "--probes", "2")
    assert code == 0, err
    got = pd.read_csv(__import__("io").StringIO(out))
    lib = graphnn.signal_propagation(mod.make(), batch=32, probes=2)
    assert got["chi1_hat"].dropna().tolist() == pytest.approx(lib.layers["chi1_hat"].dropna().tolist(), rel=1e-9)
    assert got["q_hat"].tolist() == pytest.approx(lib.layers["q_hat"].tolist(), rel=1e-9)
    code, out, _ = run(f"{tmp / 'nets.py'}:make", "--table", "network", "-f", "csv")
    assert code == 0 and "phase_hat" in out.splitlines()[0]


def test_module_option_loads_the_checkpoint_and_compare_shows_before_after(files, tmp_path):
    tmp, mod, ckpt, rew = files
    out_file = tmp_path / "cmp.json"
    code, _, err = run(ckpt, "--module", f"{tmp / 'nets.py'}:make", "--compare", rew, "-o", out_file,
                       "--batch", "32", "--probes", "2")
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    wide = pd.DataFrame(doc["layers"])
    assert doc["empirical"] is True and doc["empirical_compare"] is True
    assert wide["sigma_w2_delta"].abs().max() < 1e-12  # PA permutes every tensor: σ̂_w² unchanged
    assert {"chi1_hat_before", "chi1_hat_after", "q_hat_before", "q_hat_after"} <= set(wide.columns)
    assert not math.isclose(wide["q_hat_before"].iloc[1], wide["q_hat_after"].iloc[1], rel_tol=1e-9)
    # an existing output is refused without --overwrite (exit 2), then replaced with it
    code, _, err = run(ckpt, "-o", out_file, "--activation", "tanh")
    assert code == 2
    code, _, _ = run(ckpt, "-o", out_file, "--activation", "tanh", "--overwrite")
    assert code == 0 and "compare" not in json.loads(out_file.read_text())


@pytest.mark.parametrize("args, needle", [
    (["{tmp}/nets.py:not_a_model"], "not a torch.nn.Module"),
    (["{tmp}/nets.py:missing"], "no attribute"),
    (["no_such_module_xyz:make"], "cannot import"),
    (["{ckpt}", "--activation", "swish9"], "unknown activation"),
    (["{tmp}/nets.py:make", "--probes", "0"], "probes"),
    (["{ckpt}", "--input-shape", "a,b"], "input-shape"),
    (["{tmp}/nope.pt"], "no such file"),
])
def test_usage_errors_exit_2(files, args, needle):
    tmp, _, ckpt, _ = files
    code, out, err = run(*[a.format(tmp=tmp, ckpt=ckpt) for a in args])
    assert code == 2, (out, err)
    assert needle in err


def test_report_section_is_a_self_contained_html_page(files, tmp_path):
    tmp, _, ckpt, rew = files
    page = tmp_path / "sp.html"
    code, out, err = run(ckpt, "--module", f"{tmp / 'nets.py'}:make", "--compare", rew, "--report", page,
                         "--batch", "16", "--probes", "1")
    assert code == 0, err
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "before: " in text and "after: " in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "chi1_hat" in text and "sigma_w2" in text
    code, _, err = run(ckpt, "--report", tmp_path / "x.txt")
    assert code == 2 and "HTML" in err
    # the library's section: a tidy table with one row per (model, layer, quantity)
    import graphnn.sigprop.report as rep

    res = graphnn.signal_propagation(ckpt, activation="tanh")
    table, fig = rep.section(res)
    assert set(table.columns) == {"model", "depth", "layer", "param", "quantity", "source", "value"}
    assert len(table) == len(res.layers) * table["quantity"].nunique()
    assert fig.axes
    import matplotlib.pyplot as plt

    plt.close(fig)  # the caller owns the figure: leave no pyplot state for later tests


def test_hugging_face_folder_theory_or_built_with_module_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    folder = tmp_path / "gpt2"
    transformers.GPT2Model(cfg).save_pretrained(folder)
    code, out, err = run(folder, "-f", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["empirical"] is False and len(doc["layers"]) == 6
    code, out, err = run(folder, "--module", "hf", "-f", "json", "--batch", "8", "--probes", "1")
    assert code == 0, err
    doc2 = json.loads(out)
    assert doc2["empirical"] is True
    assert all(r["q_hat"] is not None and r["q_hat"] > 0 for r in doc2["layers"])
    # the same weights either way
    assert [r["sigma_w2"] for r in doc2["layers"]] == pytest.approx([r["sigma_w2"] for r in doc["layers"]], rel=1e-9)
    code, _, err = run(tmp_path / "nets_missing.pt", "--module", "hf")
    assert code == 2


@pytest.mark.parametrize("method", ["pa", "variance-search", "hcore"])
def test_rewire_report_shows_sigma_w2_before_and_after(tmp_path, method):
    """The rewire report's signal-propagation card: sigma_w2 per layer before and after, equal to
    the mean over output units of the sum of squared incoming weights computed here by hand
    (PA keeps every tensor's values, so its sigma_w2 is unchanged)."""
    import re
    from safetensors.torch import load_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    src = tmp_path / "m.safetensors"
    graphnn.extract.save_state_dict(net.state_dict(), src)
    out, rep = tmp_path / "r.safetensors", tmp_path / "rep.html"
    r = CliRunner().invoke(app, ["rewire", str(src), "-o", str(out), "--method", method, "--seed", "0",
                                 "--report", str(rep)])
    assert r.exit_code == 0, r.output
    page = rep.read_text()
    assert "--module FACTORY --compare AFTER" in page  # checkpoints only: says how to get the measured χ̂₁, q̂
    table = page[page.index('id="fig-sigprop-table"'):]
    table = table[:table.index("</table>")]
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in table.split("<tr>")[2:]]
    by_layer = {row[0]: (float(row[1]), float(row[2])) for row in rows}
    after = load_file(out)
    for name, w in net.state_dict().items():
        if not name.endswith("weight"):
            continue
        layer = name.rsplit(".", 1)[0]
        hand_before = float((w.double() ** 2).sum(1).mean())
        hand_after = float((after[name].double() ** 2).sum(1).mean())
        assert by_layer[layer][0] == pytest.approx(hand_before, rel=1e-3)
        assert by_layer[layer][1] == pytest.approx(hand_after, rel=1e-3)
        if method == "pa":
            assert hand_after == pytest.approx(hand_before, rel=1e-12)
