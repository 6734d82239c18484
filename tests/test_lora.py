"""PEFT LoRA adapters as ΔW graphs (graphnn.lora_delta, graphnn.lora_strength) and
``graphnn analyse ADAPTER --base BASE``.

Adapters are written here by hand in the PEFT folder format (adapter_config.json and
adapter_model.safetensors with ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``).
The independent oracle is a state_dict in which the test materialises ``scale · B · A`` with
torch (transposed for GPT-2's Conv1D and for embeddings) and which graphnn extracts as an
ordinary checkpoint; the adapter's graph must give the same strengths, centrality and cores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import graphnn
from graphnn.errors import InvalidParameterError, TopologyWarning
from graphnn.extract import lora as lora_mod

torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")

COLUMNS = ["in_strength", "out_strength", "strength", "abs_strength", "centrality", "core"]


def write_adapter(folder: Path, factors: dict, *, r: int, alpha: float, targets, fmt: str = "safetensors",
                  **config) -> Path:
    """A PEFT adapter folder: ``factors`` maps a module name to ``(A, B)``; extra config keys."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "fan_in_fan_out": False,
           "use_rslora": False, "bias": "none", "base_model_name_or_path": "tiny-test-model", **config}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    sd = {}
    for module, (a, b) in factors.items():
        emb = module.endswith("embed_tokens") or module.endswith("wte")
        sd[f"base_model.model.{module}.{'lora_embedding_A' if emb else 'lora_A.weight'}"] = a.contiguous()
        sd[f"base_model.model.{module}.{'lora_embedding_B' if emb else 'lora_B.weight'}"] = b.contiguous()
    if fmt == "safetensors":
        save_file(sd, folder / "adapter_model.safetensors")
    else:
        torch.save(sd, folder / "adapter_model.bin")
    return folder


def random_factors(sd: dict, modules: list[str], r: int, seed: int = 0, dtype=torch.float64, transposed=False):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m in modules:
        w = sd[m + ".weight"]
        n_out, n_in = (w.shape[1], w.shape[0]) if transposed else tuple(w.shape)
        out[m] = (torch.randn(r, n_in, generator=gen, dtype=dtype), torch.randn(n_out, r, generator=gen, dtype=dtype))
    return out


def materialised(sd: dict, factors: dict, scale: float, transposed=False) -> dict:
    """The oracle: the base state_dict with every adapted weight replaced by scale · B · A."""
    out = {k: v.detach().clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
    for m, (a, b) in factors.items():
        d = scale * (b.double() @ a.double())
        out[m + ".weight"] = d.T.contiguous() if transposed else d
    return out


def save_folder(model, sd: dict, folder: Path) -> Path:
    from graphnn.extract.checkpoints import write_safetensors

    folder.mkdir()
    write_safetensors(sd, folder / "model.safetensors")  # a tied head shares the embedding's memory
    model.config.save_pretrained(folder)
    return folder


def neurons(g) -> pd.DataFrame:
    a = graphnn.analyse(g, dtype=torch.float64, device="cpu")
    return a.neurons.set_index(["layer", "neuron"])[COLUMNS]


def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64, max_position_embeddings=32,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def llama_case(tmp_path_factory):
    """A Llama base folder (grouped-query attention: o_proj reads v through a repeat map), an
    adapter on q/v/o/down of both layers, and the materialised oracle folder."""
    tmp = tmp_path_factory.mktemp("llama")
    model = llama()
    sd = model.state_dict()
    base = save_folder(model, sd, tmp / "base")
    modules = [f"model.layers.{i}.{m}" for i in range(2) for m in
               ("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj")]
    r, alpha = 4, 8
    factors = random_factors(sd, modules, r)
    adapter = write_adapter(tmp / "adapter", factors, r=r, alpha=alpha, targets=["q_proj", "v_proj", "o_proj", "down_proj"])
    oracle = save_folder(model, materialised(sd, factors, alpha / r), tmp / "oracle")
    return {"base": base, "adapter": adapter, "oracle": oracle, "modules": modules, "factors": factors,
            "scale": alpha / r, "sd": sd}


# -- the ΔW graph equals the materialised one ----------------------------------------------------
def test_llama_adapter_graph_equals_the_materialised_delta(llama_case):
    c = llama_case
    g = graphnn.lora_delta(c["adapter"], c["base"])
    params = [m + ".weight" for m in c["modules"]]
    oracle = graphnn.extract(c["oracle"], include=params)
    assert sorted(b.param for b in g.blocks.values()) == sorted(params)
    assert list(g.partitions) == list(oracle.partitions)
    assert any(b.is_mapped for b in g.blocks.values())  # the GQA repeat map is kept
    for name, b in g.blocks.items():
        ob = oracle.blocks[name]
        assert (b.src, b.dst) == (ob.src, ob.dst)
        assert torch.allclose(b.matrix().double(), ob.matrix().double(), rtol=1e-12, atol=1e-12)
    got, want = neurons(g), neurons(oracle)
    pd.testing.assert_frame_equal(got[["core"]], want[["core"]])  # cores: exact
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12)
    # the blocks the adapter leaves alone are absent, and listed
    left = g.meta["delta"]["left_out"]
    assert "model.layers.0.self_attn.k_proj.weight" in left and "model.layers.1.mlp.up_proj.weight" in left
    assert any("the adapter does not change are absent" in n for n in g.notes)
    assert g.meta["delta"]["modules"]["model.layers.0.self_attn.q_proj"]["scale"] == c["scale"]


def test_lora_strength_from_the_factors_equals_strength_of_the_product(llama_case, monkeypatch):
    c = llama_case
    g = graphnn.lora_delta(c["adapter"], c["base"])
    oracle = graphnn.extract(c["oracle"], include=[m + ".weight" for m in c["modules"]])
    want = {col: graphnn.strength(oracle, d, signed=sg).set_index(["layer", "neuron"])[col]
            for d, sg, col in (("in", True, "in_strength"), ("out", True, "out_strength"), ("total", True, "strength"),
                               ("in", False, "abs_in_strength"), ("out", False, "abs_out_strength"),
                               ("total", False, "abs_strength"))}
    for chunk in (lora_mod.CHUNK_ELEMENTS, 7):  # a few rows at a time: the same sums
        monkeypatch.setattr(lora_mod, "CHUNK_ELEMENTS", chunk)
        got = graphnn.lora_strength(g).set_index(["layer", "neuron"])
        for col, w in want.items():
            np.testing.assert_allclose(got[col].to_numpy(), w.to_numpy(), rtol=1e-9, atol=1e-10)


def test_lora_strength_never_forms_the_whole_product(llama_case, monkeypatch):
    """With a chunk of 64 entries no product larger than 64 entries (2 rows of a 32-wide block)
    is formed, and the signed sums come from matrix-vector products."""
    c = llama_case
    g = graphnn.lora_delta(c["adapter"], c["base"])
    biggest = []
    real = torch.Tensor.__matmul__

    def spy(x, y):
        out = real(x, y)
        biggest.append(out.numel())
        return out

    monkeypatch.setattr(lora_mod, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    graphnn.lora_strength(g)
    monkeypatch.undo()
    assert biggest and max(biggest) <= 64


def test_lora_norms_equal_torch_linalg_of_the_materialised_delta(llama_case):
    c = llama_case
    g = graphnn.lora_delta(c["adapter"], c["base"])
    norms = graphnn.delta_norms(g).set_index("block")
    assert list(norms.index) == list(g.blocks)
    base = graphnn.extract(c["base"])
    for name, b in g.blocks.items():
        d = c["scale"] * (c["factors"][b.param[:-len(".weight")]][1] @ c["factors"][b.param[:-len(".weight")]][0])
        assert norms.loc[name, "frobenius_delta"] == pytest.approx(float(torch.linalg.matrix_norm(d)), rel=1e-10)
        assert norms.loc[name, "max_abs_delta"] == pytest.approx(float(d.abs().max()), rel=1e-12)
        w = c["sd"][b.param].double()
        assert norms.loc[name, "frobenius_base"] == pytest.approx(float(torch.linalg.matrix_norm(w)), rel=1e-12)
        assert torch.equal(base.blocks[name].matrix(), c["sd"][b.param])  # the base block is the stored weight
    assert g.meta["all_zero"] is False


def test_an_untrained_adapter_is_all_zero_and_says_so(tmp_path, mlp_base):
    """PEFT initialises lora_B to 0: such an adapter changes nothing."""
    a, b = good_factors()["0"]
    ad = write_adapter(tmp_path / "ad", {"0": (a, torch.zeros_like(b))}, r=2, alpha=4, targets=["0"])
    g = graphnn.lora_delta(ad, mlp_base[0])
    assert g.meta["all_zero"] is True and g.meta["delta"]["all_zero"] is True
    assert any("LoRA ΔW is zero" in n for n in g.notes)
    assert graphnn.delta_norms(g)["frobenius_delta"].tolist() == [0.0]
    a_ = graphnn.analyse(g, device="cpu")
    assert (a_.neurons[["strength", "abs_strength", "core"]] == 0).all().all()
    assert graphnn.lora_delta(ad, mlp_base[0], norms=False).meta["all_zero"] is None


def test_gpt2_fan_in_fan_out_adapter_on_the_fused_qkv(tmp_path):
    """GPT-2's Conv1D weights are stored (in, out): PEFT's ΔW is (B·A)ᵀ there (fan_in_fan_out),
    and c_attn splits into q, k, v blocks that each take their rows of it."""
    model = gpt2()
    sd = model.state_dict()
    base = save_folder(model, sd, tmp_path / "base")
    modules = [f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")]
    r, alpha = 2, 16
    factors = random_factors(sd, modules, r, seed=3, transposed=True)
    adapter = write_adapter(tmp_path / "ad", factors, r=r, alpha=alpha, targets=["c_attn", "c_fc"], fan_in_fan_out=True)
    oracle = save_folder(model, materialised(sd, factors, alpha / r, transposed=True), tmp_path / "oracle")
    g = graphnn.lora_delta(adapter, base)
    o = graphnn.extract(oracle, include=[m + ".weight" for m in modules])
    assert {n for n in g.blocks if "c_attn" in n} == {n for n in o.blocks if "c_attn" in n}
    assert sum("c_attn" in n for n in g.blocks) == 6  # q, k, v of two layers
    for name, b in g.blocks.items():
        assert torch.allclose(b.matrix().double(), o.blocks[name].matrix().double(), rtol=1e-12, atol=1e-12)
    pd.testing.assert_frame_equal(neurons(g), neurons(o), check_exact=False, rtol=1e-9, atol=1e-12)
    norms = graphnn.delta_norms(g).set_index("block")  # per q/k/v block: its rows of (B·A)ᵀ's transpose
    for name in g.blocks:
        m = o.blocks[name].matrix().double()
        assert norms.loc[name, "frobenius_delta"] == pytest.approx(float(torch.linalg.matrix_norm(m)), rel=1e-10)
    np.testing.assert_allclose(graphnn.lora_strength(g)["abs_strength"].to_numpy(),
                               graphnn.strength(o, signed=False)["abs_strength"].to_numpy(), rtol=1e-9)


def test_rslora_scale_and_rank_alpha_patterns(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(0)
    a0, b0 = torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.randn(5, 4, generator=gen, dtype=torch.float64)
    a2, b2 = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(4, 2, generator=gen, dtype=torch.float64)
    factors = {"0": (a0, b0), "2": (a2, b2)}
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "base.safetensors")
    ad = write_adapter(tmp_path / "rs", factors, r=4, alpha=8, targets=["0", "2"], use_rslora=True,
                       rank_pattern={"2": 2}, alpha_pattern={"2": 3})
    g = graphnn.lora_delta(ad, tmp_path / "base.safetensors")
    # the oracle, by hand: (α/√r)·B·A per module, on the MLP's chain input -> 0 -> 2
    oracle = graphnn.LayeredGraph.from_matrices(
        {"input": 6, "0": 5, "2": 4},
        {"0.weight": ("input", "0", 8 / math.sqrt(4) * b0 @ a0), "2.weight": ("0", "2", 3 / math.sqrt(2) * b2 @ a2)})
    for name in ("0.weight", "2.weight"):
        assert torch.allclose(g.blocks[name].matrix(), oracle.blocks[name].matrix(), rtol=1e-14, atol=0)
    pd.testing.assert_frame_equal(neurons(g), neurons(oracle), check_exact=False, rtol=1e-9, atol=1e-12)
    assert g.meta["delta"]["modules"]["0"]["scale"] == 4.0 and g.meta["delta"]["use_rslora"] is True
    # without rsLoRA the scale is alpha / r
    plain = write_adapter(tmp_path / "plain", factors, r=4, alpha=8, targets=["0", "2"],
                          rank_pattern={"2": 2}, alpha_pattern={"2": 3})
    gp = graphnn.lora_delta(plain, tmp_path / "base.safetensors")
    assert torch.allclose(gp.blocks["0.weight"].matrix(), 2.0 * b0 @ a0, rtol=1e-14, atol=0)
    assert torch.allclose(gp.blocks["2.weight"].matrix(), 1.5 * b2 @ a2, rtol=1e-14, atol=0)


def test_bin_adapter_and_an_embedding_adapter(tmp_path):
    model = llama()
    sd = model.state_dict()
    base = save_folder(model, sd, tmp_path / "base")
    gen = torch.Generator().manual_seed(5)
    r = 2
    emb = (torch.randn(r, 64, generator=gen, dtype=torch.float64), torch.randn(32, r, generator=gen, dtype=torch.float64))
    q = random_factors(sd, ["model.layers.0.self_attn.q_proj"], r, seed=6)
    factors = {"model.embed_tokens": emb, **q}
    ad = write_adapter(tmp_path / "ad", factors, r=r, alpha=4, targets=["embed_tokens", "q_proj"], fmt="bin")
    # embeddings are opt-in: without them the embedding's change is listed, not silently dropped
    with pytest.warns(TopologyWarning, match="model.embed_tokens"):
        g = graphnn.lora_delta(ad, base)
    assert [b.param for b in g.blocks.values()] == ["model.layers.0.self_attn.q_proj.weight"]
    g = graphnn.lora_delta(ad, base, include_embeddings=True)
    oracle_sd = materialised(sd, {"model.layers.0.self_attn.q_proj": q["model.layers.0.self_attn.q_proj"]}, 2.0)
    oracle_sd["model.embed_tokens.weight"] = (2.0 * emb[1] @ emb[0]).T.contiguous()  # PEFT: (B·A)ᵀ for embeddings
    if "lm_head.weight" in oracle_sd and model.config.tie_word_embeddings:
        oracle_sd["lm_head.weight"] = oracle_sd["model.embed_tokens.weight"]
    o = graphnn.extract(save_folder(model, oracle_sd, tmp_path / "oracle"), include_embeddings=True,
                        include=["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"])
    assert set(g.blocks) == set(o.blocks)
    for name, b in g.blocks.items():
        assert torch.allclose(b.matrix().double(), o.blocks[name].matrix().double(), rtol=1e-12, atol=1e-12)


# -- refusals ------------------------------------------------------------------------------------
@pytest.fixture()
def mlp_base(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "base.safetensors")
    return tmp_path / "base.safetensors", model.state_dict()


def good_factors(r=2):
    gen = torch.Generator().manual_seed(0)
    return {"0": (torch.randn(r, 6, generator=gen), torch.randn(5, r, generator=gen))}


@pytest.mark.parametrize("change, message", [
    ({"peft_type": "IA3"}, "peft_type IA3 is not supported"),
    ({"peft_type": "PROMPT_TUNING"}, "peft_type PROMPT_TUNING is not supported"),
    ({"use_dora": True}, "DoRA is not supported"),
    ({"r": 3}, r"says r=3"),
    ({"lora_alpha": "eight"}, "lora_alpha must be a positive number"),
])
def test_unsupported_or_inconsistent_configs_are_refused(tmp_path, mlp_base, change, message):
    ad = write_adapter(tmp_path / "ad", good_factors(), **{"r": 2, "alpha": 4, "targets": ["0"], **change})
    with pytest.raises(InvalidParameterError, match=message):
        graphnn.lora_delta(ad, mlp_base[0])


def test_adapter_without_config_is_refused(tmp_path, mlp_base):
    ad = write_adapter(tmp_path / "ad", good_factors(), r=2, alpha=4, targets=["0"])
    (ad / "adapter_config.json").unlink()
    with pytest.raises(InvalidParameterError, match="has no adapter_config.json.*scale alpha/r is unknown"):
        graphnn.lora_delta(ad, mlp_base[0])


def test_target_module_not_in_base_is_refused(tmp_path, mlp_base):
    gen = torch.Generator().manual_seed(0)
    ad = write_adapter(tmp_path / "ad", {"7": (torch.randn(2, 6, generator=gen), torch.randn(5, 2, generator=gen))},
                       r=2, alpha=4, targets=["7"])
    with pytest.raises(InvalidParameterError, match=r"no weight in the base model: 7\b"):
        graphnn.lora_delta(ad, mlp_base[0])
    ad2 = write_adapter(tmp_path / "ad2", good_factors(), r=2, alpha=4, targets=["0", "q_proj"])
    with pytest.raises(InvalidParameterError, match=r"target module\(s\) \['q_proj'\].*match no module"):
        graphnn.lora_delta(ad2, mlp_base[0])


def test_factors_that_do_not_fit_the_base_weight_are_refused(tmp_path, mlp_base):
    gen = torch.Generator().manual_seed(0)
    ad = write_adapter(tmp_path / "ad", {"0": (torch.randn(2, 7, generator=gen), torch.randn(5, 2, generator=gen))},
                       r=2, alpha=4, targets=["0"])
    with pytest.raises(InvalidParameterError, match=r"is \(5, 7\).*base weight 0.weight is \(5, 6\)"):
        graphnn.lora_delta(ad, mlp_base[0])


def test_conv_lora_and_a_missing_factor_are_refused(tmp_path, mlp_base):
    folder = tmp_path / "conv"
    write_adapter(folder, good_factors(), r=2, alpha=4, targets=["0"])
    save_file({"base_model.model.0.lora_A.weight": torch.randn(2, 6, 3, 3),
               "base_model.model.0.lora_B.weight": torch.randn(5, 2, 1, 1)}, folder / "adapter_model.safetensors")
    with pytest.raises(InvalidParameterError, match="LoRA on conv layers"):
        graphnn.lora_delta(folder, mlp_base[0])
    save_file({"base_model.model.0.lora_A.weight": torch.randn(2, 6)}, folder / "adapter_model.safetensors")
    with pytest.raises(InvalidParameterError, match="has lora_A but not the other factor"):
        graphnn.lora_delta(folder, mlp_base[0])


# -- command line ----------------------------------------------------------------------------------
def invoke(*args):
    """In process (typer's runner): the command's code, without a 10 s interpreter start per case
    (tests/test_cli.py runs the commands in subprocesses)."""
    from typer.testing import CliRunner

    from graphnn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_analyse_adapter_with_base(tmp_path, llama_case):
    c = llama_case
    out = tmp_path / "a.json"
    r = invoke("analyse", c["adapter"], "--base", c["base"], "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["base"] == str(c["base"]) and doc["delta"]["kind"] == "lora"
    got = pd.DataFrame(doc["neurons"]).set_index(["layer", "neuron"])
    want = graphnn.strength(graphnn.extract(c["oracle"], include=[m + ".weight" for m in c["modules"]]),
                            signed=False).set_index(["layer", "neuron"])
    np.testing.assert_allclose(got.loc[want.index, "abs_strength"].to_numpy(), want["abs_strength"].to_numpy(),
                               rtol=1e-5)
    r = invoke("report", c["adapter"], "--base", c["base"], "-o", tmp_path / "r.html", "--device", "cpu")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert 'id="delta"' in html and "model.layers.1.mlp.down_proj.weight" in html  # the ΔW norms section


def test_cli_adapter_usage_errors_exit_2(tmp_path, llama_case, mlp_base):
    r = invoke("analyse", llama_case["adapter"])  # an adapter without --base
    assert r.exit_code == 2 and "--base" in r.output and "tiny-test-model" in r.output, r.output
    ad = write_adapter(tmp_path / "ad", good_factors(), r=2, alpha=4, targets=["0"], use_dora=True)
    r = invoke("analyse", ad, "--base", mlp_base[0])
    assert r.exit_code == 2 and "DoRA is not supported" in r.output, r.output
    (ad / "adapter_config.json").unlink()
    r = invoke("analyse", ad, "--base", mlp_base[0])
    assert r.exit_code == 2 and "no adapter_config.json" in r.output, r.output
    r = invoke("analyse", mlp_base[0], "--base", mlp_base[0])  # --base on a plain checkpoint
    assert r.exit_code == 2 and "no adapter_config.json" in r.output, r.output


def test_cli_adapter_analysis_takes_the_analyse_options(tmp_path, mlp_base):
    """--null (and the spectral columns) apply to the adapter's ΔW graph as to a model."""
    ad = write_adapter(tmp_path / "ad", good_factors(), r=2, alpha=4, targets=["0"])
    out = tmp_path / "n.json"
    r = invoke("analyse", ad, "--base", mlp_base[0], "--null", "3", "--seed", "0", "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["null"] and {row["kind"] for row in doc["null"]} == {"shuffle"}
    a, b = good_factors()["0"]
    blocks = pd.DataFrame(doc["blocks"]).set_index("block")
    want = torch.linalg.matrix_norm((2.0 * b @ a).double(), ord=2)
    if "spectral_norm" in blocks:
        assert blocks.loc["0.weight", "spectral_norm"] == pytest.approx(float(want), rel=1e-5)


def test_orientation_follows_the_base_layer_and_biases_are_listed(tmp_path):
    """PEFT turns fan_in_fan_out off for nn.Linear: on a square Linear weight a config that says
    fan_in_fan_out=True must still give B·A, not its transpose. A lora_B.bias (PEFT's lora_bias)
    is no factor: listed as not analysed."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "base.safetensors")
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(5, 2, generator=gen, dtype=torch.float64)
    ad = write_adapter(tmp_path / "ad", {"0": (a, b)}, r=2, alpha=2, targets=["0"], fan_in_fan_out=True)
    sd = {"base_model.model.0.lora_A.weight": a, "base_model.model.0.lora_B.weight": b,
          "base_model.model.0.lora_B.bias": torch.ones(5, dtype=torch.float64)}
    save_file(sd, ad / "adapter_model.safetensors")
    g = graphnn.lora_delta(ad, tmp_path / "base.safetensors")
    assert not torch.allclose(b @ a, (b @ a).T)
    assert torch.allclose(g.blocks["0.weight"].matrix(), b @ a, rtol=1e-14, atol=0)
    assert g.meta["lora"].other == ["base_model.model.0.lora_B.bias"]
    assert any("not LoRA factors" in n and "lora_B.bias" in n for n in g.notes)


def test_a_block_declares_the_dtype_it_loads(tmp_path, mlp_base):
    """float64 factors on a float32 base: the ΔW block says float64 and loads float64 (memory
    estimates read the declared dtype); float32 factors: float32 both."""
    for dt in (torch.float64, torch.float32):
        factors = {k: (a.to(dt), b.to(dt)) for k, (a, b) in good_factors().items()}
        ad = write_adapter(tmp_path / f"ad-{dt}", factors, r=2, alpha=4, targets=["0"])
        g = graphnn.lora_delta(ad, mlp_base[0])
        for blk in g.blocks.values():
            assert blk.dtype == dt and blk.tensor().dtype == dt
