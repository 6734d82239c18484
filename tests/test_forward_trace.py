"""Modules torch.fx cannot trace: ``extract(model, example_inputs=...)`` records one forward pass
(graphnn.extract.forward_trace) and walks it like a traced graph. Expectations are worked out by
hand, or taken from an fx-traceable twin with the same layers (a different tracer)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphnn
from graphnn.errors import TopologyWarning


class GatedBlock(nn.Module):
    def __init__(self, d=8, h=12):
        super().__init__()
        self.norm, self.gate, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, h), nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        y = self.norm(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Branchy(nn.Module):
    """Residual gated blocks behind data-dependent control flow (fx: "symbolically traced
    variables cannot be used as inputs to control flow"), then a concatenation."""

    def __init__(self, d=8):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.blocks = nn.ModuleList([GatedBlock(d), GatedBlock(d)])
        self.side = nn.Linear(4, 5)
        self.head = nn.Linear(d + 5, 3)

    def steps(self, h):
        for b in self.blocks:
            if h.abs().sum() >= 0:  # always true, but fx cannot know
                h = b(h)
        return h

    def forward(self, x):
        return self.head(torch.cat([self.steps(self.inp(x)), self.side(x)], dim=-1))


class Straight(Branchy):
    def steps(self, h):
        for b in self.blocks:
            h = b(h)
        return h


def _structure(g):
    return ({(p.name, p.size) for p in g.partitions.values()},
            {(b.name, b.src, b.dst, b.shape) for b in g.blocks.values()})


def test_forward_pass_where_fx_fails_equals_fx_on_the_traceable_twin():
    torch.manual_seed(0)
    net, twin = Branchy(), Straight()
    twin.load_state_dict(net.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(net, example_inputs=torch.randn(2, 4))
        g_fx = graphnn.extract(twin)
    assert g.topology.startswith("traced module (one forward pass") and g_fx.topology == "traced module (torch.fx)"
    assert _structure(g) == _structure(g_fx)
    # by hand: the blocks write back into inp's partition (residual), gate and up are one partition,
    # the head reads the stream and side's output as two blocks (a concatenation)
    assert g.blocks["blocks.1.down.weight"].dst == "inp" == g.blocks["blocks.0.gate.weight"].src
    assert g.blocks["blocks.0.gate.weight"].dst == g.blocks["blocks.0.up.weight"].dst == g.blocks["blocks.0.down.weight"].src
    head = sorted((b.src, b.shape) for b in g.blocks.values() if b.param == "head.weight")
    assert head == [("inp", (3, 8)), ("side", (3, 5))]
    assert any("recorded from one forward pass" in n for n in g.notes)


def test_without_example_inputs_the_fallback_says_how_to_do_better():
    with pytest.warns(TopologyWarning, match="example_inputs"):
        g = graphnn.extract(Branchy())
    assert g.topology == "module registration order (torch.fx failed)"


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.rnn, self.b = nn.Linear(4, 6), nn.LSTM(6, 6, batch_first=True), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        if h.shape[1] > 0:
            h, _ = self.rnn(h)
        return self.b(h)


def test_an_unmapped_weighted_layer_cuts_the_recorded_chain():
    with pytest.warns(TopologyWarning, match="rnn"):
        g = graphnn.extract(WithLSTM(), example_inputs=torch.randn(1, 3, 4))
    assert g.blocks["b.weight"].src != "a"  # never a pass-through of the LSTM
    cov = g.coverage.set_index("name")
    assert cov.loc["rnn.weight_ih_l0", "status"] == "skipped"


def test_hf_resnet_records_its_residuals():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])
    model = transformers.ResNetModel(cfg).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(model, example_inputs=torch.randn(1, 3, 32, 32))
    assert g.topology.startswith("traced module (one forward pass")
    stem = "embedder.embedder.convolution"
    s0, s1 = "encoder.stages.0.layers.0", "encoder.stages.1.layers.0"
    # stage 0 (16 -> 16 channels): identity shortcut, its last conv writes back into the stem's partition
    assert g.blocks[f"{s0}.layer.0.convolution.weight"].src == stem
    assert g.blocks[f"{s0}.layer.2.convolution.weight"].dst == stem and g.partitions[stem].kind == "residual"
    # stage 1 (16 -> 32): the shortcut conv reads the stage input and merges with the last conv's output
    short, last = g.blocks[f"{s1}.shortcut.convolution.weight"], g.blocks[f"{s1}.layer.2.convolution.weight"]
    assert short.src == stem and short.dst == last.dst and g.partitions[last.dst].size == 32
    assert (g.coverage[g.coverage["name"].str.endswith("convolution.weight")]["status"] == "mapped").all()


def test_hf_folder_of_an_unknown_family_is_meta_traced_from_its_config(tmp_path):
    """graph-model.md §2d way 2: a folder whose config.json names no family of the rule table is
    built on the meta device, run once there, and the file's tensors are attached by name."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])
    model = transformers.ResNetModel(cfg).eval()
    model.save_pretrained(tmp_path / "resnet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(tmp_path / "resnet")
        g_mod = graphnn.extract(model, example_inputs=torch.randn(1, 3, 32, 32))
    assert g.topology.startswith("meta-traced config (ResNetModel")
    assert _structure(g) == _structure(g_mod)
    for b in g.blocks.values():
        assert torch.allclose(b.matrix(), g_mod.blocks[b.name].matrix())  # the file's weights, not meta
    cov = g.coverage.set_index("name")
    assert "not an edge" in cov.loc["embedder.embedder.normalization.running_mean", "reason"]


def test_hf_module_without_inputs_runs_once_on_meta_and_is_left_unchanged():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ResNetModel(transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                               depths=[1, 1])).eval()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(model)  # main input pixel_values: one meta image built from the config
        g_real = graphnn.extract(model, example_inputs=torch.randn(1, 3, 32, 32))
    assert g.topology.startswith("traced module (one forward pass") and _structure(g) == _structure(g_real)
    assert any("meta inputs built from its config" in n for n in g.notes)
    after = model.state_dict()
    assert all(after[n].device.type == "cpu" and torch.equal(after[n], t) for n, t in before.items())
