"""ΔW graphs (graphnn.delta, graphnn.delta_norms) and ``graphnn compare BASE TUNED --delta``.

Oracles: the weight differences computed here with torch from the two models' own parameters,
``torch.linalg`` norms, and graphs built by hand with ``LayeredGraph.from_matrices`` from those
differences (analysed with the same functions: strength, centrality, cores must agree)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import graphnn
from graphnn.errors import InvalidParameterError, TopologyWarning

torch.set_num_threads(1)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "200"}


def mlp(seed: int = 0, widths=(6, 5, 4, 3)) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def perturbed(model, name: str, scale: float = 0.05, seed: int = 1):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p = dict(other.named_parameters())[name]
        p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


def analysis_columns(g):
    a = graphnn.analyse(g, dtype=torch.float64, device="cpu")
    return a.neurons.set_index(["layer", "neuron"])[["in_strength", "out_strength", "abs_strength",
                                                     "centrality", "core"]]


# -- a model against itself ------------------------------------------------------------------------
def test_delta_of_a_model_against_itself_is_all_zero_and_says_so():
    m = mlp()
    g = graphnn.delta(graphnn.extract(m), graphnn.extract(copy.deepcopy(m)), labels=("base", "copy"))
    assert g.meta["all_zero"] is True and g.meta["delta"]["all_zero"] is True
    assert any("zero in all 3 matched blocks" in n for n in g.notes)
    for b in g.blocks.values():
        assert torch.count_nonzero(b.matrix()) == 0
    norms = graphnn.delta_norms(g)
    assert list(norms.columns[:5]) == ["block", "param", "frobenius_delta", "frobenius_base", "relative"]
    assert (norms["frobenius_delta"] == 0).all() and (norms["relative"] == 0).all()
    assert (norms["frobenius_base"] > 0).all()
    # the analyses are well defined on it: zero strengths and cores, uniform centrality, no crash
    a = graphnn.analyse(g, device="cpu")
    assert (a.neurons[["in_strength", "out_strength", "strength", "abs_strength", "core"]] == 0).all().all()
    c = a.neurons["centrality"].to_numpy()
    assert np.allclose(c, c[0]) and math.isclose(float(np.linalg.norm(c)), 1.0, rel_tol=1e-12)
    assert a.centrality_info["eigenvalue"] == 0.0


# -- one layer perturbed -------------------------------------------------------------------------
def test_only_the_perturbed_layer_is_nonzero_and_norms_match_torch_linalg():
    base = mlp()
    tuned = perturbed(base, "2.weight")
    g = graphnn.delta(graphnn.extract(base), graphnn.extract(tuned))
    assert g.meta["all_zero"] is False and not any("zero in all" in n for n in g.notes)
    assert list(g.partitions) == list(graphnn.extract(tuned).partitions)
    sd_b, sd_t = base.state_dict(), tuned.state_dict()
    for b in g.blocks.values():
        expected = sd_t[b.param] - sd_b[b.param]
        assert torch.equal(b.matrix(), expected)
        assert (torch.count_nonzero(b.matrix()) > 0) == (b.param == "2.weight")
    norms = graphnn.delta_norms(graphnn.extract(base), graphnn.extract(tuned)).set_index("block")
    for name in ("0.weight", "2.weight", "4.weight"):
        d = sd_t[name].double() - sd_b[name].double()
        assert norms.loc[name, "frobenius_delta"] == pytest.approx(float(torch.linalg.matrix_norm(d)), rel=1e-12, abs=0)
        fb = float(torch.linalg.matrix_norm(sd_b[name].double()))
        assert norms.loc[name, "frobenius_base"] == pytest.approx(fb, rel=1e-12)
        assert norms.loc[name, "relative"] == pytest.approx(float(torch.linalg.matrix_norm(d)) / fb, rel=1e-12)
    assert norms.loc["0.weight", "frobenius_delta"] == 0 and norms.loc["4.weight", "frobenius_delta"] == 0
    assert norms.loc["2.weight", "frobenius_delta"] > 0
    # the norms stored on the graph are the same table
    pd.testing.assert_frame_equal(graphnn.delta_norms(g), graphnn.delta_norms(graphnn.extract(base),
                                                                              graphnn.extract(tuned)))


def test_delta_graph_analyses_equal_a_hand_built_graph_of_the_differences():
    base = mlp()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd_b, sd_t = base.state_dict(), tuned.state_dict()
    d = {k: (sd_t[k] - sd_b[k]) for k in ("0.weight", "2.weight", "4.weight")}
    oracle = graphnn.LayeredGraph.from_matrices(
        {"input": 6, "0": 5, "2": 4, "4": 3},
        {"0.weight": ("input", "0", d["0.weight"]), "2.weight": ("0", "2", d["2.weight"]),
         "4.weight": ("2", "4", d["4.weight"])})
    got = analysis_columns(graphnn.delta(graphnn.extract(base), graphnn.extract(tuned)))
    want = analysis_columns(oracle)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12)


def test_one_part_of_a_fused_qkv_tensor_changes_only_its_block():
    """MultiheadAttention's in_proj_weight splits into q/k/v blocks: a change of the k rows only
    shows in the [k] block, and its norm is over those rows of the stored tensor."""
    torch.manual_seed(0)

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    base = Attn().eval()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.attn.in_proj_weight[8:16].add_(0.5)
    gb = graphnn.extract(base, example_inputs=(torch.randn(1, 4, 8),))
    gt = graphnn.extract(tuned, example_inputs=(torch.randn(1, 4, 8),))
    norms = graphnn.delta_norms(gb, gt).set_index("block")
    k = [n for n in norms.index if n.endswith("[k]")]
    assert len(k) == 1
    nonzero = set(norms.index[norms["frobenius_delta"] > 0])
    assert nonzero == set(k)
    rows = base.attn.in_proj_weight.detach()[8:16].double()
    d = tuned.attn.in_proj_weight.detach()[8:16].double() - rows
    assert norms.loc[k[0], "frobenius_delta"] == pytest.approx(float(torch.linalg.matrix_norm(d)), rel=1e-12)
    assert norms.loc[k[0], "frobenius_delta"] == pytest.approx(0.5 * math.sqrt(64), rel=1e-6)
    assert norms.loc[k[0], "frobenius_base"] == pytest.approx(float(torch.linalg.matrix_norm(rows)), rel=1e-12)


def test_conv_block_norms_are_over_the_stored_kernels():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3))
    tuned = perturbed(base, "2.weight", scale=0.2)
    kwargs = {"conv": "l1", "example_inputs": (torch.randn(1, 2, 9, 9),)}
    g = graphnn.delta(graphnn.extract(base, **kwargs), graphnn.extract(tuned, **kwargs))
    norms = graphnn.delta_norms(g).set_index("block")
    d = tuned[2].weight.detach().double() - base[2].weight.detach().double()
    assert norms.loc["2.weight", "frobenius_delta"] == pytest.approx(float(torch.linalg.vector_norm(d)), rel=1e-12)
    assert norms.loc["0.weight", "frobenius_delta"] == 0
    # the block's matrix is the aggregation (l1) of the ΔW kernels
    expected = d.abs().sum(dim=(2, 3))
    assert torch.allclose(g.blocks["2.weight"].matrix().double(), expected, rtol=1e-6, atol=1e-7)


def test_transformers_delta_only_the_changed_layer_of_a_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    base = transformers.GPT2LMHeadModel(cfg).eval()
    tuned = perturbed(base, "transformer.h.1.mlp.c_fc.weight")
    g = graphnn.delta(graphnn.extract(base), graphnn.extract(tuned))
    norms = graphnn.delta_norms(g).set_index("block")
    assert set(norms.index[norms["frobenius_delta"] > 0]) == {"transformer.h.1.mlp.c_fc.weight"}
    d = (tuned.transformer.h[1].mlp.c_fc.weight - base.transformer.h[1].mlp.c_fc.weight).detach()
    # HF Conv1D is stored (in, out): the block's matrix is its transpose
    assert torch.equal(g.blocks["transformer.h.1.mlp.c_fc.weight"].matrix(), d.T)
    assert g.topology == graphnn.extract(tuned).topology


# -- files, dtypes, laziness ---------------------------------------------------------------------
def test_delta_of_checkpoint_files_is_lazy_and_equals_the_in_memory_one(tmp_path):
    base = mlp()
    tuned = perturbed(base, "4.weight")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in base.state_dict().items()}, tmp_path / "b.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tuned.state_dict().items()}, tmp_path / "t.safetensors")
    gb, gt = graphnn.extract(tmp_path / "b.safetensors"), graphnn.extract(tmp_path / "t.safetensors")
    reads = []
    for g, side in ((gb, "base"), (gt, "tuned")):
        for b in g.blocks.values():
            load = b._load
            b._load = (lambda load=load, name=b.name, side=side: reads.append((side, name)) or load())
    g = graphnn.delta(gb, gt, norms=False)
    assert reads == [] and g.meta["all_zero"] is None  # nothing read yet
    m = g.blocks["4.weight"].matrix()
    assert sorted(reads) == [("base", "4.weight"), ("tuned", "4.weight")]  # one block, from both sides
    assert m.dtype == torch.float32
    sd_b = {k: v.to(torch.bfloat16).float() for k, v in base.state_dict().items()}
    sd_t = {k: v.to(torch.bfloat16).float() for k, v in tuned.state_dict().items()}
    assert torch.equal(m, sd_t["4.weight"] - sd_b["4.weight"])
    with pytest.raises(InvalidParameterError, match="norms=False"):
        graphnn.delta_norms(g)


# -- what does not match ---------------------------------------------------------------------------
def test_unrelated_models_are_refused():
    base = mlp()
    torch.manual_seed(0)
    other = graphnn.LayeredGraph.from_matrices({"a": 6, "b": 5}, {"w": ("a", "b", torch.randn(5, 6))})
    with pytest.raises(InvalidParameterError, match="no block of 'other' has the name of a block of 'base'"):
        graphnn.delta(graphnn.extract(base), other, labels=("base", "other"))
    with pytest.raises(InvalidParameterError, match="no block"):
        graphnn.delta_norms(graphnn.extract(base), other)


def test_different_shapes_are_refused_with_the_block_names():
    base, other = mlp(widths=(6, 5, 4, 3)), mlp(widths=(6, 5, 7, 3))
    with pytest.raises(InvalidParameterError) as e:
        graphnn.delta(graphnn.extract(base), graphnn.extract(other), labels=("a", "b"))
    msg = str(e.value)
    assert "2.weight: (4, 5)" in msg and "(7, 5)" in msg and "4.weight" in msg and "--exclude" in msg


def test_different_partitions_are_refused():
    torch.manual_seed(0)
    w = torch.randn(3, 2)
    a = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 3}, {"w": ("a", "b", w)})
    b = graphnn.LayeredGraph.from_matrices({"x": 2, "y": 3}, {"w": ("x", "y", w + 1)})
    with pytest.raises(InvalidParameterError, match="join different partitions.*'w' reads 'a'|w reads 'a'"):
        graphnn.delta(a, b)
    # same partitions but a different index map
    c = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 3}, {"w": ("a", "b", w, torch.tensor([1, 0]), None)})
    with pytest.raises(InvalidParameterError, match="src index map differs"):
        graphnn.delta(a, c)


def test_blocks_of_one_side_only_are_listed_never_silently_dropped():
    base = mlp(widths=(6, 5, 4))
    tuned = torch.nn.Sequential(*copy.deepcopy(base), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.warns(TopologyWarning, match=r"only in 'tuned': 4\.weight"):
        g = graphnn.delta(graphnn.extract(base), graphnn.extract(tuned), labels=("base", "tuned"))
    assert g.meta["delta"]["only_in_tuned"] == ["4.weight"] and g.meta["delta"]["only_in_base"] == []
    assert any("only in 'tuned': 4.weight" in n for n in g.notes)
    assert "4.weight" not in g.blocks and "4" not in g.partitions
    assert any("partitions no matched block touches" in n and "4" in n for n in g.notes)
    cov = g.coverage.set_index("name")
    assert cov.loc["4.weight", "status"] == "skipped" and "only in 'tuned'" in cov.loc["4.weight", "reason"]
    assert g.meta["all_zero"] is True  # the matched blocks are equal
    # and the other way round: a layer only the base has
    with pytest.warns(TopologyWarning, match=r"only in 'base': 4\.weight"):
        g2 = graphnn.delta(graphnn.extract(tuned), graphnn.extract(base), labels=("base", "tuned"))
    assert g2.coverage.set_index("name").loc["4.weight", "status"] == "skipped"


# -- command line ----------------------------------------------------------------------------------
def invoke(*args):
    """In process (typer's runner): the command's code without an interpreter start per case."""
    from typer.testing import CliRunner

    from graphnn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def files(tmp_path):
    base = mlp()
    tuned = perturbed(base, "2.weight")
    other = mlp(widths=(6, 7, 4, 3))  # same layer names, other sizes
    paths = {}
    for name, m in (("base", base), ("tuned", tuned), ("other", other)):
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, paths[name])
    paths["sd"] = {"base": base.state_dict(), "tuned": tuned.state_dict()}
    return paths


def test_cli_compare_delta_json_numbers(files, tmp_path):
    out = tmp_path / "d.json"
    r = invoke("compare", files["base"], files["tuned"], "--delta", "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["delta"] is True and doc["all_zero"] is False
    assert doc["base"]["label"] == "base" and doc["tuned"]["label"] == "tuned"
    norms = pd.DataFrame(doc["norms"]).set_index("block")
    sd_b, sd_t = files["sd"]["base"], files["sd"]["tuned"]
    d = sd_t["2.weight"].double() - sd_b["2.weight"].double()
    assert norms.loc["2.weight", "frobenius_delta"] == pytest.approx(float(torch.linalg.matrix_norm(d)), rel=1e-12)
    assert norms.loc["0.weight", "frobenius_delta"] == 0 and norms.loc["4.weight", "frobenius_delta"] == 0
    # the change's analysis: in-strength of layer "2" = row sums of ΔW of 2.weight
    neurons = pd.DataFrame(doc["neurons"])
    got = neurons[neurons["layer"] == "2"].sort_values("neuron")["in_strength"].to_numpy()
    np.testing.assert_allclose(got, d.sum(1).numpy(), rtol=1e-6, atol=1e-7)
    assert {"layers", "blocks"} <= set(doc)


def test_cli_compare_delta_table_csv_and_report(files, tmp_path):
    r = invoke("compare", files["base"], files["tuned"], "--delta", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "per block (Frobenius norms)" in r.stdout and "graph of the change tuned - base: per layer" in r.stdout
    csv = tmp_path / "d.csv"
    r = invoke("compare", files["base"], files["tuned"], "--delta", "-o", csv, "--report", tmp_path / "d.html",
               "--device", "cpu")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(csv)
    assert list(table.columns[:5]) == ["block", "param", "frobenius_delta", "frobenius_base", "relative"]
    html = (tmp_path / "d.html").read_text()
    assert 'id="delta"' in html and "2.weight" in html  # the report's ΔW norms section
    r = invoke("compare", files["base"], files["base"], "--delta", "--device", "cpu")
    assert r.exit_code == 0 and "equal weights in every matched block" in r.output, r.output


def test_cli_compare_refusals_exit_2(files):
    r = invoke("compare", files["base"], files["other"], "--delta")
    assert r.exit_code == 2 and "different shapes" in r.output and "2.weight" in r.output, r.output
    # without --delta, same names but other sizes are no longer aligned silently
    r = invoke("compare", files["base"], files["other"])
    assert r.exit_code == 2 and "same name but different sizes" in r.output, r.output
    assert r.stdout.count("\n") <= 3  # no table
    r = invoke("compare", files["base"], files["tuned"], files["other"], "--delta")
    assert r.exit_code == 2 and "exactly two" in r.output, r.output


def test_bad_options_are_usage_errors():
    g = graphnn.extract(mlp())
    with pytest.raises(InvalidParameterError, match="labels must be two strings"):
        graphnn.delta(g, g, labels=("only one",))
    with pytest.raises(InvalidParameterError, match="norms must be True or False"):
        graphnn.delta(g, g, norms="yes")
    with pytest.raises(InvalidParameterError, match="needs a ΔW graph"):
        graphnn.delta_norms(g)
