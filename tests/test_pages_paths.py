"""Mapped checkpoint pages are given back by the passes outside the analyse loop: the ΔW graph
(graphnn.delta, delta_norms), LoRA adapters on a file base (lora_delta, lora_strength), the
standalone spectral columns (graph_spectrum), WeightWatcher's α, the null copies, the
signal-propagation weight table (sigprop.weights) and the tensors that distributed placement
sends with their blocks.

Each test runs the pass on graphs read from small safetensors files and on in-memory clones of
the same tensors (the oracle: ordinary heap memory, where releasing does nothing) and asserts
equal numbers; then that nothing of the files' tensors is resident. The same test with the
module's release call patched out (``release=False``) asserts the pages *are* resident, so the
residency assertion is shown to fail without the release."""

from __future__ import annotations

import importlib
import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import graphnn
from graphnn import _pages
from graphnn.extract import delta as delta_mod
from graphnn.extract import lora as lora_mod
from graphnn.extract.checkpoints import load_state_dict, save_state_dict

null_mod = importlib.import_module("graphnn.analyses.null_model")  # (graphnn.analyses.null_model is also a function)
spectral_mod = importlib.import_module("graphnn.analyses.spectral")
sigprop_weights = importlib.import_module("graphnn.sigprop.weights")
placement = importlib.import_module("graphnn.distributed.placement")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _pages._setup(),
                                reason="page release needs Linux /proc/self/pagemap and libc madvise")

#: After a release the kernel may map up to 64 KiB of already cached pages around a later fault
#: (a neighbouring tensor's first page, the header page): see tests/test_pages.py.
_FAULT_AROUND = 2 * 64 * 1024 + 2 * 4096
WIDTH = 640  # 640 x 640: 1.6 MB of float32, 0.8 MB of bf16 per tensor (above the dense SVD limit)


def _mlp_state(depth: int, dtype: torch.dtype, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {f"layers.{i}.weight": torch.randn(WIDTH, WIDTH, generator=gen).to(dtype) for i in range(depth)}


#: A page-cache folio is at most 2 MiB (x86-64 PMD size) and naturally aligned. When a pass loads
#: the next tensor, safetensors touches its first page and the kernel maps the whole folio
#: holding it (not only 64 KiB of fault-around): with tensors a few hundred KiB long that folio
#: can hold the whole tensor just released. A 2 MiB unread pad before every weight keeps each
#: weight out of its neighbours' folios.
PAD_BYTES = 2 << 20


def _save(sd: dict, path) -> str:
    """Write ``sd`` with an unread 1-D ``<name>.pad`` of :data:`PAD_BYTES` before every weight
    (same dtype, so the file keeps the sorted-name order: pad, weight, pad, weight, ...)."""
    padded = {}
    for name, w in sd.items():
        padded[name.removesuffix(".weight") + ".pad"] = torch.zeros(PAD_BYTES // w.element_size(), dtype=w.dtype)
        padded[name] = w
    save_state_dict(padded, path)
    return str(path)


def _weights(path) -> dict:
    return {k: v for k, v in load_state_dict(path).items() if not k.endswith(".pad")}


def _in_memory(path) -> dict:
    """The file's tensors as ordinary heap tensors (never registered: releasing does nothing)."""
    memory = {k: v.clone() for k, v in _weights(path).items()}
    assert not any(_pages.is_registered(v) for v in memory.values())
    return memory


def _views(blocks) -> list[torch.Tensor]:
    """The blocks' tensors as views of their file's mapping (``_load`` skips the first-load NaN
    count, which reads the data). Taken before a pass and held: a tensor loaded after it would
    map its own first pages again (safetensors touches them; on the file's first page the
    kernel may map a whole large folio, here up to 512 KiB), which is no residue of the pass."""
    views = [b._load() for b in blocks]
    assert all(_pages.is_registered(t) for t in views)
    return views


def _resident(views) -> list[int]:
    return [_pages.resident_file_bytes(t) for t in views]


def _check_resident(sizes: list[int], nbytes: int, release: bool) -> None:
    if release:
        assert max(sizes) <= _FAULT_AROUND, sizes
    else:  # the control: without the release call the pass leaves every page it read resident
        assert min(sizes) >= 0.9 * nbytes, sizes


@pytest.fixture(params=[True, False], ids=["release", "no-release"])
def release(request, monkeypatch):
    """``True``: the code as it is. ``False``: each module's release call patched out."""
    if not request.param:
        for mod in (delta_mod, lora_mod, spectral_mod, null_mod, sigprop_weights, placement):
            monkeypatch.setattr(mod, "release_pages", lambda t: 0)
    return request.param


# -- ΔW ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("delta")
    base = _save(_mlp_state(3, torch.bfloat16, 0), tmp / "base.safetensors")
    tuned_sd = _mlp_state(3, torch.bfloat16, 0)
    gen = torch.Generator().manual_seed(5)
    for w in tuned_sd.values():
        w.add_((0.1 * torch.randn(w.shape, generator=gen)).to(w.dtype))
    tuned = _save(tuned_sd, tmp / "tuned.safetensors")
    return base, tuned


def test_delta_norms_and_analyses_release_both_sides(two_files, release):
    base, tuned = two_files
    gb, gt = graphnn.extract(base), graphnn.extract(tuned)
    mb, mt = graphnn.extract(_in_memory(base)), graphnn.extract(_in_memory(tuned))
    views = _views(gb.blocks.values()) + _views(gt.blocks.values())
    nbytes = WIDTH * WIDTH * 2
    norms = graphnn.delta_norms(gb, gt)
    pd.testing.assert_frame_equal(norms, graphnn.delta_norms(mb, mt))
    assert (norms["frobenius_delta"] > 0).all()
    _check_resident(_resident(views), nbytes, release)

    g_file = graphnn.delta(gb, gt)  # norms=True: every block read once more, through _norm_row
    g_mem = graphnn.delta(mb, mt)
    assert g_file.meta["norms"] == g_mem.meta["norms"]
    _check_resident(_resident(views), nbytes, release)

    a_file = graphnn.analyse(g_file, core=False, spectral=False)  # the ΔW blocks' loader
    a_mem = graphnn.analyse(g_mem, core=False, spectral=False)
    for col in ("in_strength", "out_strength", "abs_strength", "centrality"):
        assert np.array_equal(a_file.neurons[col].to_numpy(), a_mem.neurons[col].to_numpy()), col
    _check_resident(_resident(views), nbytes, release)


# -- LoRA --------------------------------------------------------------------------------------------
RANK = 128  # lora_A (128, 640) and lora_B (640, 128): 0.33 MB of float32 each


@pytest.fixture(scope="module")
def adapter_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    base = _save(_mlp_state(3, torch.float32, 1), tmp / "base.safetensors")
    gen = torch.Generator().manual_seed(2)
    folder = tmp / "adapter"
    folder.mkdir()
    modules = ["layers.0", "layers.2"]
    sd = {}
    for m in modules:
        sd[f"base_model.model.{m}.lora_A.weight"] = torch.randn(RANK, WIDTH, generator=gen)
        sd[f"base_model.model.{m}.lora_B.weight"] = torch.randn(WIDTH, RANK, generator=gen)
    _save(sd, folder / "adapter_model.safetensors")  # (its pads are no LoRA factors: listed in ad.other)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": RANK, "lora_alpha": 16, "target_modules": ["layers.0", "layers.2"]}))
    return base, folder


def _adapter_in_memory(folder):
    """The adapter as read, with its factor loaders returning heap clones of the file's tensors."""
    ad = lora_mod.read_adapter(folder)
    memory = _in_memory(ad.weights)
    for m, lm in ad.modules.items():
        a, b = memory[f"base_model.model.{m}.lora_A.weight"], memory[f"base_model.model.{m}.lora_B.weight"]
        lm.load_a, lm.load_b = (lambda a=a: a), (lambda b=b: b)
    return ad


def test_lora_on_a_file_base_releases_base_weights_and_factors(adapter_case, release):
    base, folder = adapter_case
    ad = lora_mod.read_adapter(folder)
    factors = [t for lm in ad.modules.values() for t in (lm.load_a(), lm.load_b())]
    g_file = graphnn.lora_delta(ad, base, norms=False)  # names and shapes only
    g_mem = graphnn.lora_delta(_adapter_in_memory(folder), graphnn.extract(_in_memory(base)), norms=False)
    assert len(g_file.blocks) == 2
    base_views = _views([b._lora[2] for b in g_file.blocks.values()])
    assert all(_pages.is_registered(t) for t in factors)

    def check():
        _check_resident(_resident(base_views), WIDTH * WIDTH * 4, release)
        _check_resident(_resident(factors), RANK * WIDTH * 4, release)

    # lora_norms (what lora_delta's norms=True runs): every factor and adapted base weight read
    norms = lora_mod.lora_norms(g_file)
    pd.testing.assert_frame_equal(norms, lora_mod.lora_norms(g_mem))
    assert (norms["frobenius_base"] > 0).all() and (norms["frobenius_delta"] > 0).all()
    check()
    s_file, s_mem = graphnn.lora_strength(g_file), graphnn.lora_strength(g_mem)
    pd.testing.assert_frame_equal(s_file, s_mem)
    check()
    a_file = graphnn.analyse(g_file, core=False, spectral=False)  # the blocks' loader forms scale·B·A
    a_mem = graphnn.analyse(g_mem, core=False, spectral=False)
    for col in ("in_strength", "out_strength", "abs_strength", "centrality"):
        assert np.array_equal(a_file.neurons[col].to_numpy(), a_mem.neurons[col].to_numpy()), col
    check()


# -- spectral columns and WeightWatcher ----------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    return _save(_mlp_state(3, torch.float32, 3), tmp_path_factory.mktemp("spectral") / "mlp.safetensors")


def test_graph_spectrum_releases_each_block(mlp_file, release):
    g_file, g_mem = graphnn.extract(mlp_file), graphnn.extract(_in_memory(mlp_file))
    views = _views(g_file.blocks.values())
    s_file, s_mem = spectral_mod.graph_spectrum(g_file), spectral_mod.graph_spectrum(g_mem)
    assert list(s_file["block"]) == list(s_mem["block"])
    # Lanczos in float32 on differently aligned copies of the same values: equal up to rounding
    for col in spectral_mod.SPECTRAL_COLUMNS:
        np.testing.assert_allclose(s_file[col].to_numpy(), s_mem[col].to_numpy(), rtol=1e-6)
    # oracle independent of the Lanczos code: the dense float64 SVD of the in-memory matrix
    dense = [float(torch.linalg.matrix_norm(w.double(), ord=2)) for w in _in_memory(mlp_file).values()]
    np.testing.assert_allclose(s_file["spectral_norm"].to_numpy(), dense, rtol=1e-5)
    _check_resident(_resident(views), WIDTH * WIDTH * 4, release)


def test_weightwatcher_alpha_releases_each_layer(mlp_file, release, monkeypatch):
    pytest.importorskip("weightwatcher")
    g_file, g_mem = graphnn.extract(mlp_file), graphnn.extract(_in_memory(mlp_file))
    views = _views(g_file.blocks.values())
    order = list(g_file.blocks)
    seen = []  # (index of the layer WeightWatcher asked for, residency of every layer just after)
    get = spectral_mod._GraphTensors.__getitem__

    def recording(self, key):
        t = get(self, key)
        if self._blocks[key] is g_file.blocks[key]:  # (not the in-memory oracle's reads)
            seen.append((order.index(key), _resident(views)))
        return t

    monkeypatch.setattr(spectral_mod._GraphTensors, "__getitem__", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a_file = spectral_mod.weightwatcher_alpha(g_file)
        a_mem = spectral_mod.weightwatcher_alpha(g_mem)
    assert len(a_file) == 3 and list(a_file["param"]) == list(a_mem["param"])
    np.testing.assert_allclose(a_file["ww_alpha"].to_numpy(), a_mem["ww_alpha"].to_numpy(), rtol=1e-9)
    # layer by layer: once WeightWatcher asks for a layer, the layers before it are given back
    assert sorted({i for i, _ in seen}) == [0, 1, 2]
    for i, sizes in seen:
        if i:
            _check_resident(sizes[:i], WIDTH * WIDTH * 4, release)
    _check_resident(_resident(views), WIDTH * WIDTH * 4, release)


# -- null copies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["shuffle", "rewire"])
def test_null_copies_release_the_original(tmp_path, release, kind):
    # rewire is slower per edge: smaller weights for it (still well above the fault-around)
    shape = (WIDTH, WIDTH) if kind == "shuffle" else (256, 256)
    gen = torch.Generator().manual_seed(4)
    path = _save({f"layers.{i}.weight": torch.randn(*shape, generator=gen) for i in range(2)},
                 tmp_path / "mlp.safetensors")
    g_file, g_mem = graphnn.extract(path), graphnn.extract(_in_memory(path))
    views = _views(g_file.blocks.values())
    c_file, c_mem = null_mod.null_copy(g_file, kind, seed=7), null_mod.null_copy(g_mem, kind, seed=7)
    for bf, bm in zip(c_file.blocks.values(), c_mem.blocks.values()):
        tf, tm = bf.tensor(), bm.tensor()
        assert torch.equal(tf, tm) and not _pages.is_registered(tf)
    nbytes = shape[0] * shape[1] * 4
    _check_resident(_resident(views), nbytes, release)
    if kind == "shuffle":  # the whole baseline: the observed analysis and the copies' analyses
        f_file = graphnn.null_model(g_file, "strength", kind=kind, n=2, seed=3)
        f_mem = graphnn.null_model(g_mem, "strength", kind=kind, n=2, seed=3)
        pd.testing.assert_frame_equal(f_file, f_mem)
        _check_resident(_resident(views), nbytes, release)


# -- signal-propagation weight table ---------------------------------------------------------------------
def test_weight_table_releases_each_parameter(mlp_file, release):
    g_file = graphnn.extract(mlp_file)
    views = _views(g_file.blocks.values())
    memory = _in_memory(mlp_file)
    t_file = sigprop_weights.weight_table(mlp_file, graph=g_file)
    t_mem = sigprop_weights.weight_table(memory)
    cols = ["layer", "param", "n_out", "fan_in", "sigma_w2", "sigma_b2", "mean_w", "var_w"]
    pd.testing.assert_frame_equal(t_file[cols], t_mem[cols])
    # oracle independent of the table's code: ||W||_F^2 / n_out, mean and variance in float64
    for (_, row), w in zip(t_file.iterrows(), memory.values()):
        w = w.double()
        assert row["sigma_w2"] == pytest.approx(float((w ** 2).sum()) / w.shape[0], rel=1e-12)
        assert row["var_w"] == pytest.approx(float(w.var(unbiased=False)), rel=1e-12)
    _check_resident(_resident(views), WIDTH * WIDTH * 4, release)


# -- distributed placement: blocks sent with their tensors -------------------------------------------------
def test_held_tensors_of_sent_blocks_are_released(tmp_path, release):
    cloudpickle = pytest.importorskip("cloudpickle")  # how dask sends the blocks (they hold closures)

    from graphnn.distributed.host import HeldTensor

    path = _save(_mlp_state(3, torch.bfloat16, 6), tmp_path / "held.safetensors")
    mapped = _weights(path)  # views of the file's mapping, registered by the reader
    assert all(_pages.is_registered(t) for t in mapped.values())
    g = graphnn.extract(mapped)  # a graph of a state_dict: no file can reopen its blocks
    assert placement.tensor_files(g) == {}
    placed = placement.assign(g, ["tcp://worker-0", "tcp://worker-1"])
    blocks = [b for group in placed.values() for b in group]
    assert len(blocks) == 3 and all(isinstance(b._load, HeldTensor) for b in blocks)
    sent = cloudpickle.loads(cloudpickle.dumps(blocks))  # what the client sends to the workers
    released = placement.release_held(blocks)
    oracle = graphnn.extract(_in_memory(path))
    for b in sent:
        assert torch.equal(b.tensor(), oracle.blocks[b.name].tensor())
        assert torch.equal(b.matrix(), oracle.blocks[b.name].matrix())
    assert (released > 0) == release
    _check_resident(_resident(list(mapped.values())), WIDTH * WIDTH * 2, release)
