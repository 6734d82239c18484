"""Spectral columns of the block table: spectral norm, stable rank and Frobenius norm of each
block's signed matrix as stored, against torch.linalg on matrices built here from the modules'
own parameters (Linear, conv kernels aggregated by hand, grouped convs, MHA's fused in_proj,
Llama's grouped-query attention), by a full SVD and by the Lanczos path; WeightWatcher's α
joined by layer name against WeightWatcher run on the module itself."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

import graphnn
from graphnn.analyses import spectral as sp
from graphnn.errors import ConvergenceWarning, InvalidParameterError, MissingDependencyError
from models import LeNet, DepthwiseSeparable, EncoderMHA, seeded

pytestmark = pytest.mark.filterwarnings("ignore::graphnn.TopologyWarning")


def _sigma(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m.double(), ord=2))


def _grouped(w: torch.Tensor, groups: int) -> torch.Tensor:
    """The (c_out, c_in) channel matrix of a grouped conv: l2 norm of each kernel, zero between groups."""
    cout, cin_g = w.shape[:2]
    out = torch.zeros(cout, cin_g * groups, dtype=torch.float64)
    norms = w.double().flatten(2).norm(dim=2)
    per = cout // groups
    for i in range(cout):
        gi = i // per
        out[i, gi * cin_g:(gi + 1) * cin_g] = norms[i]
    return out


def _llama():
    import transformers as T

    torch.manual_seed(0)
    cfg = T.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=40)
    return T.LlamaForCausalLM(cfg)


def _expected_matrices():
    """(module, {block name: expected (n_dst, n_src) matrix built from the parameters})."""
    cases = []
    lenet = seeded(LeNet)
    cases.append((lenet, {
        "conv1.weight": lenet.conv1.weight.double().flatten(2).norm(dim=2),
        "conv2.weight": lenet.conv2.weight.double().flatten(2).norm(dim=2),
        # a Linear after a flatten: the 16 positions of each channel aggregated (l2)
        "fc1.weight": lenet.fc1.weight.double().view(120, 16, 16).norm(dim=2),
        "fc2.weight": lenet.fc2.weight.double(),
        "fc3.weight": lenet.fc3.weight.double(),
    }))
    dw = seeded(DepthwiseSeparable)
    cases.append((dw, {
        "stem.weight": dw.stem.weight.double().flatten(2).norm(dim=2),
        "dw1.weight": _grouped(dw.dw1.weight, 8),
        "pw1.weight": dw.pw1.weight.double().flatten(2).norm(dim=2),  # a 1x1 kernel's l2 norm: |w|
        "dw2.weight": _grouped(dw.dw2.weight, 16),
        "pw2.weight": dw.pw2.weight.double().flatten(2).norm(dim=2),
        "head.weight": dw.head.weight.double(),
    }))
    mha = seeded(EncoderMHA)
    w = mha.attn.in_proj_weight.double()
    cases.append((mha, {
        "attn.in_proj_weight[q]": w[:8], "attn.in_proj_weight[k]": w[8:16], "attn.in_proj_weight[v]": w[16:],
        "attn.out_proj.weight": mha.attn.out_proj.weight.double(),
        "ff1.weight": mha.ff1.weight.double(), "ff2.weight": mha.ff2.weight.double(),
    }))
    llama = _llama()
    exp = {"lm_head.weight": llama.lm_head.weight.double()}
    for i, layer in enumerate(llama.model.layers):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):  # o_proj: the stored weight, before its GQA map
            exp[f"model.layers.{i}.self_attn.{part}.weight"] = getattr(layer.self_attn, part).weight.double()
        for part in ("gate_proj", "up_proj", "down_proj"):
            exp[f"model.layers.{i}.mlp.{part}.weight"] = getattr(layer.mlp, part).weight.double()
    cases.append((llama, exp))
    return cases


@pytest.fixture(scope="module")
def cases():
    return _expected_matrices()


#: aggregated (conv, flatten) matrices: graphnn aggregates float32 kernels in float32, the oracle in float64
AGGREGATED_RTOL = 1e-6


def _check(a, expected, rtol):
    b = a.blocks.set_index("block")
    assert set(expected) <= set(b.index), set(expected) - set(b.index)
    for name, m in expected.items():
        tol = max(rtol, AGGREGATED_RTOL) if b.loc[name, "aggregation"] is not None else rtol
        sigma, fro = _sigma(m), float(torch.linalg.matrix_norm(m, ord="fro"))
        row = b.loc[name]
        assert row["spectral_norm"] == pytest.approx(sigma, rel=tol), name
        assert row["frobenius_norm"] == pytest.approx(fro, rel=max(1e-12, tol)), name
        assert row["stable_rank"] == pytest.approx(fro ** 2 / sigma ** 2, rel=2 * tol), name
        assert 1 - 3 * tol <= row["stable_rank"] <= min(m.shape) * (1 + 3 * tol)


def test_every_block_equals_torch_linalg(cases):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model, expected in cases:
            g = graphnn.extract(model)
            if model.__class__.__name__.startswith("Llama"):
                assert g.blocks["model.layers.0.self_attn.o_proj.weight"].is_mapped  # the GQA repeat map
            _check(graphnn.analyse(g, centrality=False, core=False), expected, rtol=1e-12)


def test_the_lanczos_path_equals_torch_linalg_on_every_block(cases, monkeypatch):
    monkeypatch.setattr(sp, "DENSE_MAX_ENTRIES", 0)  # every block through Lanczos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model, expected in cases:
            # float32 weights: the Lanczos products run in float32 (spectral.py: sigma within 5e-6 relative)
            _check(graphnn.analyse(graphnn.extract(model), centrality=False, core=False), expected, rtol=5e-6)


def _hard_matrices():
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(300, 300, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    s = torch.linspace(1.0, 0.5, 200, dtype=torch.float64)
    s[1] = 1.0 - 1e-7  # the top two singular values nearly tied
    clustered = u[:, :200] * s @ v.T
    return {
        "gaussian tall": torch.randn(700, 300, generator=gen, dtype=torch.float64),
        "gaussian wide": torch.randn(200, 900, generator=gen, dtype=torch.float64),
        "rank one": torch.randn(400, 1, generator=gen, dtype=torch.float64) @ torch.randn(1, 500, generator=gen,
                                                                                            dtype=torch.float64),
        "rank three": torch.randn(400, 3, generator=gen, dtype=torch.float64) @ torch.randn(3, 500, generator=gen,
                                                                                              dtype=torch.float64),
        "orthogonal (all singular values 2)": 2 * u,
        "nearly tied top": clustered,
        "integers": torch.randint(-3, 4, (350, 420), generator=gen).double(),
        "nonnegative": torch.rand(512, 600, generator=gen, dtype=torch.float64),
    }


@pytest.mark.parametrize("label", list(_hard_matrices()))
def test_lanczos_on_hard_spectra(label):
    m = _hard_matrices()[label]
    assert sp.spectral_norm(m, method="lanczos") == pytest.approx(_sigma(m), rel=1e-9)
    assert sp.spectral_norm(m.T.contiguous(), method="lanczos") == pytest.approx(_sigma(m), rel=1e-9)
    assert sp.spectral_norm(m, method="dense") == pytest.approx(_sigma(m), rel=1e-13)


@pytest.mark.parametrize("chunk_bytes, wide_fused_max", [(8 * 700, 0), (1, 10**9)])
def test_lanczos_gram_products_chunked_or_plain(monkeypatch, chunk_bytes, wide_fused_max):
    """Row chunks of any size (one row each, or a few) and the plain WWᵀ product of a very wide
    block give the same norm."""
    monkeypatch.setattr(sp, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(sp, "WIDE_FUSED_MAX", wide_fused_max)
    for label in ("gaussian tall", "gaussian wide", "nearly tied top"):
        m = _hard_matrices()[label]
        assert sp.spectral_norm(m, method="lanczos") == pytest.approx(_sigma(m), rel=1e-9), label
        t = m.T.contiguous().T  # a transposed view (HF Conv1D's matrix), and a gathered slice of one
        assert sp.spectral_norm(t, method="lanczos") == pytest.approx(_sigma(m), rel=1e-9), label
        s = m.T.contiguous().T[::2, 1::3]
        assert not s.is_contiguous() and s.stride(0) != 1 and s.stride(1) != 1
        assert sp.spectral_norm(s, method="lanczos") == pytest.approx(_sigma(s), rel=1e-9), label


def test_lanczos_in_float32_above_the_float64_limit(monkeypatch):
    monkeypatch.setattr(sp, "FLOAT64_MAX_ENTRIES", 0)
    m = _hard_matrices()["gaussian tall"].float()
    assert sp.spectral_norm(m, method="lanczos") == pytest.approx(_sigma(m), rel=1e-5)


@pytest.mark.parametrize("wide_fused_max", [sp.WIDE_FUSED_MAX, 0])
def test_lanczos_on_half_precision_weights(monkeypatch, wide_fused_max):
    """bfloat16/float16 blocks: converted to float32 chunk by chunk (or copied for the plain
    products); the norm is that of the stored half-precision values, within the stated 5e-6."""
    monkeypatch.setattr(sp, "WIDE_FUSED_MAX", wide_fused_max)
    for dtype in (torch.bfloat16, torch.float16):
        for label in ("gaussian tall", "gaussian wide"):
            m = _hard_matrices()[label].to(dtype)
            assert sp.spectral_norm(m, method="lanczos") == pytest.approx(_sigma(m), rel=5e-6), (dtype, label)
            assert sp.spectral_norm(m.T, method="lanczos") == pytest.approx(_sigma(m), rel=5e-6), (dtype, label)


def test_same_numbers_on_every_run():
    m = _hard_matrices()["gaussian wide"]
    assert sp.spectral_norm(m, method="lanczos") == sp.spectral_norm(m.clone(), method="lanczos")
    g = graphnn.extract(seeded(LeNet))
    a1, a2 = graphnn.analyse(g, centrality=False, core=False), graphnn.analyse(g, centrality=False, core=False)
    assert a1.blocks[list(sp.SPECTRAL_COLUMNS)].equals(a2.blocks[list(sp.SPECTRAL_COLUMNS)])


def test_too_few_steps_warn_and_give_a_lower_bound():
    m = _hard_matrices()["gaussian tall"]
    with pytest.warns(ConvergenceWarning, match="lower bound"):
        est = sp.spectral_norm(m, method="lanczos", max_steps=3)
    assert 0 < est <= _sigma(m) * (1 + 1e-12)


def test_zero_and_nonfinite_blocks():
    zero = graphnn.LayeredGraph.from_matrices({"a": 3, "b": 2}, {"w": ("a", "b", torch.zeros(2, 3))})
    row = graphnn.analyse(zero, centrality=False, core=False).blocks.iloc[0]
    assert row["spectral_norm"] == 0 and row["frobenius_norm"] == 0 and np.isnan(row["stable_rank"])
    w = torch.ones(2, 3)
    w[0, 1] = float("nan")
    bad = graphnn.LayeredGraph.from_matrices({"a": 3, "b": 2}, {"w": ("a", "b", w)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = graphnn.analyse(bad, centrality=False, core=False).blocks.iloc[0]
    assert all(np.isnan(row[c]) for c in sp.SPECTRAL_COLUMNS)
    assert np.isnan(sp.spectral_norm(w))


def test_switched_off_and_bad_options():
    g = graphnn.extract(seeded(LeNet))
    a = graphnn.analyse(g, spectral=False, centrality=False, core=False)
    assert not set(sp.SPECTRAL_COLUMNS) & set(a.blocks.columns) and "spectral" not in a.timings
    with pytest.raises(InvalidParameterError, match="spectral"):
        graphnn.analyse(g, spectral="yes")
    with pytest.raises(InvalidParameterError, match="method"):
        sp.spectral_norm(torch.ones(2, 2), method="svd")
    with pytest.raises(InvalidParameterError, match="2-D"):
        sp.spectral_norm(torch.ones(2, 2, 2))


def test_graph_spectrum_equals_the_analysis_columns():
    g = graphnn.extract(seeded(DepthwiseSeparable))
    a = graphnn.analyse(g, centrality=False, core=False)
    df = sp.graph_spectrum(g)
    assert list(df["block"]) == list(a.blocks["block"])
    np.testing.assert_array_equal(df[list(sp.SPECTRAL_COLUMNS)].to_numpy(), a.blocks[list(sp.SPECTRAL_COLUMNS)].to_numpy())


# -- WeightWatcher ------------------------------------------------------------------------------------------
def _ww_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(100, 80), torch.nn.ReLU(), torch.nn.Linear(80, 60), torch.nn.ReLU(),
                               torch.nn.Linear(60, 3))


def test_weightwatcher_alpha_joined_by_layer_name(capsys):
    ww = pytest.importorskip("weightwatcher")
    model = _ww_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze()
    capsys.readouterr()
    expected = {f"{n}.weight": a for n, a in zip(details["longname"], details["alpha"])}
    assert len(expected) >= 2
    a = graphnn.analyse(graphnn.extract(model), weightwatcher=True, centrality=False, core=False)
    assert capsys.readouterr().out == ""  # WeightWatcher's prints stay off stdout (where data goes)
    got = dict(zip(a.blocks["param"], a.blocks["ww_alpha"]))
    for name, alpha in expected.items():
        assert got[name] == pytest.approx(alpha, rel=1e-9)
    assert all(np.isnan(v) for k, v in got.items() if k not in expected)  # too small for WeightWatcher
    assert list(a.blocks.columns[-2:]) == ["layer_index", "role"]
    from_state = sp.weightwatcher_alpha(model.state_dict())
    for name, alpha in zip(from_state["param"], from_state["ww_alpha"]):
        assert alpha == pytest.approx(expected[name], rel=1e-9)


def test_weightwatcher_missing_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "weightwatcher", None)  # import fails as if not installed
    g = graphnn.extract(_ww_model())
    with pytest.raises(MissingDependencyError, match=r"graphnn\[weightwatcher\]"):
        graphnn.analyse(g, weightwatcher=True)
    assert "ww_alpha" not in graphnn.analyse(g, centrality=False, core=False).blocks


def test_auto_computes_the_columns_only_up_to_the_edge_limit(monkeypatch):
    g = graphnn.extract(seeded(LeNet))
    a = graphnn.analyse(g, centrality=False, core=False)  # spectral="auto", far below the limit
    assert set(sp.SPECTRAL_COLUMNS) <= set(a.blocks.columns) and a.options["spectral"] is True
    monkeypatch.setattr(sp, "AUTO_MAX_EDGES", g.num_edges - 1)
    a = graphnn.analyse(g, centrality=False, core=False)
    assert not set(sp.SPECTRAL_COLUMNS) & set(a.blocks.columns) and a.options["spectral"] is False
    a = graphnn.analyse(g, centrality=False, core=False, spectral=True)  # asked for: computed anyway
    assert set(sp.SPECTRAL_COLUMNS) <= set(a.blocks.columns)
