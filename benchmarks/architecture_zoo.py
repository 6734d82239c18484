"""The architecture zoo: every transformers architecture graphnn was tried on, as a table.

    python benchmarks/architecture_zoo.py            # writes docs/architectures.md
    python benchmarks/architecture_zoo.py --stdout   # prints the table only

Each model is built from a tiny config (random weights, nothing downloads), saved with
``save_pretrained`` into a sharded safetensors folder, and extracted three ways: the live module,
the folder (with its ``config.json``) and the bare state_dict (family rules from names alone).
Columns:

- *topology*: how the module's dataflow was obtained (``g.topology``; a model that torch.fx cannot
  trace and no family fits is traced from one forward pass when example inputs are given);
- *mapped*: share of the module's parameters (by number of entries, each tensor once, mapped if
  any of its names is) that are in a block; embeddings are opt-in and not mapped here;
- *warnings*: TopologyWarnings raised by the three extractions together;
- *module = state_dict*: same partitions (name, size) and blocks (name, src, dst, shape, index map);
  a bare state_dict has no config, so grouped-query attention's head size is guessed (with a
  TopologyWarning) and the repeat map can differ;
- *module ≅ folder*: same partition sizes and block shapes, src/dst sizes and kinds when names are
  ignored (transformers 5 renames some keys on save: Mixtral's experts, ViT, NeoX's head), and
  *module = folder* when the names agree too;
- *centrality*: largest difference of sorted eigenvector centralities, module vs folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import graphnn  # noqa: E402
from graphnn.errors import TopologyWarning  # noqa: E402


def zoo():
    """(label, config, auto class name) of every architecture tried."""
    import transformers as T

    dec = dict(vocab_size=64, num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4)
    gqa = dict(dec, num_key_value_heads=2)
    vis = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=16)
    return [
        ("GPT-2", T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=64, n_positions=32), "AutoModelForCausalLM"),
        ("Llama (GQA)", T.LlamaConfig(**gqa), "AutoModelForCausalLM"),
        ("Mistral (GQA)", T.MistralConfig(**gqa), "AutoModelForCausalLM"),
        ("Qwen2 (GQA, qkv bias)", T.Qwen2Config(**gqa), "AutoModelForCausalLM"),
        ("Qwen3 (GQA, q/k norm)", T.Qwen3Config(**gqa, head_dim=16), "AutoModelForCausalLM"),
        ("Gemma (tied head)", T.GemmaConfig(**dict(gqa, head_dim=16)), "AutoModelForCausalLM"),
        ("Phi-3 (fused qkv, gate_up)", T.Phi3Config(**gqa, pad_token_id=0), "AutoModelForCausalLM"),
        ("Mixtral (MoE)", T.MixtralConfig(**gqa, num_local_experts=4, num_experts_per_tok=2), "AutoModelForCausalLM"),
        ("Qwen2-MoE (shared expert)", T.Qwen2MoeConfig(**gqa, num_experts=4, num_experts_per_tok=2,
                                                       moe_intermediate_size=32, shared_expert_intermediate_size=48),
         "AutoModelForCausalLM"),
        ("GPT-NeoX / Pythia", T.GPTNeoXConfig(**dec), "AutoModelForCausalLM"),
        ("OPT (llama rules, recognised from names)", T.OPTConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2,
                                                     ffn_dim=96, num_attention_heads=4, word_embed_proj_dim=64),
         "AutoModelForCausalLM"),
        ("BERT", T.BertConfig(**dec), "AutoModel"),
        ("RoBERTa", T.RobertaConfig(**dec), "AutoModel"),
        ("DistilBERT", T.DistilBertConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, hidden_dim=96), "AutoModel"),
        ("ViT", T.ViTConfig(**vis), "AutoModel"),
        ("T5", T.T5Config(d_model=64, d_ff=96, num_layers=2, num_heads=4, d_kv=16, vocab_size=64),
         "AutoModelForSeq2SeqLM"),
        ("BART", T.BartConfig(d_model=64, encoder_ffn_dim=96, decoder_ffn_dim=96, encoder_layers=2, decoder_layers=2,
                              encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=64,
                              max_position_embeddings=32), "AutoModelForSeq2SeqLM"),
        ("CLIP (two towers)", T.CLIPConfig(
            text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                             vocab_size=64, max_position_embeddings=32),
            vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                               image_size=32, patch_size=16), projection_dim=32), "AutoModel"),
        ("T5 v1.1 (gated GELU)", T.T5Config(d_model=64, d_ff=96, num_layers=2, num_heads=4, d_kv=16, vocab_size=64,
                                          feed_forward_proj="gated-gelu", tie_word_embeddings=False),
         "AutoModelForSeq2SeqLM"),
        ("BERT masked-LM head", T.BertConfig(**dec), "AutoModelForMaskedLM"),
        ("BERT classifier", T.BertConfig(**dec), "AutoModelForSequenceClassification"),
        ("ViT classifier", T.ViTConfig(**vis), "AutoModelForImageClassification"),
        ("Llama classifier (score)", T.LlamaConfig(**gqa, pad_token_id=0), "AutoModelForSequenceClassification"),
        ("Falcon (no family rule: meta trace)", T.FalconConfig(hidden_size=64, num_hidden_layers=2,
                                                               num_attention_heads=4, vocab_size=64), "AutoModelForCausalLM"),
        ("GPT-J (no family rule: meta trace)", T.GPTJConfig(n_embd=64, n_layer=2, n_head=4, vocab_size=64,
                                                             rotary_dim=8), "AutoModelForCausalLM"),
        ("ConvNeXt (CNN, no family rule)", T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                             image_size=32), "AutoModel"),
        ("ResNet (CNN, no family rule)", T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]),
         "AutoModel"),
        ("ResNet, example_inputs", T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]),
         "AutoModel", torch.randn(1, 3, 32, 32)),
    ]


def _exact(g):
    parts = {(p.name, p.size) for p in g.partitions.values()}
    blocks = {(b.name, b.src, b.dst, b.shape, None if b.src_index is None else tuple(b.src_index.tolist()))
              for b in g.blocks.values()}
    return parts, blocks


def _shape_signature(g):
    """The graph without names: partition sizes and kinds, and per block its shape with the
    sizes and kinds of the partitions it joins."""
    parts = sorted((p.size, p.kind) for p in g.partitions.values())
    blocks = sorted((b.shape, g.partitions[b.src].size, g.partitions[b.src].kind, g.partitions[b.dst].size,
                     g.partitions[b.dst].kind) for b in g.blocks.values())
    return parts, blocks


def _mapped_share(g, model) -> float:
    cov = g.coverage.set_index("name")
    names: dict[int, list[str]] = {}
    numel: dict[int, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):  # each tensor once, under all its names
        names.setdefault(id(p), []).append(name)
        numel[id(p)] = p.numel()
    mapped = sum(numel[k] for k, ns in names.items()
                 if any(n in cov.index and cov.loc[n, "status"] == "mapped" for n in ns))
    return mapped / max(1, sum(numel.values()))


def _centrality_gap(a, b) -> float:
    ca = torch.tensor(sorted(graphnn.eigenvector_centrality(a)["centrality"].tolist()))
    cb = torch.tensor(sorted(graphnn.eigenvector_centrality(b)["centrality"].tolist()))
    return float((ca - cb).abs().max()) if ca.shape == cb.shape else float("nan")


def run_one(label, cfg, auto_name, tmp: Path, example_inputs=None) -> dict:
    import transformers as T

    torch.manual_seed(0)
    model = getattr(T, auto_name).from_config(cfg).eval()
    folder = tmp / "".join(c if c.isalnum() else "_" for c in label)
    model.save_pretrained(folder, max_shard_size="200KB")
    row = {"architecture": label, "model_type": cfg.model_type, "class": type(model).__name__}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g_mod = graphnn.extract(model, example_inputs=example_inputs)
        g_file = graphnn.extract(folder)
        g_sd = graphnn.extract(dict(model.state_dict()))
    row["seconds"] = time.perf_counter() - t0
    row["topology"] = g_mod.topology
    row["file topology"] = g_file.topology
    row["mapped"] = _mapped_share(g_mod, model)
    row["warnings"] = sum(issubclass(w.category, TopologyWarning) for w in caught)
    row["module = state_dict"] = _exact(g_mod) == _exact(g_sd)
    row["module = folder"] = _exact(g_mod) == _exact(g_file)
    row["module ≅ folder"] = _shape_signature(g_mod) == _shape_signature(g_file)
    row["streams"] = ", ".join(f"{p.name} ({p.size})" for p in g_mod.partitions.values() if p.kind == "residual") or "—"
    row["blocks"] = len(g_mod.blocks)
    try:
        row["centrality gap"] = _centrality_gap(g_mod, g_file)
    except Exception as e:  # noqa: BLE001 - reported in the table, not hidden
        row["centrality gap"] = f"{type(e).__name__}"
    return row


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.1e}" if v < 0.01 and v != 0 else f"{v:.2f}" if v < 1.5 else f"{v:.1f}"
    return str(v)


COLUMNS = ["architecture", "topology", "file topology", "mapped", "warnings", "module = state_dict",
           "module = folder", "module ≅ folder", "centrality gap", "streams"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stdout", action="store_true", help="print the table instead of writing docs/architectures.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg, auto, *inputs in zoo():
            try:
                rows.append(run_one(label, cfg, auto, Path(tmp), *inputs))
            except Exception as e:  # noqa: BLE001 - one failing architecture is a row, not a crash
                rows.append({"architecture": label, "topology": f"failed: {type(e).__name__}: {str(e)[:80]}"})
            print(f"{label}: {rows[-1].get('topology')}", file=sys.stderr)
    text = table(rows)
    if args.stdout:
        print(text)
        return 0
    doc = ROOT / "docs" / "architectures.md"
    doc.parent.mkdir(exist_ok=True)
    head = __doc__.split("\n\n", 2)[2]
    doc.write_text(
        "# Architectures tried\n\n"
        "Generated by `python benchmarks/architecture_zoo.py` (do not edit by hand) with transformers "
        f"{transformers.__version__} and torch {torch.__version__}.\n\n" + head.strip() + "\n\n" + text + "\n")
    print(f"wrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
