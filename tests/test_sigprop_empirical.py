"""The empirical estimate of graphnn.signal_propagation: Hutchinson χ̂₁ against exact Jacobians,
the width-2,048 ReLU/He oracle, tanh phases, q̂/ĉ against the layer-wise theory, and models where
theory does not apply (conv, residual, attention)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import graphnn
from graphnn.errors import InvalidParameterError


def mlp(width: int, depth: int, act: type[nn.Module], sigma_w2: float, sigma_b2: float = 0.0, seed: int = 0,
        in_features: int | None = None) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    sizes = [in_features or width] + [width] * depth
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.normal_(0, math.sqrt(sigma_w2 / a), generator=gen)
            lin.bias.normal_(0, math.sqrt(sigma_b2), generator=gen) if sigma_b2 else lin.bias.zero_()
        layers += [lin, act()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def test_hutchinson_matches_the_exact_partial_jacobian():
    """χ̂₁ between two layers equals ‖W₂ diag(φ'(h₁))‖²_F / N₂ averaged over inputs (exact,
    computed here by hand) within the Hutchinson error; many probes make it tight."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 15), nn.Tanh(), nn.Linear(15, 3))
    x = torch.randn(8, 12)
    sp = graphnn.signal_propagation(model, inputs=x, probes=400, seed=1)
    pair = sp.pairs[(sp.pairs.src_module == "0") & (sp.pairs.dst_module == "2")]
    assert len(pair) == 1
    with torch.no_grad():
        h1 = model[0](x)
        d = 1 - torch.tanh(h1) ** 2                       # (B, 20)
        w2 = model[2].weight                               # (15, 20)
        exact = float(((w2[None] * d[:, None, :]) ** 2).sum() / (x.shape[0] * 15))
    est, se = float(pair["chi1_hat"].iloc[0]), float(pair["chi1_hat_se"].iloc[0])
    assert abs(est - exact) < 4 * se + 1e-9
    assert est == pytest.approx(exact, rel=0.05)
    # only consecutive layers are connected (the leaves cut the autograd graph at each layer)
    assert set(zip(sp.pairs.src_module, sp.pairs.dst_module)) == {("0", "2"), ("2", "4")}


def _exact_chi1(layer_map, h: torch.Tensor) -> tuple[float, float]:
    """``‖∂f/∂h‖²_F / numel(f(h))`` of ``f = layer_map`` at ``h`` (the whole batch at once), from
    torch.autograd.functional.jacobian, and the standard deviation of one Rademacher probe's
    Hutchinson term about it: ``Var(vᵀ A v) = 2 Σ_{i≠j} A_ij²`` with ``A = J Jᵀ``."""
    jac = torch.autograd.functional.jacobian(layer_map, h)
    n_out = layer_map(h).numel()
    flat = jac.reshape(n_out, h.numel()).double()
    a = flat @ flat.T
    off = a - torch.diag(torch.diag(a))
    return float(flat.pow(2).sum()) / n_out, math.sqrt(2 * float(off.pow(2).sum())) / n_out


def tiny_tanh_pair(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def test_hutchinson_equals_the_autograd_jacobian_within_its_statistical_error():
    """Fixed seed, 200 probes: χ̂₁(0 → 2) is within 4 standard errors (computed from the exact
    Jacobian, not from the estimate) of ‖∂h²/∂h¹‖²_F / N from torch.autograd.functional.jacobian,
    and the reported standard error is that error."""
    model = tiny_tanh_pair()
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probes = 200
    sp = graphnn.signal_propagation(model, inputs=x, probes=probes, seed=3)
    row = sp.pairs[(sp.pairs.src_module == "0") & (sp.pairs.dst_module == "2")].iloc[0]
    with torch.no_grad():
        h1 = model[0](x)
    exact, sd = _exact_chi1(lambda h: model[2](torch.tanh(h)), h1)
    se = sd / math.sqrt(probes)
    assert se > 0 and abs(row["chi1_hat"] - exact) < 4 * se
    assert 0.6 * se < row["chi1_hat_se"] < 1.5 * se


def test_hutchinson_is_exact_in_expectation_over_every_sign_vector(monkeypatch):
    """Over all 2^N Rademacher vectors (here N = 2 inputs × 3 units: 64 probes, enumerated in
    place of the random draw) the Hutchinson mean is ‖J‖²_F / N exactly."""
    import itertools

    from graphnn.sigprop import empirical

    model = tiny_tanh_pair(seed=2)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    signs = itertools.product((-1.0, 1.0), repeat=6)
    monkeypatch.setattr(empirical, "rademacher",
                        lambda shape, generator: torch.tensor(next(signs), dtype=torch.float64).reshape(shape))
    sp = graphnn.signal_propagation(model, inputs=x, probes=64)
    with torch.no_grad():
        h1 = model[0](x)
    exact, _ = _exact_chi1(lambda h: model[2](torch.tanh(h)), h1)
    assert float(sp.pairs["chi1_hat"].iloc[0]) == pytest.approx(exact, rel=1e-12)
    assert next(signs, None) is None  # every sign vector was used once


def test_two_readers_of_one_layer_get_separate_estimates():
    """A layer read by two later layers: each pair has its own estimate (the two are probed in
    different groups), each equal to its own exact partial Jacobian norm within its error."""
    from graphnn.sigprop.empirical import probe_groups

    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(6, 5)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return torch.cat([self.b(h), 3 * self.c(h)], dim=-1)

    torch.manual_seed(0)
    model = Fork().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    probes = 300
    sp = graphnn.signal_propagation(model, inputs=x, probes=probes, seed=0)
    assert set(zip(sp.pairs.src_module, sp.pairs.dst_module)) == {("a", "b"), ("a", "c")}
    assert probe_groups({1: [0], 2: [0]}) == [[1], [2]] and probe_groups({1: [0], 2: [1]}) == [[1, 2]]
    with torch.no_grad():
        h = model.a(x)
    for dst in ("b", "c"):
        exact, sd = _exact_chi1(lambda z, d=dst: getattr(model, d)(torch.tanh(z)), h)
        est = float(sp.pairs.loc[sp.pairs.dst_module == dst, "chi1_hat"].iloc[0])
        assert abs(est - exact) < 4 * sd / math.sqrt(probes), dst


def test_a_model_torch_func_cannot_transform_keeps_its_moments_and_says_why():
    """An autograd.Function without setup_context cannot run under torch.func: q̂, ĉ and the
    kurtosis are still measured, χ̂₁ is left empty and a note says why."""
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(Double.apply(torch.relu(self.a(x))))

    sp = graphnn.signal_propagation(Net(), batch=8, probes=2)
    assert any("torch.func.vjp cannot transform" in n for n in sp.notes)
    assert sp.layers["q_hat"].notna().all() and sp.layers["chi1_hat"].isna().all()


def test_relu_he_width_2048_is_critical_over_seeds():
    """ReLU with He-normal weights: theory χ₁ = 1 exactly; the empirical χ̂₁ of a width-2,048
    MLP within a few percent of 1 for every layer and seed."""
    for seed in range(3):
        model = mlp(2048, 3, nn.ReLU, 2.0, seed=seed)
        sp = graphnn.signal_propagation(model, batch=32, probes=2, seed=seed)
        hidden = sp.layers[sp.layers.activation == "relu"]
        assert len(hidden) == 3
        # the last hidden layer feeds the 10-unit read-out (PyTorch default init): not He
        assert hidden["chi1_hat"].iloc[:2].tolist() == pytest.approx([1.0] * 2, rel=0.04)
        assert hidden["sigma_w2"].tolist() == pytest.approx([2.0] * 3, rel=0.01)
        net = sp.network.iloc[0]
        assert net["phase"] == "critical" and net["phase_hat"] == "critical"
        assert graphnn.sigprop.mean_field.mean_field("relu", 2.0).chi1 == 1.0


def test_pytorch_default_linear_is_ordered_at_one_sixth():
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(512, 512), nn.ReLU())], nn.Linear(512, 10))
    sp = graphnn.signal_propagation(model, batch=32, probes=2)
    hidden = sp.layers[sp.layers.activation == "relu"]
    assert hidden["sigma_w2"].tolist() == pytest.approx([1 / 3] * 4, rel=0.02)
    assert hidden["chi1_theory"].tolist() == pytest.approx([1 / 6] * 4, rel=0.03)
    assert hidden["chi1_hat"].tolist() == pytest.approx([1 / 6] * 4, rel=0.08)
    net = sp.network.iloc[0]
    assert net["chi1"] == pytest.approx(1 / 6, rel=0.03) and net["phase"] == "ordered" and net["phase_hat"] == "ordered"


@pytest.mark.parametrize("sigma_w, phase", [(0.5, "ordered"), (1.0, "critical"), (2.0, "chaotic")])
def test_tanh_phases_from_theory_and_from_the_empirical_estimate(sigma_w, phase):
    """tanh, σ_b = 0: the deep half of a 40-layer width-256 MLP, started from small inputs
    (q_in = 0.05, near the σ_w = 1 fixed point q* = 0), has the phase of the theory."""
    model = mlp(256, 40, nn.Tanh, sigma_w ** 2, seed=0)
    sp = graphnn.signal_propagation(model, batch=32, probes=2, input_variance=0.05)
    net = sp.network.iloc[0]
    assert net["phase"] == phase
    assert net["phase_hat"] == phase, net["chi1_hat_net"]


def test_q_and_c_follow_the_layerwise_theory():
    """Wide tanh MLP with bias: q̂^l tracks the length map through the actual weights (within 5%),
    ĉ converges towards the theory's c* (ordered: 1), kurtosis stays near 0 (Gaussian)."""
    model = mlp(1024, 8, nn.Tanh, 1.2, 0.05, seed=3)
    sp = graphnn.signal_propagation(model, batch=128, probes=1, input_correlation=0.3)
    t = sp.layers
    hidden = t[t.activation == "tanh"]
    assert hidden["q_hat"].tolist() == pytest.approx(hidden["q_theory"].tolist(), rel=0.05)
    assert hidden["c_hat"].iloc[0] == pytest.approx(
        (1.2 * 0.3 + 0.05) / (1.2 + 0.05), abs=0.03)  # first layer: linear in the input correlation
    assert hidden["c_hat"].is_monotonic_increasing
    assert (hidden["kurtosis"].abs() < 0.3).all()
    assert (hidden["theory"] == "applies").all()


def test_conv_residual_attention_models_run_and_say_where_theory_does_not_apply():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), Block(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    with pytest.raises(InvalidParameterError, match="input_shape"):
        graphnn.signal_propagation(net)
    sp = graphnn.signal_propagation(net, input_shape=(1, 6, 6), batch=8, probes=2)
    t = sp.layers.set_index("param")
    assert t.loc["2.conv1.weight", "theory"] == "applies" or t.loc["2.conv1.weight", "theory"].startswith("n/a")
    assert t.loc["2.conv2.weight", "theory"].startswith("n/a")
    assert t["q_hat"].notna().all() and (t["q_hat"] > 0).all()
    assert math.isfinite(t.loc["2.conv1.weight", "chi1_hat"])
    # the residual output feeds the Linear from conv2 and (through the skip) from the first conv
    dsts = set(sp.pairs[sp.pairs.dst_module == "4"].src_module)
    assert dsts == {"0", "2.conv2"}

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.mha, self.out = nn.Linear(6, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.mha(h, h, h)[0])

    sp = graphnn.signal_propagation(Attn(), inputs=torch.randn(4, 5, 6), probes=2)
    t = sp.layers.set_index("param")
    assert t.loc["mha.in_proj_weight", "q_hat"].isna().all()  # q, k, v inside the module: not observable
    assert t.loc["mha.out_proj.weight", "q_hat"] > 0
    assert math.isfinite(t.loc["inp.weight", "chi1_hat"])  # inp -> mha output (through softmax mixing)
    assert t.loc["mha.in_proj_weight", "theory"].str.startswith("n/a").all()


def test_checkpoint_gives_theory_only_and_says_so(tmp_path):
    model = mlp(64, 3, nn.Tanh, 1.5, seed=0)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    sp = graphnn.signal_propagation(path, activation="tanh")
    assert not sp.empirical and any("needs the model" in n for n in sp.notes)
    live = graphnn.signal_propagation(model)
    assert sp.layers["sigma_w2"].tolist() == pytest.approx(live.layers["sigma_w2"].tolist(), rel=1e-12)
    assert sp.layers["chi1_star"].iloc[:3].tolist() == pytest.approx(live.layers["chi1_star"].iloc[:3].tolist())
    assert "q_hat" not in sp.layers


def test_model_state_is_untouched_and_results_are_deterministic():
    model = mlp(64, 2, nn.ReLU, 2.0, seed=1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = graphnn.signal_propagation(model, batch=16, probes=3, seed=5)
    b = graphnn.signal_propagation(model, batch=16, probes=3, seed=5)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    cols = ["q_hat", "c_hat", "chi1_hat", "kurtosis"]
    assert a.layers[cols].equals(b.layers[cols])


def test_compare_before_after_pa_rewiring():
    model = mlp(128, 4, nn.ReLU, 2.0, seed=0)
    before = graphnn.signal_propagation(model, batch=32, probes=2)
    graphnn.rewire.pa_rewire_(model, seed=0, mode="fast")
    after = graphnn.signal_propagation(model, batch=32, probes=2)
    wide = graphnn.sigprop.compare(before, after)
    assert wide["sigma_w2_delta"].abs().max() < 1e-12
    assert {"chi1_hat_before", "chi1_hat_after", "q_hat_delta"} <= set(wide.columns)
    assert (wide["q_hat_delta"].abs() > 0).any()


@pytest.mark.parametrize("bad", [{"probes": 0}, {"batch": -1}, {"input_correlation": 2.0}, {"seed": -3},
                                 {"input_shape": ("a",)}, {"device": "tpu"}])
def test_bad_options_are_usage_errors(bad):
    with pytest.raises(InvalidParameterError):
        graphnn.signal_propagation(mlp(8, 1, nn.ReLU, 2.0), **bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_like_on_cpu():
    model = mlp(256, 3, nn.ReLU, 2.0, seed=0)
    cpu = graphnn.signal_propagation(model, batch=32, probes=2, device="cpu")
    gpu = graphnn.signal_propagation(model, batch=32, probes=2, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    assert gpu.layers["q_hat"].tolist() == pytest.approx(cpu.layers["q_hat"].tolist(), rel=1e-3)
    assert gpu.layers["chi1_hat"].dropna().tolist() == pytest.approx(cpu.layers["chi1_hat"].dropna().tolist(), rel=0.1)


def test_transformers_model_gets_gaussian_embeddings_and_no_theory():
    """A tiny GPT-2 (built from a config, nothing downloaded): Gaussian inputs_embeds, every
    projection observed, theory marked not applicable, activations unknown (not guessed from
    registration order, which is not GPT-2's dataflow order)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2Model(cfg)
    sp = graphnn.signal_propagation(model, batch=8, probes=1)
    t = sp.layers
    assert len(t) == 12 and t["q_hat"].notna().all() and (t["q_hat"] > 0).all()
    assert t["activation"].str.startswith("unknown").all()
    assert t["theory"].str.startswith("n/a").all()
    assert sp.network.iloc[0]["phase"] == "unknown"
    # GPT-2 draws its weights N(0, 0.02²): σ̂_w² = fan_in · 0.0004 = 0.0128 for the d -> . layers
    fc = t[t["param"].str.endswith("mlp.c_fc.weight")]
    assert fc["sigma_w2"].tolist() == pytest.approx([32 * 0.02 ** 2] * 2, rel=0.1)
