"""Torchvision-style CNN blocks written here (no torchvision): ShuffleNet-v2, Inception, DenseNet,
ResNeXt, ConvNeXt with layer scale. For each, the partitions, blocks (source, destination, shape,
index map) and edge counts are worked out by hand, and extraction must be exact (no
TopologyWarning)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphnn
from graphnn.errors import TopologyWarning


def exact(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        return graphnn.extract(model)


def blocks(g):
    return {b.name: (b.src, b.dst, b.shape, None if b.src_index is None else b.src_index.tolist())
            for b in g.blocks.values()}


def seeded(cls, *args):
    torch.manual_seed(0)
    return cls(*args).eval()


# -- ShuffleNet-v2 ---------------------------------------------------------------------------------
def channel_shuffle(x, groups):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet-v2 basic unit (stride 1): split channels in two halves, transform the second
    (1x1 conv, 3x3 depthwise conv, 1x1 conv), concatenate, shuffle with 2 groups."""

    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.pw1 = nn.Conv2d(h, h, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(h)
        self.dw = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False)
        self.bn2 = nn.BatchNorm2d(h)
        self.pw2 = nn.Conv2d(h, h, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(h)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        y = F.relu(self.bn1(self.pw1(x2)))
        y = self.bn2(self.dw(y))
        y = F.relu(self.bn3(self.pw2(y)))
        return channel_shuffle(torch.cat((x1, y), dim=1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.u1 = ShuffleUnit(8)
        self.u2 = ShuffleUnit(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.u2(self.u1(F.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_shufflenet_v2():
    g = exact(seeded(ShuffleNetV2))
    # by hand: u1 reads stem[4:8]; its output is cat(stem[0:4], u1.pw2) shuffled:
    #   [stem0, pw2_0, stem1, pw2_1, stem2, pw2_2, stem3, pw2_3]
    # u2.pw1 reads the second half [stem2, u1.pw2_2, stem3, u1.pw2_3] (columns 0, 2 from stem; 1, 3 from u1.pw2)
    # u2's output before the shuffle: [stem0, u1_0, stem1, u1_1, u2_0, u2_1, u2_2, u2_3];
    # after it: [stem0, u2_0, u1_0, u2_1, stem1, u2_2, u1_1, u2_3], read by fc
    assert blocks(g) == {
        "stem.weight": ("input", "stem", (8, 3), None),
        "u1.pw1.weight": ("stem", "u1.pw1", (4, 4), [4, 5, 6, 7]),
        "u1.dw.weight": ("u1.pw1", "u1.dw", (4, 4), None),
        "u1.pw2.weight": ("u1.dw", "u1.pw2", (4, 4), None),
        "u2.pw1.weight[in stem]": ("stem", "u2.pw1", (4, 2), [2, 3]),
        "u2.pw1.weight[in u1.pw2]": ("u1.pw2", "u2.pw1", (4, 2), [2, 3]),
        "u2.dw.weight": ("u2.pw1", "u2.dw", (4, 4), None),
        "u2.pw2.weight": ("u2.dw", "u2.pw2", (4, 4), None),
        "fc.weight[in stem]": ("stem", "fc", (10, 2), [0, 1]),
        "fc.weight[in u2.pw2]": ("u2.pw2", "fc", (10, 4), None),  # all of u2.pw2, in order
        "fc.weight[in u1.pw2]": ("u1.pw2", "fc", (10, 2), [0, 1]),
    }
    e = {b.name: b.num_edges for b in g.blocks.values()}
    assert e["u1.dw.weight"] == 4 and e["u2.pw1.weight[in stem]"] == 8
    assert g.num_edges == 24 + (16 + 4 + 16) * 2 + 80
    # the weights behind the index-mapped blocks are the right columns of the parameters
    m = seeded(ShuffleNetV2)
    w = m.u2.pw1.weight.detach().abs().flatten(1)
    torch.testing.assert_close(g.blocks["u2.pw1.weight[in stem]"].matrix(), w[:, [0, 2]])
    torch.testing.assert_close(g.blocks["fc.weight[in u2.pw2]"].matrix(), m.fc.weight.detach()[:, [1, 3, 5, 7]])


def test_shufflenet_v2_strength_is_that_of_the_hand_wired_network():
    """Out-strengths worked out by hand: stem channel 2 skips u1 (first half) and is u2's x2[0]
    (u2.pw1 column 0); channel 0 skips both units and reaches fc column 0; channel 4 is u1's x2[0]."""
    m = seeded(ShuffleNetV2)
    g = exact(m)
    out = graphnn.strength(g, "out").set_index(["layer", "neuron"])["out_strength"]
    w_u2 = m.u2.pw1.weight.detach().flatten(1).abs()  # 1x1 kernels: l2 aggregate = |w|
    assert out[("stem", 2)] == pytest.approx(float(w_u2[:, 0].sum()), rel=1e-6)
    assert out[("stem", 0)] == pytest.approx(float(m.fc.weight.detach()[:, 0].sum()), rel=1e-5)
    assert out[("stem", 4)] == pytest.approx(float(m.u1.pw1.weight.detach().flatten(1).abs()[:, 0].sum()), rel=1e-6)


def test_shufflenet_v2_centrality_and_cores_equal_networkx_on_the_export():
    import networkx as nx
    g = exact(seeded(ShuffleNetV2))
    h = g.to_networkx(weight="abs")
    ref = nx.eigenvector_centrality(h, weight="weight", tol=1e-13, max_iter=100_000)
    got = graphnn.eigenvector_centrality(g, device="cpu")["centrality"].to_numpy()
    np.testing.assert_allclose(got, [ref[n] for n in g.nodes()], atol=1e-6)
    tau = 0.2
    cores = graphnn.hypercore(g, threshold=tau, device="cpu")["core"].tolist()
    t = nx.Graph()
    t.add_nodes_from(h.nodes())
    # no parallel edges here (each block reads distinct neurons), so thresholding per edge is networkx's
    t.add_edges_from((u, v) for u, v, w in h.edges(data="weight") if w >= tau)
    ref_c = nx.core_number(t)
    assert cores == [ref_c[n] for n in g.nodes()]


def test_shufflenet_v2_rewire_and_hcore_reinit_run_on_index_mapped_blocks():
    m = seeded(ShuffleNetV2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    graphnn.rewire.pa_rewire_(m, seed=0, device="cpu")
    w0, w1 = before["u2.pw1.weight"], m.state_dict()["u2.pw1.weight"]
    assert not torch.equal(w0, w1)
    assert torch.equal(torch.sort(w0.flatten()).values, torch.sort(w1.flatten()).values)  # a permutation
    graphnn.rewire.hcore_reinit_(m, seed=0)
    assert all(torch.isfinite(p).all() for p in m.parameters())


# -- Inception ---------------------------------------------------------------------------------------
class Inception(nn.Module):
    def __init__(self, cin=6):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 4, 1)
        self.b2a, self.b2b = nn.Conv2d(cin, 3, 1), nn.Conv2d(3, 5, 3, padding=1)
        self.b3a, self.b3b = nn.Conv2d(cin, 2, 1), nn.Conv2d(2, 3, 5, padding=2)
        self.b4 = nn.Conv2d(cin, 2, 1)
        self.out = nn.Conv2d(14, 4, 1)

    def forward(self, x):
        y = torch.cat([F.relu(self.b1(x)), F.relu(self.b2b(F.relu(self.b2a(x)))),
                       F.relu(self.b3b(F.relu(self.b3a(x)))),
                       F.relu(self.b4(F.max_pool2d(x, 3, stride=1, padding=1)))], 1)
        return self.out(y)


def test_inception_block():
    g = exact(seeded(Inception))
    assert blocks(g) == {
        "b1.weight": ("input", "b1", (4, 6), None),
        "b2a.weight": ("input", "b2a", (3, 6), None),
        "b2b.weight": ("b2a", "b2b", (5, 3), None),
        "b3a.weight": ("input", "b3a", (2, 6), None),
        "b3b.weight": ("b3a", "b3b", (3, 2), None),
        "b4.weight": ("input", "b4", (2, 6), None),
        "out.weight[in 0:4]": ("b1", "out", (4, 4), None),
        "out.weight[in 4:9]": ("b2b", "out", (4, 5), None),
        "out.weight[in 9:12]": ("b3b", "out", (4, 3), None),
        "out.weight[in 12:14]": ("b4", "out", (4, 2), None),
    }
    assert g.num_edges == 24 + 18 + 15 + 12 + 6 + 12 + 56


# -- DenseNet ----------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], 1)


class DenseNetBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.l1, self.l2 = DenseLayer(4, 2), DenseLayer(6, 2)
        self.transition = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return F.avg_pool2d(self.transition(self.l2(self.l1(self.stem(x)))), 2)


def test_densenet_block():
    g = exact(seeded(DenseNetBlock))
    assert blocks(g) == {
        "stem.weight": ("input", "stem", (4, 3), None),
        "l1.conv.weight": ("stem", "l1.conv", (2, 4), None),
        "l2.conv.weight[in 0:4]": ("stem", "l2.conv", (2, 4), None),
        "l2.conv.weight[in 4:6]": ("l1.conv", "l2.conv", (2, 2), None),
        "transition.weight[in 0:4]": ("stem", "transition", (3, 4), None),
        "transition.weight[in 4:6]": ("l1.conv", "transition", (3, 2), None),
        "transition.weight[in 6:8]": ("l2.conv", "transition", (3, 2), None),
    }
    assert g.num_edges == 12 + 8 + 12 + 24


# -- ResNeXt -----------------------------------------------------------------------------------------
class ResNeXtBlock(nn.Module):
    def __init__(self, c=16, width=8, cardinality=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(c, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(x + self.bn3(self.conv3(y)))


def test_resnext_block():
    g = exact(seeded(ResNeXtBlock))
    assert {n: (p.size, p.members) for n, p in g.partitions.items()} == {
        "input": (3, ()), "stem": (16, ("stem", "conv3")), "conv1": (8, ()), "conv2": (8, ())}
    assert blocks(g) == {
        "stem.weight": ("input", "stem", (16, 3), None),
        "conv1.weight": ("stem", "conv1", (8, 16), None),
        "conv2.weight": ("conv1", "conv2", (8, 8), None),
        "conv3.weight": ("conv2", "stem", (16, 8), None),
    }
    assert g.blocks["conv2.weight"].groups == 4 and g.blocks["conv2.weight"].num_edges == 16
    assert g.num_edges == 48 + 128 + 16 + 128


# -- ConvNeXt ----------------------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))  # layer scale

    def forward(self, x):
        x = self.stem(x)
        y = self.dwconv(x)
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


def test_convnext_block_with_layer_scale():
    g = exact(seeded(ConvNeXtBlock))
    assert {n: (p.size, p.members) for n, p in g.partitions.items()} == {
        "input": (3, ()), "stem": (8, ("stem", "pwconv2")), "dwconv": (8, ()), "pwconv1": (32, ())}
    assert blocks(g) == {
        "stem.weight": ("input", "stem", (8, 3), None),
        "dwconv.weight": ("stem", "dwconv", (8, 8), None),
        "pwconv1.weight": ("dwconv", "pwconv1", (32, 8), None),
        "pwconv2.weight": ("pwconv1", "stem", (8, 32), None),
    }
    assert g.blocks["dwconv.weight"].num_edges == 8
    assert g.num_edges == 24 + 8 + 256 + 256
    assert g.coverage.set_index("name").loc["gamma", "status"] == "skipped"


def test_hcore_reinit_factors_use_the_neurons_behind_the_index_maps():
    """Entry (i, j) of u2.pw1's weight reads a stem or u1.pw2 neuron through the shuffle: its
    factor is c(u2.pw1 i) * c(that neuron), not c(column j)."""
    import pandas as pd
    from graphnn.rewire.hcore_init import _core_vectors, endpoint_products
    g = exact(seeded(ShuffleNetV2))
    rows = [{"layer": p.name, "neuron": k, "core": 1.0 + 10 * i + k}
            for i, p in enumerate(g.partitions.values()) for k in range(p.size)]
    cores = pd.DataFrame(rows)
    core = {(r["layer"], r["neuron"]): r["core"] for r in rows}
    prod, mapped = endpoint_products(g, _core_vectors(cores, g))["u2.pw1.weight"]
    assert bool(mapped.all())
    # u2.pw1 input channel j (of 4) reads: j=0 -> stem 2, j=1 -> u1.pw2 2, j=2 -> stem 3, j=3 -> u1.pw2 3
    reads = [("stem", 2), ("u1.pw2", 2), ("stem", 3), ("u1.pw2", 3)]
    for i in range(4):
        for j, src in enumerate(reads):
            assert float(prod[i, j, 0, 0]) == pytest.approx(core[("u2.pw1", i)] * core[src])


def test_report_renders_index_mapped_graphs():
    """The HTML report of the ShuffleNet graph (permutation and slice index maps) lists every
    partition in its layer table, with the neuron counts of the graph."""
    from graphnn.report import Provenance, render_report

    g = exact(seeded(ShuffleNetV2))
    assert any(b.src_index is not None for b in g.blocks.values())
    html = render_report(graphnn.analyse(g), Provenance(source="ShuffleNetV2"), g)
    for name, p in g.partitions.items():
        assert f">{name}<" in html
    assert f"{g.num_nodes:,}" in html or str(g.num_nodes) in html
