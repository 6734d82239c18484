"""k-hypercores against networkx.core_number and a brute force written from the definition."""

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphnn
from random_graphs import dense_abs_adjacency, layered_graphs, make_block, make_graph, random_mlp

SETTINGS = settings(max_examples=40, deadline=None)


def brute_force_cores(a: np.ndarray) -> np.ndarray:
    """From the definition: H lies in the k-hypercore for k = min over v in H of the strength of
    v inside H (the k-hypercore is the union of all such sets), so the hypercore number of v is
    the largest such minimum over the subsets H that contain v. All 2^n subsets, n <= 12."""
    n = len(a)
    subsets = np.array(list(itertools.product([0, 1], repeat=n)), dtype=bool)[1:]
    inside = subsets.astype(float) @ a  # strength of every node inside each subset
    m = np.where(subsets, inside, np.inf).min(1)
    return np.array([m[subsets[:, v]].max() for v in range(n)])


def sequential_peeling(a: np.ndarray) -> np.ndarray:
    """Reference one-neuron-at-a-time peeling on a dense adjacency (for graphs too big to brute force)."""
    n = len(a)
    s = a.sum(1).astype(float)
    alive = np.ones(n, bool)
    core = np.zeros(n)
    level = 0.0
    for _ in range(n):
        i = np.flatnonzero(alive)[np.argmin(s[alive])]
        level = max(level, s[i])
        core[i] = level
        alive[i] = False
        s -= a[i]
    return core


def _nx_graph(g, tau=None):
    """The simple networkx graph of the structural edges, keeping |w| >= tau when tau is given."""
    G = g.to_networkx(weight="abs")
    if tau is not None:
        G.remove_edges_from([(u, v) for u, v, w in G.edges(data="weight") if w < tau])
    return G


@SETTINGS
@given(layered_graphs(self_loops=False, parallel=False, max_nodes=20, max_size=6))
def test_all_weights_one_equals_networkx_core_number(g):
    ones = make_graph([p.size for p in g.partitions.values()],
                      [(b.name, int(b.src[1:]), int(b.dst[1:]), torch.ones(b.shape), b.groups) for b in g.blocks.values()])
    got = graphnn.hypercore(ones)["core"].to_numpy()
    ref = nx.core_number(ones.to_networkx())
    np.testing.assert_array_equal(got, [ref[n] for n in ones.nodes()])


@SETTINGS
@given(layered_graphs(self_loops=False, parallel=False, max_nodes=20, max_size=6), st.sampled_from([0.0, 0.4, 1.0, 1.5]))
def test_threshold_gives_the_classic_k_core_of_networkx(g, tau):
    got = graphnn.hypercore(g, threshold=tau)
    assert got["core"].dtype == np.int64
    ref = nx.core_number(_nx_graph(g, tau))
    np.testing.assert_array_equal(got["core"].to_numpy(), [ref[n] for n in g.nodes()])


@SETTINGS
@given(layered_graphs(self_loops=False, parallel=False, max_nodes=20, max_size=6), st.sampled_from([0.05, 0.3, 0.5, 1.0]))
def test_top_fraction_keeps_the_strongest_edges(g, q):
    w = np.sort([abs(d) for _, _, d in _nx_graph(g).edges(data="weight")])[::-1]
    assume(len(w) > 0)
    tau = w[int(np.ceil(q * len(w))) - 1]
    got = graphnn.hypercore(g, top=q)
    assert got.attrs["threshold"] == pytest.approx(tau)
    ref = nx.core_number(_nx_graph(g, tau))
    np.testing.assert_array_equal(got["core"].to_numpy(), [ref[n] for n in g.nodes()])


@SETTINGS
@given(layered_graphs(max_nodes=12))
def test_weighted_cores_equal_the_brute_force_definition(g):
    """Any small graph: skip connections, zeros, ties, self-loops, parallel and grouped blocks."""
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_allclose(got, brute_force_cores(dense_abs_adjacency(g)), rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["gauss", "ties", "sparse"]))
def test_batched_peeling_equals_sequential_peeling_on_larger_graphs(seed, style):
    """Hundreds of neurons, so that batches get cut and restarted many times."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [60, 40, 40, 30, 10]
    blocks = []
    for i, (s, d) in enumerate([(0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (1, 3), (2, 2)]):
        w = torch.randn(sizes[d], sizes[s], generator=gen, dtype=torch.float64)
        if style == "ties":
            w = torch.round(w)
        elif style == "sparse":
            w = w * (torch.rand(w.shape, generator=gen) < 0.1)
        blocks.append((f"b{i}", s, d, w, 1))
    g = make_graph(sizes, blocks)
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_allclose(got, sequential_peeling(dense_abs_adjacency(g)), rtol=1e-10, atol=1e-12)


def test_large_thresholded_mlp_equals_networkx():
    g = random_mlp([100, 80, 60, 10], seed=3)
    got = graphnn.hypercore(g, top=0.1)["core"].to_numpy()
    G = _nx_graph(g, graphnn.hypercore(g, top=0.1).attrs["threshold"])
    ref = nx.core_number(G)
    np.testing.assert_array_equal(got, [ref[n] for n in g.nodes()])


@SETTINGS
@given(layered_graphs(max_nodes=12, groups=False))
def test_block_scope_is_the_core_of_the_blocks_around_each_partition(g):
    got = graphnn.hypercore(g, scope="block")
    assert list(got.columns) == ["layer", "neuron", "core_in", "core_out"]
    for name, p in g.partitions.items():
        rows = got[got["layer"] == name]
        for side, blocks in (("in", g.blocks_into(name)), ("out", g.blocks_out_of(name))):
            col = rows[f"core_{side}"].to_numpy()
            if not blocks:
                assert np.isnan(col).all()
                continue
            names = [q for q in g.partitions if any(q in (b.src, b.dst) for b in blocks)]
            sub = graphnn.LayeredGraph([g.partitions[q] for q in names],
                                       [make_block(b.name, b.src, b.dst, b.matrix()) for b in blocks])
            ref = brute_force_cores(dense_abs_adjacency(sub))
            o = names.index(name)
            start = sum(g.partitions[q].size for q in names[:o])
            np.testing.assert_allclose(col, ref[start:start + p.size], rtol=1e-9, atol=1e-12)


def test_ties_within_rounding_share_a_level():
    # b0 has strength 0.1 + 0.2 = 0.30000000000000004, b1 has 0.3: one level, one number
    g = graphnn.LayeredGraph.from_matrices({"b": 2, "a": 3, "c": 1}, {
        "w": ("a", "b", torch.tensor([[0.1, 0.2, 0.0], [0.0, 0.0, 0.3]], dtype=torch.float64)),
        "v": ("a", "c", torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64))})
    core = graphnn.hypercore(g)["core"].to_numpy()
    assert 0.1 + 0.2 != 0.3 and core[0] == core[1] == 0.3


def test_isolated_neurons_have_core_zero_and_empty_graphs_work():
    g = make_graph([3, 2], [("z", 0, 1, torch.zeros(2, 3), 1)])
    assert graphnn.hypercore(g)["core"].tolist() == [0.0] * 5
    lone = graphnn.LayeredGraph([graphnn.Partition("only", 4)], [])
    assert graphnn.hypercore(lone)["core"].tolist() == [0.0] * 4


def test_peel_works_on_the_float32_path():
    g64 = random_mlp([50, 40, 30], seed=8, dtype=torch.float32)
    c32 = graphnn.hypercore(g64, dtype=torch.float32)["core"].to_numpy()
    c64 = graphnn.hypercore(g64, dtype=torch.float64)["core"].to_numpy()
    np.testing.assert_allclose(c32, c64, rtol=1e-12)  # float32 weights are exact in either copy


def test_nan_weights_are_refused():
    import warnings

    from graphnn.errors import NonFiniteWeightsError

    w = torch.ones(2, 3)
    w[1, 2] = float("inf")
    g = make_graph([3, 2], [("bad", 0, 1, w, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteWeightsError, match="bad"):
            graphnn.hypercore(g)


def test_bad_options_say_what_to_use():
    g = random_mlp([3, 2])
    with pytest.raises(ValueError, match="scope"):
        graphnn.hypercore(g, scope="layer")
    with pytest.raises(ValueError, match="not both"):
        graphnn.hypercore(g, threshold=0.1, top=0.1)
    with pytest.raises(ValueError, match="0 < top <= 1"):
        graphnn.hypercore(g, top=1.5)
    with pytest.raises(ValueError, match="threshold"):
        graphnn.hypercore(g, threshold=-1)


@pytest.mark.parametrize("model_name", ["LeNet", "ResNet", "DepthwiseSeparable", "EncoderMHA"])
def test_extracted_models_equal_sequential_peeling(model_name):
    import models

    torch.manual_seed(0)
    g = graphnn.extract(getattr(models, model_name)())
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_allclose(got, sequential_peeling(dense_abs_adjacency(g)), rtol=1e-9)


# -- the peeling's storage paths (issue 11 §2) ---------------------------------------------------
def thresholded_adjacency(g, tau: float) -> np.ndarray:
    """Integer adjacency of the 0/1 multigraph written from the block matrices: every structural
    edge with |w| >= tau counts once (parallel edges add, a self-loop counts twice)."""
    n = g.num_nodes
    a = np.zeros((n, n))
    for b in g.blocks.values():
        keep = (b.matrix().abs() >= tau).numpy()
        mask = b.structure_mask()
        if mask is not None:
            keep &= mask.numpy()
        r, c = np.nonzero(keep)
        rows = g.offset(b.dst) + b.dst_neurons().numpy()[r]
        cols = g.offset(b.src) + b.src_neurons().numpy()[c]
        np.add.at(a, (rows, cols), 1)
        np.add.at(a, (cols, rows), 1)
    return a


def _paths(monkeypatch):
    """The storage choices the peeling makes by size, forced on small graphs: a transposed |W|
    copy per block (small graphs), the signed matrix streamed with |.| taken per line (large
    graphs), and, when the transposed copies would exceed their budget, the column copies in a
    temporary file (signed float weights) or strided columns (the others)."""
    from graphnn.analyses import _blocks, _lines

    yield "copy"
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", -1)
    yield "stream"
    monkeypatch.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", 0)
    yield "strided"


@settings(max_examples=25, deadline=None)
@given(layered_graphs(max_nodes=12))
def test_every_storage_path_gives_the_brute_force_cores(g):
    ref = brute_force_cores(dense_abs_adjacency(g))
    with pytest.MonkeyPatch.context() as mp:
        for path in _paths(mp):
            got = graphnn.hypercore(g)["core"].to_numpy()
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, err_msg=path)


@settings(max_examples=25, deadline=None)
@given(layered_graphs(max_nodes=14), st.sampled_from([0.0, 0.5, 1.0, 1.5]))
def test_thresholded_cores_count_multi_edges_on_the_csr_and_on_the_dense_lines(g, tau):
    """Self-loops, parallel and grouped blocks: both 0/1 peelings equal the one-at-a-time
    peeling of the integer adjacency written from the matrices."""
    from graphnn.analyses import kcore

    ref = sequential_peeling(thresholded_adjacency(g, tau))
    got = graphnn.hypercore(g, threshold=tau)["core"].to_numpy()
    np.testing.assert_array_equal(got, ref)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kcore, "CSR_MAX_ENTRIES", -1)
        for path in _paths(mp):
            np.testing.assert_array_equal(graphnn.hypercore(g, threshold=tau)["core"].to_numpy(), ref, err_msg=path)


@pytest.mark.parametrize("dense", [False, True])
def test_thresholded_block_scope_equals_networkx_per_block_group(dense, monkeypatch):
    from graphnn.analyses import kcore

    if dense:
        monkeypatch.setattr(kcore, "CSR_MAX_ENTRIES", -1)
    g = random_mlp([30, 25, 20, 5], seed=5)
    tau = 0.5
    got = graphnn.hypercore(g, scope="block", threshold=tau)
    assert str(got["core_in"].dtype) == "Int64"
    for name in ("l1", "l2"):
        (b_in,), (b_out,) = g.blocks_into(name), g.blocks_out_of(name)
        for side, b in (("in", b_in), ("out", b_out)):
            w = b.matrix().abs().numpy()
            G = nx.Graph()
            G.add_nodes_from([("s", j) for j in range(b.n_src)] + [("d", i) for i in range(b.n_dst)])
            G.add_edges_from((("d", i), ("s", j)) for i, j in zip(*np.nonzero(w >= tau)))
            ref = nx.core_number(G)
            tag = "d" if side == "in" else "s"
            col = got[got["layer"] == name][f"core_{side}"].to_numpy(dtype=np.int64)
            assert col.tolist() == [ref[(tag, i)] for i in range(g.partitions[name].size)]


def test_depthwise_blocks_are_peeled_from_their_in_group_entries():
    """A depthwise block (one edge per channel) between dense ones: the numbers equal the
    sequential peeling, and its lines hold one entry each, not a dense row."""
    from graphnn.analyses._blocks import NodeSpace, Weighting, load_abs_blocks, place
    from graphnn.analyses._lines import line_ends

    gen = torch.Generator().manual_seed(4)
    sizes = [6, 12, 12, 5]
    dw = torch.randn(12, 12, generator=gen, dtype=torch.float64) * 7  # garbage off the diagonal
    g = make_graph(sizes, [("a", 0, 1, torch.randn(12, 6, generator=gen, dtype=torch.float64), 1),
                           ("dw", 1, 2, dw, 12),
                           ("b", 2, 3, torch.randn(5, 12, generator=gen, dtype=torch.float64), 1)])
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_allclose(got, sequential_peeling(dense_abs_adjacency(g)), rtol=1e-12)
    space = NodeSpace.of_graph(g)
    blocks = load_abs_blocks(g, weighting=Weighting(), dtype=torch.float64, device=torch.device("cpu"))
    ends = [e for e in line_ends(place(space, blocks)) if e.name == "dw"]
    assert [e.lines.shape for e in ends] == [(12, 1), (12, 1)]
    np.testing.assert_array_equal(ends[0].lines[:, 0], dw.diagonal().abs().numpy())


def test_peeling_is_the_definition_on_a_long_star_and_a_chain():
    """Many levels with one removal each (a star's leaves) and a cascade through a chain of
    partitions: exact numbers from the definition, written by hand."""
    leaves = torch.arange(1, 2001, dtype=torch.float64)[None, :] / 1000  # one centre, 2000 leaves
    g = make_graph([2000, 1], [("star", 0, 1, leaves, 1)])
    core = graphnn.hypercore(g)["core"].to_numpy()
    # leaf j (|w| = (j+1)/1000) goes at its own strength; the centre last, at the last leaf's
    np.testing.assert_allclose(core[:2000], leaves.numpy()[0], rtol=1e-15)
    assert core[2000] == pytest.approx(2.0)
    chain = make_graph([1] * 6, [(f"c{i}", i, i + 1, torch.tensor([[1.0 + i]], dtype=torch.float64), 1)
                                 for i in range(5)])
    # strengths 1, 3, 5, 7, 9, 5: the ends go first and the cascade climbs the chain
    np.testing.assert_allclose(graphnn.hypercore(chain)["core"].to_numpy(), [1, 2, 3, 4, 5, 5])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16]
                         + ([torch.float8_e4m3fn] if hasattr(torch, "float8_e4m3fn") else []))
def test_half_precision_weights_peel_line_by_line_to_the_float32_numbers(dtype, monkeypatch):
    """bf16/fp16 blocks are read a line at a time (no float32 copy of the weights): rows as numpy
    views of the weights themselves, columns from a transposed copy in the same 16-bit form made
    on first use (in memory, or in a temporary file when the budget is 0); float8 through torch.
    Their values are exact in float32, so the cores equal those of the float32 graph, with or
    without the in-memory copy, on the streamed path of large graphs too."""
    from graphnn.analyses import _blocks, _columns, _lines

    gen = torch.Generator().manual_seed(9)
    ws = [torch.randint(-64, 65, (d, s), generator=gen) / 64 for s, d in [(20, 16), (16, 12), (12, 4)]]
    half = make_graph([20, 16, 12, 4], [(f"w{i}", i, i + 1, w.to(dtype), 1) for i, w in enumerate(ws)])
    full = make_graph([20, 16, 12, 4], [(f"w{i}", i, i + 1, w.to(dtype).float(), 1) for i, w in enumerate(ws)])
    ref = sequential_peeling(dense_abs_adjacency(full))
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", -1)
    for budget in (_lines.TRANSPOSE_BUDGET_BYTES, 0):
        monkeypatch.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", budget)
        ends = _lines.line_ends(_blocks.place(_blocks.NodeSpace.of_graph(half), _blocks.load_abs_blocks(
            half, weighting=_blocks.Weighting(), dtype=torch.float32, device=torch.device("cpu"))))
        if dtype in (torch.bfloat16, torch.float16):
            rows, cols = ends[0::2], ends[1::2]
            assert all(isinstance(e.lines, np.ndarray) and e.lines.dtype.itemsize == 2 for e in rows)
            assert all(np.shares_memory(e.lines, _columns.numpy_bits(half.blocks[e.name].matrix(), e.lines.dtype))
                       for e in rows)
            assert all(isinstance(e.lines, _columns.TransposedLines) for e in cols)
            assert [c.lines.get() is not None and c.lines.spilled for c in cols] == [budget == 0] * len(cols)
            for c in cols:
                c.lines.close()
        else:
            assert all(isinstance(e.lines, _lines.TorchLines) for e in ends)
        np.testing.assert_allclose(graphnn.hypercore(half)["core"].to_numpy(), ref, rtol=1e-12)
        assert graphnn.hypercore(half)["core"].tolist() == graphnn.hypercore(full)["core"].tolist()
        assert graphnn.hypercore(half, threshold=0.5)["core"].tolist() == \
            graphnn.hypercore(full, threshold=0.5)["core"].tolist()
        assert graphnn.hypercore(half, top=0.3)["core"].tolist() == \
            graphnn.hypercore(full, top=0.3)["core"].tolist()


def removal_order(a: np.ndarray) -> list[int]:
    """The order in which :func:`sequential_peeling` removes the neurons."""
    s = a.sum(1).astype(float)
    alive = np.ones(len(a), bool)
    order = []
    for _ in range(len(a)):
        i = int(np.flatnonzero(alive)[np.argmin(s[alive])])
        order.append(i)
        alive[i] = False
        s -= a[i]
    return order


def test_each_removal_reads_its_own_lines_once(monkeypatch):
    """The work of the peeling is the edges of the removed neurons: over a whole peeling, every
    adjacency line of every block end is read once when its neuron goes, unless no neuron of
    the line's target partition is left then (the line would change removed neurons only), and
    never otherwise, on a graph of many small blocks and many levels."""
    import importlib

    from graphnn.analyses import _lines

    hc = importlib.import_module("graphnn.analyses.hypercore")
    reads: dict[tuple[str, int], list[int]] = {}

    class Counting:
        def __init__(self, lines, key):
            self.lines, self.key = lines, key
            self.shape, self.dtype = lines.shape, lines.dtype

        def __getitem__(self, i):
            reads.setdefault(self.key, []).append(int(i))
            return self.lines[i]

    real = _lines.line_ends
    seen = {}

    def counted(placed, *args, **kw):
        ends = real(placed, *args, **kw)
        for k, e in enumerate(ends):
            seen[(e.name, k)] = (e.start, e.size, e.t_part)
            e.lines = Counting(e.lines, (e.name, k))
        return ends

    monkeypatch.setattr(hc, "line_ends", counted)
    gen = torch.Generator().manual_seed(2)

    def dyadic(d, s):  # multiples of 1/64: every sum exact, so both peelings remove in one order
        return torch.round(64 * torch.randn(d, s, generator=gen, dtype=torch.float64)) / 64

    sizes = [int(x) for x in torch.randint(1, 9, (30,), generator=gen)]
    blocks = [(f"b{i}", i, i + 1, dyadic(sizes[i + 1], sizes[i]), 1) for i in range(29)]
    blocks += [(f"s{i}", i, i + 3, dyadic(sizes[i + 3], sizes[i]), 1) for i in range(0, 27, 4)]
    g = make_graph(sizes, blocks)
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_allclose(got, sequential_peeling(dense_abs_adjacency(g)), rtol=1e-12)
    assert len(np.unique(got)) > 30  # many levels
    assert len(seen) == 2 * len(blocks)
    gone = {v: t for t, v in enumerate(removal_order(dense_abs_adjacency(g)))}
    skipped = 0
    for key, (start, size, (lo, hi)) in seen.items():
        last_target = max(gone[u] for u in range(lo, hi))
        want = [i for i in range(size) if gone[start + i] < last_target]
        assert sorted(reads.get(key, [])) == want, key  # each line once, when a target is left
        skipped += size - len(want)
    assert skipped > 0


def _csr_of_adjacency(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of an integer symmetric adjacency, an entry repeated per edge copy
    (a self-loop ``a[v, v] = 2`` is listed twice), neighbour lists in a shuffled order."""
    rng = np.random.default_rng(len(a))
    rows = [np.repeat(np.arange(len(a)), a[v].astype(np.int64)) for v in range(len(a))]
    indices = np.concatenate([rng.permutation(r) for r in rows] + [np.zeros(0, np.int64)]).astype(np.int32)
    indptr = np.concatenate(([0], np.cumsum([r.size for r in rows]))).astype(np.int64)
    return indptr, indices


def _multigraph_adjacency(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    a = np.zeros((n, n), dtype=np.int64)
    for u, v in edges:
        a[u, v] += 1
        a[v, u] += 1  # a self-loop: 2 on the diagonal
    return a


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4 * n))))
def test_csr_peelings_equal_the_one_at_a_time_peeling_of_the_multigraph(case):
    """Both CSR peelings (scipy's compiled helpers and plain numpy) on hand-written CSRs with
    parallel edges, self-loops and isolated nodes equal the sequential peeling, and networkx
    where the graph is simple."""
    from graphnn.analyses import kcore

    n, edges = case
    a = _multigraph_adjacency(n, edges)
    indptr, indices = _csr_of_adjacency(a)
    ref = sequential_peeling(a.astype(float))
    fast = kcore.peel_csr(n, indptr.copy(), indices.copy())
    slow = kcore._peel_csr_numpy(n, indptr.copy(), indices.copy())
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(slow, ref)
    simple = {(min(u, v), max(u, v)) for u, v in edges if u != v}
    if len(simple) == len(edges):
        G = nx.Graph()
        G.add_nodes_from(range(n))
        G.add_edges_from(simple)
        assert fast.tolist() == [nx.core_number(G)[v] for v in range(n)]


@pytest.mark.parametrize("shape", ["chain", "star", "clique", "two-cliques-and-a-chain"])
def test_csr_peeling_by_hand(shape):
    """Shapes whose numbers are known: a chain (1 everywhere; one small wave after another), a
    star (1), a clique of 30 (29; one large wave), two cliques joined by a chain."""
    from graphnn.analyses import kcore

    if shape == "chain":
        n, edges, want = 500, [(i, i + 1) for i in range(499)], [1] * 500
    elif shape == "star":
        n, edges, want = 301, [(0, i) for i in range(1, 301)], [1] * 301
    elif shape == "clique":
        n, edges, want = 30, list(itertools.combinations(range(30), 2)), [29] * 30
    else:
        edges = list(itertools.combinations(range(6), 2)) + list(itertools.combinations(range(6, 10), 2))
        edges += [(5, 10), (10, 11), (11, 6)]
        n, want = 12, [5] * 6 + [3] * 4 + [2, 2]
    indptr, indices = _csr_of_adjacency(_multigraph_adjacency(n, edges))
    assert kcore.peel_csr(n, indptr, indices).tolist() == want
    assert kcore._peel_csr_numpy(n, indptr, indices).tolist() == want


def test_csr_peeling_without_scipys_compiled_helpers_uses_numpy(monkeypatch):
    from graphnn.analyses import kcore

    g = random_mlp([20, 15, 10], seed=3)
    want = graphnn.hypercore(g, threshold=0.3)["core"].to_numpy()
    monkeypatch.setattr(kcore, "_sparsetools", lambda: None)
    np.testing.assert_array_equal(graphnn.hypercore(g, threshold=0.3)["core"].to_numpy(), want)
    np.testing.assert_array_equal(want, sequential_peeling(thresholded_adjacency(g, 0.3)))


def test_rows_of_a_copied_block_are_read_from_its_signed_matrix():
    """A block held as a transposed |W| copy: its destination lines are |W|'s rows read from the
    signed matrix (contiguous, the copy's dtype, the same values), its source lines the copy."""
    from graphnn.analyses._blocks import NodeSpace, Weighting, load_abs_blocks, place
    from graphnn.analyses._lines import line_ends

    g = random_mlp([7, 5, 3], seed=2)
    blocks = load_abs_blocks(g, weighting=Weighting(), dtype=torch.float64, device=torch.device("cpu"))
    assert all(b.t is not None and b.signed_rows is not None for b in blocks)
    ends = line_ends(place(NodeSpace.of_graph(g), blocks))
    for b in g.blocks.values():
        rows, cols = [e.lines for e in ends if e.name == b.name]
        w = b.matrix().abs().double().numpy()
        assert rows.dtype == cols.dtype == np.float64 and rows.flags.c_contiguous and cols.flags.c_contiguous
        np.testing.assert_array_equal(rows, w)
        np.testing.assert_array_equal(cols, w.T)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.lists(st.integers(0, 300), min_size=1, max_size=4),
       st.integers(0, 2**31), st.sampled_from(["normal", "ties", "tiny", "inf"]))
def test_kth_largest_equals_a_sort(kind, sizes, seed, values):
    """kth_largest (a histogram of float bit patterns, then a partition) equals the k-th value of
    a descending sort, for every k, across several arrays, with ties, zeros, subnormals and inf."""
    from graphnn.analyses.hypercore import kth_largest

    rng = np.random.default_rng(seed)
    arrays = []
    for n in sizes:
        if values == "normal":
            a = np.abs(rng.standard_normal(n))
        elif values == "ties":
            a = rng.integers(0, 4, n) * 0.25
        elif values == "tiny":
            a = np.abs(rng.standard_normal(n)) * np.finfo(kind).tiny * rng.choice([1e-3, 1, 1e3], n)
        else:
            a = np.where(rng.random(n) < 0.2, np.inf, np.abs(rng.standard_normal(n)) * 1e30)
        arrays.append(a.astype(kind))
    arrays = [a for a in arrays if a.size] or [np.zeros(1, kind)]
    ref = np.sort(np.concatenate(arrays))[::-1]
    for k in sorted({1, ref.size, *rng.integers(1, ref.size + 1, 8).tolist()}):
        got = kth_largest(arrays, k)
        assert got == float(ref[k - 1]), (k, got, ref[k - 1])


@pytest.mark.parametrize("q", [0.05, 0.3, 1.0])
def test_top_reads_only_the_in_group_entries_of_grouped_blocks(q):
    """top= on a graph with a depthwise and a 3-group block whose matrices hold large garbage
    outside their groups: the threshold is the ceil(q E)-th largest structural |w| (written
    from the masks by hand) and the cores equal networkx's on the kept edges."""
    gen = torch.Generator().manual_seed(8)
    garbage = lambda r, c: torch.randn(r, c, generator=gen, dtype=torch.float64) * 100  # noqa: E731
    g = make_graph([6, 12, 12, 9], [("a", 0, 1, torch.randn(12, 6, generator=gen, dtype=torch.float64), 1),
                                    ("dw", 1, 2, garbage(12, 12), 12),
                                    ("grp", 2, 3, garbage(9, 12), 3)])
    structural = np.concatenate([b.matrix().abs().numpy()[b.structure_mask().numpy()] if b.structure_mask() is not None
                                 else b.matrix().abs().numpy().ravel() for b in g.blocks.values()])
    assert structural.size == 72 + 12 + 36
    tau = np.sort(structural)[::-1][int(np.ceil(q * structural.size)) - 1]
    got = graphnn.hypercore(g, top=q)
    assert got.attrs["threshold"] == tau
    ref = nx.core_number(_nx_graph(g, tau))
    np.testing.assert_array_equal(got["core"].to_numpy(), [ref[n] for n in g.nodes()])


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_ties_in_small_integers_equal_the_sequential_peeling(seed):
    """Integer weights in {0, 1, 2} around and on depthwise blocks: many exact ties between the
    scalar (depthwise) updates and the segment minima; the numbers equal the sequential
    peeling exactly."""
    gen = torch.Generator().manual_seed(seed)
    ints = lambda r, c: torch.randint(0, 3, (r, c), generator=gen).double()  # noqa: E731
    sizes = [5, 9, 9, 9, 4]
    g = make_graph(sizes, [("a", 0, 1, ints(9, 5), 1), ("dw1", 1, 2, ints(9, 9), 9),
                           ("dw2", 2, 3, ints(9, 9), 9), ("b", 3, 4, ints(4, 9), 1), ("skip", 1, 3, ints(9, 9), 1)])
    got = graphnn.hypercore(g)["core"].to_numpy()
    np.testing.assert_array_equal(got, sequential_peeling(dense_abs_adjacency(g)))
