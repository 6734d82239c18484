"""rewire_checkpoint: same format, atomic, never onto the input, provenance beside the output."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import safetensors.torch
import torch
from torch import nn

import graphnn
from graphnn.errors import RefusedOverwriteError
from graphnn.rewire import pa_rewire_
from graphnn.rewire.checkpoint import PROVENANCE_SUFFIX, rewire_checkpoint

torch.set_num_threads(1)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10),
    )


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(params=["safetensors", "pt"])
def checkpoint(tmp_path, request):
    net = make_net()
    net(torch.randn(4, 3, 6, 6))  # BatchNorm running statistics
    sd = net.state_dict()
    path = tmp_path / f"model.{request.param}"
    if request.param == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)
    return path, {k: v.clone() for k, v in sd.items()}


WEIGHTS = ["0.weight", "3.weight", "7.weight"]


@pytest.mark.parametrize("method", ["pa", "variance-search", "hcore"])
def test_round_trip_loads_strictly_and_leaves_the_input_alone(checkpoint, method):
    path, sd = checkpoint
    digest = sha(path)
    out = path.with_name("rewired" + path.suffix)
    kwargs = {"trials": 3} if method == "variance-search" else {}
    record = rewire_checkpoint(path, out, method=method, seed=3, **kwargs)
    assert sha(path) == digest, "the input file's bytes are unchanged"
    # same format: a safetensors file stays safetensors, a pickle stays a pickle
    if path.suffix == ".safetensors":
        loaded = safetensors.torch.load_file(out)
    else:
        loaded = torch.load(out, weights_only=True)
    net = make_net()
    net.load_state_dict(loaded, strict=True)
    for k, v in sd.items():
        if k in WEIGHTS:
            assert not torch.equal(loaded[k], v), k
            if method == "pa":
                assert torch.equal(loaded[k].flatten().sort().values, v.flatten().sort().values)
        else:
            assert torch.equal(loaded[k], v), k
    prov = json.loads(open(str(out) + PROVENANCE_SUFFIX).read())
    assert prov == json.loads(json.dumps(record))
    assert prov["method"] == method and prov["seed"] == 3 and prov["seed_source"] == "given"
    assert prov["graphnn_version"] == graphnn.__version__
    assert prov["input"]["sha256"] == digest
    assert prov["output"]["sha256"] == sha(out)
    changed = {t["name"]: t for t in prov["tensors"] if t["changed"]}
    assert set(changed) == set(WEIGHTS)
    for name, t in changed.items():
        w = sd[name].reshape(sd[name].shape[0], -1).double()
        j = 0.5 * (float(w.sum(1).var()) + float(w.sum(0).var()))
        assert t["J_before"] == pytest.approx(j, rel=1e-9)
        w2 = loaded[name].reshape(w.shape[0], -1).double()
        assert t["J_after"] == pytest.approx(0.5 * (float(w2.sum(1).var()) + float(w2.sum(0).var())), rel=1e-9)
    unchanged = [t for t in prov["tensors"] if not t["changed"]]
    assert all(t["reason"] for t in unchanged)


def test_pa_on_a_checkpoint_equals_pa_on_the_module(checkpoint):
    path, sd = checkpoint
    out = path.with_name("pa" + path.suffix)
    rewire_checkpoint(path, out, method="pa", seed=11)
    net = make_net()
    net.load_state_dict(sd)
    pa_rewire_(net, seed=11)
    loaded = graphnn.extract.load_state_dict(out)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_drawn_seed_is_recorded_and_reproduces(checkpoint):
    path, _ = checkpoint
    a = path.with_name("a" + path.suffix)
    rec = rewire_checkpoint(path, a, method="pa", mode="fast")
    assert rec["seed_source"] == "drawn" and isinstance(rec["seed"], int)
    b = path.with_name("b" + path.suffix)
    rewire_checkpoint(path, b, method="pa", mode="fast", seed=rec["seed"])
    la, lb = graphnn.extract.load_state_dict(a), graphnn.extract.load_state_dict(b)
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_refuses_to_overwrite_the_input(checkpoint):
    path, _ = checkpoint
    digest = sha(path)
    with pytest.raises(RefusedOverwriteError, match="never overwrites its input"):
        rewire_checkpoint(path, path, seed=1)
    with pytest.raises(RefusedOverwriteError, match="never overwrites its input"):
        rewire_checkpoint(path, path.parent / "." / path.name, seed=1)
    link = path.with_name("hardlink" + path.suffix)
    os.link(path, link)
    with pytest.raises(RefusedOverwriteError, match="never overwrites its input"):
        rewire_checkpoint(path, link, seed=1, overwrite=True)
    sym = path.with_name("symlink" + path.suffix)
    sym.symlink_to(path)
    with pytest.raises(RefusedOverwriteError):
        rewire_checkpoint(path, sym, seed=1, overwrite=True)
    assert sha(path) == digest


def test_existing_output_needs_overwrite_and_formats_must_match(checkpoint):
    path, _ = checkpoint
    out = path.with_name("out" + path.suffix)
    rewire_checkpoint(path, out, seed=1)
    with pytest.raises(RefusedOverwriteError, match="overwrite=True"):
        rewire_checkpoint(path, out, seed=2)
    rewire_checkpoint(path, out, seed=2, overwrite=True)
    other = ".pt" if path.suffix == ".safetensors" else ".safetensors"
    with pytest.raises(ValueError, match="same format"):
        rewire_checkpoint(path, path.with_name("x" + other), seed=1)
    with pytest.raises(ValueError, match="method must be"):
        rewire_checkpoint(path, path.with_name("y" + path.suffix), method="shuffle")


@pytest.mark.parametrize("fail_at", ["checkpoint", "provenance"])
def test_interrupted_write_leaves_no_partial_output(checkpoint, monkeypatch, fail_at):
    path, _ = checkpoint
    out = path.with_name("broken" + path.suffix)
    before = sorted(p.name for p in path.parent.iterdir())
    if fail_at == "checkpoint":
        real_save_file, real_torch_save = safetensors.torch.save_file, torch.save

        def half_then_fail(obj, f, *a, **k):
            with open(f, "wb") as fh:
                fh.write(b"\x00" * 100)  # a partial file on disk, then the crash
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
        monkeypatch.setattr(torch, "save", half_then_fail)
    else:
        real_dumps = json.dumps

        def fail_dumps(obj, *a, **k):
            if isinstance(obj, dict) and obj.get("schema", "").startswith("graphnn.rewire.provenance"):
                raise OSError("disk full (simulated)")
            return real_dumps(obj, *a, **k)

        monkeypatch.setattr(json, "dumps", fail_dumps)
    with pytest.raises(OSError, match="simulated"):
        rewire_checkpoint(path, out, seed=1)
    assert sorted(p.name for p in path.parent.iterdir()) == before, "no output, no temporary file left"


def test_include_exclude_and_embedding_default(tmp_path):
    sd = {"embed.weight": torch.randn(50, 8), "fc.weight": torch.randn(4, 8), "fc.bias": torch.randn(4),
          "head.weight": torch.randn(3, 4)}
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(sd, path)
    rec = rewire_checkpoint(path, tmp_path / "o.safetensors", seed=0)
    changed = {t["name"] for t in rec["tensors"] if t["changed"]}
    assert changed == {"fc.weight", "head.weight"}, "embedding tables are left alone by default"
    reasons = {t["name"]: t.get("reason", "") for t in rec["tensors"]}
    assert "include" in reasons["embed.weight"]
    rec = rewire_checkpoint(path, tmp_path / "o2.safetensors", seed=0, include="*embed*", exclude=None,
                            include_embeddings=True)
    assert {t["name"] for t in rec["tensors"] if t["changed"]} == {"embed.weight"}
    rec = rewire_checkpoint(path, tmp_path / "o3.safetensors", seed=0, exclude="head.*")
    assert {t["name"] for t in rec["tensors"] if t["changed"]} == {"fc.weight"}
    with pytest.raises(graphnn.InvalidParameterError, match="no tensor of the checkpoint"):
        rewire_checkpoint(path, tmp_path / "o4.safetensors", seed=0, include="nothing*")
    with pytest.raises(graphnn.InvalidParameterError, match="include_embeddings=True"):
        rewire_checkpoint(path, tmp_path / "o5.safetensors", seed=0, include="*embed*")


def test_wrapped_checkpoint_keeps_everything_that_is_not_rewired(tmp_path):
    """A training checkpoint (epoch, optimizer state, DDP prefixes) comes out with the same
    structure: only the rewired weights differ."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    ckpt = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(), "note": "run 3"}
    src, out = tmp_path / "train.pt", tmp_path / "rewired.pt"
    torch.save(ckpt, src)
    rewire_checkpoint(src, out, method="pa", seed=1)
    got = torch.load(out, weights_only=True)
    assert got["epoch"] == 7 and got["note"] == "run 3"
    assert set(got["state_dict"]) == set(ckpt["state_dict"])
    assert torch.equal(got["optimizer"]["state"][0]["momentum_buffer"], ckpt["optimizer"]["state"][0]["momentum_buffer"])
    for k, v in ckpt["state_dict"].items():
        w = got["state_dict"][k]
        assert torch.equal(w.flatten().sort().values, v.flatten().sort().values)
        assert torch.equal(w, v) == k.endswith("bias")  # weights rewired, biases untouched


def test_safetensors_metadata_is_kept(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    save_file({"a.weight": torch.randn(5, 4), "b.weight": torch.randn(3, 5)}, src, metadata={"author": "me"})
    rewire_checkpoint(src, out, method="pa", seed=0)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["author"] == "me" and meta["graphnn_method"] == "pa"


def test_existing_provenance_is_not_overwritten(tmp_path):
    from safetensors.torch import save_file

    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    save_file({"a.weight": torch.randn(5, 4)}, src)
    prov = tmp_path / "o.safetensors.provenance.json"
    prov.write_text("keep me")
    with pytest.raises(graphnn.RefusedOverwriteError, match="provenance"):
        rewire_checkpoint(src, out, method="pa", seed=0)
    assert prov.read_text() == "keep me" and not out.exists()


def test_checkpoint_never_appears_without_its_provenance(checkpoint, monkeypatch):
    """The provenance is published first and the checkpoint last: a failure between the two
    steps leaves neither (the published JSON is removed again)."""
    import graphnn.rewire.checkpoint as ck

    path, _ = checkpoint
    out = path.with_name("pair" + path.suffix)
    before = sorted(p.name for p in path.parent.iterdir())
    seen = {}

    def fail_between(tmp, out_path, overwrite):
        seen["provenance_was_there"] = os.path.exists(str(out_path) + PROVENANCE_SUFFIX)
        raise OSError("killed between the two steps (simulated)")

    monkeypatch.setattr(ck, "_publish_checkpoint", fail_between)
    with pytest.raises(OSError, match="simulated"):
        rewire_checkpoint(path, out, seed=1)
    assert seen["provenance_was_there"], "the provenance is published before the checkpoint"
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_a_kill_between_the_steps_leaves_only_a_recognised_provenance(tmp_path):
    """A hard kill (os._exit) between the two publications leaves the JSON alone, never a
    checkpoint without provenance; the next run refuses the orphan unless overwrite=True and
    removes the dead run's temporary checkpoint."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    save_file({"a.weight": torch.randn(5, 4), "b.weight": torch.randn(3, 5)}, src)
    code = (
        "import os, graphnn.rewire.checkpoint as ck\n"
        "ck._publish_checkpoint = lambda *a: os._exit(9)\n"
        f"ck.rewire_checkpoint({str(src)!r}, {str(out)!r}, seed=0)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    rc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root).returncode
    assert rc == 9
    prov = tmp_path / ("o.safetensors" + PROVENANCE_SUFFIX)
    assert prov.exists() and not out.exists()
    assert any(".graphnn-partial." in p.name for p in tmp_path.iterdir()), "the dead run's temporary is left"
    with pytest.raises(RefusedOverwriteError, match="interrupted"):
        rewire_checkpoint(src, out, seed=0)
    rec = rewire_checkpoint(src, out, seed=0, overwrite=True)
    assert json.loads(prov.read_text())["output"]["sha256"] == rec["output"]["sha256"] == sha(out)
    assert not any(".graphnn-partial." in p.name for p in tmp_path.iterdir()), "stale temporaries are removed"


def test_two_writers_to_one_output_cannot_mix_their_files(checkpoint, monkeypatch):
    """Run B starts and finishes while run A is writing: A's exclusive publish of its provenance
    fails, so the checkpoint and the JSON on disk both come from B."""
    import graphnn.rewire.checkpoint as ck

    path, _ = checkpoint
    out = path.with_name("raced" + path.suffix)
    real = ck._Checkpoint.write
    state = {"inside": False}

    def write_then_let_b_finish(self, tmp, changed, meta):
        real(self, tmp, changed, meta)
        if not state["inside"]:
            state["inside"] = True
            rewire_checkpoint(path, out, seed=2)  # B, while A holds its finished temporary

    monkeypatch.setattr(ck._Checkpoint, "write", write_then_let_b_finish)
    with pytest.raises(RefusedOverwriteError, match="already exists"):
        rewire_checkpoint(path, out, seed=1)  # A
    prov = json.loads(open(str(out) + PROVENANCE_SUFFIX).read())
    assert prov["seed"] == 2 and prov["output"]["sha256"] == sha(out)
    assert not [p for p in path.parent.iterdir() if ".graphnn-partial." in p.name], "A's temporary is removed"


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no float8 in this torch")
@pytest.mark.parametrize("method", ["pa", "variance-search", "hcore"])
def test_fp8_and_bf16_weights_are_rewired_in_their_dtype(tmp_path, method):
    """fp8 is a storage format torch cannot compute in: rewired through float32 and stored back
    as fp8 (for PA exactly a permutation of the stored values)."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    sd = {"a.weight": torch.randn(6, 5).to(torch.float8_e4m3fn), "b.weight": torch.randn(4, 6).to(torch.bfloat16)}
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    save_file(sd, src)
    rewire_checkpoint(src, out, method=method, seed=0, trials=2)
    got = load_file(out)
    for k, v in sd.items():
        assert got[k].dtype == v.dtype
        assert not torch.equal(got[k].float(), v.float()), k
        if method == "pa":
            assert torch.equal(got[k].float().flatten().sort().values, v.float().flatten().sort().values), k


@pytest.mark.parametrize("name", ["m.pt", "m.safetensors", "model.bin"])
def test_refusing_the_input_as_output_suggests_a_name_that_works(tmp_path, name):
    import re as _re

    p = tmp_path / name
    graphnn.extract.save_state_dict({"fc.weight": torch.randn(3, 3)}, p)
    with pytest.raises(graphnn.RefusedOverwriteError, match="never overwrites its input") as err:
        rewire_checkpoint(p, p, method="pa", seed=0)
    suggestion = _re.search(r"e\.g\. (\S+)\)", str(err.value)).group(1)
    rewire_checkpoint(p, tmp_path / suggestion, method="pa", seed=0)  # the suggested name is accepted
    assert (tmp_path / suggestion).exists()
