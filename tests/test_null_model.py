"""Null-model baselines (graphnn.null_model, analyse(null=K), graphnn analyse --null K).

Oracles: a brute-force count for the p-value rule and the textbook formulas for z, Gini and the
top-1 % share; sorted values for the multisets; row/column counts and sums computed here with
numpy for the rewire invariants; a random-init MLP (weights i.i.d., so the shuffle null is the
weights' own distribution) for the calibration; a small CNN trained on the digits for power.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import graphnn
from graphnn import InvalidParameterError, LayeredGraph
from graphnn.analyses.null_model import (COLUMNS, NETWORK, curveball, edge_units, gini, null_copy,
                                         null_statistics, rewire_permutation, top_share)
from models import MLP, DepthwiseSeparable, EncoderMHA, LeNet, seeded

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _brute_p(observed, draws):
    mean = sum(draws) / len(draws)
    r = sum(1 for x in draws if abs(x - mean) >= abs(observed - mean))
    return (r + 1) / (len(draws) + 1)


# -- statistics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("observed", [0.0, 2.5, 3.0, 10.0, -4.0, 1.75])
def test_p_value_rule_matches_a_brute_force_count(observed):
    draws = [1.0, 2.0, 2.0, 3.0, 4.5, 0.5, 1.5, 3.5]  # mean 2.25
    rec = null_statistics(observed, draws)
    assert rec["p"] == pytest.approx(_brute_p(observed, draws), abs=0)
    assert rec["null_mean"] == pytest.approx(np.mean(draws))
    assert rec["null_std"] == pytest.approx(np.std(draws, ddof=1))
    assert rec["z"] == pytest.approx((observed - np.mean(draws)) / np.std(draws, ddof=1))
    assert rec["n"] == len(draws) and rec["note"] == ""


def test_p_value_extremes_and_ties():
    draws = [0.0, 1.0, 2.0, 3.0, 4.0]  # mean 2
    assert null_statistics(100.0, draws)["p"] == pytest.approx(1 / 6)  # beyond every draw: 1/(K+1)
    assert null_statistics(2.0, draws)["p"] == pytest.approx(1.0)  # at the mean: every draw counts
    assert null_statistics(4.0, draws)["p"] == pytest.approx(3 / 6)  # ties (|0-2| = |4-2|) count
    rng = np.random.default_rng(0)
    for _ in range(50):  # random cases against the brute force
        d = list(rng.normal(size=int(rng.integers(2, 30))))
        o = float(rng.normal() * 2)
        assert null_statistics(o, d)["p"] == pytest.approx(_brute_p(o, d))


def test_zero_spread_gives_nan_z_with_a_reason():
    same = null_statistics(3.0, [3.0] * 9)
    assert math.isnan(same["z"]) and same["null_std"] == 0.0 and same["p"] == 1.0 and "same value" in same["note"]
    differs = null_statistics(4.0, [3.0] * 9)
    assert math.isnan(differs["z"]) and differs["p"] == pytest.approx(0.1) and "differs" in differs["note"]
    one = null_statistics(4.0, [3.0])
    assert math.isnan(one["z"]) and "n >= 2" in one["note"]
    undefined = null_statistics(float("nan"), [1.0, 2.0])
    assert math.isnan(undefined["z"]) and math.isnan(undefined["p"]) and undefined["note"]


def test_gini_and_top_share_against_their_definitions():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 150):
        x = rng.random(n)
        brute = sum(abs(a - b) for a, b in itertools.product(x, x)) / (2 * n * n * x.mean())
        assert gini(x) == pytest.approx(brute, abs=1e-12)
        k = max(1, math.ceil(0.01 * n))
        assert top_share(x) == pytest.approx(np.sort(x)[::-1][:k].sum() / x.sum())
    assert gini(np.ones(5)) == pytest.approx(0.0, abs=1e-15)
    assert gini(np.array([0, 0, 0, 1.0])) == pytest.approx(3 / 4)
    assert math.isnan(gini(np.zeros(3))) and math.isnan(top_share(np.zeros(3)))


# -- null copies -----------------------------------------------------------------------------------
def _graphs():
    torch.manual_seed(0)
    return {
        "lenet": graphnn.extract(LeNet(), example_inputs=torch.zeros(1, 1, 28, 28)),
        "depthwise": graphnn.extract(DepthwiseSeparable(), example_inputs=torch.zeros(1, 3, 8, 8)),
        "mha": graphnn.extract(EncoderMHA(), example_inputs=torch.zeros(1, 4, 8)),
    }


@pytest.fixture(scope="module")
def graphs():
    return _graphs()


def _own_entries(b) -> torch.Tensor:
    rows, _ = b.entry_index("matrix")
    return rows >= 0


@pytest.mark.parametrize("kind", ["shuffle", "rewire"])
@pytest.mark.parametrize("name", ["lenet", "depthwise", "mha"])
def test_null_copies_keep_each_tensors_multiset_and_other_blocks_entries(graphs, name, kind):
    g = graphs[name]
    copy = null_copy(g, kind, seed=3)
    moved_any = False
    for bname, b in g.blocks.items():
        nb = copy.blocks[bname]
        t, nt = b.tensor(), nb.tensor()
        assert nt.shape == t.shape and nt.dtype == t.dtype
        own = _own_entries(b)
        assert torch.equal(torch.sort(nt[own]).values, torch.sort(t[own]).values)  # the multiset
        assert torch.equal(nt[~own], t[~own])  # q/k/v parts of other blocks are left alone
        assert torch.equal(nb.tensor(), nt)  # regenerated identically on every read
        if b.aggregation is None or kind == "rewire":  # the matrix's multiset too
            m, nm = b.matrix(torch.float64), nb.matrix(torch.float64)
            assert torch.equal(torch.sort(nm.reshape(-1)).values, torch.sort(m.reshape(-1)).values)
        mask = b.structure_mask()
        if mask is not None:  # a grouped conv's off-diagonal stays empty
            assert not bool(nb.matrix()[~mask].any())
        moved_any |= not torch.equal(nt, t)
    assert moved_any
    assert [(p.name, p.size) for p in copy.partitions.values()] == [(p.name, p.size) for p in g.partitions.values()]


def test_rewire_moves_whole_kernel_slices(graphs):
    g = graphs["lenet"]
    b = g.blocks["conv2.weight"]
    t, nt = b.tensor(), null_copy(g, "rewire", seed=0).blocks["conv2.weight"].tensor()
    slices = lambda x: sorted(map(tuple, x.reshape(x.shape[0] * x.shape[1], -1).tolist()))  # noqa: E731
    assert slices(nt) == slices(t)
    assert not torch.equal(nt, t)


def test_null_copy_is_lazy():
    w = torch.randn(6, 5)
    calls = []
    g = LayeredGraph.from_matrices({"a": 5, "b": 6}, {"w": ("a", "b", w)})
    b = g.blocks["w"]
    orig = b._load
    b._load = lambda: (calls.append(1), orig())[1]
    copy = null_copy(g, "shuffle", seed=0)
    assert calls == []  # nothing read when the copy is made
    copy.blocks["w"].tensor()
    assert len(calls) == 1
    assert torch.equal(w, orig())  # the original is untouched


def test_edge_units_of_a_transposed_conv1d_block():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32, n_positions=8)
    torch.manual_seed(0)
    g = graphnn.extract(transformers.GPT2LMHeadModel(cfg))
    qkv = [b for b in g.blocks.values() if "c_attn" in b.name]
    assert len(qkv) == 3
    for b in qkv:  # HF Conv1D is stored (in, out): each unit is the entry at (col, row) of the tensor
        units, rows, cols = edge_units(b)
        t = b.tensor().reshape(-1)
        assert torch.equal(t[units[:, 0]].reshape(b.shape), b.matrix())
        assert torch.equal(rows * b.n_src + cols, torch.arange(b.n_dst * b.n_src))
    copy = null_copy(g, "shuffle", seed=1)
    for b in qkv:
        own = _own_entries(b)
        nt = copy.blocks[b.name].tensor()
        assert torch.equal(torch.sort(nt[own]).values, torch.sort(b.tensor()[own]).values)
        assert torch.equal(nt[~own], b.tensor()[~own])


def test_curveball_keeps_row_and_column_sums():
    rng = np.random.default_rng(0)
    b = rng.random((30, 17)) < 0.4
    out = curveball(b, rng)
    assert (out.sum(0) == b.sum(0)).all() and (out.sum(1) == b.sum(1)).all()
    assert (out != b).mean() > 0.2


@pytest.mark.parametrize("shape", [(48, 64), (10, 200)])
def test_rewire_invariants_signs_exact_strengths_close(shape):
    rng = np.random.default_rng(2)
    w = rng.normal(size=shape)
    w[rng.random(shape) < 0.05] = 0.0  # zeros are non-positive weights like the rest
    rows, cols = np.divmod(np.arange(w.size), shape[1])
    perm = rewire_permutation(w.reshape(-1), rows, cols, np.zeros(shape[0], int), np.zeros(shape[1], int), rng)
    assert np.array_equal(np.sort(perm), np.arange(w.size))  # a permutation: the multiset is kept
    nw = w.reshape(-1)[perm].reshape(shape)
    for axis in (0, 1):  # positive and non-positive degree of every neuron: exact
        assert np.array_equal((nw > 0).sum(axis), (w > 0).sum(axis))
        assert np.array_equal((nw == 0).sum() + (nw < 0).sum(), (w <= 0).sum())
    shuffled = rng.permutation(w.reshape(-1)).reshape(shape)
    for axis in (0, 1):  # strengths (signed, positive part, |w|) close; far closer than a shuffle's
        for f in (lambda x: x, lambda x: np.clip(x, 0, None), np.abs):
            s, ns, ss = f(w).sum(axis), f(nw).sum(axis), f(shuffled).sum(axis)
            spread = s.std()
            assert np.abs(ns - s).max() < 0.25 * spread
            assert np.abs(ns - s).std() < 0.1 * np.abs(ss - s).std()
    assert (nw != w).mean() > 0.9  # and the weights did move
    assert abs(np.corrcoef(nw.ravel(), w.ravel())[0, 1]) < 0.3


def test_rewire_on_a_depthwise_cnn(graphs):
    g = graphs["depthwise"]
    copy = null_copy(g, "rewire", seed=4)
    # a depthwise conv's groups hold one edge each (one 3x3 kernel): nothing can move
    assert torch.equal(copy.blocks["dw1.weight"].tensor(), g.blocks["dw1.weight"].tensor())
    assert not torch.equal(copy.blocks["pw1.weight"].tensor(), g.blocks["pw1.weight"].tensor())
    s, ns = (graphnn.strength(x)["strength"].to_numpy() for x in (g, copy))
    sh = graphnn.strength(null_copy(g, "shuffle", seed=4))["strength"].to_numpy()
    assert np.abs(ns - s).mean() < 0.25 * np.abs(sh - s).mean()


# -- null_model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_graph():
    return graphnn.extract(seeded(MLP, 0, sizes=(12, 10, 8, 4)))


def test_frame_columns_scopes_and_reproducibility(mlp_graph):
    g = mlp_graph
    a = graphnn.null_model(g, n=8, seed=11)
    b = graphnn.null_model(g, n=8, seed=11)
    c = graphnn.null_model(g, n=8, seed=12)
    assert list(a.columns) == COLUMNS
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["null_mean"].to_numpy(), c["null_mean"].to_numpy(), equal_nan=True)
    assert set(a["scope"]) == {"block", "layer", "network"}
    assert set(a.loc[a.scope == "block", "layer"]) == set(g.blocks)
    assert set(a.loc[a.scope == "layer", "layer"]) == set(g.partitions)
    assert set(a.loc[a.scope == "network", "layer"]) == {NETWORK}
    assert set(a["metric"]) == {"strength_variance", "centrality_gini", "centrality_top1", "max_core", "core_size"}
    assert (a["n"] == 8).all() and (a["kind"] == "shuffle").all()
    ok = a["null_std"] > 0
    assert np.allclose(a.loc[ok, "z"], (a.loc[ok, "observed"] - a.loc[ok, "null_mean"]) / a.loc[ok, "null_std"])
    assert ((a["p"] >= 1 / 9 - 1e-12) & (a["p"] <= 1)).all()


def test_observed_values_are_the_analysis_values(mlp_graph):
    g = mlp_graph
    df = graphnn.null_model(g, n=2, seed=0).set_index(["layer", "scope", "metric"])
    a = graphnn.analyse(g)
    for _, r in a.blocks.iterrows():
        assert df.loc[(r["block"], "block", "strength_variance"), "observed"] == pytest.approx(r["J"])
    for _, r in a.layers.iterrows():
        assert df.loc[(r["layer"], "layer", "strength_variance"), "observed"] == pytest.approx(r["strength_var"])
        assert df.loc[(r["layer"], "layer", "max_core"), "observed"] == pytest.approx(r["core_max"])
    cen = a.neurons["centrality"].to_numpy()
    assert df.loc[(NETWORK, "network", "centrality_gini"), "observed"] == pytest.approx(gini(cen))
    k = np.median(a.neurons["abs_strength"])
    assert df.loc[(NETWORK, "network", "core_size"), "observed"] == (a.neurons["core"] >= k).sum()


def test_metric_selection_and_bad_options(mlp_graph):
    g = mlp_graph
    df = graphnn.null_model(g, metrics="strength", n=3, seed=0)
    assert set(df["metric"]) == {"strength_variance"} and set(df["scope"]) == {"block", "layer"}
    df = graphnn.null_model(g, metrics=["max_core", "centrality_gini"], n=3, seed=0, kind="rewire")
    assert set(df["metric"]) == {"max_core", "centrality_gini"} and (df["kind"] == "rewire").all()
    for bad in ({"n": 0}, {"n": 2.5}, {"n": True}, {"kind": "permute"}, {"metrics": ["nope"]}, {"metrics": []},
                {"seed": -1}):
        with pytest.raises(InvalidParameterError) as e:
            graphnn.null_model(g, **{"n": 3, **bad})
        assert str(e.value)


def test_analyse_null_option(mlp_graph):
    g = mlp_graph
    assert graphnn.analyse(g).null is None
    a = graphnn.analyse(g, null=4, seed=5, centrality=False)
    pd.testing.assert_frame_equal(a.null, graphnn.null_model(g, ["strength", "hypercore"], n=4, seed=5))
    assert a.options["null"] == 4 and a.options["null_kind"] == "shuffle" and "null" in a.timings
    with pytest.raises(InvalidParameterError):
        graphnn.analyse(g, null=0)
    with pytest.raises(InvalidParameterError):
        graphnn.analyse(g, null=3, null_kind="other")
    with pytest.raises(InvalidParameterError, match="one process"):
        graphnn.analyse(g, null=3, client=object())  # refused before the client is used


def test_shuffle_null_is_calibrated_on_random_init_mlps():
    """Weights drawn i.i.d. are exchangeable: their shuffle null is their own distribution, so
    |z| < 3 for strength variance in (nearly) every layer."""
    zs = []
    for seed in range(6):
        g = graphnn.extract(seeded(MLP, seed, sizes=(24, 16, 12, 6)))
        df = graphnn.null_model(g, metrics="strength", n=30, seed=100 + seed)
        zs += df["z"].tolist()
    zs = np.asarray(zs)
    assert zs.size == 6 * (3 + 4) and np.isfinite(zs).all()  # 3 blocks, 4 partitions per MLP
    assert np.mean(np.abs(zs) < 3) >= 0.95
    assert abs(np.mean(zs)) < 1  # centred, not just bounded


@pytest.fixture(scope="module")
def trained_cnn():
    pytest.importorskip("sklearn")
    from graphnn.demo import DigitsNet, load_digits_tensors, train

    torch.manual_seed(0)
    net = DigitsNet(width=8, hidden=32)
    xtr, ytr, _, _ = load_digits_tensors(0)
    train(net, xtr, ytr, epochs=2, seed=0)
    return graphnn.extract(net, example_inputs=torch.zeros(1, 1, 8, 8))


def test_trained_digits_cnn_differs_from_its_null(trained_cnn):
    k = 19
    df = graphnn.null_model(trained_cnn, n=k, seed=0)
    local = df[df.scope != "network"]
    strong = local[(local["p"] <= 1 / (k + 1) + 1e-12) & (local["z"].abs() > 3)]
    assert len(strong) >= 1, df.to_string()
    # the flatten layer's weights learn which pixels matter: its J is far from the shuffled one
    fc1 = df[(df.layer == "fc1.weight") & (df.metric == "strength_variance")].iloc[0]
    assert fc1["z"] > 3 and fc1["p"] == pytest.approx(1 / (k + 1))


# -- command line ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from graphnn.extract import save_state_dict

    path = tmp_path_factory.mktemp("null") / "mlp.safetensors"
    save_state_dict(seeded(MLP, 1).state_dict(), path)
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "graphnn", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_cli_null_json_and_bad_k(checkpoint, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "a.json"
    calls = [("analyse", checkpoint, "--null", 5, "--null-kind", "rewire", "--seed", 3, "-o", out),
             ("analyse", checkpoint, "--null", 0)]
    with ThreadPoolExecutor(2) as pool:
        js, bad = pool.map(lambda a: _cli(*a), calls)
    assert js.returncode == 0, js.stderr
    doc = json.loads(out.read_text())
    assert {"layers", "neurons", "blocks", "null"} <= set(doc) and doc["options"]["analyse.null"] == 5
    df = pd.DataFrame(doc["null"])
    assert list(df.columns) == COLUMNS and (df["n"] == 5).all() and (df["kind"] == "rewire").all()
    lib = graphnn.null_model(graphnn.extract(checkpoint), n=5, seed=3, kind="rewire")
    assert np.allclose(df["z"].astype(float), lib["z"], equal_nan=True)
    assert np.allclose(df["p"].astype(float), lib["p"])
    assert bad.returncode == 2 and "--null" in bad.stderr and "positive integer" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""


def test_cli_null_table(checkpoint):
    from typer.testing import CliRunner

    from graphnn.cli import app

    r = CliRunner().invoke(app, ["analyse", str(checkpoint), "--null", "3", "--seed", "0", "--table", "null",
                                 "-q"])
    assert r.exit_code == 0, r.output
    assert all(c in r.stdout for c in ("null_mean", "strength_variance", "(network)", "shuffle"))


@pytest.mark.parametrize("args, hint", [
    (["--null", "-3"], "--null"),
    (["--null", "2", "--null-kind", "swap"], "--null-kind"),
    (["--table", "null"], "--null"),
    (["--null", "2", "--seed", "-1"], "--seed"),
    (["--null", "2", "--dask", "local:1"], "--dask"),
])
def test_cli_bad_null_options_exit_2(checkpoint, args, hint):
    from typer.testing import CliRunner

    from graphnn.cli import app

    r = CliRunner().invoke(app, ["analyse", str(checkpoint), *args])  # refused before the file is read
    assert r.exit_code == 2, r.output
    assert hint in r.stderr and r.stdout == ""


def test_warnings_on_the_copies_are_given_once():
    """Two separate pieces: every analysis of a copy warns that the graph is disconnected; the
    baseline passes that on once, saying it comes from the null copies."""
    torch.manual_seed(0)
    g = LayeredGraph.from_matrices({"a": 2, "b": 2, "c": 6, "d": 5},  # the strong piece is the small one
                                   {"w1": ("a", "b", 10 + torch.rand(2, 2)), "w2": ("c", "d", torch.rand(5, 6))})
    with pytest.warns(graphnn.DisconnectedGraphWarning) as record:
        graphnn.null_model(g, metrics="centrality", n=6, seed=0)
    from_copies = [w for w in record if str(w.message).startswith("on the shuffle null copies")]
    assert len(from_copies) == 1


def test_progress_ticks_once_per_copy(mlp_graph):
    seen = []
    graphnn.analyse(mlp_graph, null=3, seed=0, progress=lambda step, done, total: seen.append((step, done, total)))
    assert [s for s in seen if s[0] == "null"] == [("null", i, 3) for i in range(4)]


def test_null_copy_keeps_meta_and_says_what_it_is():
    g = LayeredGraph.from_matrices({"a": 3, "b": 2}, {"w": ("a", "b", torch.randn(2, 3))})
    g.meta["origin"] = "test"
    copy = null_copy(g, "rewire", seed=7)
    assert copy.meta["origin"] == "test" and copy.meta["null"]["kind"] == "rewire"
    assert copy.meta["null"]["seed_entropy"] == 7 and "null" not in g.meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["shuffle", "rewire"])
def test_cuda_model_gives_the_cpu_baseline(kind):
    model = seeded(MLP, 3, sizes=(12, 10, 8, 4))
    cpu = graphnn.null_model(graphnn.extract(model), n=4, seed=2, kind=kind, device="cpu")
    gpu = graphnn.null_model(graphnn.extract(model.cuda()), n=4, seed=2, kind=kind, device="cuda")
    for c in ("observed", "null_mean", "z", "p"):
        assert np.allclose(gpu[c], cpu[c], rtol=1e-6, atol=1e-9, equal_nan=True), c


def test_rewire_copy_of_a_linear_block_keeps_signs_and_strengths(graphs):
    g = graphs["lenet"]
    b = g.blocks["fc2.weight"]  # (84, 120), no aggregation
    m = b.matrix(torch.float64).numpy()
    nm = null_copy(g, "rewire", seed=9).blocks["fc2.weight"].matrix(torch.float64).numpy()
    sh = null_copy(g, "shuffle", seed=9).blocks["fc2.weight"].matrix(torch.float64).numpy()
    for axis in (0, 1):
        assert np.array_equal((nm > 0).sum(axis), (m > 0).sum(axis))
        err, err_shuffle = np.abs(nm.sum(axis) - m.sum(axis)), np.abs(sh.sum(axis) - m.sum(axis))
        assert err.max() < 0.05 * m.sum(axis).std() and err.mean() < 0.02 * err_shuffle.mean()
    assert (nm != m).mean() > 0.9


def test_analyse_null_analyses_only_the_copies_and_reuses_the_observed_values(mlp_graph, monkeypatch):
    """analyse(null=K) costs K analyses (of the copies), not K + 1: the observed column is the
    analysis's own values, bit for bit."""
    import graphnn.analyses.summary as summary

    calls = []
    real = summary.analyse

    def counting(g, **kw):
        calls.append(g)
        return real(g, **kw)

    monkeypatch.setattr(summary, "analyse", counting)
    a = graphnn.analyse(mlp_graph, null=3, seed=1)  # the top-level name: not counted
    assert len(calls) == 3 and all(c is not mlp_graph for c in calls)
    df = a.null.set_index(["layer", "scope", "metric"])
    for name, j in zip(a.blocks["block"], a.blocks["J"]):
        assert df.loc[(name, "block", "strength_variance"), "observed"] == j
    for name, v, m in zip(a.layers["layer"], a.layers["strength_var"], a.layers["core_max"]):
        assert df.loc[(name, "layer", "strength_variance"), "observed"] == v
        assert df.loc[(name, "layer", "max_core"), "observed"] == m
    assert df.loc[(NETWORK, "network", "centrality_gini"), "observed"] == gini(a.neurons["centrality"].to_numpy())
    calls.clear()
    # per-component centrality and block-scope cores differ from what the baseline measures:
    # the observed graph is analysed once more, the baseline's way
    b = graphnn.analyse(mlp_graph, null=2, seed=1, per_component=True, core_scope="block")
    assert len(calls) == 3 and calls[0] is mlp_graph
    monkeypatch.setattr(summary, "analyse", real)
    pd.testing.assert_frame_equal(b.null, graphnn.null_model(mlp_graph, n=2, seed=1))
