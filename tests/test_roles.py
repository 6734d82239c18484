"""Layer index and role read from names: parameter names of real architectures (built from tiny
transformers configs on the meta device) against roles written here by hand, an invariant over
every weight of every block stack, names of non-transformer models (no role), and the
``layer_index``/``role`` columns of the analysis tables."""

from __future__ import annotations

import re
import warnings

import pandas as pd
import pytest
import torch

import graphnn
from graphnn.analyses.roles import name_role, partition_role
from models import MLP, DepthwiseSeparable, LeNet, ResNet, seeded

T = pytest.importorskip("transformers")

DEC = dict(vocab_size=64, num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=4)
GQA = dict(DEC, num_key_value_heads=2)


def _architectures():
    """label -> (config, auto class name)."""
    return {
        "llama": (T.LlamaConfig(**GQA), "AutoModelForCausalLM"),
        "phi3": (T.Phi3Config(**GQA, pad_token_id=0), "AutoModelForCausalLM"),
        "mixtral": (T.MixtralConfig(**GQA, num_local_experts=4, num_experts_per_tok=2), "AutoModelForCausalLM"),
        "qwen2_moe": (T.Qwen2MoeConfig(**GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                       shared_expert_intermediate_size=24), "AutoModelForCausalLM"),
        "deepseek_v3": (T.DeepseekV3Config(**dict(DEC, num_key_value_heads=4), n_routed_experts=4,
                                           moe_intermediate_size=16, q_lora_rank=16, kv_lora_rank=16,
                                           qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
                                           first_k_dense_replace=1, n_group=1, topk_group=1, num_experts_per_tok=2),
                        "AutoModelForCausalLM"),
        "gpt2": (T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=16), "AutoModelForCausalLM"),
        "gpt_neox": (T.GPTNeoXConfig(**DEC), "AutoModelForCausalLM"),
        "bert": (T.BertConfig(**DEC), "AutoModelForMaskedLM"),
        "distilbert": (T.DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=48),
                       "AutoModelForSequenceClassification"),
        "vit": (T.ViTConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            image_size=16, patch_size=8), "AutoModelForImageClassification"),
        "t5": (T.T5Config(d_model=32, d_ff=48, num_layers=2, num_heads=4, d_kv=8, vocab_size=64), "AutoModelForSeq2SeqLM"),
        "t5_gated": (T.T5Config(d_model=32, d_ff=48, num_layers=2, num_heads=4, d_kv=8, vocab_size=64,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False), "AutoModelForSeq2SeqLM"),
        "bart": (T.BartConfig(d_model=32, encoder_ffn_dim=48, decoder_ffn_dim=48, encoder_layers=2, decoder_layers=2,
                              encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=64,
                              max_position_embeddings=32), "AutoModelForSeq2SeqLM"),
        "clip": (T.CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                               num_attention_heads=4, vocab_size=64, max_position_embeddings=16),
                              vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                                 num_attention_heads=4, image_size=16, patch_size=8),
                              projection_dim=16), "AutoModel"),
        "falcon": (T.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=64),
                   "AutoModelForCausalLM"),
        "opt": (T.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=48, num_attention_heads=4,
                            word_embed_proj_dim=32), "AutoModelForCausalLM"),
    }


#: Expected (layer index, role) of parameter names, written by hand from the architectures' code.
EXPECTED = {
    "llama": {"model.embed_tokens.weight": (None, "embed"), "model.layers.1.self_attn.q_proj.weight": (1, "q"),
              "model.layers.0.self_attn.k_proj.weight": (0, "k"), "model.layers.0.self_attn.v_proj.weight": (0, "v"),
              "model.layers.0.self_attn.o_proj.weight": (0, "o"), "model.layers.1.mlp.gate_proj.weight": (1, "gate"),
              "model.layers.0.mlp.up_proj.weight": (0, "up"), "model.layers.1.mlp.down_proj.weight": (1, "down"),
              "model.layers.0.input_layernorm.weight": (0, "norm"), "model.norm.weight": (None, "norm"),
              "lm_head.weight": (None, "head")},
    "phi3": {"model.layers.1.self_attn.qkv_proj.weight": (1, "qkv"), "model.layers.0.mlp.gate_up_proj.weight":
             (0, "gate_up"), "model.layers.0.mlp.down_proj.weight": (0, "down")},
    "mixtral": {"model.layers.1.mlp.gate.weight": (1, "router"), "model.layers.0.mlp.experts.gate_up_proj": (0, "expert"),
                "model.layers.1.mlp.experts.down_proj": (1, "expert")},
    "qwen2_moe": {"model.layers.0.mlp.gate.weight": (0, "router"),
                  "model.layers.0.mlp.shared_expert.gate_proj.weight": (0, "gate"),
                  "model.layers.0.mlp.shared_expert.up_proj.weight": (0, "up"),
                  "model.layers.1.mlp.shared_expert.down_proj.weight": (1, "down"),
                  "model.layers.0.mlp.shared_expert_gate.weight": (0, "router"),
                  "model.layers.0.mlp.experts.gate_up_proj": (0, "expert")},
    "deepseek_v3": {"model.layers.0.self_attn.q_a_proj.weight": (0, "q"), "model.layers.0.self_attn.q_b_proj.weight":
                    (0, "q"), "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": (0, "kv"),
                    "model.layers.1.self_attn.kv_b_proj.weight": (1, "kv"), "model.layers.0.mlp.gate_proj.weight":
                    (0, "gate"), "model.layers.1.mlp.gate.weight": (1, "router"),
                    "model.layers.1.mlp.experts.down_proj": (1, "expert"),
                    "model.layers.1.mlp.shared_experts.up_proj.weight": (1, "up"),
                    "model.layers.0.self_attn.q_a_layernorm.weight": (0, "norm")},
    "gpt2": {"transformer.wte.weight": (None, "embed"), "transformer.wpe.weight": (None, "embed"),
             "transformer.h.1.attn.c_attn.weight": (1, "qkv"), "transformer.h.0.attn.c_proj.weight": (0, "o"),
             "transformer.h.0.mlp.c_fc.weight": (0, "up"), "transformer.h.1.mlp.c_proj.weight": (1, "down"),
             "transformer.h.0.ln_1.weight": (0, "norm"), "transformer.ln_f.weight": (None, "norm")},
    "gpt_neox": {"gpt_neox.embed_in.weight": (None, "embed"),
                 "gpt_neox.layers.0.attention.query_key_value.weight": (0, "qkv"),
                 "gpt_neox.layers.1.attention.dense.weight": (1, "o"),
                 "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": (0, "up"),
                 "gpt_neox.layers.0.mlp.dense_4h_to_h.weight": (0, "down")},
    "bert": {"bert.embeddings.word_embeddings.weight": (None, "embed"),
             "bert.embeddings.token_type_embeddings.weight": (None, "embed"),
             "bert.encoder.layer.1.attention.self.query.weight": (1, "q"),
             "bert.encoder.layer.0.attention.self.key.weight": (0, "k"),
             "bert.encoder.layer.0.attention.self.value.weight": (0, "v"),
             "bert.encoder.layer.0.attention.output.dense.weight": (0, "o"),
             "bert.encoder.layer.0.attention.output.LayerNorm.weight": (0, "norm"),
             "bert.encoder.layer.0.intermediate.dense.weight": (0, "up"),
             "bert.encoder.layer.1.output.dense.weight": (1, "down"),
             "cls.predictions.transform.dense.weight": (None, "head")},
    "distilbert": {"distilbert.transformer.layer.0.attention.q_lin.weight": (0, "q"),
                   "distilbert.transformer.layer.0.attention.out_lin.weight": (0, "o"),
                   "distilbert.transformer.layer.1.ffn.lin1.weight": (1, "up"),
                   "distilbert.transformer.layer.1.ffn.lin2.weight": (1, "down"),
                   "pre_classifier.weight": (None, None), "classifier.weight": (None, "head")},
    "vit": {"vit.embeddings.patch_embeddings.projection.weight": (None, "embed"),
            "vit.embeddings.cls_token": (None, "embed")},
    "t5": {"shared.weight": (None, "embed"), "encoder.block.1.layer.0.SelfAttention.q.weight": (1, "q"),
           "encoder.block.0.layer.0.SelfAttention.o.weight": (0, "o"),
           "encoder.block.0.layer.1.DenseReluDense.wi.weight": (0, "up"),
           "encoder.block.1.layer.1.DenseReluDense.wo.weight": (1, "down"),
           "decoder.block.1.layer.1.EncDecAttention.k.weight": (1, "k"),
           "decoder.block.0.layer.2.DenseReluDense.wo.weight": (0, "down"),
           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (None, None)},
    "t5_gated": {"encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (0, "gate"),
                 "encoder.block.0.layer.1.DenseReluDense.wi_1.weight": (0, "up"),
                 "decoder.final_layer_norm.weight": (None, "norm")},
    "bart": {"model.encoder.embed_positions.weight": (None, "embed"),
             "model.encoder.layers.1.self_attn.out_proj.weight": (1, "o"),
             "model.decoder.layers.0.encoder_attn.q_proj.weight": (0, "q"),
             "model.decoder.layers.1.fc1.weight": (1, "up"), "model.encoder.layers.0.fc2.weight": (0, "down"),
             "model.decoder.layers.0.encoder_attn_layer_norm.weight": (0, "norm")},
    "clip": {"text_model.embeddings.token_embedding.weight": (None, "embed"),
             "vision_model.embeddings.patch_embedding.weight": (None, "embed"),
             "vision_model.encoder.layers.1.self_attn.out_proj.weight": (1, "o"),
             "text_model.encoder.layers.0.mlp.fc1.weight": (0, "up"), "visual_projection.weight": (None, "head"),
             "text_projection.weight": (None, "head"), "vision_model.pre_layrnorm.weight": (None, "norm")},
    "falcon": {"transformer.h.0.self_attention.query_key_value.weight": (0, "qkv"),
               "transformer.h.1.self_attention.dense.weight": (1, "o"),
               "transformer.h.0.mlp.dense_h_to_4h.weight": (0, "up"), "transformer.word_embeddings.weight":
               (None, "embed")},
    "opt": {"model.decoder.layers.0.self_attn.out_proj.weight": (0, "o"), "model.decoder.layers.1.fc2.weight":
            (1, "down"), "model.decoder.embed_positions.weight": (None, "embed")},
}

#: The block number of a name inside a stack, by a regex written independently of graphnn.
_STACK = re.compile(r"(?:^|\.)(?:layers|layer|h|block)\.(\d+)\.")


@pytest.fixture(scope="module")
def parameter_names():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, (cfg, auto) in _architectures().items():
            with torch.device("meta"):
                model = getattr(T, auto).from_config(cfg)
            out[label] = {n: p.dim() for n, p in model.named_parameters()}
    return out


@pytest.mark.parametrize("label", list(EXPECTED))
def test_roles_of_real_parameter_names(parameter_names, label):
    names = parameter_names[label]
    for name, expected in EXPECTED[label].items():
        assert name in names, f"{label}: {name} is not a parameter (names changed?)"
        assert name_role(name) == expected, name


@pytest.mark.parametrize("label", list(EXPECTED))
def test_every_weight_inside_a_block_stack_has_a_role_and_its_index(parameter_names, label):
    for name, dim in parameter_names[label].items():
        m = _STACK.search(name)
        if m is None or dim < 2 or "relative_attention_bias" in name:
            continue
        index, role = name_role(name)
        assert role is not None, name
        assert index == int(m.group(1)), name


def test_split_blocks_and_partitions():
    assert name_role("transformer.h.3.attn.c_attn.weight[k]") == (3, "k")
    assert name_role("model.layers.2.self_attn.qkv_proj.weight[v]") == (2, "v")
    assert name_role("model.layers.0.mlp.gate_up_proj.weight[up]") == (0, "up")
    assert name_role("model.layers.5.mlp.experts.gate_up_proj[3][gate]") == (5, "expert")
    assert name_role("encoder.attn.in_proj_weight[q]") == (None, "q")
    assert name_role("encoder.attn.in_proj_weight") == (None, "qkv")
    # timm ViT and MPT-style names
    assert name_role("blocks.4.attn.qkv.weight") == (4, "qkv") and name_role("blocks.4.attn.proj.weight") == (4, "o")
    assert name_role("blocks.4.mlp.fc1.weight") == (4, "up") and name_role("blocks.4.mlp.fc2.weight") == (4, "down")
    assert name_role("patch_embed.proj.weight") == (None, "embed") and name_role("head.weight") == (None, "head")
    assert name_role("transformer.blocks.2.attn.Wqkv.weight") == (2, "qkv")
    assert name_role("transformer.blocks.2.ffn.down_proj.weight") == (2, "down")
    assert partition_role("model.stream", "residual") == (None, "stream")
    assert partition_role("model.embed_tokens.in", "input") == (None, "embed")
    assert partition_role("model.layers.4.mlp.gate_proj", "features",
                          ("model.layers.4.mlp.gate_proj", "model.layers.4.mlp.up_proj")) == (4, "gate_up")
    assert partition_role("model.layers.4.mlp.gate_proj") == (4, "gate")
    assert partition_role("gpt_neox.layers.1.attention.query_key_value.v") == (1, "v")


def _cnn_names():
    names = []
    for model in (seeded(MLP), seeded(LeNet), seeded(ResNet)):
        names += [n for n, _ in model.named_parameters()]
    with torch.device("meta"):
        resnet = T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
        convnext = T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    names += [n for n, _ in resnet.named_parameters()]
    names += [n for n, _ in convnext.named_parameters() if "embeddings" not in n and "norm" not in n]
    names += ["stem.weight", "dw1.weight", "pw1.weight", "features.0.weight", "fc.weight", "0.weight", "2.bias",
              "layer1.0.conv1.weight", "layer4.1.downsample.0.weight", "features.denseblock1.denselayer1.conv1.weight"]
    return [n for n in names if "norm" not in n.lower()]  # norms are "norm" wherever they are


def test_non_transformer_names_have_no_role():
    names = _cnn_names()
    assert len(names) > 30 and "layers.0.weight" in names and "layer1.0.conv1.weight" in names
    for name in names:
        assert name_role(name) == (None, None), name
    assert name_role("") == (None, None) and name_role(None) == (None, None)


def _llama_graph():
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**GQA))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graphnn.extract(model, include_embeddings=True)


def test_analysis_tables_carry_layer_index_and_role():
    g = _llama_graph()
    a = graphnn.analyse(g, spectral=False)
    for frame in (a.layers, a.blocks, a.neurons):
        assert list(frame.columns[-2:]) == ["layer_index", "role"]
        assert frame["layer_index"].dtype == pd.Int64Dtype() and frame["role"].dtype == object
    for name, index, role in a.blocks[["block", "layer_index", "role"]].itertuples(index=False):
        assert (None if pd.isna(index) else int(index), role) == name_role(name)
    layers = a.layers.set_index("layer")
    assert layers.loc["model.stream", "role"] == "stream" and pd.isna(layers.loc["model.stream", "layer_index"])
    assert layers.loc["model.layers.1.mlp.gate_proj", "role"] == "gate_up"
    assert layers.loc["model.layers.1.mlp.gate_proj", "layer_index"] == 1
    assert layers.loc["model.embed_tokens.in", "role"] == "embed"
    assert layers.loc["lm_head", "role"] == "head"
    merged = a.neurons.merge(a.layers[["layer", "layer_index", "role"]], on="layer", suffixes=("", "_of_layer"))
    assert len(merged) == len(a.neurons)
    assert merged["role"].equals(merged["role_of_layer"])
    assert merged["layer_index"].equals(merged["layer_index_of_layer"])
    by_role = a.blocks.groupby("role").size().to_dict()
    assert by_role == {"embed": 1, "q": 2, "k": 2, "v": 2, "o": 2, "gate": 2, "up": 2, "down": 2, "head": 1}


def test_an_mlp_has_no_roles():
    g = graphnn.extract(seeded(MLP))
    a = graphnn.analyse(g, spectral=False)
    for frame in (a.layers, a.blocks, a.neurons):
        assert frame["layer_index"].isna().all() and frame["role"].isna().all()
        assert frame["layer_index"].dtype == pd.Int64Dtype()


def test_docstring_examples():
    import doctest

    from graphnn.analyses import roles

    result = doctest.testmod(roles)
    assert result.attempted >= 3 and result.failed == 0


def test_with_roles_appends_typed_columns_to_a_copy():
    """The one helper behind every table's role columns: a copy, the two columns last, nullable
    Int64 and object; names looked up by name_role (or a mapping / function), once per name."""
    from graphnn.analyses.roles import role_arrays, with_roles

    names = ["model.layers.3.self_attn.q_proj.weight", "lm_head.weight", "0.weight",
             "model.layers.3.self_attn.q_proj.weight", None]
    frame = pd.DataFrame({"name": names, "x": range(5)})
    out = with_roles(frame, "name")
    assert list(frame.columns) == ["name", "x"]  # the input is left alone
    assert list(out.columns) == ["name", "x", "layer_index", "role"]
    assert out["layer_index"].dtype == pd.Int64Dtype() and out["role"].dtype == object
    assert out["layer_index"].tolist() == [3, pd.NA, pd.NA, 3, pd.NA]
    assert out["role"].tolist() == ["q", "head", None, "q", None]
    # a mapping: names it lacks get no role; NaN / "" / pd.NA from a table are normalised to None
    mapped = with_roles(frame, "name", {"lm_head.weight": (float("nan"), ""), "0.weight": (7.0, "up")})
    assert mapped["layer_index"].tolist() == [pd.NA, pd.NA, 7, pd.NA, pd.NA]
    assert mapped["role"].tolist() == [None, None, "up", None, None]
    calls = []
    index, roles = role_arrays(["a", "b", "a", "a"], lambda n: calls.append(n) or (len(n), n))
    assert sorted(calls) == ["a", "b"] and list(index) == [1, 1, 1, 1] and list(roles) == ["a", "b", "a", "a"]
    # replacing existing columns keeps their place
    again = with_roles(out[["name", "layer_index", "role", "x"]], "name", lambda n: (0, "k"))
    assert list(again.columns) == ["name", "layer_index", "role", "x"]
    assert again["role"].tolist() == ["k"] * 4 + [None]  # a missing name: no role
