"""Fast PA mode on the CPU: the exact column order (radix sort + fix-up) and the tiled pass.

Oracles: ``np.argsort(keys, kind="stable")`` for the order, and a plain reference pass written
here (float64 keys ``E / p`` from the same random stream, ``np.argsort(kind="stable")`` per row,
every row sorted up front, a contiguous transposed copy for the second pass): the tiled,
in-place pass must give the same tensors value for value, for every dtype it works in.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from graphnn.rewire import pa as pa_mod
from graphnn.rewire import pa_rewire_


def reference_pass_(m: np.ndarray, rng: np.random.Generator) -> None:
    """One PA pass over axis 1 of ``m`` (B, r, c), float, in place (module docstring steps)."""
    b, r, c = m.shape
    if r < 2:
        return
    sorted_rows = np.sort(m[:, 1:], axis=2)
    acc = np.zeros((b, c))
    chunk = max(1, pa_mod._DRAW_BUDGET // (b * c))
    rows = np.arange(b)[:, None]
    draws, start = None, 0
    for t in range(1, r):
        if draws is None or t - start >= draws.shape[1]:
            start = t
            draws = rng.standard_exponential(size=(b, min(chunk, r - t), c))
        acc += m[:, t - 1]
        p = acc + (np.abs(acc.min(axis=1, keepdims=True)) + 1.0)
        order = np.argsort(draws[:, t - start] / p, axis=1, kind="stable")
        m[rows, t, order] = sorted_rows[:, t - 1]


def reference_two_passes(m: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    reference_pass_(m, rng)
    mt = np.ascontiguousarray(m.transpose(0, 2, 1))
    reference_pass_(mt, rng)
    return np.ascontiguousarray(mt.transpose(0, 2, 1))


# -- the order ------------------------------------------------------------------------------------
def key_families(rng: np.random.Generator):
    """(name, keys): non-negative float64 keys, including adversarial ones."""
    for c in (1, 2, 3, 5, 64, 4097):
        p = 1.0 + np.abs(np.cumsum(rng.standard_normal(c))) * 0.3
        yield f"race c={c}", rng.standard_exponential(c) / p
    yield "exact ties", rng.integers(0, 4, 500).astype(np.float64)
    yield "all equal", np.full(300, 0.75)
    yield "zeros and ones", rng.integers(0, 2, 200).astype(np.float64)
    # distinct in float64, equal in float32: every pair is left to the fix-up (and its fallback)
    yield "one float32, 600 float64", 1.0 + rng.permutation(600) * 2.0**-40
    yield "float32 pairs", np.repeat(rng.random(400), 2) * (1 + rng.integers(0, 2, 800) * 2.0**-45)
    yield "denormals", rng.integers(0, 50, 300) * 5e-324
    yield "below float32's range", rng.random(300) * 1e-50
    yield "above float32's range", 1e39 + rng.random(300) * 1e30
    yield "huge range", 10.0 ** rng.uniform(-300, 300, 1000)
    yield "reverse sorted", np.arange(2000, 0, -1) / 7.0


@pytest.mark.parametrize("rounds", [0, 1, None], ids=["fallback-only", "one-round", "default"])
def test_exact_order_equals_stable_argsort(rounds, monkeypatch):
    if rounds is not None:
        monkeypatch.setattr(pa_mod, "_FIXUP_ROUNDS", rounds)
    rng = np.random.default_rng(0)
    for name, keys in key_families(rng):
        got = pa_mod._exact_order(keys.copy())
        np.testing.assert_array_equal(got, np.argsort(keys, kind="stable"), err_msg=name)


def test_exact_ties_keep_column_order():
    """Equal keys: the lower column index comes first (is drawn first, gets the smaller value)."""
    keys = np.array([2.0, 1.0, 2.0, 1.0, 0.0, 2.0])
    assert pa_mod._exact_order(keys).tolist() == [4, 1, 3, 0, 2, 5]


def test_exact_order_row_by_row_in_a_batch():
    """2-D keys are ordered per row; the fix-up never swaps across two rows."""
    rng = np.random.default_rng(1)
    for c in (1, 2, 7, 300):
        keys = rng.standard_exponential((5, c))
        keys[1] = 1.0 + rng.permutation(c) * 2.0**-40  # float32-equal row next to ordinary ones
        keys[3] = np.sort(keys[3])[::-1]
        got = pa_mod._exact_order(keys.copy())
        np.testing.assert_array_equal(got, np.argsort(keys, axis=1, kind="stable"))


def test_radix_argsort_u32_is_stable():
    rng = np.random.default_rng(2)
    u = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    u[::3] = u[1::3][: len(u[::3])]  # many duplicates
    np.testing.assert_array_equal(pa_mod._radix_argsort_u32(u), np.argsort(u, kind="stable"))


# -- the pass ---------------------------------------------------------------------------------------
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(1, 37, 53), (3, 20, 7), (1, 130, 90), (2, 1, 5), (1, 6, 1), (1, 2, 2)]


def run_fast(w: torch.Tensor, seed: int) -> torch.Tensor:
    """_two_passes_numpy_ on a copy of the stacked matrices ``w`` (B, r, c), in its dtype."""
    kind = pa_mod._NUMPY_KIND[w.dtype]
    w = w.clone()
    pa_mod._two_passes_numpy_(pa_mod._numpy_of(w), np.random.default_rng(seed), kind)
    return w


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("small", [False, True], ids=["default-budgets", "small-tiles-and-draws"])
def test_tiled_pass_equals_the_reference(dtype, small, monkeypatch):
    """Value for value (as floats: -0 and +0 may trade places) the reference's result, also
    when tiles and draw chunks end inside a pass."""
    if small:
        monkeypatch.setattr(pa_mod, "_TILE_BUDGET", 97)
        monkeypatch.setattr(pa_mod, "_DRAW_BUDGET", 45)
        monkeypatch.setattr(pa_mod, "_DRAW_BUDGET_ONE", 31)
    gen = torch.Generator().manual_seed(7)
    for shape in SHAPES:
        w = (torch.randn(shape, generator=gen) * 0.05).to(dtype)
        w.view(-1)[:: 11] = 0.0
        work = torch.float64 if dtype == torch.float64 else torch.float32
        want = reference_two_passes(w.to(work).numpy().copy(), seed=3)
        got = run_fast(w, seed=3)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.to(torch.float64).numpy(), want.astype(np.float64), err_msg=str(shape))


def test_pa_rewire_works_on_the_tensors_own_memory():
    """A contiguous CPU bf16 tensor is rewired in place: same storage, the reference's values."""
    w = (torch.randn(300, 200, generator=torch.Generator().manual_seed(1)) * 0.02).bfloat16()
    before = w.clone()
    ptr = w.data_ptr()
    pa_rewire_(w, seed=5, mode="fast")
    assert w.data_ptr() == ptr
    want = reference_two_passes(before.float().numpy()[None].copy(), seed=5)[0]
    np.testing.assert_array_equal(w.float().numpy(), want)


def test_fast_pass_allocates_no_full_size_copy(monkeypatch):
    """Peak numpy allocation while rewiring a 1024 x 1024 bf16 tensor (2 MB) stays far below one
    float32 copy (4 MB): with small tiles and draw chunks the pass holds only those."""
    monkeypatch.setattr(pa_mod, "_TILE_BUDGET", 1 << 14)
    monkeypatch.setattr(pa_mod, "_DRAW_BUDGET_ONE", 1 << 14)
    w = (torch.randn(1024, 1024, generator=torch.Generator().manual_seed(2)) * 0.02).bfloat16()
    tracemalloc.start()
    try:
        pa_rewire_(w, seed=1, mode="fast")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < w.numel() * w.element_size() // 4, peak


def test_transposed_layout_is_rewired_through_its_unit_matrix():
    """An (in, out) tensor (HF Conv1D layout): its unit matrix is a copy, rewired and written
    back; the tensor's transpose equals the reference on that unit matrix."""
    from graphnn.rewire._targets import WeightTarget

    w = (torch.randn(40, 24, generator=torch.Generator().manual_seed(3)) * 0.1).bfloat16()
    units = w.T.float().numpy().copy()
    pa_mod.rewire_targets_([WeightTarget("conv1d.weight", w, "transposed")], seed=9, mode="fast")
    want = reference_two_passes(units[None], seed=9)[0]
    np.testing.assert_array_equal(w.T.float().numpy(), want)


@pytest.mark.parametrize("where", [0, -1], ids=["first-entry", "last-entry"])
def test_non_finite_entry_is_found_in_any_chunk(where):
    """The NaN/Inf check reads a few million entries at a time: an Inf in the last chunk of a
    tensor larger than one chunk is found, and the tensor is left as it was."""
    w = torch.zeros(2100, 2100, dtype=torch.bfloat16)  # 4.41M entries > one 4.19M chunk
    w.view(-1)[where] = float("inf")
    before = w.clone()
    with pytest.raises(ValueError, match="NaN/Inf"):
        pa_rewire_(w, seed=0, mode="fast")
    assert torch.equal(w, before)
