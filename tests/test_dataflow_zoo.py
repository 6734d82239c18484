"""DepGraph-style dataflow cases for the traced walk: each test states, worked out by hand, the
partitions and blocks (source, destination, shape, index map) and the edge count it expects, and
asserts a TopologyWarning exactly where the mapping is inexact (and none where it is exact)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphnn
from graphnn.errors import TopologyWarning


def exact(model, **kw):
    """Extract with TopologyWarning turned into an error: the mapping must be exact."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        return graphnn.extract(model, **kw)


def parts(g):
    return {name: p.size for name, p in g.partitions.items()}


def blocks(g):
    """``{block: (src, dst, (n_dst, n_src), src_index as a list or None)}``."""
    return {b.name: (b.src, b.dst, b.shape, None if b.src_index is None else b.src_index.tolist())
            for b in g.blocks.values()}


def seeded(cls, *args):
    torch.manual_seed(0)
    return cls(*args)


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fa, self.fb = nn.Linear(6, 8), nn.Linear(3, 2), nn.Linear(5, 2)

    def forward(self, x):
        a, b = torch.split(torch.relu(self.fc0(x)), [3, 5], dim=1)
        return self.fa(a) + self.fb(b)


def test_split_into_branches_reads_slices_of_one_partition():
    g = exact(seeded(Split))
    assert parts(g) == {"input": 6, "fc0": 8, "fa": 2}  # fa + fb merge (same size)
    assert g.partitions["fa"].members == ("fa", "fb")
    assert blocks(g) == {
        "fc0.weight": ("input", "fc0", (8, 6), None),
        "fa.weight": ("fc0", "fa", (2, 3), [0, 1, 2]),
        "fb.weight": ("fc0", "fa", (2, 5), [3, 4, 5, 6, 7]),
    }
    assert g.num_edges == 48 + 6 + 10


class Chunk(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.fc0, self.fa, self.fb = nn.Linear(4, 8), nn.Linear(4, 3), nn.Linear(4, 2)

    def forward(self, x):
        a, b = self.fc0(x).chunk(2, dim=self.dim)
        return self.fa(a), self.fb(b)


@pytest.mark.parametrize("dim", [-1, 1])
def test_chunk_of_the_feature_axis(dim):
    g = exact(seeded(Chunk, dim))
    assert blocks(g)["fa.weight"] == ("fc0", "fa", (3, 4), [0, 1, 2, 3])
    assert blocks(g)["fb.weight"] == ("fc0", "fb", (2, 4), [4, 5, 6, 7])
    assert g.num_edges == 32 + 12 + 8


class Unbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fa, self.fb = nn.Linear(4, 6), nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        h = self.fc0(x).view(x.shape[0], 2, 3)
        a, b = h.unbind(1)
        return torch.cat([self.fa(a), self.fb(b)], dim=1)


def test_unbind_of_a_viewed_feature_axis():
    g = exact(seeded(Unbind))
    assert blocks(g) == {
        "fc0.weight": ("input", "fc0", (6, 4), None),
        "fa.weight": ("fc0", "fa", (2, 3), [0, 1, 2]),
        "fb.weight": ("fc0", "fb", (2, 3), [3, 4, 5]),
    }


class SplitCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fc1 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc0(x)
        a, b = h.split([2, 4], dim=1)
        return self.fc1(torch.cat([b, a], dim=1)) + self.fc1(torch.cat([a, b], dim=1))


def test_concat_after_split_of_one_partition_is_a_permutation():
    g = exact(seeded(SplitCat))
    b = blocks(g)
    assert b["fc1.weight"] == ("fc0", "fc1", (3, 6), [2, 3, 4, 5, 0, 1])
    assert b["fc1.weight#2"] == ("fc0", "fc1", (3, 6), None)  # cat([a, b]) is fc0 itself
    assert parts(g) == {"input": 4, "fc0": 6, "fc1": 3}


class Cascade(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(4, 2), nn.Linear(4, 3), nn.Linear(4, 1)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        c1 = torch.cat([self.f1(x), self.f2(x)], dim=1)
        c2 = torch.cat([c1, self.f3(x)], dim=-1)
        return self.out(c2)


def test_cascaded_concat():
    g = exact(seeded(Cascade))
    b = blocks(g)
    assert b["out.weight[in 0:2]"] == ("f1", "out", (2, 2), None)
    assert b["out.weight[in 2:5]"] == ("f2", "out", (2, 3), None)
    assert b["out.weight[in 5:6]"] == ("f3", "out", (2, 1), None)
    assert g.num_edges == 8 + 12 + 4 + 12


def shuffle(x, groups):
    b, c, h, w = x.size()
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleGrouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)

    def forward(self, x):
        return self.conv2(shuffle(torch.relu(self.conv1(x)), 2))


def test_channel_shuffle_before_a_grouped_conv():
    g = exact(seeded(ShuffleGrouped))
    perm = [0, 4, 1, 5, 2, 6, 3, 7]  # view(2, 4) -> transpose -> channel k*2+j reads j*4+k
    assert blocks(g)["conv2.weight"] == ("conv1", "conv2", (8, 8), perm)
    blk = g.blocks["conv2.weight"]
    assert blk.groups == 2 and blk.num_edges == 32
    # neuron-space edges: output channel 0 (group 0) reads matrix columns 0..3 = conv1 channels 0, 4, 1, 5
    a = g.to_scipy().toarray()
    o1, o2 = g.offset("conv1"), g.offset("conv2")
    assert sorted((a[o2 + 0, o1:o1 + 8] > 0).nonzero()[0].tolist()) == [0, 1, 4, 5]
    assert sorted((a[o2 + 7, o1:o1 + 8] > 0).nonzero()[0].tolist()) == [2, 3, 6, 7]


class Permute(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fc1 = nn.Linear(4, 6), nn.Linear(6, 2)
        self.register_buffer("perm", torch.tensor([5, 4, 3, 2, 1, 0]))

    def forward(self, x):
        return self.fc1(self.fc0(x).index_select(1, self.perm)) + self.fc1(self.fc0(x).flip(-1))


def test_permutation_by_index_select_and_flip():
    g = exact(seeded(Permute))
    b = blocks(g)
    assert b["fc1.weight"] == ("fc0", "fc1", (2, 6), [5, 4, 3, 2, 1, 0])
    assert b["fc1.weight#2"] == ("fc0#2", "fc1", (2, 6), [5, 4, 3, 2, 1, 0])


class NonFeatureCat(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.f1, self.f2, self.f3 = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        a, b = self.f1(x), self.f2(x)
        if self.how == "cat0":
            h = torch.cat([a, b], dim=0)
        elif self.how == "stack0":
            h = torch.stack([a, b], dim=0)
        else:  # stacked on a new token axis
            h = torch.stack([a, b], dim=1)
        return self.f3(h)


@pytest.mark.parametrize("how", ["cat0", "stack0", "stack1"])
def test_cat_and_stack_along_a_non_feature_axis_are_not_feature_concatenations(how):
    g = exact(seeded(NonFeatureCat, how))
    # f3 reads 3 features (not 6): the same neurons see a and b, so f1 and f2 are one partition
    assert parts(g) == {"input": 4, "f1": 3, "f3": 2}
    assert g.partitions["f1"].members == ("f1", "f2")
    assert blocks(g)["f3.weight"] == ("f1", "f3", (2, 3), None)
    assert any("non-feature axis" in n for n in g.notes)


class ConvToTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(5, 8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x, z):
        h = self.conv(x)
        b, c, hh, ww = h.shape
        h = h.view(b, c, hh * ww).view(b, c, hh, ww)  # reshape round trip keeps the channels
        s = self.fc(z).view(b, 8, 1, 1)
        return self.up(h), self.up(s)


def test_reshape_view_between_conv_and_conv_transpose():
    g = exact(seeded(ConvToTranspose))
    assert blocks(g) == {
        "conv.weight": ("input.x", "conv", (8, 3), None),
        "fc.weight": ("input.z", "fc", (8, 5), None),
        "up.weight": ("conv", "up", (4, 8), None),
        "up.weight#2": ("fc", "up#2", (4, 8), None),
    }
    assert g.num_edges == 24 + 40 + 32 + 32


class MultiIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.fa, self.fb, self.fc = nn.Linear(3, 2), nn.Linear(4, 2), nn.Linear(4, 1)

    def forward(self, x, y):
        a, b = self.fa(x), self.fb(y)
        return a, b, self.fc(torch.cat([a, b], dim=-1))


def test_multiple_inputs_and_outputs():
    g = exact(seeded(MultiIO))
    assert parts(g) == {"input.x": 3, "input.y": 4, "fa": 2, "fb": 2, "fc": 1}
    assert blocks(g) == {
        "fa.weight": ("input.x", "fa", (2, 3), None),
        "fb.weight": ("input.y", "fb", (2, 4), None),
        "fc.weight[in 0:2]": ("fa", "fc", (1, 2), None),
        "fc.weight[in 2:4]": ("fb", "fc", (1, 2), None),
    }


class Reuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_a_layer_reused_twice():
    g = exact(seeded(Reuse))
    assert blocks(g) == {"fc.weight": ("input", "fc", (4, 4), None), "fc.weight#2": ("fc", "fc#2", (4, 4), None)}
    assert g.blocks["fc.weight"].matrix().data_ptr() == g.blocks["fc.weight#2"].matrix().data_ptr()


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.fc1(x)))
        return self.fc2(out)


def test_an_lstm_in_the_middle_cuts_the_chain():
    with pytest.warns(TopologyWarning, match=r"module 'lstm' \(LSTM\).*cut"):
        g = graphnn.extract(seeded(WithLSTM))
    # fc2 does not read fc1 (no pass-through): it reads a new input partition
    assert blocks(g) == {"fc1.weight": ("input", "fc1", (6, 4), None), "fc2.weight": ("fc2.in", "fc2", (3, 5), None)}
    assert g.partitions["fc2.in"].kind == "input"
    cov = g.coverage.set_index("name")
    assert "LSTM" in cov.loc["fc2.weight", "reason"] and cov.loc["fc2.weight", "status"] == "mapped"
    assert cov.loc["lstm.weight_ih_l0", "status"] == "skipped"
    assert any("lstm" in n and "cut" in n for n in g.notes)


class MaskProduct(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)
        self.register_buffer("mask", (torch.arange(6) % 2).float())
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        return self.fc2(self.fc1(x) * self.mask * self.scale + 1.0)


def test_elementwise_product_with_a_mask_buffer_keeps_the_partition():
    g = exact(seeded(MaskProduct))
    assert parts(g) == {"input": 4, "fc1": 6, "fc2": 2}
    assert g.partitions["fc1"].members == ()
    assert blocks(g)["fc2.weight"] == ("fc1", "fc2", (2, 6), None)


class MaskInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x) * torch.ones(6))


def test_product_with_a_constant_keeps_the_partition():
    g = exact(seeded(MaskInput))
    assert blocks(g)["fc2.weight"] == ("fc1", "fc2", (2, 6), None)


# -- inexact places: a warning each, naming the op and the module ---------------------------------
class Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.sort(self.fc1(x), dim=-1).values)


def test_data_dependent_op_on_the_feature_axis_cuts():
    with pytest.warns(TopologyWarning, match=r"op 'sort'.*feature axis depends on the data"):
        g = graphnn.extract(seeded(Sorted))
    assert blocks(g)["fc2.weight"][0] == "fc2.in"


class Glu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.glu(self.fc1(x), dim=-1))


def test_an_op_that_changes_the_feature_axis_cuts():
    with pytest.warns(TopologyWarning, match=r"op 'glu'.*changes the feature axis"):
        g = graphnn.extract(seeded(Glu))
    assert blocks(g)["fc2.weight"][0] == "fc2.in"


class HalvesProduct(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(4, 2)

    def forward(self, x):
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(torch.sigmoid(gate) * up)


def test_product_of_two_halves_of_one_partition_folds_it():
    """SwiGLU after a fused projection: gate, up = fc1(x).chunk(2); fc1's 8 rows write 4 neurons
    (row k and row 4 + k both write neuron k), which fc2 reads."""
    m = seeded(HalvesProduct)
    g = exact(m)
    assert parts(g) == {"input": 4, "fc1": 4, "fc2": 2}
    assert blocks(g)["fc2.weight"] == ("fc1", "fc2", (2, 4), None)
    b = g.blocks["fc1.weight"]
    assert (b.src, b.dst, b.shape) == ("input", "fc1", (8, 4)) and b.dst_index.tolist() == [0, 1, 2, 3] * 2
    s_in = graphnn.strength(g, "in").set_index(["layer", "neuron"])["in_strength"]
    w = m.fc1.weight.detach()
    for k in range(4):
        assert s_in[("fc1", k)] == pytest.approx(float(w[k].sum() + w[4 + k].sum()), rel=1e-5)


class SelfPermutedProduct(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * h.flip(-1))


def test_product_of_a_partition_with_its_own_permutation_cuts():
    with pytest.warns(TopologyWarning, match=r"op 'mul'.*different neurons"):
        g = graphnn.extract(seeded(SelfPermutedProduct))
    assert blocks(g)["fc2.weight"][0] == "fc2.in"


class PartialAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fa, self.fb, self.fc = nn.Linear(4, 8), nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.fa(x)[:, :3] + self.fb(x))


def test_merge_of_part_of_a_partition_cuts():
    with pytest.warns(TopologyWarning, match=r"op 'add'.*only part of a partition"):
        g = graphnn.extract(seeded(PartialAdd))
    assert blocks(g)["fc.weight"][0] == "fc.in"
    assert g.partitions["fa"].members == () and g.partitions["fb"].members == ()


class ParamMatmul(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(5, 2)
        self.w = nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        return self.fc2(self.fc1(x) @ self.w)


def test_matmul_with_an_unmapped_parameter_cuts():
    with pytest.warns(TopologyWarning, match=r"matmul with the parameter 'w'"):
        g = graphnn.extract(seeded(ParamMatmul))
    assert blocks(g)["fc2.weight"][0] == "fc2.in"


def test_exact_cases_give_the_same_strength_as_a_hand_summed_matrix():
    """An index-mapped block from a real extraction: out-strength of fc0's neurons = column sums
    of fa (neurons 0-2) and fb (neurons 3-7)."""
    m = seeded(Split)
    g = exact(m)
    out = graphnn.strength(g, "out").set_index(["layer", "neuron"])["out_strength"]
    expected = torch.cat([m.fa.weight.sum(0), m.fb.weight.sum(0)]).double()
    got = torch.tensor([out[("fc0", k)] for k in range(8)])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


class OddSize(nn.Module):
    """Only an 18 x 18 input fits: no guessed size works."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 18 * 18, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def test_example_inputs_when_no_guessed_shape_fits():
    with pytest.warns(TopologyWarning, match="example_inputs"):
        g = graphnn.extract(seeded(OddSize))
    assert any("could not be propagated" in n for n in g.notes)
    g = exact(seeded(OddSize), example_inputs=torch.zeros(1, 1, 18, 18))
    assert blocks(g) == {"conv.weight": ("input", "conv", (2, 1), None), "fc.weight": ("conv", "fc", (3, 2), None)}
    assert g.blocks["fc.weight"].aggregation == "l2" and not any("propagated" in n for n in g.notes)


class Repeat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(8, 2), nn.Linear(4, 2)
        self.register_buffer("perm", torch.tensor([2, 0, 3, 1]))

    def forward(self, x):
        h = self.fc0(x)
        return self.fc1(h.repeat_interleave(2, dim=-1)) + self.fc2(h[:, self.perm])


def test_repeat_and_advanced_indexing_of_the_feature_axis():
    g = exact(seeded(Repeat))
    b = blocks(g)
    assert b["fc1.weight"] == ("fc0", "fc1", (2, 8), [0, 0, 1, 1, 2, 2, 3, 3])  # parallel edges
    assert b["fc2.weight"] == ("fc0", "fc1", (2, 4), [2, 0, 3, 1])
    m = seeded(Repeat)
    out = graphnn.strength(g, "out").set_index(["layer", "neuron"])["out_strength"]
    w1, w2 = m.fc1.weight.detach(), m.fc2.weight.detach()
    # fc0 neuron 0: fc1 columns 0 and 1, fc2 column 1 (perm[1] = 0)
    assert out[("fc0", 0)] == pytest.approx(float(w1[:, 0].sum() + w1[:, 1].sum() + w2[:, 1].sum()), rel=1e-5)


class UnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.fft.fft(self.fc1(x), dim=-1).real)


def test_an_unknown_shape_preserving_op_is_named_in_a_warning():
    with pytest.warns(TopologyWarning, match=r"fft.*not an op graphnn knows"):
        g = graphnn.extract(seeded(UnknownOp))
    assert blocks(g)["fc2.weight"][0] == "fc1"


class GQAttention(nn.Module):
    """Grouped-query attention written out: 4 query heads, 2 key/value heads, head_dim 2."""

    def __init__(self, d=8, heads=4, kv_heads=2):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, d // heads
        self.q = nn.Linear(d, heads * self.hd, bias=False)
        self.k = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.v = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, d, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.hd).transpose(1, 2).repeat_interleave(self.h // self.kv, dim=1)
        v = self.v(x).view(b, t, self.kv, self.hd).transpose(1, 2).repeat_interleave(self.h // self.kv, dim=1)
        att = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return x + self.o((att @ v).transpose(1, 2).reshape(b, t, self.h * self.hd))


def test_grouped_query_attention_reads_v_through_the_repeat_map():
    g = exact(seeded(GQAttention), example_inputs=torch.zeros(2, 5, 8))
    assert blocks(g) == {
        "q.weight": ("input", "q", (8, 8), None),
        "k.weight": ("input", "k", (4, 8), None),
        "v.weight": ("input", "v", (4, 8), None),
        "o.weight": ("v", "input", (8, 8), [0, 1, 0, 1, 2, 3, 2, 3]),  # o writes back into the stream
    }
    assert g.partitions["input"].members == ("input", "o")
    assert any("attention scores" in n for n in g.notes)


class TinyViT(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 5, d))
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 16), nn.Linear(16, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, d) for an 8 x 8 image
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(self.norm(x)[:, 0])


def test_class_token_concatenated_along_tokens_keeps_the_stream():
    g = exact(seeded(TinyViT), example_inputs=torch.zeros(2, 3, 8, 8))
    assert blocks(g) == {
        "patch.weight": ("input", "patch", (8, 3), None),
        "fc1.weight": ("patch", "fc1", (16, 8), None),
        "fc2.weight": ("fc1", "patch", (8, 16), None),
        "head.weight": ("patch", "head", (3, 8), None),
    }


class GroupedAfterCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.g = nn.Conv2d(8, 6, 1, groups=2)

    def forward(self, x):
        return self.g(torch.cat([self.a(x), self.b(x)], 1))


def test_grouped_conv_reading_a_concatenation_keeps_its_group_structure():
    g = exact(seeded(GroupedAfterCat))
    # group 0 (output channels 0-2) reads a (channels 0-3), group 1 (3-5) reads b (4-7)
    ga, gb = g.blocks["g.weight[in 0:4]"], g.blocks["g.weight[in 4:8]"]
    assert (ga.src, gb.src) == ("a", "b") and ga.num_edges == gb.num_edges == 12
    assert ga.structure_mask()[:, 0].tolist() == [True] * 3 + [False] * 3
    assert gb.structure_mask()[:, 0].tolist() == [False] * 3 + [True] * 3
    assert g.num_edges == 12 + 12 + 24 == g.to_networkx().number_of_edges()


class HandRMSNorm(nn.Module):
    """A hand-written RMSNorm (as in many model files): a per-token statistic scales x back."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.scale * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class NormedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(4, 6), HandRMSNorm(6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


def test_a_hand_written_rmsnorm_keeps_the_partition_silently():
    g = exact(seeded(NormedMLP))  # no TopologyWarning: the mean only rescales the features
    assert blocks(g)["fc2.weight"] == ("fc1", "fc2", (2, 6), None)


class ReadsTheMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(1, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).mean(-1, keepdim=True))


def test_a_layer_reading_a_reduction_over_features_is_cut_with_a_warning():
    with pytest.warns(TopologyWarning, match=r"op 'mean'.*changes the feature axis"):
        g = graphnn.extract(seeded(ReadsTheMean))
    assert blocks(g)["fc2.weight"][0] == "fc2.in"


class MeanSameSize(nn.Module):
    """An unknown same-size combination: fc1 times a feature-axis statistic broadcast back over
    features is exact, but times a cut value of full feature size is not."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sort(h, dim=-1).values)


def test_a_full_size_cut_value_meeting_mapped_features_warns():
    with pytest.warns(TopologyWarning, match=r"op 'sort'"):
        graphnn.extract(seeded(MeanSameSize))
