"""Hypercore-guided re-initialisation (graph-model.md §3, graphnn's rule)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

import graphnn
from graphnn.rewire import hcore_reinit_
from graphnn.rewire.hcore_init import _core_vectors, endpoint_products, hcore_graph

torch.set_num_threads(1)


class ConvNet(nn.Module):
    """Every mapping case: conv, grouped conv, depthwise, grouped ConvTranspose, flatten + Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.ct = nn.ConvTranspose2d(8, 6, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x):
        x = self.bn(self.ct(self.dw(torch.relu(self.c2(self.c1(x))))))
        return self.fc2(torch.relu(self.fc(x.flatten(1))))


def random_cores(graph, seed=0, low=0.5, high=3.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in graph.partitions.values():
        for i, c in enumerate(rng.uniform(low, high, p.size)):
            rows.append({"layer": p.name, "neuron": i, "core": c})
    return pd.DataFrame(rows)


def core_of(cores: pd.DataFrame, layer: str) -> np.ndarray:
    sub = cores[cores.layer == layer].sort_values("neuron")
    return sub.core.to_numpy()


def test_endpoint_products_match_explicit_index_rules():
    net = ConvNet()
    g = hcore_graph(net)
    cores = random_cores(g)
    prods = endpoint_products(g, _core_vectors(cores, g))
    src = {b.param: core_of(cores, b.src) for b in g.blocks.values()}
    dst = {b.param: core_of(cores, b.dst) for b in g.blocks.values()}
    # conv (c_out, c_in/groups, k, k): entry (i, j) uses output channel i, input channel g(i)*cin_g + j
    for name, groups in (("c1.weight", 1), ("c2.weight", 2), ("dw.weight", 8)):
        w = net.get_parameter(name)
        cout, cin_g = w.shape[:2]
        expected = np.empty(w.shape)
        for i in range(cout):
            for j in range(cin_g):
                jj = (i // (cout // groups)) * cin_g + j
                expected[i, j] = dst[name][i] * src[name][jj]
        prod, mapped = prods[name]
        np.testing.assert_allclose(prod.numpy(), expected, rtol=1e-12)
        assert bool(mapped.all())
    # conv transpose (c_in, c_out/groups, k, k): entry (a, b) joins input a to output g(a)*cout_g + b
    w = net.ct.weight
    cin, cout_g = w.shape[:2]
    expected = np.empty(w.shape)
    for a in range(cin):
        for b in range(cout_g):
            expected[a, b] = src["ct.weight"][a] * dst["ct.weight"][(a // (cin // 2)) * cout_g + b]
    np.testing.assert_allclose(prods["ct.weight"][0].numpy(), expected, rtol=1e-12)
    # Linear after flatten of a (6, 4, 4) map: column k belongs to channel k // 16
    w = net.fc.weight
    expected = np.array([[dst["fc.weight"][i] * src["fc.weight"][k // 16] for k in range(96)] for i in range(10)])
    np.testing.assert_allclose(prods["fc.weight"][0].numpy(), expected, rtol=1e-12)


def test_endpoint_products_of_fused_qkv_rows():
    mha = nn.MultiheadAttention(8, 2)
    with pytest.warns(graphnn.TopologyWarning):
        g = hcore_graph(mha)
    cores = random_cores(g, seed=1)
    prod, mapped = endpoint_products(g, _core_vectors(cores, g))["in_proj_weight"]
    assert bool(mapped.all())
    for part, k in zip("qkv", range(3)):
        blk = g.blocks[f"in_proj_weight[{part}]"]
        expected = np.outer(core_of(cores, blk.dst), core_of(cores, blk.src))
        np.testing.assert_allclose(prod[k * 8:(k + 1) * 8].numpy(), expected, rtol=1e-12)


def fresh_draws(net: nn.Module, names, seed, init=torch.nn.init.kaiming_normal_):
    """The base initialiser's draws for these parameters, in this order, with this seed."""
    torch.manual_seed(seed)
    out = {}
    for n in names:
        t = torch.empty_like(net.get_parameter(n))
        init(t)
        out[n] = t
    return out


MAPPED = ["c1.weight", "c2.weight", "dw.weight", "ct.weight", "fc.weight", "fc2.weight"]


def test_gamma_zero_is_the_base_initialiser():
    torch.manual_seed(0)
    net = ConvNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    hcore_reinit_(net, gamma=0, seed=5)
    expected = fresh_draws(ConvNet(), MAPPED, 5)
    for k, v in net.state_dict().items():
        if k in expected:
            assert torch.equal(v, expected[k]), k
        else:  # biases, BatchNorm parameters and buffers keep their (pre-trained) values
            assert torch.equal(v, before[k]), k


def test_gamma_zero_statistics_match_kaiming_normal():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
    hcore_reinit_(lin, gamma=0, seed=1)
    w = lin[0].weight.detach().double().flatten().numpy()
    std = math.sqrt(2.0 / 256)  # He normal, fan_in
    assert scipy.stats.kstest(w / std, "norm").pvalue > 1e-3
    assert abs(w.mean()) < 4 * std / math.sqrt(w.size)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_std_equals_the_base_draw_and_entries_grow_with_endpoint_cores(gamma):
    torch.manual_seed(0)
    net = ConvNet()
    g = hcore_graph(net)
    cores = random_cores(g, seed=2)
    prods = endpoint_products(g, _core_vectors(cores, g))
    hcore_reinit_(net, gamma=gamma, seed=9, cores=cores)
    base = fresh_draws(ConvNet(), MAPPED, 9)
    for name in MAPPED:
        w = net.get_parameter(name).detach().double()
        b = base[name].double()
        assert math.isclose(float(w.std()), float(b.std()), rel_tol=1e-6), name
        # w = b * K * (c_i c_j / mean)^(gamma/2): the ratio grows with the endpoint product
        ratio = (w / b).flatten()
        prod = prods[name][0].flatten()
        factor = (prod / prod.mean()) ** (gamma / 2)
        k = ratio / factor
        np.testing.assert_allclose(k.numpy(), float(k[0]), rtol=1e-5)
        order = torch.argsort(prod)
        assert bool((ratio[order].diff() >= -1e-6 * ratio.abs().max()).all())
        assert float(ratio.max() / ratio.min()) > 1.2


def test_magnitudes_follow_the_cores_statistically():
    """Mean |w| of an output unit rises with its core number (independent of the exact rule)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
    g = hcore_graph(net)
    cores = random_cores(g, seed=3, low=0.2, high=5.0)
    hcore_reinit_(net, gamma=1.0, seed=0, cores=cores)
    unit_mag = net[0].weight.detach().abs().mean(1).numpy()
    c = core_of(cores, g.blocks["0.weight"].dst)
    assert scipy.stats.spearmanr(unit_mag, c).statistic > 0.8


def test_same_seed_same_result_and_scope_block_table():
    def run(seed, scope="network", cores=None):
        torch.manual_seed(0)
        net = ConvNet()
        hcore_reinit_(net, gamma=1.0, seed=seed, scope=scope, cores=cores)
        return [p.detach().clone() for p in net.parameters()]

    torch.manual_seed(0)
    g = hcore_graph(ConvNet())
    cores = random_cores(g)
    a, b, c = run(1, cores=cores), run(1, cores=cores), run(2, cores=cores)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # a block-scope table: core_in for destinations, core_out for sources; with both equal to
    # the network numbers the result is the same
    per_block = cores.assign(core_in=cores.core, core_out=cores.core).drop(columns="core")
    d = run(1, scope="block", cores=per_block)
    assert all(torch.equal(x, y) for x, y in zip(a, d))
    # different core_in / core_out: the entry (i, j) uses core_in[i] * core_out[j]
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    g2 = hcore_graph(net)
    rng = np.random.default_rng(0)
    tab = random_cores(g2).assign(core_in=lambda d: rng.uniform(1, 2, len(d)),
                                  core_out=lambda d: rng.uniform(3, 4, len(d))).drop(columns="core")
    prod = endpoint_products(g2, _core_vectors(tab, g2))["2.weight"][0]
    blk = g2.blocks["2.weight"]
    cin = tab[tab.layer == blk.dst].sort_values("neuron").core_in.to_numpy()
    cout = tab[tab.layer == blk.src].sort_values("neuron").core_out.to_numpy()
    np.testing.assert_allclose(prod.numpy(), np.outer(cin, cout), rtol=1e-12)


def test_bad_inputs():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="gamma must be"):
        hcore_reinit_(net, gamma=-1)
    with pytest.raises(ValueError, match="scope must be"):
        hcore_reinit_(net, scope="layer")
    with pytest.raises(ValueError, match="columns layer, neuron, core"):
        hcore_reinit_(net, cores=pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="rows for partition"):
        hcore_reinit_(net, cores=pd.DataFrame({"layer": ["input"], "neuron": [0], "core": [1.0]}))
    g = hcore_graph(net)
    zero = random_cores(g).assign(core=0.0)
    with pytest.raises(ValueError, match="hypercore number 0"):
        hcore_reinit_(net, cores=zero)
    with pytest.raises(TypeError, match="rewire_checkpoint"):
        hcore_reinit_(torch.zeros(3, 3))


def test_with_graphnn_hypercore_on_a_pretrained_mlp():
    """End to end: graphnn's weighted hypercore of a briefly trained MLP drives the factors."""
    from sklearn.datasets import load_digits

    from graphnn.rewire.hcore_init import compute_cores

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x[:400] / 16.0, dtype=torch.float32), torch.tensor(y[:400])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    g = hcore_graph(net)
    cores = compute_cores(g, "network")
    assert (cores.core > 0).all()
    prods = endpoint_products(g, _core_vectors(cores, g))
    hcore_reinit_(net, gamma=1.0, seed=4)
    base = fresh_draws(nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10)), ["0.weight", "2.weight"], 4)
    for name in ("0.weight", "2.weight"):
        f = (prods[name][0] / prods[name][0].mean()) ** 0.5
        scaled = base[name].double() * f
        expected = scaled * (base[name].double().std() / scaled.std())
        torch.testing.assert_close(net.get_parameter(name).detach().double(), expected, rtol=1e-5, atol=1e-7)
