"""Strength and strength variance against networkx, igraph and direct sums over the edges."""

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnn
from graphnn.analyses.strength import strength_column, tensor_strength_variance
from random_graphs import layered_graphs, make_graph, random_mlp

SETTINGS = settings(max_examples=40, deadline=None)


def _directed_oracle(g, signed):
    """In/out strengths from a networkx MultiDiGraph of the structural edges (src -> dst)."""
    d = nx.MultiDiGraph()
    d.add_nodes_from(g.nodes())
    for b in g.blocks.values():
        w = b.matrix().to(torch.float64)
        mask = b.structure_mask()
        for i in range(b.n_dst):
            for j in range(b.n_src):
                if mask is None or mask[i, j]:
                    v = float(w[i, j])
                    d.add_edge((b.src, j), (b.dst, i), weight=v if signed else abs(v))
    nodes = list(g.nodes())
    return (np.array([d.in_degree(n, weight="weight") for n in nodes]),
            np.array([d.out_degree(n, weight="weight") for n in nodes]))


@SETTINGS
@given(layered_graphs(), st.booleans())
def test_total_strength_equals_networkx_and_igraph_degree(g, signed):
    weight = "signed" if signed else "abs"
    df = graphnn.strength(g, "total", signed=signed)
    col = "strength" if signed else "abs_strength"
    assert list(df.columns) == ["layer", "neuron", col]
    G = g.to_networkx(weight=weight)
    expected = np.array([G.degree(n, weight="weight") for n in g.nodes()])
    np.testing.assert_allclose(df[col].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    ig = g.to_igraph(weight=weight)
    np.testing.assert_allclose(df[col].to_numpy(), ig.strength(weights="weight", loops=True), rtol=1e-12, atol=1e-12)
    assert list(zip(df["layer"], df["neuron"])) == list(g.nodes())


@SETTINGS
@given(layered_graphs(), st.booleans())
def test_in_and_out_strength_equal_directed_degree(g, signed):
    exp_in, exp_out = _directed_oracle(g, signed)
    got_in = graphnn.strength(g, "in", signed=signed)[strength_column("in", signed)].to_numpy()
    got_out = graphnn.strength(g, "out", signed=signed)[strength_column("out", signed)].to_numpy()
    np.testing.assert_allclose(got_in, exp_in, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_out, exp_out, rtol=1e-12, atol=1e-12)


def test_grouped_block_ignores_entries_outside_its_structure():
    w = torch.arange(1.0, 17.0).reshape(4, 4)  # nonzero everywhere, but only the 2 diagonal 2x2 groups are edges
    g = make_graph([4, 4], [("b", 0, 1, w, 2)])
    out = graphnn.strength(g, "out")["out_strength"].to_numpy()[:4]
    np.testing.assert_allclose(out, [1 + 5, 2 + 6, 11 + 15, 12 + 16])


def test_self_block_counts_a_diagonal_entry_twice_in_the_total():
    w = torch.tensor([[3.0, 1.0], [0.0, -2.0]])
    g = make_graph([2], [("s", 0, 0, w, 1)])
    total = graphnn.strength(g)["strength"].to_numpy()
    # neuron 0: row 3 + 1, column 3 + 0; neuron 1: row 0 - 2, column 1 - 2
    np.testing.assert_allclose(total, [7.0, -3.0])


def test_float32_blocks_are_summed_in_float64():
    w = torch.full((1, 3_000_000), 0.1, dtype=torch.float32)  # float32 accumulation would drift
    g = graphnn.LayeredGraph.from_matrices({"a": 3_000_000, "b": 1}, {"w": ("a", "b", w)})
    s = graphnn.strength(g, "in")["in_strength"].to_numpy()[-1]
    assert s == pytest.approx(3_000_000 * float(np.float32(0.1)), rel=1e-12)


def test_bad_direction_says_what_to_use():
    g = random_mlp([3, 2])
    with pytest.raises(ValueError, match="'in', 'out' or 'total'"):
        graphnn.strength(g, "both")


@SETTINGS
@given(layered_graphs(), st.booleans())
def test_layer_view_equals_pandas_statistics_of_the_strengths(g, signed):
    table = graphnn.strength_variance(g, signed=signed)
    pre = "" if signed else "abs_"
    frames = {d: graphnn.strength(g, d, signed=signed) for d in ("in", "out", "total")}
    assert list(table["layer"]) == list(g.partitions)
    for d, df in frames.items():
        col = strength_column(d, signed)
        grouped = df.groupby("layer", sort=False)[col]
        var = grouped.var(ddof=1).fillna(0.0)  # a single neuron has variance 0
        mean = grouped.mean()
        np.testing.assert_allclose(table[f"{col}_mean"], mean.to_numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(table[f"{col}_var"], var.to_numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(table[f"{col}_std"], np.sqrt(var.to_numpy()), rtol=1e-9, atol=1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = np.where(mean.to_numpy() != 0, np.sqrt(var.to_numpy()) / np.abs(mean.to_numpy()), np.nan)
        np.testing.assert_allclose(table[f"{col}_cv"], cv, rtol=1e-9, atol=1e-12)
    assert table["n"].tolist() == [p.size for p in g.partitions.values()]
    assert f"{pre}strength_var" in table


def _scabini_oracle(t):
    m = t.detach().to(torch.float64).numpy().reshape(t.shape[0], -1)
    rows, cols = m.sum(1), m.sum(0)
    vr = rows.var(ddof=1) if rows.size > 1 else 0.0
    vc = cols.var(ddof=1) if cols.size > 1 else 0.0
    return 0.5 * (vr + vc), vr, vc


@pytest.mark.parametrize("shape", [(5, 7), (8, 3, 3, 3), (4, 2, 5), (1, 6), (6, 1)])
def test_tensor_strength_variance_flattens_by_the_first_axis(shape):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(tensor_strength_variance(t), _scabini_oracle(t), rtol=1e-12, atol=1e-15)
    j_abs = tensor_strength_variance(t, signed=False)
    np.testing.assert_allclose(j_abs, _scabini_oracle(t.abs()), rtol=1e-12, atol=1e-15)


def test_tensor_strength_variance_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        tensor_strength_variance(torch.ones(5))


def test_block_view_uses_the_kernel_entries_of_a_conv():
    from models import LeNet

    torch.manual_seed(0)
    model = LeNet()
    g = graphnn.extract(model)
    table = graphnn.strength_variance(g, view="block").set_index("block")
    for name, p in model.named_parameters():
        if name in table.index:
            if p.dim() == 4:  # conv: (c_out, c_in * kh * kw) columns, not the channel-level matrix
                assert table.loc[name, "cols"] == p[0].numel()
            j, vr, vc = _scabini_oracle(p)
            assert table.loc[name, "J"] == pytest.approx(j, rel=1e-10)
            assert table.loc[name, ["var_rows", "var_cols"]].tolist() == pytest.approx([vr, vc], rel=1e-10)


@pytest.mark.parametrize("model_name", ["MLP", "LeNet", "ResNet", "DepthwiseSeparable", "EncoderMHA"])
def test_strength_on_extracted_models_equals_networkx(model_name):
    import models

    torch.manual_seed(0)
    g = graphnn.extract(getattr(models, model_name)())
    G = g.to_networkx()
    df = graphnn.strength(g)
    expected = np.array([G.degree(n, weight="weight") for n in g.nodes()])
    np.testing.assert_allclose(df["strength"].to_numpy(), expected, rtol=1e-9, atol=1e-9)


def test_conv_transpose_tensor_view_has_output_units_as_rows():
    """J of a ConvTranspose weight (c_in, c_out/groups, *k) uses rows = output channels, the
    same view the rewire code minimises."""
    import graphnn
    from graphnn.analyses.strength import tensor_strength_variance
    from graphnn.rewire._targets import WeightTarget

    torch.manual_seed(0)
    for groups in (1, 2):
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ConvTranspose2d(4, 6, 3, groups=groups))
        w = m[1].weight.detach()
        # independent layout: output channel o of group g reads input channels of group g
        cin_g, cout_g = 4 // groups, 6 // groups
        rows = [torch.cat([w[g * cin_g + j, o].reshape(-1) for j in range(cin_g)])
                for g in range(groups) for o in range(cout_g)]
        want = tensor_strength_variance(torch.stack(rows))
        got = graphnn.strength_variance(graphnn.extract(m), view="block").set_index("block").loc["1.weight"]
        assert got["J"] == pytest.approx(want[0], rel=1e-9)
        rewire_view = WeightTarget("w", m[1].weight, layout="transposed", groups=groups).units()
        assert torch.equal(rewire_view, torch.stack(rows))
