"""The family rule table (graph-model.md §2c, §2d way 3) on checkpoints written by hand, without
transformers: names + shapes (+ config.json) -> roles -> partitions and blocks, each expectation
worked out here from the names and the config."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import graphnn
from graphnn.errors import TopologyWarning
from graphnn.extract.checkpoints import order_names
from graphnn.extract.families import family_of, role_of

D, HEADS, KV, HD, FF = 64, 2, 1, 32, 48


def _llama_sd(layers=2, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(vocab, D, generator=g), "model.norm.weight": torch.ones(D),
          "lm_head.weight": torch.randn(vocab, D, generator=g)}
    for i in range(layers):
        p = f"model.layers.{i}"
        sd.update({
            f"{p}.input_layernorm.weight": torch.ones(D),
            f"{p}.self_attn.q_proj.weight": torch.randn(HEADS * HD, D, generator=g),
            f"{p}.self_attn.k_proj.weight": torch.randn(KV * HD, D, generator=g),
            f"{p}.self_attn.v_proj.weight": torch.randn(KV * HD, D, generator=g),
            f"{p}.self_attn.o_proj.weight": torch.randn(D, HEADS * HD, generator=g),
            f"{p}.post_attention_layernorm.weight": torch.ones(D),
            f"{p}.mlp.gate_proj.weight": torch.randn(FF, D, generator=g),
            f"{p}.mlp.up_proj.weight": torch.randn(FF, D, generator=g),
            f"{p}.mlp.down_proj.weight": torch.randn(D, FF, generator=g),
        })
    return sd


LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D,
                "num_attention_heads": HEADS, "num_key_value_heads": KV, "intermediate_size": FF,
                "tie_word_embeddings": False}


def _safetensors_folder(path, sd, config, shards=2):
    """A sharded safetensors folder written by hand (lexically sorted names in the index, as the
    Hugging Face hub stores them)."""
    path.mkdir()
    names = sorted(sd)
    per = -(-len(names) // shards)
    weight_map = {}
    for k in range(shards):
        chunk = names[k * per:(k + 1) * per]
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: sd[n].contiguous() for n in chunk}, str(path / shard))
        weight_map.update({n: shard for n in chunk})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def _repeat_map(heads, kv, hd):
    group = heads // kv
    return [(h // group) * hd + t for h in range(heads) for t in range(hd)]


def test_llama_gqa_folder_without_transformers(tmp_path):
    sd = _llama_sd()
    folder = _safetensors_folder(tmp_path / "llama", sd, LLAMA_CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(folder, include_embeddings=True)
    assert g.topology == "family rules: llama (config.json)"
    assert [p.name for p in g.partitions.values() if p.kind == "residual"] == ["model.stream"]
    assert g.partitions["model.stream"].size == D
    for i in range(2):
        p = f"model.layers.{i}"
        o = g.blocks[f"{p}.self_attn.o_proj.weight"]
        assert o.src == f"{p}.self_attn.v_proj" and g.partitions[o.src].size == KV * HD
        assert o.src_index.tolist() == _repeat_map(HEADS, KV, HD)
        assert torch.equal(o.matrix(), sd[f"{p}.self_attn.o_proj.weight"])
        gate, up, down = (g.blocks[f"{p}.mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        assert gate.dst == up.dst == down.src and g.partitions[gate.dst].size == FF
        assert g.partitions[gate.dst].members == (f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj")
        for n in ("q", "k", "v"):
            assert g.blocks[f"{p}.self_attn.{n}_proj.weight"].src == "model.stream"
    assert g.blocks["model.embed_tokens.weight"].dst == "model.stream"
    assert g.blocks["lm_head.weight"].src == "model.stream"
    assert not any("new partition" in n for n in g.notes)
    # numel rule: every weight entry is one edge
    assert g.num_edges == sum(t.numel() for n, t in sd.items() if t.dim() == 2)


def test_state_dict_without_config_guesses_head_dim_and_warns():
    sd = _llama_sd()
    with pytest.warns(TopologyWarning, match="head_dim was guessed"):
        g = graphnn.extract(sd)
    assert g.topology == "family rules: llama (the state_dict's parameter names)"
    # the guess (head_dim 32) is the true one here
    assert g.blocks["model.layers.0.self_attn.o_proj.weight"].src_index.tolist() == _repeat_map(HEADS, KV, HD)


def test_unknown_family_keeps_shape_chaining_with_a_note():
    torch.manual_seed(0)
    sd = {"encoder.a.weight": torch.randn(8, 4), "encoder.b.weight": torch.randn(3, 8)}
    g = graphnn.extract(sd)
    assert g.topology.startswith("shape chaining")
    assert any("inferred from parameter names and shapes" in n for n in g.notes)
    assert g.blocks["encoder.b.weight"].src == "encoder.a"


def test_order_names_puts_encoder_first_and_q_k_v_before_o():
    t5 = sorted(["shared.weight", "lm_head.weight"] + [
        f"{side}.block.0.layer.0.SelfAttention.{p}.weight" for side in ("encoder", "decoder") for p in "qkvo"])
    ordered = order_names(t5)
    assert ordered[0] == "shared.weight" and ordered[-1] == "lm_head.weight"
    assert [n.split(".")[0] for n in ordered[1:-1]] == ["encoder"] * 4 + ["decoder"] * 4
    assert [n.split(".")[-2] for n in ordered[1:5]] == ["q", "k", "v", "o"]
    llama = sorted(_llama_sd(layers=1))
    leaves = [n.split(".")[-2] for n in order_names(llama) if "self_attn" in n or "mlp" in n]
    assert leaves == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_neox_fused_qkv_is_split_per_head(tmp_path):
    """GPT-NeoX stores query_key_value as rows (heads, 3, head_dim): q of head h is rows
    h*3*hd .. h*3*hd+hd, k the next hd rows, v the next."""
    heads, hd, d = 4, 8, 32
    w = torch.arange(3 * d, dtype=torch.float32)[:, None].repeat(1, d)  # row r holds the value r
    sd = {"gpt_neox.layers.0.attention.query_key_value.weight": w,
          "gpt_neox.layers.0.attention.dense.weight": torch.randn(d, d),
          "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": torch.randn(4 * d, d),
          "gpt_neox.layers.0.mlp.dense_4h_to_h.weight": torch.randn(d, 4 * d)}
    folder = _safetensors_folder(tmp_path / "neox", sd, {"model_type": "gpt_neox", "hidden_size": d,
                                                         "num_attention_heads": heads}, shards=1)
    g = graphnn.extract(folder)
    for k, part in enumerate("qkv"):
        rows = [h * 3 * hd + k * hd + t for h in range(heads) for t in range(hd)]
        m = g.blocks[f"gpt_neox.layers.0.attention.query_key_value.weight[{part}]"].matrix()
        assert m[:, 0].tolist() == rows
    dense = g.blocks["gpt_neox.layers.0.attention.dense.weight"]
    assert dense.src == "gpt_neox.layers.0.attention.query_key_value.v" and dense.dst == "gpt_neox.stream"
    # every entry of the fused tensor belongs to exactly one of the three blocks
    owners = torch.zeros(3 * d, d, dtype=torch.int64)
    for part in "qkv":
        dst, _ = g.blocks[f"gpt_neox.layers.0.attention.query_key_value.weight[{part}]"].entry_index()
        owners += (dst >= 0).long()
    assert bool((owners == 1).all())


def test_phi3_fused_projections_split_by_config_or_by_o_proj_width(tmp_path):
    g_ = torch.Generator().manual_seed(1)
    q, kv = HEADS * HD, KV * HD
    sd = {"model.layers.0.self_attn.qkv_proj.weight": torch.randn(q + 2 * kv, D, generator=g_),
          "model.layers.0.self_attn.o_proj.weight": torch.randn(D, q, generator=g_),
          "model.layers.0.mlp.gate_up_proj.weight": torch.randn(2 * FF, D, generator=g_),
          "model.layers.0.mlp.down_proj.weight": torch.randn(D, FF, generator=g_)}
    with_cfg = graphnn.extract(_safetensors_folder(tmp_path / "phi3", sd, dict(LLAMA_CONFIG, model_type="phi3")))
    with pytest.warns(TopologyWarning, match="head_dim was guessed"):  # the GQA map needs it
        without = graphnn.extract(sd)  # no config: q rows = o_proj's width, k = v = the rest halved
    for g in (with_cfg, without):
        blocks = [g.blocks[f"model.layers.0.self_attn.qkv_proj.weight[{p}]"] for p in "qkv"]
        assert [b.shape[0] for b in blocks] == [q, kv, kv]
        assert torch.equal(blocks[1].matrix(), sd["model.layers.0.self_attn.qkv_proj.weight"][q:q + kv])
        gate, up = (g.blocks[f"model.layers.0.mlp.gate_up_proj.weight[{p}]"] for p in ("gate", "up"))
        assert gate.dst == up.dst == g.blocks["model.layers.0.mlp.down_proj.weight"].src
        assert torch.equal(up.matrix(), sd["model.layers.0.mlp.gate_up_proj.weight"][FF:])


def test_mixtral_per_expert_checkpoint_and_fused_3d_experts_agree():
    """A checkpoint's experts.{e}.w1/w3/w2 and transformers 5's fused experts.gate_up_proj
    (E, 2I, H) / experts.down_proj (E, H, I) are the same experts: same matrices per expert."""
    E, I = 3, 16
    gen = torch.Generator().manual_seed(2)
    w1, w3, w2 = torch.randn(E, I, D, generator=gen), torch.randn(E, I, D, generator=gen), torch.randn(E, D, I, generator=gen)
    router = torch.randn(E, D, generator=gen)
    per_expert = {"model.layers.0.block_sparse_moe.gate.weight": router}
    for e in range(E):
        per_expert.update({f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight": w1[e],
                           f"model.layers.0.block_sparse_moe.experts.{e}.w3.weight": w3[e],
                           f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight": w2[e]})
    fused = {"model.layers.0.mlp.gate.weight": router,
             "model.layers.0.mlp.experts.gate_up_proj": torch.cat([w1, w3], dim=1),
             "model.layers.0.mlp.experts.down_proj": w2}
    ga, gb = graphnn.extract(per_expert), graphnn.extract(fused)
    assert ga.topology.startswith("family rules: mixtral") and gb.topology.startswith("family rules: mixtral")
    for g, gate_name, up_name, down_name in (
            (ga, "model.layers.0.block_sparse_moe.experts.{e}.w1.weight", "model.layers.0.block_sparse_moe.experts.{e}.w3.weight",
             "model.layers.0.block_sparse_moe.experts.{e}.w2.weight"),
            (gb, "model.layers.0.mlp.experts.gate_up_proj[{e}][gate]", "model.layers.0.mlp.experts.gate_up_proj[{e}][up]",
             "model.layers.0.mlp.experts.down_proj[{e}]")):
        hidden = set()
        for e in range(E):
            gate, up, down = (g.blocks[n.format(e=e)] for n in (gate_name, up_name, down_name))
            assert gate.dst == up.dst == down.src and gate.src == up.src == down.dst == "model.stream"
            assert torch.equal(gate.matrix(), w1[e]) and torch.equal(up.matrix(), w3[e])
            assert torch.equal(down.matrix(), w2[e])
            hidden.add(gate.dst)
        assert len(hidden) == E
        scores = [b for b in g.blocks.values() if b.param.endswith("gate.weight")][0]
        assert g.partitions[scores.dst].size == E and all(b.src != scores.dst for b in g.blocks.values())
        assert g.num_edges == 3 * E * I * D + E * D
    # the fused tensor's expert-1 block owns exactly expert 1's entries
    dst, src = gb.blocks["model.layers.0.mlp.experts.down_proj[1]"].entry_index()
    assert bool((dst[1] >= 0).all()) and bool((dst[0] < 0).all()) and bool((dst[2] < 0).all())


def test_clip_two_towers_stay_apart():
    gen = torch.Generator().manual_seed(3)
    dt, dv, proj = 32, 24, 16
    sd = {"text_projection.weight": torch.randn(proj, dt, generator=gen),
          "visual_projection.weight": torch.randn(proj, dv, generator=gen),
          "vision_model.embeddings.patch_embedding.weight": torch.randn(dv, 3, 4, 4, generator=gen)}
    for tower, d in (("text_model", dt), ("vision_model", dv)):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{tower}.encoder.layers.0.self_attn.{p}.weight"] = torch.randn(d, d, generator=gen)
        sd[f"{tower}.encoder.layers.0.mlp.fc1.weight"] = torch.randn(2 * d, d, generator=gen)
        sd[f"{tower}.encoder.layers.0.mlp.fc2.weight"] = torch.randn(d, 2 * d, generator=gen)
    g = graphnn.extract(sd)
    assert g.topology.startswith("family rules: clip")
    assert g.partitions["text_model.stream"].size == dt and g.partitions["vision_model.stream"].size == dv
    assert g.blocks["text_projection.weight"].src == "text_model.stream"
    assert g.blocks["visual_projection.weight"].src == "vision_model.stream"
    assert g.blocks["vision_model.embeddings.patch_embedding.weight"].dst == "vision_model.stream"
    for b in g.blocks.values():
        tower = "vision" if b.param.startswith(("vision", "visual")) else "text"
        for end in (b.src, b.dst):
            assert not end.startswith("text" if tower == "vision" else "vision"), b.name


def test_a_weight_that_does_not_fit_the_table_is_cut_with_a_warning():
    sd = _llama_sd(layers=1)
    sd["model.layers.0.mlp.down_proj.weight"] = torch.randn(D + 1, FF)  # not the stream's size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = graphnn.extract(sd)
    assert any(issubclass(w.category, TopologyWarning) and "down_proj.weight" in str(w.message)
               and "new partition" in str(w.message) for w in caught)
    down = g.blocks["model.layers.0.mlp.down_proj.weight"]
    assert down.dst != "model.stream" and g.partitions[down.dst].size == D + 1
    assert any("does not follow the family's layout" in n for n in g.notes)
    assert "topology cut" in g.coverage.set_index("name").loc["model.layers.0.mlp.down_proj.weight", "reason"]


def test_tied_head_folders_safetensors_and_bin(tmp_path):
    sd = _llama_sd(layers=1)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    cfg = dict(LLAMA_CONFIG, tie_word_embeddings=True)
    st = _safetensors_folder(tmp_path / "st", {k: v for k, v in sd.items() if k != "lm_head.weight"}, cfg)
    binf = tmp_path / "bin"
    binf.mkdir()
    torch.save(sd, binf / "pytorch_model.bin")  # both names, one storage
    (binf / "config.json").write_text(json.dumps(cfg))
    gs, gb = graphnn.extract(st), graphnn.extract(binf)
    for g in (gs, gb):
        head = g.blocks["lm_head.weight"]
        assert head.src == "model.stream" and torch.equal(head.matrix(), sd["model.embed_tokens.weight"])
        assert "tied" in g.coverage.set_index("name").loc["lm_head.weight", "reason"]
    assert gs.num_edges == gb.num_edges
    assert {(b.name, b.src, b.dst) for b in gs.blocks.values()} == {(b.name, b.src, b.dst) for b in gb.blocks.values()}


def test_exclude_keeps_the_partitions_of_the_rest():
    sd = _llama_sd(layers=1)
    g = graphnn.extract(sd, exclude="*.v_proj.*")
    assert "model.layers.0.self_attn.v_proj.weight" not in g.blocks
    o = g.blocks["model.layers.0.self_attn.o_proj.weight"]
    assert o.src == "model.layers.0.self_attn.v_proj" and o.dst == "model.stream"
    cov = g.coverage.set_index("name")
    assert cov.loc["model.layers.0.self_attn.v_proj.weight", "reason"].startswith("excluded")


@pytest.mark.parametrize("name, role, unit", [
    ("model.layers.3.self_attn.k_proj.weight", "k", "model.layers.3.self_attn"),
    ("transformer.h.0.attn.c_attn.weight", "qkv", "transformer.h.0.attn"),
    ("encoder.layer.1.attention.output.dense.weight", "o", "encoder.layer.1.attention"),
    ("encoder.layer.1.output.dense.weight", "mlp_out", "encoder.layer.1"),
    ("decoder.block.0.layer.1.EncDecAttention.v.weight", "v", "decoder.block.0.layer.1.EncDecAttention"),
    ("model.layers.0.mlp.experts.gate_up_proj", "experts_gate_up", "model.layers.0.mlp.experts"),
    ("model.layers.0.mlp.shared_expert.up_proj.weight", "up", "model.layers.0.mlp.shared_expert"),
    ("transformer.layer.0.attention.q_lin.weight", "q", "transformer.layer.0.attention"),
])
def test_role_table(name, role, unit):
    r = role_of(name)
    assert (r.role, r.unit) == (role, unit)


def test_family_from_config_beats_names():
    fam, how = family_of({"model_type": "qwen2_moe"}, ["model.layers.0.self_attn.q_proj.weight"])
    assert fam.name == "mixtral" and "qwen2_moe" in how
    fam, how = family_of(None, ["model.decoder.layers.0.encoder_attn.q_proj.weight",
                                "model.decoder.layers.0.self_attn.q_proj.weight"])
    assert fam.name == "bart" and how == "parameter names"
    assert family_of(None, ["fc.weight"])[0] is None


def test_head_dim_from_a_per_head_norm_needs_no_guess():
    """Qwen3-style q_norm/k_norm weights have head_dim entries: the repeat map is exact without
    a config (head_dim 16 here, which a guess from the shapes would get wrong)."""
    hd, heads, kv = 16, 4, 2
    gen = torch.Generator().manual_seed(4)
    p = "model.layers.0.self_attn"
    sd = {f"{p}.q_proj.weight": torch.randn(heads * hd, D, generator=gen),
          f"{p}.k_proj.weight": torch.randn(kv * hd, D, generator=gen),
          f"{p}.v_proj.weight": torch.randn(kv * hd, D, generator=gen),
          f"{p}.o_proj.weight": torch.randn(D, heads * hd, generator=gen),
          f"{p}.q_norm.weight": torch.ones(hd), f"{p}.k_norm.weight": torch.ones(hd)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TopologyWarning)
        g = graphnn.extract(sd)
    assert g.blocks[f"{p}.o_proj.weight"].src_index.tolist() == _repeat_map(heads, kv, hd)
