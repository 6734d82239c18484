"""Index-mapped blocks (graph-model.md §2b): every analysis and export against a dense adjacency
that the test builds entry by entry from the weights and the maps."""

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import graphnn
from graphnn.graph import Block, LayeredGraph

# a GQA repeat map: 4 query heads, 2 key/value heads, head_dim 2 -> column (h, t) reads v (h // 2, t)
GQA = [0, 1, 0, 1, 2, 3, 2, 3]
PERM = [3, 0, 7, 5, 1, 6, 2, 4]
SIZES = {"x": 6, "v": 4, "o": 8, "p": 5, "s": 3}


def _weights(seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    return {
        "v": ("x", "v", w(4, 6), None, None),                         # plain
        "o": ("v", "o", w(8, 8), GQA, None),                          # GQA repeat (parallel edges)
        "perm": ("o", "p", w(5, 8), PERM, None),                      # a permutation of o
        "slice": ("x", "s", w(3, 2), [2, 3], None),                   # x[:, 2:4]
        "rows": ("s", "p", w(3, 3), None, [4, 0, 4]),                 # rows 0 and 2 both write p[4]
    }


def _graph(seed=0):
    return LayeredGraph.from_matrices(SIZES, _weights(seed))


def _offsets():
    out, n = {}, 0
    for k, s in SIZES.items():
        out[k] = n
        n += s
    return out, n


def _dense(seed=0, f=lambda w: w):
    """The undirected adjacency, summed over parallel edges, built one matrix entry at a time."""
    off, n = _offsets()
    a = np.zeros((n, n))
    for src, dst, w, si, di in _weights(seed).values():
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                u = off[dst] + (di[i] if di is not None else i)
                v = off[src] + (si[j] if si is not None else j)
                a[u, v] += f(float(w[i, j]))
                if u != v:
                    a[v, u] += f(float(w[i, j]))
    return a


def _directed_sums(seed=0, f=lambda w: w):
    off, n = _offsets()
    n_in, n_out = np.zeros(n), np.zeros(n)
    for src, dst, w, si, di in _weights(seed).values():
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                n_in[off[dst] + (di[i] if di is not None else i)] += f(float(w[i, j]))
                n_out[off[src] + (si[j] if si is not None else j)] += f(float(w[i, j]))
    return n_in, n_out


def test_validation_of_index_maps():
    w = torch.ones(2, 3)
    with pytest.raises(ValueError, match="entries"):
        LayeredGraph.from_matrices({"a": 4, "b": 2}, {"w": ("a", "b", w, [0, 1], None)})
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        LayeredGraph.from_matrices({"a": 4, "b": 2}, {"w": ("a", "b", w, [0, 1, 4], None)})
    with pytest.raises(ValueError, match="integer"):
        LayeredGraph.from_matrices({"a": 4, "b": 2}, {"w": ("a", "b", w, torch.tensor([0., 1., 2.]), None)})
    g = LayeredGraph.from_matrices({"a": 4, "b": 2}, {"w": ("a", "b", w, [3, 3, 0], None)})
    b = g.blocks["w"]
    assert b.src_index.dtype == torch.int64 and b.src_size == 4 and b.dst_size == 2 and b.num_edges == 6


def test_strength_signed_and_abs():
    g = _graph()
    n_in, n_out = _directed_sums()
    df = graphnn.strength(g, "in")
    np.testing.assert_allclose(df["in_strength"].to_numpy(), n_in, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(graphnn.strength(g, "out")["out_strength"].to_numpy(), n_out, rtol=1e-12, atol=1e-12)
    a_in, a_out = _directed_sums(f=abs)
    tot = graphnn.strength(g, "total", signed=False)["abs_strength"].to_numpy()
    np.testing.assert_allclose(tot, a_in + a_out, rtol=1e-12)
    np.testing.assert_allclose(tot, _dense(f=abs).sum(1), rtol=1e-12)  # no self-loops here
    # by hand: p[4] is written by rows 0 and 2 of "rows" (dst_index) and by row 4 of "perm"
    w = _weights()["rows"][2]
    p4_in = float(w[0].sum() + w[2].sum()) + float(_weights()["perm"][2][4].sum())
    off, _ = _offsets()
    assert n_in[off["p"] + 4] == pytest.approx(p4_in, rel=1e-12)


def test_strength_variance_layer_view_uses_neurons():
    g = _graph()
    sv = graphnn.strength_variance(g).set_index("layer")
    n_in, _ = _directed_sums()
    off, _ = _offsets()
    v = n_in[off["o"]:off["o"] + 8]
    assert sv.loc["o", "in_strength_var"] == pytest.approx(np.var(v, ddof=1), rel=1e-12)
    assert sv.loc["v", "n"] == 4


def test_exports_merge_parallel_edges():
    g = _graph()
    for weight, f in (("signed", lambda w: w), ("abs", abs)):
        dense = _dense(f=f)
        np.testing.assert_allclose(g.to_scipy(weight=weight).toarray(), dense, rtol=1e-12, atol=1e-14)
        nxg = g.to_networkx(weight=weight)
        np.testing.assert_allclose(nx.to_numpy_array(nxg, nodelist=list(g.nodes()), weight="weight"),
                                   dense, rtol=1e-12, atol=1e-14)
    nxg = g.to_networkx(weight="abs")
    assert nxg.number_of_edges() == np.count_nonzero(np.triu(_dense(f=abs)))
    assert nxg.number_of_edges() < g.num_edges  # the GQA and row repeats were merged
    ig = pytest.importorskip("igraph")
    igg = g.to_igraph(weight="abs")
    dense = _dense(f=abs)
    assert igg.ecount() == nxg.number_of_edges()
    for e in igg.es:
        assert e["weight"] == pytest.approx(dense[e.source, e.target], rel=1e-12)


def test_centrality_equals_networkx_on_hand_built_graph():
    g = _graph()
    off, n = _offsets()
    dense = _dense(f=abs)
    h = nx.Graph()
    nodes = list(g.nodes())
    h.add_nodes_from(nodes)
    for u, v in itertools.combinations(range(n), 2):
        if dense[u, v]:
            h.add_edge(nodes[u], nodes[v], weight=dense[u, v])
    ref = nx.eigenvector_centrality(h, weight="weight", tol=1e-14, max_iter=100_000)
    for solver in ("auto", "lanczos", "arpack", "dense"):
        got = graphnn.eigenvector_centrality(g, solver=solver, device="cpu")
        np.testing.assert_allclose(got["centrality"].to_numpy(), [ref[nd] for nd in nodes], atol=1e-6)
    # the leading eigenvalue of the hand-built matrix
    got = graphnn.eigenvector_centrality(g, device="cpu")
    assert got.attrs["eigenvalue"] == pytest.approx(np.linalg.eigvalsh(dense)[-1], rel=1e-9)


def _brute_cores(a: np.ndarray) -> np.ndarray:
    """One-at-a-time peeling of the minimum-strength node on a dense symmetric adjacency."""
    n = len(a)
    alive = np.ones(n, bool)
    s = a.sum(1).astype(float)
    core, level = np.zeros(n), 0.0
    for _ in range(n):
        i = int(np.argmin(np.where(alive, s, np.inf)))
        level = max(level, s[i])
        core[i] = level
        alive[i] = False
        s -= a[i]
    return core


@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_weighted_hypercore_equals_brute_force(dtype):
    g = _graph()
    got = graphnn.hypercore(g, device="cpu", dtype=dtype)["core"].to_numpy()
    np.testing.assert_allclose(got, _brute_cores(_dense(f=abs)), rtol=1e-6 if dtype else 1e-12)


def test_thresholded_hypercore_counts_parallel_edges_and_equals_networkx_without_them():
    g = _graph()
    tau = 0.5
    unit = lambda w: 1.0 if abs(w) >= tau else 0.0
    got = graphnn.hypercore(g, threshold=tau, device="cpu")["core"].to_numpy()
    np.testing.assert_allclose(got, _brute_cores(_dense(f=unit)))  # multi-edges counted
    # without the parallel edges (permutation and slice only) it is networkx's k-core
    ws = {k: v for k, v in _weights().items() if k in ("v", "perm", "slice")}
    ws["o"] = ("v", "o", _weights()["o"][2][:, :4], None, None)
    sizes = {"x": 6, "v": 4, "o": 8, "p": 5, "s": 3}
    g2 = LayeredGraph.from_matrices(sizes, ws)
    h = nx.Graph()
    h.add_nodes_from(g2.nodes())
    for src, dst, w, si, di in ws.values():
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                if abs(float(w[i, j])) >= tau:
                    h.add_edge((dst, i if di is None else di[i]), (src, j if si is None else si[j]))
    ref = nx.core_number(h)
    got2 = graphnn.hypercore(g2, threshold=tau, device="cpu")
    assert got2["core"].tolist() == [ref[nd] for nd in g2.nodes()]


def test_block_scope_hypercore_on_mapped_block():
    g = _graph()
    df = graphnn.hypercore(g, scope="block", device="cpu")
    # partition v: core_out is the peeling of the GQA block alone (v <-> o)
    off, n = _offsets()
    w = _weights()["o"][2].abs().numpy()
    a = np.zeros((12, 12))
    for i in range(8):
        for j in range(8):
            a[4 + i, GQA[j]] += w[i, j]
            a[GQA[j], 4 + i] += w[i, j]
    ref = _brute_cores(a)
    got = df.set_index(["layer", "neuron"])["core_out"]
    np.testing.assert_allclose([got[("v", k)] for k in range(4)], ref[:4], rtol=1e-12)


def test_analyse_matches_separate_analyses():
    g = _graph()
    a = graphnn.analyse(g, device="cpu")
    np.testing.assert_allclose(a.neurons["abs_strength"].to_numpy(), _dense(f=abs).sum(1), rtol=1e-12)
    np.testing.assert_allclose(a.neurons["centrality"].to_numpy(),
                               graphnn.eigenvector_centrality(g, device="cpu")["centrality"].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(a.neurons["core"].to_numpy(), _brute_cores(_dense(f=abs)), rtol=1e-12)


def test_streamed_blocks_equal_copied_blocks(monkeypatch):
    """Large graphs on the CPU stream |W| without a copy: same numbers through the maps."""
    from graphnn.analyses import _blocks
    g = _graph()
    ref_c = graphnn.eigenvector_centrality(g, device="cpu")["centrality"].to_numpy()
    ref_h = graphnn.hypercore(g, device="cpu")["core"].to_numpy()
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", 0)
    np.testing.assert_allclose(graphnn.eigenvector_centrality(g, device="cpu")["centrality"].to_numpy(), ref_c, atol=1e-9)
    np.testing.assert_allclose(graphnn.hypercore(g, device="cpu")["core"].to_numpy(), ref_h, rtol=1e-12)


def test_entry_index_neuron_and_matrix_space():
    g = _graph()
    b = g.blocks["o"]
    rows, cols = b.entry_index("matrix")
    assert cols[0].tolist() == list(range(8))
    rows_n, cols_n = b.entry_index()
    assert cols_n[0].tolist() == GQA and torch.equal(rows, rows_n)
    assert torch.equal(b.neuron_entry_index()[1], cols_n)
    r, _ = g.blocks["rows"].entry_index()
    assert r[:, 0].tolist() == [4, 0, 4]
    with pytest.raises(ValueError, match="space"):
        b.entry_index("edges")


def test_index_map_costs_o_n_integers():
    w = torch.zeros(64, 4096)
    g = LayeredGraph.from_matrices({"a": 1024, "b": 64}, {"w": ("a", "b", w, torch.arange(4096) // 4, None)})
    b = g.blocks["w"]
    assert b.src_index.numel() == 4096 and b.matrix().data_ptr() == w.data_ptr()
