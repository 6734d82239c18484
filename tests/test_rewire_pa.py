"""PA rewiring (algorithms.md §1.5): invariants, a transcription of the spec, distributions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import graphnn
from graphnn.rewire import pa as pa_mod
from graphnn.rewire import pa_rewire_, rewirable_weights

torch.set_num_threads(1)


def uniform_init(shape, seed):
    """PyTorch-default-like U(-1/sqrt(fan_in), 1/sqrt(fan_in)) draw."""
    g = torch.Generator().manual_seed(seed)
    fan_in = math.prod(shape[1:])
    return (torch.rand(shape, generator=g, dtype=torch.float32) * 2 - 1) / math.sqrt(fan_in)


def row_col_var(m: torch.Tensor) -> tuple[float, float]:
    m = m.reshape(m.shape[0], -1).double()
    return float(m.sum(1).var()), float(m.sum(0).var())


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.ConvTranspose2d(8, 6, 3, groups=2),
        nn.LayerNorm([6, 10, 10]),
        nn.Flatten(),
        nn.Linear(600, 10),
    )


def state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# -- spec transcription (written here from algorithms.md §1.5, not from graphnn) -------------------
def spec_pass(A: np.ndarray, seed) -> None:
    rng = np.random.default_rng(seed)
    r, c = A.shape
    acc = np.zeros(c)
    for t in range(1, r):
        acc = acc + A[t - 1]
        p = acc + abs(acc.min()) + 1
        p = p / p.sum()
        pi = rng.choice(c, size=c, replace=False, p=p)
        v = sorted(A[t].tolist())
        for q in range(c):
            A[t, pi[q]] = v[q]


def spec_rewire(W: torch.Tensor, seed) -> torch.Tensor:
    M = W.detach().numpy().reshape(W.shape[0], -1).copy()
    spec_pass(M, seed)
    MT = M.T.copy()
    spec_pass(MT, seed)
    return torch.from_numpy(MT.T.copy()).reshape(W.shape)


@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 3, 3), (8, 1, 3, 3)], ids=["linear", "conv2d", "depthwise"])
def test_faithful_equals_spec_transcription(shape):
    w = uniform_init(shape, seed=3)
    expected = spec_rewire(w.clone(), seed=11)
    got = pa_rewire_(w.clone(), seed=11, mode="faithful")
    assert torch.equal(got, expected)


def test_faithful_module_uses_the_seed_per_tensor():
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    expected = {n: spec_rewire(net.get_parameter(n).detach().clone(), 5) for n in ("0.weight", "2.weight")}
    pa_rewire_(net, seed=5)
    for n, e in expected.items():
        assert torch.equal(net.get_parameter(n).detach(), e)


# -- invariants ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_module_multisets_kept_and_non_weights_untouched(mode):
    net = small_net()
    net(torch.randn(2, 3, 8, 8))  # populate BatchNorm running statistics
    net.eval()
    before = state(net)
    targets = rewirable_weights(net)
    assert targets == ["0.weight", "3.weight", "4.weight", "7.weight"]
    pa_rewire_(net, seed=1, mode=mode)
    after = state(net)
    for name, b in before.items():
        if name in targets:
            assert not torch.equal(after[name], b), name
            assert torch.equal(after[name].flatten().sort().values, b.flatten().sort().values), name
        else:  # biases, BatchNorm / LayerNorm affine parameters and buffers
            assert torch.equal(after[name], b), name


@pytest.mark.parametrize("mode", ["faithful", "fast"])
@pytest.mark.parametrize("shape", [(40, 30), (16, 4, 3, 3), (12, 1, 5, 5)], ids=["linear", "conv2d", "depthwise"])
def test_pass_one_keeps_rows_and_pass_two_keeps_columns(mode, shape):
    w = uniform_init(shape, seed=2)
    m = w.reshape(shape[0], -1).double().numpy().copy()
    after1 = m.copy()
    if mode == "faithful":
        pa_mod._pa_pass_numpy_(after1, 4)
    else:
        pa_mod._pa_pass_race_numpy_(after1[None], np.random.default_rng(4))
    assert np.array_equal(after1[0], m[0]), "the first row is never touched"
    assert np.array_equal(np.sort(after1, axis=1), np.sort(m, axis=1)), "pass 1 keeps each row's multiset"
    assert not np.array_equal(after1, m)
    if mode == "faithful":
        after2 = after1.copy()
        pa_mod._pa_pass_numpy_(after2.T, 4)  # pass 2 runs on the transpose (a view)
    else:
        t = after1.T.copy()[None]
        pa_mod._pa_pass_race_numpy_(t, np.random.default_rng(5))
        after2 = t[0].T
    assert np.array_equal(np.sort(after2, axis=0), np.sort(after1, axis=0)), "pass 2 keeps column multisets"
    np.testing.assert_allclose(after2.sum(0), after1.sum(0), rtol=0, atol=1e-12)
    assert np.array_equal(after2[:, 0], after1[:, 0]), "first column (first row of M.T) untouched"
    assert row_col_var(torch.from_numpy(after2))[0] < row_col_var(torch.from_numpy(after1))[0]


def test_torch_race_pass_keeps_rows_on_cpu():
    """The CUDA code path, run on the CPU: same invariants, batched tensors independent."""
    m = torch.stack([uniform_init((30, 20), s) for s in range(3)]).double()
    out = m.clone()
    pa_mod._pa_pass_race_torch_(out, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], m[:, 0])
    assert torch.equal(out.sort(dim=2).values, m.sort(dim=2).values)
    assert not torch.equal(out, m)
    full = pa_mod._two_passes_torch_(m.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(full.flatten(1).sort(dim=1).values, m.flatten(1).sort(dim=1).values)


def test_torch_code_path_end_to_end_on_cpu(monkeypatch):
    """pa_rewire_ through the torch backend (the one CUDA tensors take), forced on the CPU."""
    monkeypatch.setattr(pa_mod, "_TORCH_ON_CPU", True)
    net = small_net()
    before = state(net)
    pa_rewire_(net, seed=3, mode="fast")
    after = state(net)
    again = small_net()
    pa_rewire_(again, seed=3, mode="fast")
    for name in rewirable_weights(net):
        assert torch.equal(after[name].flatten().sort().values, before[name].flatten().sort().values)
        assert not torch.equal(after[name], before[name])
        assert torch.equal(again.state_dict()[name], after[name]), "seeded torch generator"
    w = uniform_init((256, 256), 1)
    vr0, vc0 = row_col_var(w)
    pa_rewire_(w, seed=1, mode="fast")
    vr, vc = row_col_var(w)
    assert vr < vr0 / 8 and vc < vc0 / 8


def test_conv_transpose_rows_are_output_channels():
    """Oracle: the weight entries feeding output channel o are those with a gradient from y[:, o]."""
    conv = nn.ConvTranspose2d(4, 6, 3, groups=2)
    target = [t for t in graphnn.rewire._targets.select_targets(conv)][0]
    index = torch.arange(conv.weight.numel(), dtype=torch.float64).reshape(conv.weight.shape)
    target_idx = graphnn.rewire._targets.WeightTarget("w", index, "transposed", 2)
    rows = target_idx.units()
    assert rows.shape == (6, 2 * 9)
    x = torch.randn(1, 4, 5, 5)
    for o in range(6):
        conv.zero_grad()
        conv(x)[:, o].sum().backward()
        feeding = set(index[conv.weight.grad != 0].long().tolist())
        assert set(rows[o].long().tolist()) == feeding
    roundtrip = torch.zeros_like(index)
    target_idx2 = graphnn.rewire._targets.WeightTarget("w", roundtrip, "transposed", 2)
    target_idx2.write_units_(rows)
    assert torch.equal(roundtrip, index)
    assert target.layout == "transposed" and target.groups == 2


def test_bfloat16_and_float64_tensors_keep_their_values():
    for dtype in (torch.bfloat16, torch.float64):
        for mode in ("faithful", "fast"):
            w = uniform_init((20, 12), 1).to(dtype)
            b = w.clone()
            pa_rewire_(w, seed=2, mode=mode)
            assert w.dtype == dtype
            assert torch.equal(w.flatten().sort().values, b.flatten().sort().values)
            assert not torch.equal(w, b)


# -- seeds --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_same_seed_same_result_different_seeds_differ(mode):
    w = uniform_init((24, 18), 0)
    a = pa_rewire_(w.clone(), seed=7, mode=mode)
    b = pa_rewire_(w.clone(), seed=7, mode=mode)
    c = pa_rewire_(w.clone(), seed=8, mode=mode)
    z1 = pa_rewire_(w.clone(), seed=0, mode=mode)
    z2 = pa_rewire_(w.clone(), seed=0, mode=mode)
    n1 = pa_rewire_(w.clone(), seed=None, mode=mode)
    n2 = pa_rewire_(w.clone(), seed=None, mode=mode)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(z1, z2), "seed=0 is an ordinary seed in graphnn"
    assert not torch.equal(n1, n2), "seed=None draws fresh entropy"


def test_fast_module_reproducible_with_batched_equal_shapes():
    def make():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 8))

    a, b = make(), make()
    pa_rewire_(a, seed=4, mode="fast")
    pa_rewire_(b, seed=4, mode="fast")
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(a[0].weight, a[1].weight)


# -- distributions ------------------------------------------------------------------------------
def plackett_luce_probabilities(p: np.ndarray) -> dict[tuple, float]:
    out = {}
    for perm in itertools.permutations(range(len(p))):
        prob, left = 1.0, 1.0
        for j in perm:
            prob *= p[j] / left
            left -= p[j]
        out[perm] = prob
    return out


@pytest.mark.parametrize("row0", [[2.0, -1.0, 0.5], [0.5, 2.0, 1.0]], ids=["min<0", "min>0"])
def test_both_modes_draw_exact_plackett_luce_orderings(row0):
    """Row 1 of a 2-row matrix: its arrangement reveals the drawn ordering; compare the counts
    of the 6 orderings with the exact Plackett-Luce probabilities (chi-square). With all
    column sums positive, p = acc + min + 1 (not acc - min + 1)."""
    row0 = np.array(row0)
    row1 = np.array([10.0, 20.0, 30.0])  # sorted: value q goes to the column drawn q-th
    acc = row0
    p = acc + abs(acc.min()) + 1
    probs = plackett_luce_probabilities(p / p.sum())
    perms = list(probs)
    expected = np.array([probs[k] for k in perms])

    def ordering(row):
        return tuple(int(j) for j in np.argsort(row))  # columns sorted by value = drawn order

    n = 3000
    counts = {"faithful": np.zeros(6), "fast": np.zeros(6), "torch": np.zeros(6)}
    for s in range(n):
        a = np.stack([row0, row1]).copy()
        pa_mod._pa_pass_numpy_(a, s)
        counts["faithful"][perms.index(ordering(a[1]))] += 1
    batch = np.broadcast_to(np.stack([row0, row1]), (n, 2, 3)).copy()
    pa_mod._pa_pass_race_numpy_(batch, np.random.default_rng(0))
    tb = torch.from_numpy(np.broadcast_to(np.stack([row0, row1]), (n, 2, 3)).copy())
    pa_mod._pa_pass_race_torch_(tb, torch.Generator().manual_seed(0))
    for k in range(n):
        counts["fast"][perms.index(ordering(batch[k, 1]))] += 1
        counts["torch"][perms.index(ordering(tb[k, 1].numpy()))] += 1
    for mode, c in counts.items():
        assert scipy.stats.chisquare(c, expected * n).pvalue > 1e-3, (mode, c, expected * n)


def test_fast_and_faithful_agree_in_distribution_over_seeds():
    """Over 300 seeds (>= 50), the mean strength variance J after rewiring agrees."""
    w0 = uniform_init((32, 48), seed=7)
    j = {"faithful": [], "fast": []}
    for s in range(300):
        for mode in j:
            m = pa_rewire_(w0.clone(), seed=s, mode=mode)
            vr, vc = row_col_var(m)
            j[mode].append(0.5 * (vr + vc))
    a, b = np.array(j["faithful"]), np.array(j["fast"])
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) < 4 * se
    assert abs(a.mean() - b.mean()) / a.mean() < 0.06
    assert scipy.stats.ks_2samp(a, b).pvalue > 1e-3
    before = 0.5 * sum(row_col_var(w0))
    assert a.mean() < before / 2.5 and b.mean() < before / 2.5


@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_512_square_variance_levels_of_the_paper_table(mode):
    """algorithms.md §1.5: 512 x 512 under U(-1/sqrt n, 1/sqrt n): ~0.34 -> ~0.02."""
    for seed in (1, 2):
        w = uniform_init((512, 512), seed)
        vr0, vc0 = row_col_var(w)
        assert 0.28 < vr0 < 0.40 and 0.28 < vc0 < 0.40
        pa_rewire_(w, seed=seed, mode=mode)
        vr, vc = row_col_var(w)
        assert 0.012 < vr < 0.03 and 0.012 < vc < 0.03, (vr, vc)


# -- selection and errors -----------------------------------------------------------------------
def test_include_and_exclude_globs():
    mha = nn.MultiheadAttention(8, 2)
    # the one selection policy: what extraction maps (the fused q/k/v projection too)
    assert rewirable_weights(mha) == ["in_proj_weight", "out_proj.weight"]
    assert rewirable_weights(mha, include="*in_proj_weight") == ["in_proj_weight"]
    net = small_net()
    assert rewirable_weights(net, exclude=["0.*", "7.weight"]) == ["3.weight", "4.weight"]
    before = state(net)
    pa_rewire_(net, seed=1, exclude="0.*")
    assert torch.equal(net[0].weight, before["0.weight"])
    assert not torch.equal(net[7].weight, before["7.weight"])
    # include never reaches biases or norm parameters (LayerNorm([6, 10, 10]).weight is 3-D)
    assert rewirable_weights(net, include="*") == ["0.weight", "3.weight", "4.weight", "7.weight"]
    # nor recurrent weights, which extraction does not map either
    rnn = nn.Sequential(nn.LSTM(4, 5), )
    assert rewirable_weights(rnn) == []
    with pytest.raises(ValueError, match="matched no parameter"):
        rewirable_weights(rnn, include="*")
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    assert rewirable_weights(emb) == ["1.weight"]
    assert rewirable_weights(emb, include_embeddings=True) == ["0.weight", "1.weight"]


def test_tied_weight_is_rewired_once():
    a = nn.Linear(6, 6)
    net = nn.Sequential(a, nn.ReLU(), nn.Linear(6, 6))
    net[2].weight = a.weight
    assert rewirable_weights(net) == ["0.weight"]
    w = a.weight.detach().clone()
    pa_rewire_(net, seed=3)
    assert torch.equal(a.weight.detach(), spec_rewire(w, 3))


def test_bad_inputs_raise_clear_errors():
    w = uniform_init((4, 4), 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        pa_rewire_(w, mode="quick")
    with pytest.raises(ValueError, match="mode='fast'"):
        pa_rewire_(w, mode="faithful", device="cuda")
    with pytest.raises(ValueError, match=">= 2 dims"):
        pa_rewire_(torch.zeros(5))
    with pytest.raises(graphnn.InvalidParameterError, match="seed must be"):
        pa_rewire_(w, seed=True)
    with pytest.raises(ValueError, match="seed must be"):
        pa_rewire_(w, seed=-1)
    with pytest.raises(ValueError, match="matched no parameter"):
        pa_rewire_(nn.Linear(3, 3), include="*nothing*")
    with pytest.raises(ValueError, match="pass a module"):
        pa_rewire_(w, include="*")
    with pytest.raises(TypeError, match="Module or a torch.Tensor"):
        pa_rewire_([[1.0, 2.0]])
    bad = w.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        pa_rewire_(bad)
    with pytest.raises(ValueError, match="forward pass"):
        pa_rewire_(nn.LazyLinear(3))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pa_rewire_(w, mode="fast", device="cuda")


def test_single_row_and_single_column_are_no_ops():
    for shape in [(1, 9), (9, 1)]:
        w = uniform_init(shape, 0)
        for mode in ("faithful", "fast"):
            assert torch.equal(pa_rewire_(w.clone(), seed=1, mode=mode), w)
