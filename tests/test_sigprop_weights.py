"""σ̂_w², σ̂_b² and the activation after each layer (graphnn.sigprop.weights), against the raw
tensors computed here independently; PA rewiring and rank matching keep σ̂_w²."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import graphnn
from graphnn.errors import InvalidParameterError
from graphnn.sigprop.weights import weight_table


class Mixed(nn.Module):
    """Conv, grouped conv, max-pool, flatten into a Linear, leaky ReLU, tanh, no-bias layer."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.c2 = nn.Conv2d(8, 6, 3, groups=2, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 2 * 2, 16)
        self.act = nn.LeakyReLU(0.2)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = self.pool(torch.tanh(self.c2(x)))
        x = self.act(self.fc(x.flatten(1)))
        return self.head(nn.functional.dropout(x, 0.1, self.training))


def _oracle(w: torch.Tensor) -> tuple[float, float]:
    """(mean over output units of the squared row norm, fan_in * Var) from the raw tensor."""
    m = w.detach().double().reshape(w.shape[0], -1)
    return float(m.pow(2).sum(1).mean()), m.shape[1] * float(m.var(unbiased=False))


def test_sigma_w2_equals_fan_in_times_variance_on_every_layer():
    torch.manual_seed(0)
    model = Mixed()
    t = weight_table(model).set_index("param")
    assert list(t.index) == ["c1.weight", "c2.weight", "fc.weight", "head.weight"]
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        row = t.loc[name]
        row_norm, fan_var = _oracle(p)
        assert row["sigma_w2"] == pytest.approx(row_norm, rel=1e-12)
        assert row["fan_in"] == p[0].numel()
        assert row["sigma_w2"] == pytest.approx(row["fan_in"] * (row["var_w"] + row["mean_w"] ** 2), rel=1e-10)
        bias = dict(model.named_parameters()).get(name.replace("weight", "bias"))
        expect_b = float(bias.detach().double().pow(2).mean()) if bias is not None else 0.0
        assert row["sigma_b2"] == pytest.approx(expect_b, rel=1e-12, abs=0)


def test_sigma_w2_is_fan_in_var_for_zero_mean_weights():
    """With every weight tensor centred (mean 0), σ̂_w² from the graph is fan_in · Var(W) exactly."""
    torch.manual_seed(2)
    model = Mixed()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.sub_(p.double().mean().float())
    t = weight_table(model).set_index("param")
    for name, p in model.named_parameters():
        if p.dim() > 1:
            assert t.loc[name, "sigma_w2"] == pytest.approx(_oracle(p)[1], rel=1e-9)


def test_activations_read_from_the_fx_graph():
    t = weight_table(Mixed()).set_index("param")
    assert t.loc["c1.weight", "activation"] == "relu"
    assert t.loc["c2.weight", "activation"] == "tanh"  # before the pooling
    assert t.loc["fc.weight", "activation"] == "leaky_relu(0.2)"
    assert t.loc["head.weight", "activation"] == "identity"
    assert set(t["activation_source"]) == {"fx"}


def test_residual_and_attention_are_unknown_and_say_why():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.mha = nn.Linear(8, 8), nn.Linear(8, 8), nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            h = self.a(x)
            y, _ = self.mha(h, h, h)
            return self.b(torch.relu(y + h))

    t = weight_table(Res()).set_index("layer", drop=False)
    acts = dict(zip(t["param"], t["activation"]))
    assert acts["a.weight"].startswith("unknown")
    assert "attention" in acts["mha.in_proj_weight"]
    assert acts["mha.out_proj.weight"].startswith("unknown: followed by function add")
    assert acts["b.weight"] == "identity"


def test_registration_order_fallback_and_checkpoint(tmp_path):
    class Untraceable(nn.Sequential):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace
                pass
            return super().forward(x)

    torch.manual_seed(1)
    model = Untraceable(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 5), nn.Linear(5, 2))
    with pytest.warns(graphnn.TopologyWarning):
        t = weight_table(model)
    assert list(t["activation"])[0] == "tanh" and set(t["activation_source"]) == {"module order"}
    assert list(t["activation"])[1].startswith("unknown")
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    f = weight_table(path)
    assert f["activation"].str.contains("no module").all()
    assert f["sigma_w2"].tolist() == pytest.approx(t["sigma_w2"].tolist(), rel=1e-12)
    assert f["sigma_b2"].tolist() == pytest.approx(t["sigma_b2"].tolist(), rel=1e-12)
    given = weight_table(path, activation="tanh")
    assert set(given["activation"]) == {"tanh"} and set(given["activation_source"]) == {"given"}
    one = weight_table(path, activation={"0.weight": "relu"})
    assert one["activation"].iloc[0] == "relu" and one["activation"].iloc[1].startswith("unknown")
    with pytest.raises(InvalidParameterError, match="not a mapped layer"):
        weight_table(path, activation={"nope": "relu"})
    with pytest.raises(InvalidParameterError, match="unknown activation"):
        weight_table(path, activation="swishy")


def test_default_linear_init_gives_one_third():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    t = weight_table(model)
    assert t["sigma_w2"].tolist() == pytest.approx([1 / 3, 1 / 3], rel=0.01)
    assert t["sigma_b2"].tolist() == pytest.approx([1 / (3 * 512)] * 2, rel=0.15)


def test_attention_in_proj_split_and_biases():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4)
    with torch.no_grad():
        mha.in_proj_bias.normal_()
    t = weight_table(mha).set_index("layer")
    w, b = mha.in_proj_weight.detach().double(), mha.in_proj_bias.detach().double()
    for k, part in enumerate("qkv"):
        rows = slice(16 * k, 16 * (k + 1))
        row = t.loc[[n for n in t.index if n.endswith(part)][0]]
        assert row["sigma_w2"] == pytest.approx(float(w[rows].pow(2).sum(1).mean()), rel=1e-12)
        assert row["sigma_b2"] == pytest.approx(float(b[rows].pow(2).mean()), rel=1e-12)
        assert row["fan_in"] == 16


@pytest.mark.parametrize("method", ["pa_faithful", "pa_fast", "rank_match"])
def test_permuting_rewirings_keep_sigma_w2(method):
    """PA rewiring permutes each tensor's entries; rank matching puts a reference's values (here
    the tensor's own values before a perturbation) in another rank order: σ̂_w² is unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20), nn.Tanh(), nn.Linear(20, 5))
    before = weight_table(model)
    old = [p.detach().clone() for p in model.parameters()]
    if method.startswith("pa"):
        graphnn.rewire.pa_rewire_(model, seed=3, mode=method.split("_")[1])
    else:
        for m in model:
            if isinstance(m, nn.Linear):
                reference = m.weight.detach().clone()
                with torch.no_grad():
                    m.weight.add_(torch.randn_like(m.weight))
                graphnn.rewire.rank_match_(m.weight.data, reference)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(old, model.parameters()))  # weights moved
    after = weight_table(model)
    assert after["sigma_w2"].tolist() == pytest.approx(before["sigma_w2"].tolist(), rel=1e-12)
    assert after["sigma_b2"].tolist() == before["sigma_b2"].tolist()


def test_variance_search_keeps_the_scale_of_its_initialiser():
    """A strength-variance search redraws with its initialiser: σ̂_w² stays that initialiser's
    σ_w² (He: 2) within sampling noise."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    graphnn.rewire.min_strength_variance_search_(
        model, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), trials=3, seed=0)
    t = weight_table(model)
    assert t["sigma_w2"].tolist() == pytest.approx([2.0, 2.0], rel=0.03)
    assert not math.isnan(t["var_w"].iloc[0])
