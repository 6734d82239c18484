"""analyse(): the one-pass summary equals the individual analyses; tables, options, progress;
the CUDA code path (transposed copies) and chunked streaming give the same numbers on the CPU."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings

import graphnn
from graphnn.analyses import _blocks
from random_graphs import layered_graphs, make_graph, random_mlp

# random graphs are often in pieces; the warning itself is tested in test_centrality.py
pytestmark = pytest.mark.filterwarnings("ignore::graphnn.DisconnectedGraphWarning")

SETTINGS = settings(max_examples=25, deadline=None)


def _assert_matches_individual_functions(g, a):
    n = a.neurons
    assert list(n.columns) == ["layer", "neuron", "in_strength", "out_strength", "strength", "abs_strength",
                               "centrality", "core", "layer_index", "role"]
    for d, col in (("in", "in_strength"), ("out", "out_strength"), ("total", "strength")):
        np.testing.assert_allclose(n[col], graphnn.strength(g, d)[col], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(n["abs_strength"], graphnn.strength(g, signed=False)["abs_strength"],
                               rtol=1e-12, atol=1e-12)
    c = graphnn.eigenvector_centrality(g)
    np.testing.assert_allclose(n["centrality"], c["centrality"], atol=1e-9)
    assert a.centrality_info["eigenvalue"] == pytest.approx(c.attrs["eigenvalue"], rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(n["core"], graphnn.hypercore(g)["core"], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(layered_graphs(max_nodes=14))
def test_analyse_equals_the_individual_analyses(g):
    a = graphnn.analyse(g)
    _assert_matches_individual_functions(g, a)
    assert set(a.centrality_info) >= {"eigenvalue", "iterations", "converged"}


@SETTINGS
@given(layered_graphs(max_nodes=14))
def test_layer_table_equals_pandas_statistics_of_the_neuron_table(g):
    a = graphnn.analyse(g)
    lay = a.layers.set_index("layer")
    assert list(lay.index) == list(g.partitions)
    assert lay["size"].tolist() == [p.size for p in g.partitions.values()]
    for metric in ("in_strength", "strength", "abs_strength", "centrality", "core"):
        grouped = a.neurons.groupby("layer", sort=False)[metric]
        mean, var, mx = grouped.mean(), grouped.var(ddof=1).fillna(0.0), grouped.max()
        np.testing.assert_allclose(lay[f"{metric}_mean"], mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lay[f"{metric}_var"], var, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lay[f"{metric}_std"], np.sqrt(var), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lay[f"{metric}_max"], mx, rtol=1e-12, atol=1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = np.where(mean != 0, np.sqrt(var) / np.abs(mean), np.nan)
        np.testing.assert_allclose(lay[f"{metric}_cv"], cv, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(layered_graphs(max_nodes=14))
def test_block_table_equals_the_tensor_view_and_the_edges(g):
    a = graphnn.analyse(g, centrality=False, core=False)
    b = a.blocks.set_index("block")
    sv = graphnn.strength_variance(g, view="block").set_index("block")
    np.testing.assert_allclose(b["J"], sv["J"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b["var_rows"], sv["var_rows"], rtol=1e-12, atol=1e-15)
    for blk in g.blocks.values():
        m = blk.matrix().abs()
        mask = blk.structure_mask()
        edges = m[mask] if mask is not None else m.reshape(-1)
        assert b.loc[blk.name, "edges"] == edges.numel() == blk.num_edges
        assert b.loc[blk.name, "mean_abs_weight"] == pytest.approx(float(edges.mean()), rel=1e-12, abs=1e-15)
        assert (b.loc[blk.name, "src"], b.loc[blk.name, "dst"]) == (blk.src, blk.dst)


def test_conv_model_block_table_uses_the_raw_kernels():
    from models import LeNet

    torch.manual_seed(0)
    model = LeNet()
    a = graphnn.analyse(graphnn.extract(model), centrality=False, core=False)
    row = a.blocks.set_index("block").loc["conv2.weight"]
    j, _, _ = graphnn.analyses.tensor_strength_variance(model.conv2.weight)
    assert row["J"] == pytest.approx(j, rel=1e-12)
    assert row["aggregation"] == "l2" and row["n_src"] == 6 and row["n_dst"] == 16


def test_parts_can_be_skipped():
    g = random_mlp([6, 5, 4], seed=1)
    a = graphnn.analyse(g, centrality=False)
    assert "centrality" not in a.neurons and "core" in a.neurons and a.centrality_info == {}
    a = graphnn.analyse(g, core=False, strength=False)
    assert list(a.neurons.columns) == ["layer", "neuron", "centrality", "layer_index", "role"]
    assert "centrality_mean" in a.layers and "strength_mean" not in a.layers
    assert len(a.blocks) == 2 and a.options["core"] is False


def test_thresholded_cores_keep_the_weighted_centrality():
    g = random_mlp([30, 20, 10], seed=2)
    a = graphnn.analyse(g, core_top=0.2)
    np.testing.assert_array_equal(a.neurons["core"], graphnn.hypercore(g, top=0.2)["core"])
    assert a.neurons["core"].dtype == np.int64
    np.testing.assert_allclose(a.neurons["centrality"], graphnn.eigenvector_centrality(g)["centrality"], atol=1e-12)


def test_block_scope_cores():
    g = random_mlp([8, 6, 4], seed=3)
    a = graphnn.analyse(g, core_scope="block")
    ref = graphnn.hypercore(g, scope="block")
    np.testing.assert_allclose(a.neurons["core_in"], ref["core_in"])
    np.testing.assert_allclose(a.neurons["core_out"], ref["core_out"])
    assert "core_in_mean" in a.layers


def test_progress_reports_every_step_up_to_its_total():
    g = random_mlp([40, 30, 20, 10], seed=4)
    calls = []
    a = graphnn.analyse(g, progress=lambda step, done, total: calls.append((step, done, total)))
    steps = [c[0] for c in calls]
    assert {"load", "centrality", "hypercore"} <= set(steps)
    for step in ("load", "centrality", "hypercore"):
        mine = [c for c in calls if c[0] == step]
        assert all(0 <= d <= t for _, d, t in mine)
        assert mine[-1][1] == mine[-1][2]  # finished
    assert a.runtime_s > 0 and set(a.timings) == {"load_and_strength", "spectral", "centrality", "hypercore"}


def test_bad_options_say_what_to_use():
    g = random_mlp([3, 2])
    with pytest.raises(ValueError, match="core_scope"):
        graphnn.analyse(g, core_scope="layer")
    with pytest.raises(ValueError, match="normalise"):
        graphnn.analyse(g, normalise="sum")
    with pytest.raises(ValueError, match="not both"):
        graphnn.analyse(g, core_threshold=0.1, core_top=0.1)


@pytest.fixture
def cuda_layout_and_tiny_chunks(monkeypatch):
    """Transposed |W| copies (the CUDA layout), or streaming in chunks of a few rows."""
    def use(copy: bool):
        monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", 10**12 if copy else 0)
        monkeypatch.setattr(_blocks, "_STREAM_ELEMENTS", 7)
        monkeypatch.setattr(_blocks, "_CHUNK_ELEMENTS", 5)
    return use


@pytest.mark.parametrize("copy", [True, False])
def test_cuda_layout_and_chunked_streaming_give_the_same_numbers(cuda_layout_and_tiny_chunks, copy):
    g = make_graph([6, 4, 4, 3], [
        ("a", 0, 1, torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 2),
        ("b", 1, 2, torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1),
        ("s", 2, 2, torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 1),
        ("c", 2, 3, torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 1),
        ("k", 0, 3, torch.randn(3, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64), 3),
    ])
    cuda_layout_and_tiny_chunks(not copy)
    ref = graphnn.analyse(g)
    ref_thr = graphnn.hypercore(g, threshold=0.5)
    cuda_layout_and_tiny_chunks(copy)
    for solver in ("arpack", "lanczos"):
        c = graphnn.eigenvector_centrality(g, solver=solver)
        np.testing.assert_allclose(c["centrality"], ref.neurons["centrality"], atol=1e-10)
    a = graphnn.analyse(g)
    pd.testing.assert_frame_equal(a.neurons, ref.neurons, rtol=1e-10, atol=1e-10)
    pd.testing.assert_frame_equal(a.blocks, ref.blocks, rtol=1e-12)
    pd.testing.assert_frame_equal(graphnn.hypercore(g, threshold=0.5), ref_thr)


@pytest.mark.parametrize("model_name", ["LeNet", "ResNet", "DepthwiseSeparable", "EncoderMHA"])
def test_extracted_models(model_name):
    import models

    torch.manual_seed(0)
    g = graphnn.extract(getattr(models, model_name)())
    a = graphnn.analyse(g, device="cpu")
    _assert_matches_individual_functions(g, a)
    assert a.centrality_info["converged"] and len(a.blocks) == len(g.blocks)
    assert "Analysis(" in repr(a)


def test_analyse_reads_each_lazy_tensor_once(tmp_path):
    """A checkpoint file's tensors are read once per block by analyse (the conv matrix and the
    tensor-view J come from the same read)."""
    import graphnn
    from safetensors.torch import save_file
    from models import LeNet, seeded

    save_file(seeded(LeNet).state_dict(), tmp_path / "lenet.safetensors")
    g = graphnn.extract(tmp_path / "lenet.safetensors")
    reads = {}
    for b in g.blocks.values():
        load = b._load
        b._load = lambda load=load, name=b.name: (reads.__setitem__(name, reads.get(name, 0) + 1), load())[1]
    graphnn.analyse(g)
    assert reads == {name: 1 for name in g.blocks}


def test_analyse_per_component_equals_eigenvector_centrality_per_component():
    from random_graphs import make_graph

    w1 = torch.rand(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.2
    w2 = torch.rand(2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.1
    g = make_graph([4, 3, 2, 2], [("a", 0, 1, w1, 1), ("b", 2, 3, w2, 1)])
    a = graphnn.analyse(g, per_component=True, core=False)
    c = graphnn.eigenvector_centrality(g, per_component=True)
    np.testing.assert_allclose(a.neurons["centrality"], c["centrality"], atol=1e-12)
    assert a.neurons["component"].tolist() == [0] * 7 + [1] * 4
    np.testing.assert_allclose(a.neurons["centrality"][7:].pow(2).sum(), 1.0)  # normalised on its own
    with pytest.raises(graphnn.InvalidParameterError, match="per_component"):
        graphnn.analyse(g, per_component="yes")
