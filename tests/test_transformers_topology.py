"""Transformer topology (graph-model.md §2c, §2d): a transformers module, its sharded safetensors
folder, a hand-written sharded ``.bin`` folder and its bare state_dict (family rules from names
alone) give the same graph, and that graph has the residual stream, grouped-query attention,
gate ⊙ up, experts and cross-attention that the config says, worked out here from the config."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch

import graphnn
from graphnn.errors import TopologyWarning

transformers = pytest.importorskip("transformers")

H = 64  # hidden size of every tiny config; heads of 32 so that a config-less guess of head_dim is right


def _configs():
    T = transformers
    common = dict(vocab_size=40, num_hidden_layers=2)
    return {
        "gpt2": (T.GPT2Config(n_embd=H, n_layer=2, n_head=2, vocab_size=40, n_positions=16), "causal"),
        "llama": (T.LlamaConfig(hidden_size=H, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
                                **common), "causal"),
        "qwen2": (T.Qwen2Config(hidden_size=H, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
                                **common), "causal"),
        "phi3": (T.Phi3Config(hidden_size=H, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
                              pad_token_id=0, **common), "causal"),
        "mixtral": (T.MixtralConfig(hidden_size=H, intermediate_size=24, num_attention_heads=2, num_key_value_heads=1,
                                    num_local_experts=3, num_experts_per_tok=2, **common), "causal"),
        "bert": (T.BertConfig(hidden_size=H, intermediate_size=48, num_attention_heads=2, max_position_embeddings=16,
                              **common), "base"),
        "vit": (T.ViTConfig(hidden_size=H, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                            image_size=16, patch_size=8), "base"),
        "t5": (T.T5Config(d_model=H, d_ff=48, num_layers=2, num_heads=2, d_kv=32, vocab_size=40), "seq2seq"),
    }


CONFIGS = _configs()


def _model(family: str):
    cfg, head = CONFIGS[family]
    torch.manual_seed(0)
    auto = {"causal": transformers.AutoModelForCausalLM, "base": transformers.AutoModel,
            "seq2seq": transformers.AutoModelForSeq2SeqLM}[head]
    return auto.from_config(cfg).eval()


# Checkpoint names of transformers-5 modules whose save_pretrained writes the original layout:
# (module-name regex, file-name replacement), applied to block and partition names of the module graph.
_RENAMES = {
    "mixtral": [
        (r"\.mlp\.experts\.gate_up_proj\[(\d+)\]\[gate\]", r".block_sparse_moe.experts.\1.w1.weight"),
        (r"\.mlp\.experts\.gate_up_proj\[(\d+)\]\[up\]", r".block_sparse_moe.experts.\1.w3.weight"),
        (r"\.mlp\.experts\.down_proj\[(\d+)\]", r".block_sparse_moe.experts.\1.w2.weight"),
        (r"\.mlp\.experts\.(\d+)$", r".block_sparse_moe.experts.\1.w1"),
        (r"\.mlp\.gate\b", r".block_sparse_moe.gate"),
    ],
    "vit": [
        (r"^layers\.(\d+)\.attention\.q_proj", r"encoder.layer.\1.attention.attention.query"),
        (r"^layers\.(\d+)\.attention\.k_proj", r"encoder.layer.\1.attention.attention.key"),
        (r"^layers\.(\d+)\.attention\.v_proj", r"encoder.layer.\1.attention.attention.value"),
        (r"^layers\.(\d+)\.attention\.o_proj", r"encoder.layer.\1.attention.output.dense"),
        (r"^layers\.(\d+)\.mlp\.fc1", r"encoder.layer.\1.intermediate.dense"),
        (r"^layers\.(\d+)\.mlp\.fc2", r"encoder.layer.\1.output.dense"),
    ],
}


def _rename(family: str, name: str) -> str:
    for pat, rep in _RENAMES.get(family, []):
        name = re.sub(pat, rep, name)
    return name


def _structure(g, family: str | None = None):
    """Partitions (name, size) and blocks (name, src, dst, shape), names renamed to the
    checkpoint layout when ``family`` is given."""
    r = (lambda n: _rename(family, n)) if family else (lambda n: n)
    parts = {(r(p.name), p.size) for p in g.partitions.values()}
    blocks = {(r(b.name), r(b.src), r(b.dst), b.shape) for b in g.blocks.values()}
    return parts, blocks


def _save_folders(model, tmp_path):
    """A >= 2-shard safetensors folder (save_pretrained) and a hand-written 2-shard .bin folder
    holding the module's state_dict (all names of tied tensors, shared storage)."""
    st = tmp_path / "st"
    model.save_pretrained(st, max_shard_size="40KB")
    shards = sorted(p.name for p in st.glob("*.safetensors"))
    assert len(shards) >= 2, shards
    binf = tmp_path / "bin"
    binf.mkdir()
    (binf / "config.json").write_text((st / "config.json").read_text())
    sd = model.state_dict()
    names = list(sd)
    half = len(names) // 2
    weight_map = {}
    for k, chunk in enumerate((names[:half], names[half:]), start=1):
        shard = f"pytorch_model-0000{k}-of-00002.bin"
        torch.save({n: sd[n] for n in chunk}, binf / shard)
        weight_map.update({n: shard for n in chunk})
    (binf / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return st, binf


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """family -> (config, module graph, safetensors graph, .bin graph, state_dict graph, warnings)."""
    out = {}
    for family in CONFIGS:
        model = _model(family)
        tmp = tmp_path_factory.mktemp(family)
        st, binf = _save_folders(model, tmp)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g_mod = graphnn.extract(model)
            g_st = graphnn.extract(st)
            g_bin = graphnn.extract(binf)
        with warnings.catch_warnings(record=True) as caught_sd:
            warnings.simplefilter("always")
            g_sd = graphnn.extract({k: v for k, v in model.state_dict().items()})
        out[family] = (CONFIGS[family][0], model, g_mod, g_st, g_bin, g_sd,
                       [str(w.message) for w in caught if issubclass(w.category, TopologyWarning)],
                       [str(w.message) for w in caught_sd if issubclass(w.category, TopologyWarning)])
    return out


@pytest.mark.parametrize("family", list(CONFIGS))
def test_module_file_bin_and_rules_graphs_agree(graphs, family):
    cfg, model, g_mod, g_st, g_bin, g_sd, warned, warned_sd = graphs[family]
    assert warned == []  # module and folders with config.json: exact, no TopologyWarning
    assert g_mod.topology.startswith("family rules:") and "transformers module" in g_mod.topology
    assert g_st.topology.startswith("family rules:") and "config.json" in g_st.topology
    # the .bin folder holds the module's own names; the safetensors folder the checkpoint names
    assert _structure(g_bin) == _structure(g_mod)
    assert _structure(g_st) == _structure(g_mod, family) if family in _RENAMES else _structure(g_st) == _structure(g_mod)
    # a bare state_dict: family recognised from the names alone, same partitions and blocks
    assert g_sd.topology == "family rules: " + g_mod.topology.split(": ")[1].split(" ")[0] \
        + " (the state_dict's parameter names)"
    assert _structure(g_sd) == _structure(g_mod)
    for g in (g_mod, g_st, g_bin, g_sd):
        assert not any("reads a new partition" in n for n in g.notes)
        assert sum("attention scores" in n for n in g.notes) == 1  # said once
    # index maps agree too (the GQA repeat maps)
    for b in g_mod.blocks.values():
        other = g_bin.blocks[b.name]
        assert (b.src_index is None) == (other.src_index is None)
        if b.src_index is not None:
            assert torch.equal(b.src_index, other.src_index)
            assert torch.equal(b.src_index, g_sd.blocks[b.name].src_index)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_edges_follow_the_numel_rule(graphs, family):
    """Every edge is one weight entry (a conv kernel slice for the patch embedding): the blocks
    of a weight together have as many edges as the weight has entries (per kernel slice)."""
    _, model, g_mod, g_st, *_ = graphs[family]
    params = dict(model.named_parameters(remove_duplicate=False))
    per_param: dict[str, int] = {}
    for b in g_mod.blocks.values():
        per_param[b.param] = per_param.get(b.param, 0) + b.num_edges
    for name, n in per_param.items():
        shape = params[name].shape
        expected = shape[0] * shape[1] if len(shape) == 4 else params[name].numel()
        assert n == expected, name
    assert g_st.num_edges == g_mod.num_edges


def _repeat_map(n_heads: int, n_kv: int, head_dim: int) -> list[int]:
    group = n_heads // n_kv
    return [(h // group) * head_dim + t for h in range(n_heads) for t in range(head_dim)]


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "mixtral"])
def test_residual_stream_and_grouped_query_attention(graphs, family):
    cfg, model, g, *_ = graphs[family]
    stream = g.partitions["model.stream"]
    assert stream.size == cfg.hidden_size and stream.kind == "residual"
    hd = cfg.hidden_size // cfg.num_attention_heads
    expected_map = torch.tensor(_repeat_map(cfg.num_attention_heads, cfg.num_key_value_heads, hd))
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}"
        o = g.blocks[f"{pre}.self_attn.o_proj.weight"]
        assert o.dst == "model.stream"
        assert g.partitions[o.src].size == cfg.num_key_value_heads * hd  # the v partition
        assert torch.equal(o.src_index, expected_map)
        if family == "phi3":
            qkv = [g.blocks[f"{pre}.self_attn.qkv_proj.weight[{p}]"] for p in "qkv"]
            assert [b.shape[0] for b in qkv] == [cfg.num_attention_heads * hd] + [cfg.num_key_value_heads * hd] * 2
            assert o.src == qkv[2].dst
            w = model.get_parameter(f"{pre}.self_attn.qkv_proj.weight")
            assert torch.equal(qkv[1].matrix(), w[cfg.num_attention_heads * hd:(cfg.num_attention_heads + 1) * hd])
        else:
            qkv = [g.blocks[f"{pre}.self_attn.{p}_proj.weight"] for p in "qkv"]
            assert o.src == qkv[2].dst
        assert all(b.src == "model.stream" for b in qkv)
    assert g.blocks["lm_head.weight"].src == "model.stream"


def test_grouped_query_attention_edges_sum_over_the_repeated_columns(graphs):
    """The exported (undirected) adjacency has, between value neuron j and stream neuron i, the
    sum of the o_proj weights of every column that reads j, plus v_proj's weight from i to j
    (computed here from the tensors)."""
    cfg, model, g, *_ = graphs["llama"]
    w = model.get_parameter("model.layers.0.self_attn.o_proj.weight").detach().double()
    hd = cfg.hidden_size // cfg.num_attention_heads
    cols = _repeat_map(cfg.num_attention_heads, cfg.num_key_value_heads, hd)
    expected = torch.zeros(cfg.hidden_size, cfg.num_key_value_heads * hd, dtype=torch.float64)
    for c, j in enumerate(cols):
        expected[:, j] += w[:, c]
    # the v projection joins the same two partitions the other way (stream -> v): undirected sum
    expected += model.get_parameter("model.layers.0.self_attn.v_proj.weight").detach().double().T
    a = g.to_scipy(weight="signed").toarray()
    nodes = list(g.partitions)
    off = {n: sum(g.partitions[m].size for m in nodes[:k]) for k, n in enumerate(nodes)}
    s0, v0 = off["model.stream"], off["model.layers.0.self_attn.v_proj"]
    got = torch.from_numpy(a[s0:s0 + cfg.hidden_size, v0:v0 + cfg.num_key_value_heads * hd])
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_gate_and_up_are_one_partition_read_by_down(graphs, family):
    cfg, _, g, *_ = graphs[family]
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}.mlp"
        if family == "phi3":
            gate, up = (g.blocks[f"{pre}.gate_up_proj.weight[{p}]"] for p in ("gate", "up"))
        else:
            gate, up = g.blocks[f"{pre}.gate_proj.weight"], g.blocks[f"{pre}.up_proj.weight"]
        down = g.blocks[f"{pre}.down_proj.weight"]
        assert gate.dst == up.dst == down.src
        assert g.partitions[gate.dst].size == cfg.intermediate_size
        assert gate.src == up.src == down.dst == "model.stream"


def test_mixture_of_experts(graphs):
    cfg, model, g, g_st, *_ = graphs["mixtral"]
    e, inter = cfg.num_local_experts, cfg.intermediate_size
    readers = {b.src for b in g.blocks.values()}
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}.mlp"
        router = g.blocks[f"{pre}.gate.weight"]
        assert router.src == "model.stream" and g.partitions[router.dst].size == e
        assert router.dst not in readers  # scores are a sink
        fused = model.get_parameter(f"{pre}.experts.gate_up_proj")
        for x in range(e):
            gate, up = (g.blocks[f"{pre}.experts.gate_up_proj[{x}][{p}]"] for p in ("gate", "up"))
            down = g.blocks[f"{pre}.experts.down_proj[{x}]"]
            assert gate.dst == up.dst == down.src and g.partitions[gate.dst].size == inter
            assert gate.src == up.src == down.dst == "model.stream"
            assert torch.equal(gate.matrix(), fused[x, :inter]) and torch.equal(up.matrix(), fused[x, inter:])
        hidden = {g.blocks[f"{pre}.experts.down_proj[{x}]"].src for x in range(e)}
        assert len(hidden) == e  # one hidden partition per expert, experts in parallel
        # the checkpoint stores one w1/w3/w2 per expert: the same numbers
        w1 = g_st.blocks[f"model.layers.{i}.block_sparse_moe.experts.1.w1.weight"].matrix()
        assert torch.equal(w1, fused[1, :inter])
    assert any("mixture of experts" in n for n in g.notes)


def test_t5_cross_attention_reads_the_encoder_stream(graphs):
    cfg, _, g, g_st, *_ = graphs["t5"]
    assert g.partitions["encoder.stream"].size == g.partitions["decoder.stream"].size == cfg.d_model
    for i in range(cfg.num_layers):
        cross = f"decoder.block.{i}.layer.1.EncDecAttention"
        assert g.blocks[f"{cross}.q.weight"].src == "decoder.stream"
        assert g.blocks[f"{cross}.k.weight"].src == g.blocks[f"{cross}.v.weight"].src == "encoder.stream"
        assert g.blocks[f"{cross}.o.weight"].dst == "decoder.stream"
        assert g.blocks[f"{cross}.o.weight"].src == g.blocks[f"{cross}.v.weight"].dst
        assert g.blocks[f"encoder.block.{i}.layer.1.DenseReluDense.wo.weight"].dst == "encoder.stream"
    # nothing in the encoder reads the decoder
    for b in g.blocks.values():
        if b.param.startswith("encoder."):
            assert b.src.startswith("encoder.") and b.dst.startswith("encoder.")
    assert g.blocks["lm_head.weight"].src == "decoder.stream"
    # relative_attention_bias is not an edge, and shared is mapped (opt-in) under its tied names
    cov = g_st.coverage.set_index("name")
    assert cov.loc["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "status"] == "skipped"
    assert "tied" in cov.loc["lm_head.weight", "reason"]


def test_t5_embeddings_opt_in_under_both_tied_names(tmp_path):
    model = _model("t5")
    st, binf = _save_folders(model, tmp_path)
    gs = [graphnn.extract(src, include_embeddings=True) for src in (model, st, binf)]
    for g in gs:
        assert g.blocks["encoder.embed_tokens.weight"].dst == "encoder.stream"
        assert g.blocks["decoder.embed_tokens.weight"].dst == "decoder.stream"
        assert "shared.weight" not in g.blocks
    assert _structure(gs[0]) == _structure(gs[1]) == _structure(gs[2])


@pytest.mark.parametrize("family", ["gpt2", "bert", "vit"])
def test_one_stream_through_every_layer(graphs, family):
    cfg, model, g, *_ = graphs[family]
    stream = {"gpt2": "transformer.stream", "bert": "stream", "vit": "stream"}[family]
    assert g.partitions[stream].size == cfg.hidden_size
    o_names = {"gpt2": "transformer.h.{i}.attn.c_proj.weight", "bert": "encoder.layer.{i}.attention.output.dense.weight",
               "vit": "layers.{i}.attention.o_proj.weight"}[family]
    out_names = {"gpt2": "transformer.h.{i}.mlp.c_proj.weight", "bert": "encoder.layer.{i}.output.dense.weight",
                 "vit": "layers.{i}.mlp.fc2.weight"}[family]
    for i in range(cfg.num_hidden_layers):
        assert g.blocks[o_names.format(i=i)].dst == stream
        assert g.blocks[out_names.format(i=i)].dst == stream
    for b in g.blocks.values():
        if b.dst != stream and not b.name.startswith("embeddings"):
            assert b.src in (stream,) or g.partitions[b.src].kind != "residual"
    if family == "gpt2":  # fused c_attn (Conv1D, in x 3d) split by columns
        w = model.get_parameter("transformer.h.0.attn.c_attn.weight")
        for k, p in enumerate("qkv"):
            assert torch.equal(g.blocks[f"transformer.h.0.attn.c_attn.weight[{p}]"].matrix(), w[:, k * H:(k + 1) * H].T)
        assert g.blocks["transformer.h.0.attn.c_proj.weight"].src == "transformer.h.0.attn.c_attn.v"
    if family == "vit":  # the patch embedding (a conv over the image channels) writes the stream
        patch = g.blocks["embeddings.patch_embeddings.projection.weight"]
        assert patch.dst == stream and g.partitions[patch.src].size == cfg.num_channels
        assert patch.aggregation == "l2"


def test_tied_lm_head_from_safetensors_and_bin(graphs):
    """GPT-2's lm_head shares wte: save_pretrained leaves it out of the safetensors, the .bin
    keeps both names. Both folders give the module's blocks, and the head is flagged tied."""
    _, model, g_mod, g_st, g_bin, *_ = graphs["gpt2"]
    for g in (g_mod, g_st, g_bin):
        assert g.blocks["lm_head.weight"].src == "transformer.stream"
        rec = g.coverage.set_index("name").loc["lm_head.weight"]
        assert rec["status"] == "mapped" and "tied" in rec["reason"] and "transformer.wte.weight" in rec["reason"]
        assert g.num_edges == g_mod.num_edges
    assert torch.equal(g_st.blocks["lm_head.weight"].matrix(), model.lm_head.weight)


def test_acceptance_llama_gqa_folder(graphs, tmp_path):
    """issue 10: graphnn.extract(folder) of a Llama-style GQA checkpoint: one residual stream of
    hidden_size neurons, written by every o_proj, down_proj and the embedding, read by every
    q/k/v/gate/up and the lm_head; no "reads a new partition" note."""
    cfg, model, *_ = graphs["llama"]
    st, _ = _save_folders(model, tmp_path)
    g = graphnn.extract(st, include_embeddings=True)
    streams = [p for p in g.partitions.values() if p.kind == "residual"]
    assert [p.name for p in streams] == ["model.stream"] and streams[0].size == cfg.hidden_size
    for b in g.blocks.values():
        leaf = b.param.split(".")[-2]
        if leaf in ("o_proj", "down_proj", "embed_tokens"):
            assert b.dst == "model.stream", b.name
        elif leaf in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head"):
            assert b.src == "model.stream", b.name
    assert not any("new partition" in n for n in g.notes)


def test_eigenvector_centrality_of_file_equals_module(graphs):
    for family in ("llama", "t5", "mixtral"):
        _, _, g_mod, g_st, g_bin, *_ = graphs[family]
        a = graphnn.eigenvector_centrality(g_mod)
        b = graphnn.eigenvector_centrality(g_bin)
        key = ["layer", "neuron"]
        a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        assert (a[key] == b[key]).all().all()
        assert (a["centrality"] - b["centrality"]).abs().max() < 1e-6


def test_describe_prints_the_topology(graphs, tmp_path):
    from typer.testing import CliRunner

    from graphnn.cli import app

    _, model, *_ = graphs["llama"]
    st, _ = _save_folders(model, tmp_path)
    res = CliRunner().invoke(app, ["describe", str(st), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "family rules: llama" in res.output


def test_analyses_and_rewiring_run_on_the_llama_graph():
    """The family graph (index-mapped o_proj included) goes through analyse, PA rewiring and
    hypercore re-initialisation: every partition gets a row, rewiring permutes each weight's
    entries (same multiset), hcore redraws them."""
    model = _model("llama")
    g = graphnn.extract(model)
    a = graphnn.analyse(g)
    assert set(a.layers["layer"]) == set(g.partitions)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    graphnn.rewire.pa_rewire_(model, seed=0)
    o = "model.layers.0.self_attn.o_proj.weight"
    after = model.get_parameter(o).detach().clone()
    assert not torch.equal(after, before[o])
    assert torch.equal(after.flatten().sort().values, before[o].flatten().sort().values)
    graphnn.rewire.hcore_reinit_(model, seed=0)
    assert not torch.equal(model.get_parameter(o).detach(), after)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_report_of_a_gqa_checkpoint_folder_shows_the_stream(graphs, tmp_path):
    """report_file on the Llama GQA folder (index-mapped o_proj): one page whose layer table has
    the residual stream and the value partitions."""
    from graphnn.report import report_file

    cfg, model, *_ = graphs["llama"]
    folder = tmp_path / "llama"
    model.save_pretrained(folder, max_shard_size="40KB")
    res = report_file(folder, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert ">model.stream<" in html and ">model.layers.0.self_attn.v_proj<" in html
    assert res.graph.blocks["model.layers.0.self_attn.o_proj.weight"].src_index is not None
