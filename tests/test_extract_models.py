"""Extraction of modules: partitions, blocks and edge counts worked out by hand, and
``to_networkx()`` against a graph built independently, edge by edge, from the weights."""

import networkx as nx
import pytest
import torch

import graphnn
from models import MLP, DepthwiseSeparable, EncoderMHA, EncoderQKV, LeNet, ResNet, seeded

torch.set_num_threads(1)


# -- an independent oracle: one Python loop per edge ------------------------------------------
def linear_edges(w):
    """Edges of an (out, in) weight: (i, j) -> W[i, j]."""
    w = w.detach()
    return {(i, j): float(w[i, j]) for i in range(w.shape[0]) for j in range(w.shape[1])}


def conv_edges(w, groups=1):
    """Channel-level edges of a conv weight (c_out, c_in/groups, *k): L2 norm of each kernel slice."""
    w = w.detach()
    c_out, per_group = w.shape[0], w.shape[1]
    out_per_group = c_out // groups
    edges = {}
    for i in range(c_out):
        g = i // out_per_group
        for jj in range(per_group):
            j = g * per_group + jj
            edges[(i, j)] = float(torch.sqrt((w[i, jj].double() ** 2).sum()))
    return edges


def flatten_edges(w, channels):
    """Linear after flatten of (C, H, W): L2 norm over the positions of each channel."""
    w = w.detach()
    positions = w.shape[1] // channels
    return {(i, c): float(torch.sqrt((w[i, c * positions:(c + 1) * positions].double() ** 2).sum()))
            for i in range(w.shape[0]) for c in range(channels)}


def oracle_graph(partitions, blocks):
    """networkx graph from [(name, size)] and [(src, dst, {(i, j): weight})]."""
    g = nx.Graph()
    for k, (name, size) in enumerate(partitions):
        for i in range(size):
            g.add_node((name, i), layer=name, neuron=i, subset=k)
    for src, dst, edges in blocks:
        for (i, j), w in edges.items():
            u, v = (src, j), (dst, i)
            # two blocks joining the same pair of neurons (a residual block read and written
            # back into one stream) are parallel edges: the undirected graph sums them
            g.add_edge(u, v, weight=g[u][v]["weight"] + w if g.has_edge(u, v) else w)
    return g


def assert_same_graph(got: nx.Graph, want: nx.Graph):
    assert list(got.nodes) == list(want.nodes)
    assert dict(got.nodes(data=True)) == dict(want.nodes(data=True))
    assert got.number_of_edges() == want.number_of_edges()
    for u, v, w in want.edges(data="weight"):
        assert got.has_edge(u, v), (u, v)
        assert got[u][v]["weight"] == pytest.approx(w, rel=1e-5, abs=1e-7)


def shape_table(g):
    return {b.name: (b.src, b.dst, b.shape) for b in g.blocks.values()}


# -- models -----------------------------------------------------------------------------------
def test_mlp():
    m = seeded(MLP, sizes=(12, 8, 6, 3))
    g = graphnn.extract(m)
    parts = [("input", 12), ("layers.0", 8), ("layers.1", 6), ("layers.2", 3)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    assert shape_table(g) == {
        "layers.0.weight": ("input", "layers.0", (8, 12)),
        "layers.1.weight": ("layers.0", "layers.1", (6, 8)),
        "layers.2.weight": ("layers.1", "layers.2", (3, 6)),
    }
    assert g.num_nodes == 12 + 8 + 6 + 3
    assert g.num_edges == 12 * 8 + 8 * 6 + 6 * 3
    want = oracle_graph(parts, [
        ("input", "layers.0", linear_edges(m.layers[0].weight)),
        ("layers.0", "layers.1", linear_edges(m.layers[1].weight)),
        ("layers.1", "layers.2", linear_edges(m.layers[2].weight)),
    ])
    assert_same_graph(g.to_networkx(), want)
    cov = g.coverage.set_index("name")
    assert set(cov.index) == {n for n, _ in m.named_parameters()}
    assert (cov.loc[[f"layers.{i}.bias" for i in range(3)], "status"] == "skipped").all()
    assert cov.loc["layers.0.bias", "reason"].startswith("not an edge")


def test_lenet_flatten():
    m = seeded(LeNet)
    g = graphnn.extract(m)
    parts = [("input", 1), ("conv1", 6), ("conv2", 16), ("fc1", 120), ("fc2", 84), ("fc3", 10)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    assert shape_table(g) == {
        "conv1.weight": ("input", "conv1", (6, 1)),
        "conv2.weight": ("conv1", "conv2", (16, 6)),
        "fc1.weight": ("conv2", "fc1", (120, 16)),  # 256 inputs = 16 channels x 16 positions
        "fc2.weight": ("fc1", "fc2", (84, 120)),
        "fc3.weight": ("fc2", "fc3", (10, 84)),
    }
    assert g.blocks["fc1.weight"].aggregation == "l2"
    assert g.blocks["fc2.weight"].aggregation is None
    assert g.num_edges == 6 + 96 + 120 * 16 + 120 * 84 + 84 * 10
    want = oracle_graph(parts, [
        ("input", "conv1", conv_edges(m.conv1.weight)),
        ("conv1", "conv2", conv_edges(m.conv2.weight)),
        ("conv2", "fc1", flatten_edges(m.fc1.weight, 16)),
        ("fc1", "fc2", linear_edges(m.fc2.weight)),
        ("fc2", "fc3", linear_edges(m.fc3.weight)),
    ])
    assert_same_graph(g.to_networkx(), want)


def test_resnet_residual_merges_and_projection_shortcut():
    m = seeded(ResNet, widths=(8, 16), blocks=(2, 2))
    g = graphnn.extract(m)
    # The residual stream of stage 0 is one partition (stem output + both conv2 outputs);
    # stage 1's stream merges conv2 of block 0, its 1x1 projection shortcut and conv2 of block 1.
    parts = [("input", 3), ("conv1", 8), ("layers.0.0.conv1", 8), ("layers.0.1.conv1", 8),
             ("layers.1.0.conv1", 16), ("layers.1.0.conv2", 16), ("layers.1.1.conv1", 16), ("linear", 10)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    assert g.partitions["conv1"].members == ("conv1", "layers.0.0.conv2", "layers.0.1.conv2")
    assert g.partitions["layers.1.0.conv2"].members == (
        "layers.1.0.conv2", "layers.1.0.shortcut.0", "layers.1.1.conv2")
    assert g.partitions["conv1"].kind == "residual"
    assert shape_table(g) == {
        "conv1.weight": ("input", "conv1", (8, 3)),
        "layers.0.0.conv1.weight": ("conv1", "layers.0.0.conv1", (8, 8)),
        "layers.0.0.conv2.weight": ("layers.0.0.conv1", "conv1", (8, 8)),
        "layers.0.1.conv1.weight": ("conv1", "layers.0.1.conv1", (8, 8)),
        "layers.0.1.conv2.weight": ("layers.0.1.conv1", "conv1", (8, 8)),
        "layers.1.0.conv1.weight": ("conv1", "layers.1.0.conv1", (16, 8)),
        "layers.1.0.conv2.weight": ("layers.1.0.conv1", "layers.1.0.conv2", (16, 16)),
        "layers.1.0.shortcut.0.weight": ("conv1", "layers.1.0.conv2", (16, 8)),
        "layers.1.1.conv1.weight": ("layers.1.0.conv2", "layers.1.1.conv1", (16, 16)),
        "layers.1.1.conv2.weight": ("layers.1.1.conv1", "layers.1.0.conv2", (16, 16)),
        "linear.weight": ("layers.1.0.conv2", "linear", (10, 16)),
    }
    assert g.num_edges == 24 + 4 * 64 + 128 + 3 * 256 + 128 + 160
    blocks = [(src, dst, (linear_edges if name == "linear.weight" else conv_edges)(dict(m.named_parameters())[name]))
              for name, (src, dst, _) in shape_table(g).items()]
    assert_same_graph(g.to_networkx(), oracle_graph(parts, blocks))
    # BatchNorm parameters are reported, not mapped
    cov = g.coverage.set_index("name")
    assert cov.loc["bn1.weight", "status"] == "skipped"
    assert "normalisation" in cov.loc["bn1.weight", "reason"]


def test_depthwise_separable_is_block_diagonal():
    m = seeded(DepthwiseSeparable)
    g = graphnn.extract(m)
    parts = [("input", 3), ("stem", 8), ("dw1", 8), ("pw1", 16), ("dw2", 16), ("pw2", 4), ("head", 5)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    assert g.blocks["dw1.weight"].groups == 8 and g.blocks["dw2.weight"].groups == 16
    # depthwise blocks have one edge per channel
    assert g.blocks["dw1.weight"].num_edges == 8
    assert g.num_edges == 24 + 8 + 128 + 16 + 64 + 20
    dw = g.blocks["dw1.weight"].matrix()
    assert torch.count_nonzero(dw - torch.diag(torch.diagonal(dw))) == 0
    want = oracle_graph(parts, [
        ("input", "stem", conv_edges(m.stem.weight)),
        ("stem", "dw1", conv_edges(m.dw1.weight, groups=8)),
        ("dw1", "pw1", conv_edges(m.pw1.weight)),
        ("pw1", "dw2", conv_edges(m.dw2.weight, groups=16)),
        ("dw2", "pw2", conv_edges(m.pw2.weight)),
        ("pw2", "head", linear_edges(m.head.weight)),
    ])
    assert_same_graph(g.to_networkx(), want)


def test_grouped_conv_edges():
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, groups=2))
    g = graphnn.extract(m)
    b = g.blocks["0.weight"]
    assert b.shape == (6, 4) and b.groups == 2 and b.num_edges == 12
    want = oracle_graph([("input", 4), ("0", 6)], [("input", "0", conv_edges(m[0].weight, groups=2))])
    assert_same_graph(g.to_networkx(), want)


@pytest.mark.parametrize("agg", ["l1", "sum"])
def test_conv_aggregations(agg):
    m = seeded(LeNet)
    g = graphnn.extract(m, conv=agg)
    w = m.conv2.weight.detach().double()
    want = w.abs().sum((2, 3)) if agg == "l1" else w.sum((2, 3))
    assert torch.allclose(g.blocks["conv2.weight"].matrix().double(), want, atol=1e-6)
    fc = m.fc1.weight.detach().double().view(120, 16, 16)
    want_fc = fc.abs().sum(-1) if agg == "l1" else fc.sum(-1)
    assert torch.allclose(g.blocks["fc1.weight"].matrix().double(), want_fc, atol=1e-6)


def test_conv_transpose_axis_order():
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.ConvTranspose2d(3, 5, 2))
    g = graphnn.extract(m)
    b = g.blocks["1.weight"]
    assert (b.src, b.dst, b.shape) == ("0", "1", (5, 3))
    w = m[1].weight.detach()  # (c_in=3, c_out=5, 2, 2)
    for i in range(5):
        for j in range(3):
            assert float(b.matrix()[i, j]) == pytest.approx(float(w[j, i].norm()), rel=1e-6)


class _Decoder(torch.nn.Module):
    """conv 3->8, ConvTranspose 8->4 (kernel 2, stride 2), conv 4->2, depthwise conv 2->2."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.out = torch.nn.Conv2d(4, 2, 1)
        self.dw = torch.nn.Conv2d(2, 2, 3, groups=2)

    def forward(self, x):
        return self.dw(self.out(torch.relu(self.up(torch.relu(self.conv(x))))))


def test_conv_transpose_from_a_state_dict_is_not_a_grouped_conv():
    """A ConvTranspose weight (c_in, c_out, 2, 2) read from a state_dict used to become a grouped
    conv 8 -> 8 (groups=2), which made every later layer grouped or disconnected."""
    m = seeded(_Decoder)
    want = {"conv.weight": ("input", "conv", (8, 3), 1), "up.weight": ("conv", "up", (4, 8), 1),
            "out.weight": ("up", "out", (2, 4), 1), "dw.weight": ("out", "dw", (2, 2), 2)}
    for src in (m, m.state_dict()):
        g = graphnn.extract(src)
        assert {b.name: (b.src, b.dst, b.shape, b.groups) for b in g.blocks.values()} == want
        torch.testing.assert_close(g.blocks["up.weight"].matrix(),
                                   torch.linalg.vector_norm(m.up.weight.detach(), dim=(2, 3)).T)


def test_transformer_multihead_attention():
    m = seeded(EncoderMHA)
    g = graphnn.extract(m)
    parts = [("input", 8), ("attn.q", 8), ("attn.k", 8), ("attn.v", 8), ("ff1", 16)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    # the residual stream merges the block input, the attention output and the FFN output
    assert g.partitions["input"].members == ("input", "attn.out_proj", "ff2")
    assert shape_table(g) == {
        "attn.in_proj_weight[q]": ("input", "attn.q", (8, 8)),
        "attn.in_proj_weight[k]": ("input", "attn.k", (8, 8)),
        "attn.in_proj_weight[v]": ("input", "attn.v", (8, 8)),
        "attn.out_proj.weight": ("attn.v", "input", (8, 8)),
        "ff1.weight": ("input", "ff1", (16, 8)),
        "ff2.weight": ("ff1", "input", (8, 16)),
    }
    assert g.num_edges == 4 * 64 + 2 * 128
    w = m.attn.in_proj_weight
    blocks = [("input", "attn.q", linear_edges(w[:8])), ("input", "attn.k", linear_edges(w[8:16])),
              ("input", "attn.v", linear_edges(w[16:])), ("attn.v", "input", linear_edges(m.attn.out_proj.weight)),
              ("input", "ff1", linear_edges(m.ff1.weight)), ("ff1", "input", linear_edges(m.ff2.weight))]
    assert_same_graph(g.to_networkx(), oracle_graph(parts, blocks))


def test_transformer_separate_qkv():
    m = seeded(EncoderQKV)
    g = graphnn.extract(m)
    parts = [("input", 8), ("q", 8), ("k", 8), ("v", 8), ("ff1", 16)]
    assert [(p.name, p.size) for p in g.partitions.values()] == parts
    assert g.partitions["input"].members == ("input", "o", "ff2")
    assert shape_table(g) == {
        "q.weight": ("input", "q", (8, 8)), "k.weight": ("input", "k", (8, 8)), "v.weight": ("input", "v", (8, 8)),
        "o.weight": ("v", "input", (8, 8)), "ff1.weight": ("input", "ff1", (16, 8)),
        "ff2.weight": ("ff1", "input", (8, 16)),
    }
    blocks = [("input", "q", linear_edges(m.q.weight)), ("input", "k", linear_edges(m.k.weight)),
              ("input", "v", linear_edges(m.v.weight)), ("v", "input", linear_edges(m.o.weight)),
              ("input", "ff1", linear_edges(m.ff1.weight)), ("ff1", "input", linear_edges(m.ff2.weight))]
    assert_same_graph(g.to_networkx(), oracle_graph(parts, blocks))


def test_concatenation_stacks_partitions():
    class Cat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 3)
            self.b = torch.nn.Linear(4, 2)
            self.head = torch.nn.Linear(5, 1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], dim=1))

    m = seeded(Cat)
    g = graphnn.extract(m)
    assert shape_table(g) == {
        "a.weight": ("input", "a", (3, 4)), "b.weight": ("input", "b", (2, 4)),
        "head.weight[in 0:3]": ("a", "head", (1, 3)), "head.weight[in 3:5]": ("b", "head", (1, 2)),
    }
    assert torch.equal(g.blocks["head.weight[in 3:5]"].matrix(), m.head.weight.detach()[:, 3:5])
    assert g.coverage.set_index("name").loc["head.weight", "blocks"] == "head.weight[in 0:3], head.weight[in 3:5]"


def test_blocks_share_memory_with_parameters():
    m = seeded(EncoderMHA)
    g = graphnn.extract(m)
    for name in ("ff1.weight", "attn.out_proj.weight"):
        mat = g.blocks[name].matrix()
        assert mat.data_ptr() == dict(m.named_parameters())[name].data_ptr()
    q = g.blocks["attn.in_proj_weight[k]"].matrix()
    assert q.untyped_storage().data_ptr() == m.attn.in_proj_weight.untyped_storage().data_ptr()
    with torch.no_grad():
        m.ff1.weight[0, 0] = 123.0
    assert float(g.blocks["ff1.weight"].matrix()[0, 0]) == 123.0


def test_hf_conv1d_is_transposed_view():
    class Conv1D(torch.nn.Module):  # the shape convention of Hugging Face's GPT-2 Conv1D
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            self.weight = torch.nn.Parameter(torch.randn(nx, nf))
            self.bias = torch.nn.Parameter(torch.zeros(nf))

        def forward(self, x):
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = Conv1D(6, 4)
            self.c_proj = Conv1D(4, 6)

        def forward(self, x):
            return self.c_proj(torch.relu(self.c_fc(x)))

    m = Net()
    g = graphnn.extract(m)
    assert shape_table(g) == {"c_fc.weight": ("input", "c_fc", (6, 4)), "c_proj.weight": ("c_fc", "c_proj", (4, 6))}
    mat = g.blocks["c_fc.weight"].matrix()
    assert torch.equal(mat, m.c_fc.weight.detach().T)
    assert mat.data_ptr() == m.c_fc.weight.data_ptr()


def test_untraceable_module_falls_back_with_a_note():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 3)
            self.fc2 = torch.nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.fc2(self.fc1(x))

    with pytest.warns(graphnn.TopologyWarning, match="could not trace"):
        g = graphnn.extract(Branchy())
    assert shape_table(g) == {"fc1.weight": ("input", "fc1", (3, 4)), "fc2.weight": ("fc1", "fc2", (2, 3))}
    assert any("registration" in n for n in g.notes)


def test_include_exclude_globs():
    m = seeded(ResNet)
    g = graphnn.extract(m, exclude="layers.1.*")
    assert not any(n.startswith("layers.1.") for n in g.blocks)
    cov = g.coverage.set_index("name")
    assert "exclude pattern 'layers.1.*'" in cov.loc["layers.1.0.conv1.weight", "reason"]
    g2 = graphnn.extract(m, include=["conv1.weight", "linear.*"])
    assert set(g2.blocks) == {"conv1.weight", "linear.weight"}
    assert "not matched by include" in g2.coverage.set_index("name").loc["layers.0.0.conv1.weight", "reason"]


def test_embedding_is_opt_in():
    class Tok(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 6)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, ids):
            return self.fc(self.embed(ids))

    m = Tok()
    g = graphnn.extract(m)
    assert set(g.blocks) == {"fc.weight"}
    assert "include_embeddings=True" in g.coverage.set_index("name").loc["embed.weight", "reason"]
    g2 = graphnn.extract(m, include_embeddings=True)
    assert shape_table(g2) == {"embed.weight": ("input", "embed", (6, 20)), "fc.weight": ("embed", "fc", (3, 6))}
    assert torch.equal(g2.blocks["embed.weight"].matrix(), m.embed.weight.detach().T)


def test_rnn_is_skipped_with_reason():
    class WithLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in = torch.nn.Linear(5, 4)
            self.lstm = torch.nn.LSTM(4, 3, batch_first=True)
            self.fc_out = torch.nn.Linear(3, 2)

        def forward(self, x):
            y, _ = self.lstm(self.fc_in(x))
            return self.fc_out(y)

    with pytest.warns(graphnn.errors.TopologyWarning, match="LSTM"):
        g = graphnn.extract(WithLSTM())
    cov = g.coverage.set_index("name")
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0"):
        assert cov.loc[name, "status"] == "skipped"
        assert "recurrent" in cov.loc[name, "reason"]
    assert set(g.blocks) == {"fc_in.weight", "fc_out.weight"}
    assert g.blocks["fc_out.weight"].src != g.blocks["fc_in.weight"].dst  # the LSTM breaks the chain


def test_shared_module_called_twice_gets_two_blocks():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    g = graphnn.extract(Twice())
    assert shape_table(g) == {"fc.weight": ("input", "fc", (4, 4)), "fc.weight#2": ("fc", "fc#2", (4, 4))}


def test_state_dict_matches_module_blocks():
    for cls in (MLP, LeNet, ResNet, DepthwiseSeparable, EncoderMHA, EncoderQKV):
        m = seeded(cls)
        from_module = graphnn.extract(m)
        from_sd = graphnn.extract(m.state_dict())
        assert set(from_sd.blocks) == set(from_module.blocks), cls.__name__
        for name, b in from_module.blocks.items():
            assert from_sd.blocks[name].shape == b.shape
            assert torch.allclose(from_sd.blocks[name].matrix(), b.matrix()), name


def test_cross_attention_reads_each_input():
    class Cross(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(6, 8)
            self.dec = torch.nn.Linear(5, 8)
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, src, tgt):
            memory = self.enc(src)
            x = self.dec(tgt)
            return self.attn(x, memory, memory)[0]

    g = graphnn.extract(Cross())
    assert shape_table(g)["attn.in_proj_weight[q]"][0] == "dec"
    assert shape_table(g)["attn.in_proj_weight[k]"][0] == "enc"
    assert shape_table(g)["attn.in_proj_weight[v]"][0] == "enc"
    assert shape_table(g)["attn.out_proj.weight"][:2] == ("attn.v", "attn.out_proj")
    assert [p.name for p in g.partitions.values()][:3] == ["input.src", "input.tgt", "enc"]


def test_mha_with_separate_kdim_vdim():
    class KV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)

        def forward(self, q, k, v):
            return self.attn(q, k, v)[0]

    g = graphnn.extract(KV())
    t = shape_table(g)
    assert t["attn.q_proj_weight"] == ("input.q", "attn.q", (8, 8))
    assert t["attn.k_proj_weight"] == ("input.k", "attn.k", (8, 4))
    assert t["attn.v_proj_weight"] == ("input.v", "attn.v", (8, 6))


@pytest.mark.parametrize("cls", [LeNet, ResNet, DepthwiseSeparable, EncoderMHA, EncoderQKV])
def test_entry_index_rebuilds_the_summed_matrix(cls):
    """Scatter-adding every entry of a parameter into (dst, src) given by entry_index() gives
    the block matrix extracted with conv="sum" (the signed sum over the entries of an edge)."""
    m = seeded(cls)
    params = dict(m.named_parameters())
    g = graphnn.extract(m, conv="sum")
    covered = {}
    for b in g.blocks.values():
        dst, src = b.entry_index()
        t = params[b.param].detach().double()
        assert dst.shape == t.shape == src.shape
        ok = dst >= 0
        assert torch.equal(ok, src >= 0)
        rebuilt = torch.zeros(b.shape, dtype=torch.float64).index_put_((dst[ok], src[ok]), t[ok], accumulate=True)
        assert torch.allclose(rebuilt, b.matrix().double(), atol=1e-6), b.name
        covered[b.param] = covered.get(b.param, 0) + int(ok.sum())
    for name, count in covered.items():  # every entry of a mapped parameter lies in exactly one block
        assert count == params[name].numel(), name


def test_entry_index_of_concat_and_transpose():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(2, 3, 1)
            self.b = torch.nn.Conv2d(2, 2, 1)
            self.up = torch.nn.ConvTranspose2d(5, 4, 2, groups=1)

        def forward(self, x):
            return self.up(torch.cat([self.a(x), self.b(x)], 1))

    m = seeded(Net)
    g = graphnn.extract(m, conv="sum")
    w = m.up.weight.detach().double()
    total = torch.zeros(4, 5, dtype=torch.float64)
    for name in ("up.weight[in 0:3]", "up.weight[in 3:5]"):
        b = g.blocks[name]
        dst, src = b.entry_index()
        ok = dst >= 0
        part = torch.zeros(b.shape, dtype=torch.float64).index_put_((dst[ok], src[ok]), w[ok], accumulate=True)
        assert torch.allclose(part, b.matrix().double(), atol=1e-6)
        start = 0 if name.endswith("0:3]") else 3
        total[:, start:start + b.n_src] = part
    assert torch.allclose(total, w.sum((2, 3)).T)


def test_torch_transformer_layers_are_not_hidden():
    """nn.TransformerEncoderLayer lives in torch.nn but contains mapped layers: its weights must
    be mapped (traced through, or by the registration-order fallback), never silently dropped."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8),
                            torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1),
                            torch.nn.Linear(8, 4))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback, if used, warns; what matters is the mapping
        g = graphnn.extract(m)
    prefix = "1.layers.0."
    for name in ("self_attn.in_proj_weight[q]", "self_attn.in_proj_weight[k]", "self_attn.in_proj_weight[v]",
                 "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"):
        assert prefix + name in g.blocks, name
    assert g.blocks["2.weight"].src != "0"  # the head does not read the first layer directly


def test_tied_weights_map_both_names():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(12, 4)
            self.mix = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 12, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(torch.relu(self.mix(self.embed(ids))))

    m = Tied()
    g = graphnn.extract(m)
    assert shape_table(g) == {"mix.weight": ("embed", "mix", (4, 4)), "head.weight": ("mix", "head", (12, 4))}
    assert g.blocks["head.weight"].matrix().data_ptr() == m.embed.weight.data_ptr()
    cov = g.coverage.set_index("name")
    assert cov.loc["embed.weight", "status"] == "skipped" and "include_embeddings" in cov.loc["embed.weight", "reason"]
    g2 = graphnn.extract(m, include_embeddings=True)
    assert set(g2.blocks) == {"embed.weight", "mix.weight", "head.weight"}


def test_functional_linear_on_a_bare_parameter():
    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = torch.nn.Parameter(torch.randn(5, 3))
            self.w2 = torch.nn.Parameter(torch.randn(2, 5))

        def forward(self, x):
            return torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, self.w1)), self.w2)

    m = Func()
    g = graphnn.extract(m)
    assert shape_table(g) == {"w1": ("input", "w1", (5, 3)), "w2": ("w1", "w2", (2, 5))}
    assert torch.equal(g.blocks["w2"].matrix(), m.w2.detach())


def test_bad_pattern_type():
    with pytest.raises(TypeError, match="glob pattern"):
        graphnn.extract(seeded(LeNet), include=5)
