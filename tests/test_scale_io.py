"""Out-of-core I/O (issue 11 §1): header-only ``describe``, ``pread`` tensor reads, streamed
safetensors writes, shard-by-shard rewiring that reads only the tensors it rewires, and the
progress bar's ETA. Oracles: the ``safetensors`` library, the input file's bytes, hand-made
arithmetic with a fake clock."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import graphnn
import graphnn.extract.checkpoints as ck
from graphnn.errors import CorruptCheckpointError
from graphnn.eta import StepEta, format_eta

ROOT = Path(__file__).resolve().parents[1]


def bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    """A tiny Llama-shaped bf16 folder written by the scale benchmark's own writer (several shards,
    an index, config.json), as Hugging Face lays one out."""
    bs = bench_scale()
    args = types.SimpleNamespace(layers=3, hidden=64, intermediate=96, heads=4, kv_heads=2, vocab=80,
                                 shard_gb=40_000 / bs.GB)
    folder = tmp_path_factory.mktemp("scale") / "model"
    files = bs.write_folder(folder, args)
    assert len(files) >= 3
    return folder


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


# -- the benchmark's folder is what Hugging Face writes ---------------------------------------
def test_benchmark_folder_is_a_llama_checkpoint(llama_folder):
    index = json.loads((llama_folder / "model.safetensors.index.json").read_text())
    stored = {}
    for p in shards(llama_folder):
        stored.update({k: (p.name, v) for k, v in load_file(p).items()})
    assert {k: s for k, (s, _) in stored.items()} == index["weight_map"]
    assert index["metadata"]["total_size"] == sum(v.numel() * 2 for _, v in stored.values())
    assert all(v.dtype == torch.bfloat16 for _, v in stored.values())
    assert stored["model.layers.0.self_attn.k_proj.weight"][1].shape == (32, 64)  # 2 of 4 heads
    assert torch.equal(stored["model.norm.weight"][1], torch.ones(64, dtype=torch.bfloat16))
    g = graphnn.extract(llama_folder)
    assert "llama" in (g.topology or "").lower()
    assert {b.param for b in g.blocks.values()} >= {"model.layers.2.mlp.down_proj.weight", "lm_head.weight"}


# -- describe reads headers only ----------------------------------------------------------------
def test_describe_reads_no_tensor_data(llama_folder, monkeypatch):
    from typer.testing import CliRunner

    from graphnn.cli import app

    def refuse(*a, **k):
        raise AssertionError("describe read tensor data")

    monkeypatch.setattr(ck._SafetensorsFile, "get_tensor", refuse)
    monkeypatch.setattr(ck, "read_tensor", refuse)
    res = CliRunner().invoke(app, ["describe", str(llama_folder), "-f", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    mapped = [r for r in doc["parameters"] if r["status"] == "mapped"]
    assert len(mapped) == 3 * 7 + 1  # q k v o gate up down per layer, and the LM head
    assert doc["num_edges"] == sum(r["numel"] for r in mapped)


def test_describe_does_not_import_the_report_or_plotting_libraries(llama_folder):
    code = ("import sys\nfrom graphnn.cli import main\nsys.argv = ['graphnn', 'describe', sys.argv[1], '-f', 'json', '-q']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "bad = sorted(m for m in ('graphnn.report', 'seaborn', 'matplotlib', 'scipy.stats', 'transformers') "
            "if m in sys.modules)\nprint('LOADED', bad, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code, str(llama_folder)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stderr, res.stderr


# -- header parse, pread reads and streamed writes against the safetensors library --------------
def mixed_file(path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(5, 7, generator=g).to(torch.bfloat16), "b.bias": torch.randn(3, generator=g),
          "c.mask": torch.rand(4, 4, generator=g) > 0.5, "d.step": torch.tensor(7, dtype=torch.int64),
          "e.empty": torch.zeros(0, 3), "f.half": torch.randn(2, 3, 2, generator=g).half(),
          "g.double": torch.randn(6, generator=g, dtype=torch.float64)}
    save_file(sd, str(path), metadata={"format": "pt", "note": "kept"})
    return sd


def test_header_and_pread_reads_agree_with_the_library(tmp_path):
    path = tmp_path / "m.safetensors"
    sd = mixed_file(path)
    h = ck.safetensors_header(path)
    assert h.metadata == {"format": "pt", "note": "kept"}
    with safe_open(str(path), framework="pt") as f:
        assert sorted(h.tensors) == sorted(f.keys())
        for name in f.keys():
            assert h.tensors[name][0] == f.get_slice(name).get_dtype()
            assert list(h.tensors[name][1]) == f.get_slice(name).get_shape()
    for name, want in sd.items():
        got = ck.read_tensor(path, h, name)
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
    t = ck.read_tensor(path, h, "a.weight")
    t.add_(1)  # its own memory: a second read is unaffected
    assert torch.equal(ck.read_tensor(path, h, "a.weight"), sd["a.weight"])


@pytest.mark.parametrize("damage", ["truncate", "short_header", "not_json", "offsets"])
def test_damaged_headers_are_corrupt_checkpoint_errors(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    mixed_file(path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    if damage == "truncate":
        raw = raw[:-5]
    elif damage == "short_header":
        raw = (10**9).to_bytes(8, "little") + raw[8:]
    elif damage == "not_json":
        raw = raw[:8] + b"{" * n + raw[8 + n:]
    else:  # one tensor's range starts one byte late
        doc = json.loads(raw[8:8 + n])
        doc["b.bias"]["data_offsets"][0] += 1
        blob = json.dumps(doc, separators=(",", ":")).encode().ljust(n)
        assert len(blob) == n
        raw = raw[:8] + blob + raw[8 + n:]
    path.write_bytes(raw)
    with pytest.raises(CorruptCheckpointError):
        ck.safetensors_header(path)


def test_streamed_write_replaces_only_the_given_tensors(tmp_path):
    src, dst = tmp_path / "m.safetensors", tmp_path / "out.safetensors"
    sd = mixed_file(src)
    new = {"a.weight": -sd["a.weight"], "g.double": sd["g.double"] * 2}
    ck.write_safetensors_like(src, dst, new, {"format": "pt", "graphnn_method": "pa"})
    out = load_file(dst)
    assert sorted(out) == sorted(sd)
    for name, t in out.items():
        assert torch.equal(t, new.get(name, sd[name])), name
    with safe_open(str(dst), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "graphnn_method": "pa"}
    a, b = ck.safetensors_header(src), ck.safetensors_header(dst)
    src_bytes, dst_bytes = src.read_bytes(), dst.read_bytes()
    for name, (_, _, start, end) in a.tensors.items():  # the untouched tensors are the input's bytes
        if name not in new:
            assert dst_bytes[b.data_start + start:b.data_start + end] == src_bytes[a.data_start + start:a.data_start + end]
    with pytest.raises(ValueError, match="cannot replace"):
        ck.write_safetensors_like(src, tmp_path / "x.safetensors", {"a.weight": sd["a.weight"].float()})


# -- rewiring a folder: shard by shard, reading only what it rewires ------------------------------
def test_folder_rewire_reads_only_the_weights_it_rewires_one_shard_at_a_time(llama_folder, tmp_path, monkeypatch):
    import graphnn.rewire.checkpoint as rw

    sizes = {p.name: p.stat().st_size for p in shards(llama_folder)}
    live: dict[int, int] = {}
    state = {"peak": 0, "read": []}
    real = ck.read_tensor

    def counted(path, header, name):
        t = real(path, header, name)
        state["read"].append(name)
        live[id(t)] = t.numel() * t.element_size()
        weakref.finalize(t, live.pop, id(t), None)
        state["peak"] = max(state["peak"], sum(live.values()))
        return t

    monkeypatch.setattr(ck, "read_tensor", counted)
    plans = []
    real_apply = rw._Plan.apply

    def apply(self, sd, owned=False):
        plans.append(self)
        return real_apply(self, sd, owned=owned)

    monkeypatch.setattr(rw._Plan, "apply", apply)
    out = tmp_path / "pa"
    rw.rewire_checkpoint(llama_folder, out, method="pa", mode="fast", seed=0)
    # no tie spans shards here: the plan keeps no rewired tensor for later shards (it used to
    # keep every one to the end: 15 GB of private memory on the 32-layer folder)
    assert plans and all(v is None for v in plans[0].done.values()) and len(plans[0].done) > 1

    g = graphnn.extract(llama_folder)
    mapped = {b.param for b in g.blocks.values()}
    assert sorted(state["read"]) == sorted(mapped), "exactly the rewired weights are read, each once"
    assert 0 < state["peak"] <= max(sizes.values()), "never more than one shard's tensors held at once"

    for p in shards(llama_folder):
        before, after = load_file(p), load_file(out / p.name)
        assert sorted(before) == sorted(after)
        for name, t in before.items():
            if name in mapped:  # PA permutes a tensor's values
                assert not torch.equal(after[name], t), name
                assert torch.equal(after[name].flatten().sort().values, t.flatten().sort().values), name
            else:
                assert torch.equal(after[name], t), name
        h_in, h_out = ck.safetensors_header(p), ck.safetensors_header(out / p.name)
        assert h_out.metadata["graphnn_method"] == "pa" and h_out.metadata["format"] == "pt"
        assert {n: v[1:] for n, v in h_in.tensors.items()} == {n: v[1:] for n, v in h_out.tensors.items()}


def test_folder_rewire_reports_progress_per_shard(llama_folder, tmp_path):
    import graphnn.rewire.checkpoint as rw

    calls = []
    rw.rewire_checkpoint(llama_folder, tmp_path / "pa", method="pa", mode="fast", seed=1,
                         progress=lambda *a: calls.append(a))
    n = len(shards(llama_folder))
    assert [c for c in calls if c[0] == "rewire"] == [("rewire", i, n) for i in range(n + 1)]


# -- ETA ----------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_from_the_average_rate_with_a_fake_clock():
    clock = FakeClock()
    eta = StepEta(clock, min_seconds=1.0)
    assert eta.update(0, 10) is None  # the first report only starts the clock
    clock.t += 0.5
    assert eta.update(1, 10) is None  # under min_seconds
    clock.t += 1.5
    assert eta.update(2, 10) == pytest.approx(8 * 2.0 / 2)  # 2 units in 2 s: 8 left at 1 unit/s
    clock.t += 6.0
    assert eta.update(4, 10) == pytest.approx(6 * 8.0 / 4)
    clock.t += 1.0
    assert eta.update(4, 10) == pytest.approx(6 * 9.0 / 4)  # no progress: the estimate grows
    assert eta.update(10, 10) == 0.0
    clock.t += 1.0
    assert eta.update(1, 10) is None  # fewer done than before: the step restarted
    clock.t += 2.0
    assert eta.update(3, 10) == pytest.approx(7 * 2.0 / 2)
    assert StepEta(clock).update(0, 0) == 0.0


def test_eta_text():
    assert [format_eta(s) for s in (None, float("nan"), 0, 42.4, 59.6, 185, 3723)] == [
        "", "", "ETA 0 s", "ETA 42 s", "ETA 1:00", "ETA 3:05", "ETA 1:02:03"]


def test_the_terminal_progress_bar_shows_the_eta(monkeypatch):
    import graphnn.cli as cli
    import graphnn.eta as eta_mod

    clock = FakeClock()
    monkeypatch.setattr(eta_mod, "time", types.SimpleNamespace(monotonic=clock))
    s = cli._Session(quiet=False, verbose=0)
    s.tty = True
    try:
        s.progress("load", 0, 4)
        clock.t += 3.0
        s.progress("load", 1, 4)
        task = s._progress.tasks[0]
        assert task.fields["eta"] == "ETA 9 s"
        clock.t += 3.0
        s.progress("load", 4, 4)
        assert s._progress.tasks[0].fields["eta"] == "ETA 0 s"
    finally:
        s.finish()
