"""The LayeredGraph model and its interop exports."""

import networkx as nx
import numpy as np
import pytest
import torch

import graphnn
from models import ResNet, DepthwiseSeparable, seeded


def test_from_matrices_validates():
    with pytest.raises(ValueError, match="unknown partition"):
        graphnn.LayeredGraph.from_matrices({"a": 2}, {"w": ("a", "b", torch.ones(3, 2))})
    with pytest.raises(ValueError, match="size"):
        graphnn.LayeredGraph.from_matrices({"a": 2, "b": 4}, {"w": ("a", "b", torch.ones(3, 2))})


@pytest.mark.parametrize("cls", [ResNet, DepthwiseSeparable])
def test_to_scipy_equals_networkx_adjacency(cls):
    g = graphnn.extract(seeded(cls))
    nodes = list(g.nodes())
    for weight in ("abs", "signed"):
        a = g.to_scipy(weight=weight).toarray()
        b = nx.to_numpy_array(g.to_networkx(weight=weight), nodelist=nodes, weight="weight")
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
        assert np.allclose(a, a.T)


def test_to_igraph_equals_networkx():
    g = graphnn.extract(seeded(ResNet))
    ig = g.to_igraph(weight="abs")
    nxg = g.to_networkx(weight="abs")
    assert ig.vcount() == g.num_nodes and ig.ecount() == nxg.number_of_edges()
    nodes = list(g.nodes())
    for e in ig.es:
        u, v = nodes[e.source], nodes[e.target]
        assert e["weight"] == pytest.approx(nxg[u][v]["weight"], rel=1e-12)
    assert ig.vs[g.offset("linear")]["layer"] == "linear"
    assert ig.vs[g.offset("linear") + 3]["neuron"] == 3


def test_multipartite_layout_works():
    g = graphnn.extract(seeded(DepthwiseSeparable))
    pos = nx.multipartite_layout(g.to_networkx(), subset_key="subset")
    assert len(pos) == g.num_nodes


def test_exports_refuse_large_graphs_with_advice():
    g = graphnn.extract(seeded(ResNet))
    with pytest.raises(graphnn.GraphTooLargeError, match="graphnn.eigenvector_centrality"):
        g.to_networkx(max_edges=100)
    with pytest.raises(MemoryError):
        g.to_igraph(max_edges=100)
    with pytest.raises(graphnn.GraphTooLargeError):
        g.to_scipy(max_edges=100)


def test_default_threshold_protects_networkx():
    big = graphnn.LayeredGraph.from_matrices({"a": 4096, "b": 4096}, {"w": ("a", "b", torch.zeros(4096, 4096))})
    assert big.num_edges > 5_000_000
    with pytest.raises(graphnn.GraphTooLargeError, match="16,777,216 edges"):
        big.to_networkx()


def test_counts_and_offsets():
    g = graphnn.extract(seeded(ResNet))
    assert g.num_nodes == sum(p.size for p in g.partitions.values())
    assert g.num_edges == sum(b.num_edges for b in g.blocks.values())
    assert g.node_index("conv1", 0) == g.partitions["input"].size
    assert list(g.nodes())[g.node_index("linear", 2)] == ("linear", 2)
    with pytest.raises(IndexError):
        g.node_index("linear", 10)
    assert {b.name for b in g.blocks_into("layers.1.0.conv2")} == {
        "layers.1.0.conv2.weight", "layers.1.0.shortcut.0.weight", "layers.1.1.conv2.weight"}
    assert "LayeredGraph(" in repr(g)
    assert 0 < g.coverage_fraction < 1
