"""One weight-selection policy (graphnn.extract.select_weights): a module, its state_dict and its
saved folder select the same tensors with the same orientation, and every rewire path uses it.
Expected selections are written out by hand from the architectures (tiny transformers configs)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import graphnn
from graphnn.extract import select_weights
from graphnn.extract.selection import tie_groups
from graphnn.rewire import hcore_reinit_, pa_rewire_, rewirable_weights, rewire_checkpoint
from test_rewire_pa import spec_rewire

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)


def build(name: str):
    torch.manual_seed(0)
    t = transformers
    if name == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=16,
                                              bos_token_id=0, eos_token_id=0))
    if name == "t5":
        return t.T5ForConditionalGeneration(t.T5Config(d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1,
                                                       num_heads=2, d_kv=8, vocab_size=40, decoder_start_token_id=0))
    if name == "bart":
        return t.BartForConditionalGeneration(t.BartConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=40, max_position_embeddings=16,
            bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2, forced_eos_token_id=2))
    if name == "llama_tied":
        return t.LlamaForCausalLM(t.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=1, vocab_size=40,
                                                tie_word_embeddings=True, bos_token_id=0, eos_token_id=0))
    raise AssertionError(name)


L, T = "out_first", "transposed"


def expected(name: str) -> list[tuple[str, str, str]]:
    """(first name of the tensor, kind it is rewired as, layout), by hand. The tied input
    embedding is selected as the LM head it is (a Linear, rows = vocabulary)."""
    if name == "gpt2":
        out = [("transformer.wte.weight", "linear", L)]
        for i in range(2):
            out += [(f"transformer.h.{i}.{m}.weight", "hf_conv1d", T)
                    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
        return out
    if name == "t5":
        enc = [f"encoder.block.0.layer.0.SelfAttention.{p}.weight" for p in "qkvo"] + \
              [f"encoder.block.0.layer.1.DenseReluDense.{p}.weight" for p in ("wi", "wo")]
        dec = [f"decoder.block.0.layer.0.SelfAttention.{p}.weight" for p in "qkvo"] + \
              [f"decoder.block.0.layer.1.EncDecAttention.{p}.weight" for p in "qkvo"] + \
              [f"decoder.block.0.layer.2.DenseReluDense.{p}.weight" for p in ("wi", "wo")]
        return [("shared.weight", "linear", L)] + [(n, "linear", L) for n in enc + dec]
    if name == "bart":
        def layer(side, extra=()):
            names = [f"model.{side}.layers.0.self_attn.{p}_proj.weight" for p in "kvq"] + \
                    [f"model.{side}.layers.0.self_attn.out_proj.weight"]
            for a in extra:
                names += [f"model.{side}.layers.0.{a}.{p}_proj.weight" for p in "kvq"] + \
                         [f"model.{side}.layers.0.{a}.out_proj.weight"]
            return names + [f"model.{side}.layers.0.fc1.weight", f"model.{side}.layers.0.fc2.weight"]
        return [("model.shared.weight", "linear", L)] + \
            [(n, "linear", L) for n in layer("encoder") + layer("decoder", ("encoder_attn",))]
    if name == "llama_tied":
        return [("model.embed_tokens.weight", "linear", L)] + [
            (f"model.layers.0.{m}.weight", "linear", L)
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    raise AssertionError(name)


def selected(records) -> list[tuple[str, str, str]]:
    return [(g.names[0], g.primary.kind, g.primary.layout) for g in tie_groups(records) if g.selected]


def save(model, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder, max_shard_size="8KB")


@pytest.mark.parametrize("name", ["gpt2", "t5", "bart", "llama_tied"])
def test_module_state_dict_and_folder_select_the_same_tensors(tmp_path, name):
    model = build(name)
    want = sorted(expected(name))
    assert sorted(selected(select_weights(model))) == want
    assert sorted(selected(select_weights(model.state_dict()))) == want
    save(model, tmp_path / name)
    assert sorted(selected(select_weights(tmp_path / name))) == want
    # the module's rewirable weights are these tensors, under their first names
    assert sorted(rewirable_weights(model)) == sorted(n for n, _, _ in want)


@pytest.mark.parametrize("name, extra", [
    ("gpt2", {"transformer.wpe.weight"}),
    ("t5", {"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}),
    ("bart", {"model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"}),
])
def test_embeddings_are_opt_in_for_modules_and_files_alike(tmp_path, name, extra):
    model = build(name)
    save(model, tmp_path / name)
    for source in (model, tmp_path / name):
        default = {n for n, _, _ in selected(select_weights(source))}
        opted = {n for n, _, _ in selected(select_weights(source, include_embeddings=True))}
        assert not default & extra, "position / relative-bias tables are embeddings: not selected by default"
        assert opted - default == extra
    rec = {r.name: r for r in select_weights(tmp_path / name)}
    for n in extra:
        assert rec[n].kind == "embedding" and "include_embeddings=True" in rec[n].reason


def test_ties_are_found_in_modules_state_dicts_and_configs(tmp_path):
    model = build("gpt2")
    for source in (model, model.state_dict()):
        rec = {r.name: r for r in select_weights(source)}
        assert rec["lm_head.weight"].tied_with == ("transformer.wte.weight",)
        assert rec["transformer.wte.weight"].kind == "embedding" and not rec["transformer.wte.weight"].selected
        assert rec["lm_head.weight"].kind == "linear" and rec["lm_head.weight"].selected
    save(model, tmp_path / "g")
    rec = {r.name: r for r in select_weights(tmp_path / "g")}
    assert not rec["lm_head.weight"].stored, "declared by config.json, not stored in the shards"
    assert rec["transformer.wte.weight"].tied_with == ("lm_head.weight",)
    # an untied Llama has no declared tie
    torch.manual_seed(0)
    untied = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=40, tie_word_embeddings=False))
    save(untied, tmp_path / "u")
    rec = {r.name: r for r in select_weights(tmp_path / "u")}
    assert rec["lm_head.weight"].stored and rec["lm_head.weight"].tied_with == ()
    assert not rec["model.embed_tokens.weight"].selected


def test_excluding_one_name_of_a_tied_tensor_leaves_it_alone(tmp_path):
    model = build("gpt2")
    save(model, tmp_path / "g")
    for source in (model, tmp_path / "g"):
        groups = {g.names[0]: g for g in tie_groups(select_weights(source, exclude="transformer.wte.*"))}
        g = groups["transformer.wte.weight"]
        assert not g.selected and "exclude" in g.reason
    before = model.transformer.wte.weight.detach().clone()
    pa_rewire_(model, seed=0, exclude="transformer.wte.*")
    assert torch.equal(model.transformer.wte.weight, before)


def test_hf_conv1d_is_rewired_from_the_module_as_out_by_in():
    """GPT-2's Conv1D weights are stored (in, out); PA acts on the (out, in) matrix, with or
    without include= (the spec's transcription as oracle)."""
    model = build("gpt2")
    w = {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}
    pa_rewire_(model, seed=3)
    got = dict(model.named_parameters(remove_duplicate=False))
    for n in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"):
        assert torch.equal(got[n].detach(), spec_rewire(w[n].T.contiguous(), 3).T), n
    assert torch.equal(got["lm_head.weight"].detach(), spec_rewire(w["lm_head.weight"], 3))
    assert got["lm_head.weight"] is got["transformer.wte.weight"], "the tie survives (one Parameter)"
    model = build("gpt2")
    pa_rewire_(model, seed=3, include="*c_attn*")
    n = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(model.get_parameter(n).detach(), spec_rewire(w[n].T.contiguous(), 3).T)
    assert torch.equal(model.get_parameter("transformer.h.0.attn.c_proj.weight").detach(),
                       w["transformer.h.0.attn.c_proj.weight"])


def test_hcore_on_a_tied_lm_head_redraws_it_once():
    model = build("gpt2")
    draws: list[int] = []

    def counting_init(t):
        draws.append(t.untyped_storage().data_ptr())
        return torch.nn.init.normal_(t, 0.0, 0.02)

    hcore_reinit_(model, gamma=0.0, base_init=counting_init, seed=0)
    ptr = model.lm_head.weight.untyped_storage().data_ptr()
    assert draws.count(ptr) == 1
    assert model.lm_head.weight is model.transformer.wte.weight
    hcore_reinit_(model, gamma=1.0, base_init="match", seed=0)  # no crash with cores either


def test_recurrent_weights_are_neither_mapped_nor_rewired(tmp_path):
    net = nn.Sequential()
    net.add_module("rnn", nn.LSTM(4, 5))
    net.add_module("head", nn.Linear(5, 2))
    path = tmp_path / "lstm.pt"
    torch.save(net.state_dict(), path)
    for source in (net, net.state_dict(), path):
        rec = {r.name: r for r in select_weights(source)}
        assert not rec["rnn.weight_ih_l0"].selected and "recurrent" in rec["rnn.weight_ih_l0"].reason
    cov = graphnn.extract(path).coverage
    assert set(cov.loc[cov["status"] == "mapped", "name"]) == {"head.weight"}
    record = rewire_checkpoint(path, tmp_path / "o.pt", seed=0)
    assert {t["name"] for t in record["tensors"] if t["changed"]} == {"head.weight"}
    assert rewirable_weights(net, include="*weight*") == ["head.weight"]


def test_a_tied_pickle_keeps_one_storage(tmp_path):
    model = build("gpt2")
    src, out = tmp_path / "g.pt", tmp_path / "r.pt"
    torch.save(model.state_dict(), src)
    rec = rewire_checkpoint(src, out, seed=2)
    sd = torch.load(out, weights_only=True)
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    assert torch.equal(sd["lm_head.weight"], spec_rewire(model.lm_head.weight.detach(), 2))
    tensors = {t["name"]: t for t in rec["tensors"]}
    assert tensors["lm_head.weight"]["changed"] and tensors["transformer.wte.weight"]["changed"]


def test_t5_names_without_a_config_are_embeddings():
    sd = {"shared.weight": torch.randn(40, 16),
          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": torch.randn(32, 2),
          "encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(16, 16),
          "gpt_neox.embed_out.weight": torch.randn(40, 16)}
    rec = {r.name: r for r in select_weights(sd)}
    assert rec["shared.weight"].kind == "embedding"
    assert rec["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].kind == "embedding"
    assert rec["encoder.block.0.layer.0.SelfAttention.q.weight"].kind == "linear"
    assert rec["gpt_neox.embed_out.weight"].kind == "linear", "NeoX's embed_out is its LM head"


@pytest.mark.parametrize("name", ["gpt2", "t5", "bart", "llama_tied"])
def test_rewiring_the_module_equals_rewiring_its_folder(tmp_path, name):
    """pa_rewire_ on the module and rewire_checkpoint on its saved folder (faithful mode: one
    random stream per tensor, same seed) give the same tensors: same selection, same orientation."""
    model = build(name)
    save(model, tmp_path / "in")
    rewire_checkpoint(tmp_path / "in", tmp_path / "out", method="pa", seed=7)
    pa_rewire_(model, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = type(model).from_pretrained(tmp_path / "out")
    want, got = model.state_dict(), loaded.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k


def test_a_bare_encoder_folder_declares_no_tied_head(tmp_path):
    """BertConfig says tie_word_embeddings=True, but a BertModel has no lm_head: nothing is tied,
    and the (opt-in) word embeddings are left alone by a folder rewire."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from graphnn.extract import select_weights
    from graphnn.rewire.checkpoint import rewire_checkpoint

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(tmp_path / "bert")
    records = {r.name: r for r in select_weights(tmp_path / "bert")}
    assert "lm_head.weight" not in records
    emb = records["embeddings.word_embeddings.weight"]
    assert not emb.selected and emb.tied_with == ()
    rewire_checkpoint(tmp_path / "bert", tmp_path / "out", method="pa", seed=0)
    before = load_file(tmp_path / "bert" / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])
    assert not torch.equal(before["encoder.layer.0.attention.self.query.weight"],
                           after["encoder.layer.0.attention.self.query.weight"])


def _tiny_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=32, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=2, num_local_experts=3, num_experts_per_tok=2, vocab_size=50)
    return MixtralForCausalLM(cfg)


def test_fused_expert_tensors_are_rewired_per_expert_like_the_graph_maps_them():
    """transformers-5 3-D expert tensors: the graph maps one block per expert (and gate/up half);
    PA rewires exactly those slices, each keeping its own multiset (halves never mixed)."""
    m = _tiny_mixtral()
    gate_up = dict(m.named_parameters())["model.layers.0.mlp.experts.gate_up_proj"]
    down = dict(m.named_parameters())["model.layers.0.mlp.experts.down_proj"]
    assert gate_up.dim() == 3 and down.dim() == 3
    g = graphnn.extract(m)
    assert {f"model.layers.0.mlp.experts.gate_up_proj[{e}][{p}]" for e in range(3) for p in ("gate", "up")} \
        <= set(g.blocks)
    b_gu, b_d = gate_up.detach().clone(), down.detach().clone()
    pa_rewire_(m, seed=0)
    half = b_gu.shape[1] // 2
    for e in range(3):
        for rows in (slice(0, half), slice(half, 2 * half)):
            before, after = b_gu[e, rows], gate_up.detach()[e, rows]
            assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
            assert not torch.equal(before, after)
        assert torch.equal(b_d[e].flatten().sort().values, down.detach()[e].flatten().sort().values)
        assert not torch.equal(b_d[e], down.detach()[e])
    names = list(rewirable_weights(m))
    assert "model.layers.0.mlp.experts.down_proj[2]" in names
    m2 = _tiny_mixtral()  # excluded by a pattern: left alone
    pa_rewire_(m2, seed=0, exclude="*experts*")
    assert torch.equal(dict(m2.named_parameters())["model.layers.0.mlp.experts.down_proj"].detach(), b_d)
