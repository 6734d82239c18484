"""Eigenvector centrality against networkx, igraph and a dense eigendecomposition."""

import warnings

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphnn
from graphnn.errors import ConvergenceWarning, NonFiniteWeightsError
from random_graphs import dense_abs_adjacency, layered_graphs, make_graph, random_mlp

SETTINGS = settings(max_examples=30, deadline=None)


def _spectrum(g):
    vals, vecs = np.linalg.eigh(dense_abs_adjacency(g))
    return vals, vecs


def _connected(g):
    a = dense_abs_adjacency(g)
    return nx.is_connected(nx.from_numpy_array(a)) if len(a) > 1 else True


def _dense_oracle(g):
    """Projection of the all-ones vector on the top eigenspace of the dense |w| adjacency."""
    vals, vecs = _spectrum(g)
    top = vals[-1]
    space = vecs[:, vals >= top - 1e-9 * abs(top)]  # relative: centrality is scale-invariant
    x = space @ (space.T @ np.ones(len(vals)))
    return x / np.linalg.norm(x), top


def _gap(g):
    vals, _ = _spectrum(g)
    return (vals[-1] - vals[-2]) / max(vals[-1], 1e-300) if len(vals) > 1 else 1.0


@SETTINGS
@given(layered_graphs(self_loops=False, positive=True, max_nodes=16, max_size=5))
def test_equals_networkx_on_connected_graphs(g):
    assume(_connected(g) and _gap(g) > 1e-3)
    got = graphnn.eigenvector_centrality(g, solver="arpack" if g.num_nodes > 3 else "auto")
    assert got.attrs["converged"]
    G = g.to_networkx(weight="abs")
    ref = nx.eigenvector_centrality(G, weight="weight", max_iter=100_000, tol=1e-13)
    expected = np.array([ref[n] for n in g.nodes()])
    np.testing.assert_allclose(got["centrality"].to_numpy(), expected, atol=1e-6)
    assert np.linalg.norm(got["centrality"]) == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(layered_graphs(positive=True, max_nodes=16, max_size=5))
def test_equals_igraph_on_connected_graphs_including_self_loops(g):
    assume(_connected(g) and _gap(g) > 1e-6)
    got = graphnn.eigenvector_centrality(g, normalise="max")["centrality"].to_numpy()
    ref = np.array(g.to_igraph(weight="abs").eigenvector_centrality(weights="weight"))
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got.max() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.filterwarnings("ignore::graphnn.DisconnectedGraphWarning")
@SETTINGS
@given(layered_graphs(max_nodes=16, max_size=5), st.sampled_from(["arpack", "lanczos", "dense"]))
def test_every_solver_equals_the_dense_eigendecomposition(g, solver):
    """Any graph (zero weights, disconnected pieces, self-loops, parallel and grouped blocks)."""
    a = dense_abs_adjacency(g)
    assume(a.any())
    vals, _ = _spectrum(g)
    distinct = vals[vals < vals[-1] - 1e-9 * vals[-1]]
    assume(distinct.size == 0 or (vals[-1] - distinct[-1]) / vals[-1] > 1e-4)  # well separated
    got = graphnn.eigenvector_centrality(g, solver=solver)
    x, top = _dense_oracle(g)
    assert got.attrs["converged"]
    assert got.attrs["eigenvalue"] == pytest.approx(top, rel=1e-9)
    np.testing.assert_allclose(got["centrality"].to_numpy(), x, atol=1e-7)
    assert (got["centrality"] >= 0).all()


def test_bipartite_graph_takes_the_largest_algebraic_eigenvalue():
    g = random_mlp([30, 20, 10], seed=3)
    vals, _ = _spectrum(g)
    assert vals[0] == pytest.approx(-vals[-1])  # symmetric spectrum: +-lambda
    got = graphnn.eigenvector_centrality(g)
    assert got.attrs["eigenvalue"] == pytest.approx(vals[-1], rel=1e-10)
    np.testing.assert_allclose(got["centrality"], _dense_oracle(g)[0], atol=1e-9)


def test_disconnected_graph_puts_the_vector_on_the_strongest_component():
    strong = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) + 1.0
    weak = torch.rand(3, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    g = make_graph([5, 4, 3, 3], [("s", 0, 1, strong, 1), ("w", 2, 3, weak, 1)])
    c = graphnn.eigenvector_centrality(g)["centrality"].to_numpy()
    np.testing.assert_allclose(c[9:], 0.0, atol=1e-9)  # zero to within the solver tolerance
    np.testing.assert_allclose(c, _dense_oracle(g)[0], atol=1e-9)
    ref = nx.eigenvector_centrality(g.to_networkx(weight="abs"), weight="weight", max_iter=10_000, tol=1e-13)
    np.testing.assert_allclose(c, [ref[n] for n in g.nodes()], atol=1e-6)


ALL_SOLVERS = ("arpack", "lanczos", "dense", "auto")


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_two_identical_components_share_the_vector_like_networkx(solver):
    w = torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) + 0.5
    g = make_graph([4, 3, 4, 3], [("a", 0, 1, w, 1), ("b", 2, 3, w.clone(), 1)])
    c = graphnn.eigenvector_centrality(g, solver=solver)["centrality"].to_numpy()
    np.testing.assert_allclose(c[:7], c[7:], atol=1e-9)
    ref = nx.eigenvector_centrality(g.to_networkx(weight="abs"), weight="weight", max_iter=10_000, tol=1e-13)
    np.testing.assert_allclose(c, [ref[n] for n in g.nodes()], atol=1e-6)


def _k22_beside_star():
    """K_{2,2} (partitions p0, p1) beside the star K_{1,4} (p2 -> p3): both have lambda = 2."""
    return make_graph([2, 2, 1, 4], [("k22", 0, 1, torch.ones(2, 2, dtype=torch.float64), 1),
                                     ("star", 2, 3, torch.ones(4, 1, dtype=torch.float64), 1)])


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_different_components_with_equal_eigenvalue_give_networkx_vector(solver):
    g = _k22_beside_star()
    got = graphnn.eigenvector_centrality(g, solver=solver)
    ref = nx.eigenvector_centrality(g.to_networkx(weight="abs"), weight="weight", max_iter=100_000, tol=1e-14)
    np.testing.assert_allclose(got["centrality"].to_numpy(), [ref[n] for n in g.nodes()], atol=1e-6)
    # by hand: 1^T u_a u_a + 1^T u_b u_b with u_a = 1/2 (K22), u_b = (1/sqrt2 centre, 1/(2 sqrt2) leaves)
    u_a = np.full(4, 0.5)
    u_b = np.array([1 / np.sqrt(2)] + [1 / (2 * np.sqrt(2))] * 4)
    x = np.concatenate([u_a.sum() * u_a, u_b.sum() * u_b])
    np.testing.assert_allclose(got["centrality"].to_numpy(), x / np.linalg.norm(x), atol=1e-9)
    assert got.attrs["eigenvalue"] == pytest.approx(2.0, rel=1e-10)
    assert got.attrs["tied_components"] == 2 and got.attrs["components"] == 2


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_per_component_normalises_each_component_on_its_own(solver):
    strong = torch.rand(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    weak = torch.rand(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1
    g = make_graph([5, 4, 3, 3, 2], [("s", 0, 1, strong, 1), ("w", 2, 3, weak, 1)])  # p4: 2 isolated neurons
    got = graphnn.eigenvector_centrality(g, solver=solver, per_component=True)
    c = got["centrality"].to_numpy()
    a = dense_abs_adjacency(g)
    for nodes in (np.arange(0, 9), np.arange(9, 15)):  # each component's own Perron vector, by eigh
        vals, vecs = np.linalg.eigh(a[np.ix_(nodes, nodes)])
        u = np.abs(vecs[:, -1])
        np.testing.assert_allclose(c[nodes], u, atol=1e-8)
    np.testing.assert_allclose(c[15:], 0.0)
    assert got["component"].tolist() == [0] * 9 + [1] * 6 + [2, 3]
    assert len(got.attrs["component_eigenvalues"]) == 4
    mx = graphnn.eigenvector_centrality(g, solver=solver, per_component=True, normalise="max")["centrality"]
    assert mx[:9].max() == pytest.approx(1.0) and mx[9:15].max() == pytest.approx(1.0)


def test_a_graph_in_pieces_warns_and_names_per_component():
    blocks = [(f"b{i}", 2 * i, 2 * i + 1, torch.full((2, 2), 1.0 + i, dtype=torch.float64), 1) for i in range(4)]
    g = make_graph([2] * 8, blocks)  # 4 components; the strongest has 4 of 16 neurons
    with pytest.warns(graphnn.DisconnectedGraphWarning, match=r"4 connected components.*per_component=True"):
        c = graphnn.eigenvector_centrality(g)["centrality"].to_numpy()
    np.testing.assert_allclose(c[:12], 0.0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # per_component: nothing to warn about
        graphnn.eigenvector_centrality(g, per_component=True)
        graphnn.eigenvector_centrality(random_mlp([30, 20, 10], seed=3))  # connected: no warning


def test_many_small_components_beside_a_large_one_match_the_dense_oracle():
    """Large component through the iterative solver, 40 small ones (depthwise-like) densely."""
    gen = torch.Generator().manual_seed(8)
    big = torch.rand(70, 80, generator=gen, dtype=torch.float64)
    diag = torch.diag(torch.rand(40, generator=gen, dtype=torch.float64) + 0.1)  # 40 pairs
    g = make_graph([80, 70, 40, 40], [("big", 0, 1, big, 1), ("dw", 2, 3, diag, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
        for solver in ALL_SOLVERS:
            got = graphnn.eigenvector_centrality(g, solver=solver)
            np.testing.assert_allclose(got["centrality"], _dense_oracle(g)[0], atol=1e-8)
            assert got.attrs["components"] == 41
    per = graphnn.eigenvector_centrality(g, per_component=True)["centrality"].to_numpy()
    np.testing.assert_allclose(per[150:], 1 / np.sqrt(2), atol=1e-12)  # each pair: (1, 1)/sqrt(2)


@SETTINGS
@given(layered_graphs(max_nodes=16, max_size=5))
def test_components_equal_networkx(g):
    got = graphnn.connected_components(g)
    G = nx.from_numpy_array(dense_abs_adjacency(g))
    expected = {frozenset(c) for c in nx.connected_components(G)}
    labels = got["component"].to_numpy()
    assert {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)} == expected
    assert labels[0] == 0 and got.attrs["sizes"] == np.bincount(labels).tolist()


def test_float32_matrices_agree_with_float64_to_1e6():
    g = random_mlp([300, 200, 100, 10], seed=4, dtype=torch.float32)
    c64 = graphnn.eigenvector_centrality(g, dtype=torch.float64)
    c32 = graphnn.eigenvector_centrality(g, dtype=torch.float32)
    assert c32.attrs["converged"] and c32.attrs["residual"] < 1e-5
    np.testing.assert_allclose(c32["centrality"], c64["centrality"], atol=1e-6)


def test_lanczos_equals_arpack_on_a_trained_like_graph():
    g = random_mlp([64, 48, 48, 8], seed=5)
    a = graphnn.eigenvector_centrality(g, solver="arpack")
    b = graphnn.eigenvector_centrality(g, solver="lanczos")
    np.testing.assert_allclose(a["centrality"], b["centrality"], atol=1e-10)
    assert a.attrs["eigenvalue"] == pytest.approx(b.attrs["eigenvalue"], rel=1e-12)


def test_auto_hands_slow_problems_over_to_arpack():
    g = random_mlp([2] * 80, seed=6, absolute=True)  # a long chain: tiny spectral gap
    c = graphnn.eigenvector_centrality(g)
    assert c.attrs["solver"] == "lanczos+arpack" and c.attrs["converged"]
    np.testing.assert_allclose(c["centrality"], _dense_oracle(g)[0], atol=1e-8)
    fast = graphnn.eigenvector_centrality(random_mlp([40, 30, 20], seed=1))
    assert fast.attrs["solver"] == "lanczos" and fast.attrs["iterations"] < 32


@pytest.mark.parametrize("solver", ["arpack", "lanczos", "auto"])
def test_non_convergence_warns_with_advice(solver):
    g = random_mlp([2] * 80, seed=6, absolute=True)  # a long chain: tiny spectral gap, slow convergence
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        c = graphnn.eigenvector_centrality(g, max_iter=20, solver=solver)
    assert c.attrs["converged"] is False


def test_signs_are_dropped_and_the_result_is_non_negative():
    g = random_mlp([10, 8, 6], seed=7)  # signed weights
    gabs = random_mlp([10, 8, 6], seed=7, absolute=True)
    np.testing.assert_allclose(graphnn.eigenvector_centrality(g)["centrality"],
                               graphnn.eigenvector_centrality(gabs)["centrality"], atol=1e-12)


def test_all_zero_weights_give_the_uniform_vector():
    g = make_graph([3, 2], [("z", 0, 1, torch.zeros(2, 3), 1)])
    c = graphnn.eigenvector_centrality(g)
    np.testing.assert_allclose(c["centrality"], 1 / np.sqrt(5))
    assert c.attrs["eigenvalue"] == 0.0


def test_nan_weights_are_refused():
    w = torch.ones(2, 3)
    w[0, 1] = float("nan")
    g = make_graph([3, 2], [("bad", 0, 1, w, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteWeightsError, match="bad"):
            graphnn.eigenvector_centrality(g)


def test_bad_options_say_what_to_use():
    g = random_mlp([3, 2])
    with pytest.raises(ValueError, match="'l2'"):
        graphnn.eigenvector_centrality(g, normalise="sum")
    with pytest.raises(ValueError, match="solver"):
        graphnn.eigenvector_centrality(g, solver="power")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            graphnn.eigenvector_centrality(g, device="cuda")


@pytest.mark.parametrize("model_name", ["LeNet", "ResNet", "EncoderMHA"])
def test_extracted_models_equal_igraph(model_name):
    import models

    torch.manual_seed(0)
    g = graphnn.extract(getattr(models, model_name)())
    got = graphnn.eigenvector_centrality(g, normalise="max")["centrality"].to_numpy()
    ref = np.array(g.to_igraph(weight="abs").eigenvector_centrality(weights="weight"))
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_index_mapped_blocks_components_and_centrality_equal_networkx():
    """A GQA-like repeat map (4 columns read 2 value neurons) and a permutation, one graph:
    components and the centrality vector equal networkx on a graph the test builds by hand."""
    gen = torch.Generator().manual_seed(9)
    v = torch.rand(2, 3, generator=gen, dtype=torch.float64) + 0.1      # x(3) -> v(2)
    o = torch.rand(3, 4, generator=gen, dtype=torch.float64) + 0.1      # o reads v through (0, 0, 1, 1)
    p = torch.rand(2, 2, generator=gen, dtype=torch.float64) + 0.1      # an isolated pair, permuted columns
    g = graphnn.LayeredGraph.from_matrices(
        {"x": 3, "v": 2, "y": 3, "a": 2, "b": 2},
        {"v": ("x", "v", v), "o": ("v", "y", o, torch.tensor([0, 0, 1, 1]), None),
         "p": ("a", "b", p, torch.tensor([1, 0]), None)})
    G = nx.Graph()
    G.add_nodes_from(range(12))
    def add(i, j, w):
        G.add_edge(i, j, weight=G.get_edge_data(i, j, {"weight": 0.0})["weight"] + abs(float(w)))
    for i in range(2):
        for j in range(3):
            add(3 + i, j, v[i, j])
    for i in range(3):
        for j, src in enumerate([0, 0, 1, 1]):
            add(5 + i, 3 + src, o[i, j])
    for i in range(2):
        for j, src in enumerate([1, 0]):
            add(10 + i, 8 + src, p[i, j])
    labels = graphnn.connected_components(g)["component"].to_numpy()
    assert labels.tolist() == [0] * 8 + [1] * 4
    ref = nx.eigenvector_centrality(G, weight="weight", max_iter=100_000, tol=1e-14)
    for solver in ALL_SOLVERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
            c = graphnn.eigenvector_centrality(g, solver=solver)["centrality"].to_numpy()
        np.testing.assert_allclose(c, [ref[k] for k in range(12)], atol=1e-6)


def test_components_fold_into_a_forest_without_changing_the_labels(monkeypatch):
    """With the fold threshold tiny, edges are folded into spanning forests after every chunk:
    same components as networkx."""
    from graphnn.analyses import components

    monkeypatch.setattr(components, "_FOLD_EDGES", 3)
    monkeypatch.setattr(components, "_SCAN_ELEMENTS", 4)
    gen = torch.Generator().manual_seed(11)
    w1 = torch.rand(6, 5, generator=gen, dtype=torch.float64) * (torch.rand(6, 5, generator=gen) < 0.3)
    w2 = torch.rand(4, 6, generator=gen, dtype=torch.float64) * (torch.rand(4, 6, generator=gen) < 0.3)
    g = make_graph([5, 6, 4], [("a", 0, 1, w1, 1), ("b", 1, 2, w2, 1)])
    labels = graphnn.connected_components(g)["component"].to_numpy()
    G = nx.from_numpy_array(dense_abs_adjacency(g))
    expected = {frozenset(c) for c in nx.connected_components(G)}
    assert {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)} == expected


# -- the block operator and the one-time passes, in both layouts (issue 11 §2) ----------------------
import contextlib

from graphnn.analyses import _blocks
from graphnn.analyses._blocks import NodeSpace, load_abs_blocks, place
from graphnn.analyses.centrality import BlockOperator

LAYOUTS = ("copy", "stream")


@contextlib.contextmanager
def layout(name: str, chunk: int = 5):
    """``copy``: transposed |W| copies; ``stream``: |W| formed from the signed matrix; both in
    chunks of ``chunk`` entries (many chunks per block, a partial last one)."""
    saved = _blocks.CPU_COPY_MAX_EDGES, _blocks._STREAM_ELEMENTS, _blocks._CHUNK_ELEMENTS
    _blocks.CPU_COPY_MAX_EDGES = 10**12 if name == "copy" else 0
    _blocks._STREAM_ELEMENTS = _blocks._CHUNK_ELEMENTS = chunk
    try:
        yield
    finally:
        _blocks.CPU_COPY_MAX_EDGES, _blocks._STREAM_ELEMENTS, _blocks._CHUNK_ELEMENTS = saved


def _operator(g, dtype=torch.float64):
    space = NodeSpace.of_graph(g)
    dev = torch.device("cpu")
    return BlockOperator(space.n, place(space, load_abs_blocks(g, dtype=dtype, device=dev)), dev, dtype)


def _mapped_graph(dtype=torch.float64):
    """A repeat map (GQA-like), a permutation and a self-loop block with a slice map."""
    gen = torch.Generator().manual_seed(21)
    return graphnn.LayeredGraph.from_matrices(
        {"x": 3, "v": 2, "y": 3},
        {"v": ("x", "v", torch.randn(2, 3, generator=gen, dtype=dtype)),
         "o": ("v", "y", torch.randn(3, 4, generator=gen, dtype=dtype), torch.tensor([0, 0, 1, 1]), None),
         "p": ("y", "y", torch.randn(2, 3, generator=gen, dtype=dtype), torch.tensor([2, 0, 1]),
               torch.tensor([1, 2]))})


@pytest.mark.parametrize("where", LAYOUTS)
@settings(max_examples=40, deadline=None)
@given(g=layered_graphs(max_nodes=16, max_size=5), chunk=st.sampled_from([1, 5, 12, 1 << 18]))
def test_operator_equals_the_dense_adjacency_times_a_vector(where, g, chunk):
    """Every block kind (grouped with garbage outside the groups, self-loops, parallel blocks)
    in both layouts and any chunking: ``A x`` equals the exported dense adjacency times ``x``."""
    x = torch.rand(g.num_nodes, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with layout(where, chunk):
        got = _operator(g)(x)
    np.testing.assert_allclose(got.numpy(), dense_abs_adjacency(g) @ x.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("where", LAYOUTS)
def test_operator_on_index_maps_equals_the_dense_adjacency(where):
    g = _mapped_graph()
    x = torch.rand(g.num_nodes, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with layout(where, 2):
        op = _operator(g)
        first, second = op(x), op(2 * x)  # reused buffers: each call stands on its own
    want = dense_abs_adjacency(g) @ x.numpy()
    np.testing.assert_allclose(first.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(second.numpy(), 2 * want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_converted_chunk_by_chunk_exactly(dtype):
    """bf16/fp16 weights streamed in chunks: the float32 products equal the float64 products of
    the same (exactly representable) values to float32 rounding, and the centrality equals the
    dense eigendecomposition of those values."""
    g16 = random_mlp([40, 30, 20], seed=12, dtype=torch.float32)
    for b in g16.blocks.values():
        w = b._load().to(dtype)
        b._load, b.dtype = (lambda w=w: w), dtype
    x = torch.rand(g16.num_nodes, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with layout("stream", 37):
        got = _operator(g16, torch.float32)(x).numpy()
        c = graphnn.eigenvector_centrality(g16, dtype=torch.float32)
    a = dense_abs_adjacency(g16)
    np.testing.assert_allclose(got, a @ x.numpy(), rtol=1e-5)
    assert c.attrs["converged"]
    np.testing.assert_allclose(c["centrality"], _dense_oracle(g16)[0], atol=1e-6)


@pytest.mark.parametrize("where", LAYOUTS)
@settings(max_examples=30, deadline=None)
@given(g=layered_graphs(max_nodes=16, max_size=5, ties=True))
def test_components_and_centrality_in_both_layouts_equal_the_oracles(where, g):
    """Many zero weights (zero rows, columns and entries; grouped blocks): the components found
    from whole non-zero lines and the remaining entries equal networkx's, and centrality the
    dense eigendecomposition, in both layouts."""
    a = dense_abs_adjacency(g)
    assume(a.any())
    vals, _ = _spectrum(g)
    distinct = vals[vals < vals[-1] - 1e-9 * vals[-1]]
    assume(distinct.size == 0 or (vals[-1] - distinct[-1]) / vals[-1] > 1e-4)
    with layout(where, 3), warnings.catch_warnings():
        warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
        labels = graphnn.connected_components(g)["component"].to_numpy()
        c = graphnn.eigenvector_centrality(g, solver="lanczos")
    expected = {frozenset(k) for k in nx.connected_components(nx.from_numpy_array(a))}
    assert {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)} == expected
    np.testing.assert_allclose(c["centrality"].to_numpy(), _dense_oracle(g)[0], atol=1e-7)


def test_grouped_blocks_are_held_compactly_and_give_the_dense_copy_on_demand():
    """A grouped block (garbage outside its groups): the compact in-group values, the sums, the
    entries and the transposed copy made on first use all equal the masked |W|."""
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    w[0, 1] = 0.0  # a zero inside a group
    g = make_graph([9, 6], [("gc", 0, 1, w, 3)])
    blk = g.blocks["gc"]
    dense = (w * blk.structure_mask()).abs()
    with layout("copy"):
        (ab,) = load_abs_blocks(g, dtype=torch.float64, device=torch.device("cpu"))
    assert ab.group_shape == (3, 2, 3) and ab._t is None  # nothing dense made yet
    dst_sums, src_sums = ab.sums()
    np.testing.assert_allclose(dst_sums, dense.sum(1), rtol=1e-15)
    np.testing.assert_allclose(src_sums, dense.sum(0), rtol=1e-15)
    rows, cols = ab.group_entries()
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(map(tuple, dense.nonzero().tolist()))
    torch.testing.assert_close(ab.t, dense.t().contiguous(), rtol=0, atol=0)
    torch.testing.assert_close(_blocks.masked(blk, w), w * blk.structure_mask(), rtol=0, atol=0)


@pytest.mark.parametrize("per_component", [False, True])
def test_reported_residual_is_the_residual_of_the_returned_vector(per_component):
    """The residual is combined from the solver's own products (no extra product): it equals
    ``|A x - lambda x| / (lambda |x|)`` computed here on the dense adjacency."""
    w1 = torch.rand(30, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w2 = torch.rand(12, 15, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.3
    g = make_graph([20, 30, 15, 12], [("a", 0, 1, w1, 1), ("b", 2, 3, w2, 1)])
    a = dense_abs_adjacency(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
        c = graphnn.eigenvector_centrality(g, solver="lanczos", per_component=per_component)
    x = c["centrality"].to_numpy()
    if per_component:
        lams = c.attrs["component_eigenvalues"]
        parts = [(x * (c["component"].to_numpy() == k), lam) for k, lam in enumerate(lams)]
    else:
        parts = [(x, c.attrs["eigenvalue"])]
    true = max(np.linalg.norm(a @ v - lam * v) / (lam * np.linalg.norm(v)) for v, lam in parts)
    assert c.attrs["residual"] <= 1e-10
    assert abs(c.attrs["residual"] - true) <= 1e-12


@pytest.mark.parametrize("solver", ALL_SOLVERS)
@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_the_vector_does_not_depend_on_the_scale_of_the_weights(solver, scale):
    """Weights near the ends of float64 (their squares under- or overflow): the same vector as
    at scale 1, and the eigenvalue scaled."""
    g = random_mlp([6, 4, 3], seed=8)
    big = random_mlp([6, 4, 3], seed=8, scale=scale)
    ref = graphnn.eigenvector_centrality(g, solver=solver)
    got = graphnn.eigenvector_centrality(big, solver=solver)
    np.testing.assert_allclose(got["centrality"], ref["centrality"], atol=1e-9)
    assert got.attrs["eigenvalue"] == pytest.approx(ref.attrs["eigenvalue"] * scale, rel=1e-9)


@pytest.mark.parametrize("where", LAYOUTS)
def test_an_empty_index_mapped_block_changes_nothing(where):
    """A block with no rows (an empty destination map) beside a real one, in both layouts."""
    w = torch.rand(2, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    empty = ("b", "c", torch.zeros(0, 2, dtype=torch.float64), None, torch.zeros(0, dtype=torch.long))
    parts = {"a": 3, "b": 2, "c": 2}
    with layout(where), warnings.catch_warnings():
        warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
        got = graphnn.eigenvector_centrality(graphnn.LayeredGraph.from_matrices(parts, {"w": ("a", "b", w), "e": empty}))
        ref = graphnn.eigenvector_centrality(graphnn.LayeredGraph.from_matrices(parts, {"w": ("a", "b", w)}))
        labels = graphnn.connected_components(graphnn.LayeredGraph.from_matrices(parts, {"w": ("a", "b", w), "e": empty}))
    np.testing.assert_allclose(got["centrality"], ref["centrality"], atol=1e-12)
    assert labels["component"].tolist() == [0, 0, 0, 0, 0, 1, 2]


@pytest.mark.parametrize("where", LAYOUTS)
def test_float8_weights_give_the_numbers_of_their_float64_values(where):
    """float8 has no abs/amin kernels: a dense and a grouped float8 block (one zero weight) give
    the centrality, components and zero-free lines of the same values in float64."""
    gen = torch.Generator().manual_seed(7)
    w = (torch.randn(6, 5, generator=gen) * 0.5).to(torch.float8_e4m3fn)
    w[2, 3] = 0.0
    gw = (torch.randn(4, 6, generator=gen) * 0.5).to(torch.float8_e4m3fn)
    g8 = make_graph([5, 6, 4], [("w", 0, 1, w, 1), ("gw", 1, 2, gw, 2)])
    g64 = make_graph([5, 6, 4], [("w", 0, 1, w.double(), 1), ("gw", 1, 2, gw.double(), 2)])
    with layout(where), warnings.catch_warnings():
        warnings.simplefilter("ignore", graphnn.DisconnectedGraphWarning)
        got, ref = graphnn.eigenvector_centrality(g8), graphnn.eigenvector_centrality(g64)
        labels = graphnn.connected_components(g8)["component"].tolist()
        (dense, grouped) = load_abs_blocks(g8, dtype=torch.float64, device=torch.device("cpu"))
        side, full = dense.full_lines()
    np.testing.assert_allclose(got["centrality"], ref["centrality"], atol=1e-12)
    assert labels == graphnn.connected_components(g64)["component"].tolist()
    zero_free = (w.double() != 0).all(1) if side == "dst" else (w.double() != 0).all(0)
    assert full.tolist() == zero_free.tolist() and grouped.full_lines() is None
