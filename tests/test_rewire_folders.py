"""Rewiring model folders: folder in, folder out (same shards, index and files), ties kept,
one shard in memory at a time, atomic as a whole. Tiny transformers models built from configs."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest
import torch

import graphnn
from graphnn.errors import RefusedOverwriteError
from graphnn.rewire.checkpoint import FOLDER_PROVENANCE, rewire_checkpoint
from test_rewire_pa import spec_rewire

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=96, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def llama(tie: bool):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=96, max_position_embeddings=32,
                                   tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def save_bin_folder(model, folder: Path) -> None:
    """A sharded ``.bin`` folder as transformers 4 wrote it (transformers 5 only writes
    safetensors): ``pytorch_model-0000k-of-0000n.bin`` shards, ``pytorch_model.bin.index.json``;
    tensors that share storage (a tied LM head) stay together in one shard, under both names."""
    from huggingface_hub import split_torch_state_dict_into_shards

    folder.mkdir()
    sd = model.state_dict()
    split = split_torch_state_dict_into_shards(sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size="12KB")
    assert len(split.filename_to_tensors) >= 2
    for fname, names in split.filename_to_tensors.items():
        torch.save({n: sd[n] for n in names}, folder / fname)
    index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    model.config.save_pretrained(folder)


def save_folder(model, folder: Path, fmt: str) -> None:
    if fmt == "bin":
        save_bin_folder(model, folder)
    else:
        model.save_pretrained(folder, max_shard_size="12KB")
        assert len(list(folder.glob("*.safetensors"))) >= 2
    (folder / "README.md").write_text("a model card that must be copied as it is\n")
    (folder / "extra").mkdir()
    (folder / "extra" / "tokenizer.json").write_bytes(b'{"version": "1.0", "bytes": "\\u00e9"}')


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load(cls, folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args, subprocess_: bool = False) -> Result:
    """The ``graphnn`` command: in a fresh process, or in this one (faster: no imports)."""
    if subprocess_:
        res = subprocess.run([sys.executable, "-m", "graphnn", *map(str, args)], capture_output=True, text=True,
                             env=ENV, timeout=300)
        return Result(res.returncode, res.stdout, res.stderr)
    from typer.testing import CliRunner

    from graphnn.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    out = res.stdout
    try:
        err = res.stderr
    except ValueError:  # older click: stderr mixed into output
        err = res.output
    return Result(res.exit_code, out, err)


def check_round_trip(src: Path, out: Path, original: dict[str, torch.Tensor], loaded, shard_suffix: str) -> dict:
    """Shards and files, provenance, multisets of rewired tensors, equality of the others."""
    before, after = files_of(src), files_of(out)
    shards = {n for n in before if n.endswith(shard_suffix)}
    assert set(after) == set(before) | {FOLDER_PROVENANCE}, "same shard names, index and files, plus the provenance"
    for name in set(before) - shards:
        assert after[name] == before[name], f"{name} is copied byte for byte"
    prov = json.loads(after[FOLDER_PROVENANCE])
    assert prov["method"] == "pa" and prov["seed"] == 5
    assert {f["name"] for f in prov["output"]["files"]} == set(before)
    for f in prov["output"]["files"]:
        assert f["sha256"] == hashlib.sha256(after[f["name"]]).hexdigest()
    changed = {t["name"] for t in prov["tensors"] if t["changed"]}
    stored = {t["name"] for t in prov["tensors"]}
    got = loaded.state_dict()
    assert changed, "something was rewired"
    for name, value in original.items():
        w = got[name]
        if name in changed or any(name in t.get("tied_with", []) and t["changed"] for t in prov["tensors"]):
            assert not torch.equal(w, value), name
            assert torch.equal(w.flatten().sort().values, value.flatten().sort().values), f"{name} keeps its multiset"
        elif name in stored:
            assert torch.equal(w, value), f"{name} is not a weight graphnn maps: unchanged"
    # what was rewired is exactly what describe reports as mapped
    cov = graphnn.extract(src).coverage
    mapped = set(cov.loc[cov["status"] == "mapped", "name"])
    assert mapped <= changed | {n for t in prov["tensors"] if t["changed"] for n in t.get("tied_with", [])}
    return prov


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_gpt2_folder_round_trip_through_the_cli_keeps_the_tie(tmp_path, fmt):
    model = gpt2()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    src, out = tmp_path / "gpt2", tmp_path / "gpt2-pa"
    save_folder(model, src, fmt)
    before = files_of(src)
    res = run_cli("rewire", src, "-o", out, "--method", "pa", "--seed", "5", subprocess_=(fmt == "bin"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out), str(out / FOLDER_PROVENANCE)]
    assert files_of(src) == before, "the input folder is untouched"
    loaded = load(transformers.GPT2LMHeadModel, out)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr(), "still tied"
    wte = loaded.transformer.wte.weight.detach()
    assert not torch.equal(wte, original["transformer.wte.weight"]), "the tied matrix is rewired (as the LM head)"
    prov = check_round_trip(src, out, original, loaded, f".{fmt}")
    rec = {t["name"]: t for t in prov["tensors"]}
    assert rec["transformer.wte.weight"]["changed"] and "lm_head.weight" in rec["transformer.wte.weight"]["tied_with"]
    # HF Conv1D weights (stored (in, out)) are rewired as (out, in) matrices, and the LM head as
    # (vocab, d): the spec's transcription of the authors' algorithm on those views, same seed
    got = loaded.state_dict()
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.weight"):
        assert torch.equal(got[name], spec_rewire(original[name].T.contiguous(), 5).T), name
    assert torch.equal(got["lm_head.weight"], spec_rewire(original["lm_head.weight"], 5))
    if fmt == "bin":  # the tie is one storage in the written shard, as in the input
        shard = next(p for p in out.glob("*.bin") if "lm_head.weight" in torch.load(p, weights_only=True))
        sd = torch.load(shard, weights_only=True)
        assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()


@pytest.mark.parametrize("tie", [False, True])
def test_llama_safetensors_folder_round_trip_through_the_cli(tmp_path, tie):
    model = llama(tie)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    src, out = tmp_path / "llama", tmp_path / "llama-pa"
    save_folder(model, src, "safetensors")
    res = run_cli("rewire", src, "-o", out, "--method", "pa", "--seed", "5")
    assert res.returncode == 0, res.stderr
    loaded = load(transformers.LlamaForCausalLM, out)
    check_round_trip(src, out, original, loaded, ".safetensors")
    head, emb = loaded.lm_head.weight, loaded.model.embed_tokens.weight
    if tie:
        assert head.data_ptr() == emb.data_ptr()
        assert not torch.equal(emb, original["model.embed_tokens.weight"])
    else:
        assert torch.equal(emb, original["model.embed_tokens.weight"]), "an untied embedding is opt-in"
        assert not torch.equal(head, original["lm_head.weight"])


def test_shards_are_processed_one_at_a_time(tmp_path, monkeypatch):
    import graphnn.rewire.checkpoint as ck

    model = llama(tie=True)
    src = tmp_path / "m"
    save_folder(model, src, "safetensors")
    n_shards = len(list(src.glob("*.safetensors")))

    class Shard(dict):
        __hash__ = object.__hash__  # weak-referenceable and hashable by identity

    live: weakref.WeakSet = weakref.WeakSet()
    reads, real = [], ck._read_shard

    def tracked(path, trust, *wanted):
        gc.collect(0)
        assert len(live) == 0, "the previous shard is released before the next is read"
        sd, meta = real(path, trust, *wanted)
        sd = Shard(sd)
        live.add(sd)
        reads.append(path.name)
        return sd, meta

    monkeypatch.setattr(ck, "_read_shard", tracked)
    rewire_checkpoint(src, tmp_path / "o", method="pa", seed=0)
    assert len(reads) == len(set(reads)) == n_shards


def test_each_shard_header_is_parsed_once_in_the_shard_loop(tmp_path, monkeypatch):
    """Reading and writing a rewired safetensors shard parse its header once (the reader hands
    it to the streamed writer), and the library's own parser is not called for it there."""
    import safetensors

    import graphnn.extract.checkpoints as cks
    import graphnn.rewire.checkpoint as ck

    src = tmp_path / "m"
    save_folder(llama(tie=False), src, "safetensors")
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    parsed, opened = [], []
    real_header, real_open, real_read = cks.safetensors_header, safetensors.safe_open, ck._read_shard
    monkeypatch.setattr(cks, "safetensors_header", lambda path: parsed.append(Path(path).name) or real_header(path))
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(Path(path).name) or
                        real_open(path, *a, **k))

    def loop_only(*a, **k):  # count from the first shard read on (selection reads headers too)
        if not getattr(loop_only, "started", False):
            parsed.clear(), opened.clear()
            loop_only.started = True
        return real_read(*a, **k)

    monkeypatch.setattr(ck, "_read_shard", loop_only)
    rewire_checkpoint(src, tmp_path / "o", method="pa", seed=0)
    assert sorted(parsed) == shards, parsed
    assert not opened, opened
    from safetensors.torch import load_file
    rewired = []
    for name in shards:  # the output still loads, with the rewired values written
        out, before = load_file(tmp_path / "o" / name), load_file(src / name)
        assert out.keys() == before.keys()
        rewired += [name] * any(not torch.equal(out[k], before[k]) for k in out)
    assert len(rewired) >= 2, "shards written by the streamed writer (not copied whole) are among them"


def test_folder_output_is_atomic_and_never_the_input(tmp_path, monkeypatch):
    import graphnn.rewire.checkpoint as ck

    model = llama(tie=False)
    src = tmp_path / "m"
    save_folder(model, src, "safetensors")
    before = files_of(src)
    calls = {"n": 0}
    real = ck._write_shard

    def fail_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(ck, "_write_shard", fail_second)
    with pytest.raises(OSError, match="simulated"):
        rewire_checkpoint(src, tmp_path / "o", seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no output folder, no temporary left"
    monkeypatch.setattr(ck, "_write_shard", real)
    for bad in (src, src / "sub", src / "." ):
        with pytest.raises(RefusedOverwriteError, match="never writes into its input"):
            rewire_checkpoint(src, bad, seed=0)
    with pytest.raises(graphnn.InvalidParameterError, match="folder name"):
        rewire_checkpoint(src, tmp_path / "o.safetensors", seed=0)
    rewire_checkpoint(src, tmp_path / "o", seed=0)
    with pytest.raises(RefusedOverwriteError, match="already exists"):
        rewire_checkpoint(src, tmp_path / "o", seed=1)
    first = files_of(tmp_path / "o")
    rewire_checkpoint(src, tmp_path / "o", seed=1, overwrite=True)
    assert files_of(tmp_path / "o") != first
    assert files_of(src) == before
    res = run_cli("rewire", src, "-o", src / "inside", "--seed", "0")
    assert res.returncode == 2, res.stderr


@pytest.mark.parametrize("method", ["variance-search", "hcore"])
def test_init_match_keeps_the_checkpoint_scale(tmp_path, method):
    """``--init match`` (the checkpoint default) redraws with each tensor's own mean and std; a
    Kaiming redraw of std-0.02 weights would be ~10x larger."""
    model = llama(tie=False)
    src = tmp_path / "m"
    save_folder(model, src, "safetensors")
    extra = {"trials": 2} if method == "variance-search" else {"gamma": 1.0}
    out_m, out_k = tmp_path / "match", tmp_path / "kaiming"
    rec = rewire_checkpoint(src, out_m, method=method, seed=0, **extra)
    assert rec["options"]["init" if method == "variance-search" else "base_init"] == "match"
    rewire_checkpoint(src, out_k, method=method, seed=0, init="kaiming_normal", **extra)
    a = load(transformers.LlamaForCausalLM, out_m).state_dict()
    b = load(transformers.LlamaForCausalLM, out_k).state_dict()
    name = "model.layers.0.mlp.up_proj.weight"  # (64, 32), stored std 0.02 (initializer_range)
    s0 = float(model.state_dict()[name].std())
    assert abs(float(a[name].std()) - s0) < 0.15 * s0
    assert not torch.equal(a[name], model.state_dict()[name])
    assert float(b[name].std()) == pytest.approx((2 / 32) ** 0.5, rel=0.15)
    res = run_cli("rewire", src, "-o", tmp_path / "x", "--method", method, "--init", "no_such_init", "--seed", "0")
    assert res.returncode == 2 and "no_such_init" in res.stderr + res.stdout


def test_a_declared_tie_across_bin_shards_gets_the_same_values_in_both(tmp_path):
    """A .bin folder that stores the LM head as a separate copy, in another shard than the
    embedding, with ``tie_word_embeddings`` in config.json: rewired once, the same values
    written under both names (shards still read one at a time)."""
    model = llama(tie=True)
    sd = {k: v.clone() for k, v in model.state_dict().items()}  # clones: no shared storage
    src = tmp_path / "m"
    src.mkdir()
    names = list(sd)
    first = [n for n in names if n != "lm_head.weight"][: len(names) // 2]
    shards = {"pytorch_model-00001-of-00002.bin": first,
              "pytorch_model-00002-of-00002.bin": [n for n in names if n not in first]}
    assert "model.embed_tokens.weight" in first and "lm_head.weight" in shards["pytorch_model-00002-of-00002.bin"]
    for fname, members in shards.items():
        torch.save({n: sd[n] for n in members}, src / fname)
    index = {"metadata": {}, "weight_map": {n: f for f, ms in shards.items() for n in ms}}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    model.config.save_pretrained(src)
    out = tmp_path / "o"
    rec = rewire_checkpoint(src, out, method="pa", seed=4)
    a = torch.load(out / "pytorch_model-00001-of-00002.bin", weights_only=True)["model.embed_tokens.weight"]
    b = torch.load(out / "pytorch_model-00002-of-00002.bin", weights_only=True)["lm_head.weight"]
    assert torch.equal(a, b) and not torch.equal(a, sd["lm_head.weight"])
    assert torch.equal(a, spec_rewire(sd["lm_head.weight"], 4)), "rewired once, as the LM head (vocab, d)"
    changed = {t["name"] for t in rec["tensors"] if t["changed"]}
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= changed
    load(transformers.LlamaForCausalLM, out)


def test_help_says_what_a_folder_rewire_writes():
    res = run_cli("rewire", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0
    for phrase in ("model folder", "graphnn.provenance.json", "atomically", "--init", "match", "--include-embeddings"):
        assert phrase in text, phrase


def test_a_hostile_index_is_refused_by_the_folder_rewire_itself(tmp_path):
    """The rewire's own folder reader (not only extraction) keeps to the folder and to regular files."""
    from graphnn.errors import CorruptCheckpointError
    from graphnn.rewire.checkpoint import _folder_layout, _read_shard

    outside = tmp_path / "outside.safetensors"
    graphnn.extract.save_state_dict({"w": torch.ones(2, 2)}, outside)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="outside the model folder"):
        _folder_layout(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["w"]}))
    with pytest.raises(CorruptCheckpointError, match="not a valid index file"):
        _folder_layout(folder)
    fifo = folder / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CorruptCheckpointError, match="FIFO"):
        _read_shard(fifo, trust=False)  # refused at once: never opened, so it cannot hang
    with pytest.raises(CorruptCheckpointError):
        rewire_checkpoint(folder, tmp_path / "out", method="pa", seed=0)
    assert not (tmp_path / "out").exists()
