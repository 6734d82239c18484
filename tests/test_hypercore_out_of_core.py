"""The weighted hypercore of bf16/fp16/float32/float64 graphs on the paths meant for checkpoints
larger than memory:
column lines from transposed copies made on first read, in memory, in a temporary file (a budget
of 0 forces it on a tiny graph), of the still-alive targets only, or strided when no file can be
written; lines whose targets are all removed skipped; mapped pages released while peeling.

Oracles: the same graph in float64 (weights that bf16 holds exactly, multiples of 1/64, so every
sum is exact and the numbers must be equal, not close), a naive dense peeling written here, and
the in-memory path of the same bf16 graph for weights with rounding."""

import importlib
import os

import numpy as np
import pytest
import torch

import graphnn
from graphnn.analyses import _blocks, _columns, _lines
from random_graphs import dense_abs_adjacency, make_graph

hc = importlib.import_module("graphnn.analyses.hypercore")

#: partitions of a two-layer residual-stream model: stream, then per layer q, k, v, gate; lm head
SIZES = [24, 24, 24, 24, 40, 24, 24, 24, 40, 60]


def naive_peeling(a: np.ndarray) -> np.ndarray:
    """One neuron at a time on the dense |w| adjacency, lowest index on exact ties."""
    s = a.sum(1)
    alive = np.ones(len(a), bool)
    core, level = np.zeros(len(a)), 0.0
    for _ in range(len(a)):
        i = int(np.flatnonzero(alive)[np.argmin(s[alive])])
        level = max(level, s[i])
        core[i] = level
        alive[i] = False
        s = s - a[i]
    return core


def residual_graph(dtype: torch.dtype, seed: int, dyadic: bool):
    """A Llama-shaped graph in miniature: every block reads or writes the stream (p0); q, k and
    the head are leaves, v feeds o, gate (with up in parallel) feeds down. Some gate rows are
    scaled up so that part of each gate partition outlives the others and the stream."""
    gen = torch.Generator().manual_seed(seed)

    def w(d, s, scale=1.0):
        x = torch.randn(d, s, generator=gen, dtype=torch.float64) * scale
        return (torch.round(64 * x) / 64 if dyadic else x).to(dtype)

    blocks = []
    for layer, (q, k, v, gate) in enumerate([(1, 2, 3, 4), (5, 6, 7, 8)]):
        strong = torch.ones(40, 1, dtype=torch.float64)
        strong[torch.randperm(40, generator=gen)[:12]] = 3.0
        blocks += [(f"q{layer}", 0, q, w(24, 24), 1), (f"k{layer}", 0, k, w(24, 24), 1),
                   (f"v{layer}", 0, v, w(24, 24, 2.0), 1), (f"o{layer}", v, 0, w(24, 24, 2.0), 1),
                   (f"gate{layer}", 0, gate, (w(40, 24).double() * strong).to(dtype), 1),
                   (f"up{layer}", 0, gate, (w(40, 24).double() * strong).to(dtype), 1),
                   (f"down{layer}", gate, 0, (w(24, 40).double() * strong.T).to(dtype), 1)]
    blocks.append(("lm", 0, 9, w(60, 24), 1))
    return make_graph(SIZES, blocks)


def as_float64(g):
    return make_graph([p.size for p in g.partitions.values()],
                      [(b.name, int(b.src[1:]), int(b.dst[1:]), b.matrix().double(), 1) for b in g.blocks.values()])


@pytest.fixture
def streamed(monkeypatch):
    """Large-graph storage on a small graph: no |W| copy per block (the signed matrix is read)."""
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", -1)
    return monkeypatch


def _record_copies(monkeypatch) -> list:
    made = []
    real = _columns.TransposedLines.get

    def get(self, alive=None):
        out = real(self, alive)
        if self not in made:
            made.append(self)
        return out

    monkeypatch.setattr(_columns.TransposedLines, "get", get)
    return made


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_out_of_core_paths_give_the_float64_numbers_exactly(dtype, streamed, tmp_path):
    g = residual_graph(dtype, seed=1, dyadic=True)
    ref = graphnn.hypercore(as_float64(g))["core"].to_numpy()
    np.testing.assert_array_equal(ref, naive_peeling(dense_abs_adjacency(as_float64(g))))
    assert len(np.unique(ref)) > 50
    streamed.setattr(_columns.tempfile, "tempdir", str(tmp_path))
    made = _record_copies(streamed)
    for budget in (_lines.TRANSPOSE_BUDGET_BYTES, 0):
        streamed.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", budget)
        made.clear()
        np.testing.assert_array_equal(graphnn.hypercore(g)["core"].to_numpy(), ref)
        assert made and all(c.spilled == (budget == 0) for c in made)
        assert all(c.dtype.itemsize == dtype.itemsize for c in made)  # the weights' own dtype
        # the o/down copies are read with all their targets (the stream) alive; at least one gate/up
        # copy is made when fewer than half of its targets are left, and holds only those
        assert any(c.targets is not None and 0 < c.targets.size < 20 for c in made)
        assert all(c.targets is None for c in made if c.mat.shape[0] == 24)
        # the q, k and lm columns are never read: their targets are gone before the stream
        assert len(made) < 2 * 7
        assert os.listdir(tmp_path) == []  # the temporary file is unlinked at creation


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_column_major_weights_read_their_columns_as_views(dtype, streamed, tmp_path):
    """Weights stored transposed (HF Conv1D's ``(in, out)`` layout: the block's matrix is a
    column-major view): the columns are contiguous in memory and are read as views, the rows get
    the lazy copies; the same numbers as the row-major graph."""
    g = residual_graph(dtype, seed=6, dyadic=True)
    ref = naive_peeling(dense_abs_adjacency(as_float64(g)))
    col_major = make_graph(SIZES, [(b.name, int(b.src[1:]), int(b.dst[1:]), b.matrix().t().contiguous().t(), 1)
                                   for b in g.blocks.values()])
    assert not any(b.matrix().is_contiguous() for b in col_major.blocks.values())
    blocks = _blocks.load_abs_blocks(col_major, weighting=_blocks.Weighting(), dtype=torch.float32,
                                     device=torch.device("cpu"))
    space = _blocks.NodeSpace.of_graph(col_major)
    ends = _lines.line_ends(_blocks.place(space, blocks))
    for b in col_major.blocks.values():
        rows, cols = [e for e in ends if e.name == b.name]
        assert isinstance(rows.lines, _columns.TransposedLines)
        assert isinstance(cols.lines, np.ndarray) and cols.lines.strides[1] == dtype.itemsize
        assert np.shares_memory(cols.lines, _columns.numpy_bits(b.matrix(), cols.lines.dtype))
        rows.lines.close()
    streamed.setattr(_columns.tempfile, "tempdir", str(tmp_path))
    for budget in (_lines.TRANSPOSE_BUDGET_BYTES, 0):
        streamed.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", budget)
        np.testing.assert_array_equal(graphnn.hypercore(col_major)["core"].to_numpy(), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_strided_fallback_when_no_temporary_file_can_be_written(dtype, streamed):
    g = residual_graph(dtype, seed=2, dyadic=True)
    ref = naive_peeling(dense_abs_adjacency(as_float64(g)))

    def no_file(*args, **kw):
        raise OSError(28, "No space left on device")

    streamed.setattr(_columns.tempfile, "TemporaryFile", no_file)
    streamed.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", 0)
    made = _record_copies(streamed)
    np.testing.assert_array_equal(graphnn.hypercore(g)["core"].to_numpy(), ref)
    assert made and all(not c.spilled and "No space left" in c.spill_error for c in made)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rounded_weights_give_the_same_numbers_on_every_path(dtype, streamed, monkeypatch):
    """Weights with rounding (float64 sums of bf16/float32 values round): the file and in-memory
    paths do the same float64 subtractions in the same order, so their numbers are equal; both are
    the naive peeling's to rounding. For float32 the in-memory numbers are also those of the
    block-copy storage (small graphs: a float64 |W| copy per block, the same float64 values)."""
    g = residual_graph(dtype, seed=3, dyadic=False)
    if dtype == torch.float32:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_blocks, "CPU_COPY_MAX_EDGES", 10**9)
            copied = graphnn.hypercore(g)["core"].to_numpy()
    inside = graphnn.hypercore(g)["core"].to_numpy()
    if dtype == torch.float32:
        np.testing.assert_array_equal(inside, copied)
    streamed.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", 0)
    streamed.setattr(hc, "PAGE_BUDGET_BYTES", 0)  # release after every removal that reads a line
    streamed.setattr(hc, "_CHECK_BYTES", 0)
    np.testing.assert_array_equal(graphnn.hypercore(g)["core"].to_numpy(), inside)
    np.testing.assert_allclose(inside, naive_peeling(dense_abs_adjacency(as_float64(g))), rtol=1e-9)


def _open_files_in(folder) -> int:
    """Open descriptors and mappings of files in ``folder`` (unlinked ones included: Linux shows
    them as ``folder/name (deleted)`` or, made with O_TMPFILE, ``folder/#inode (deleted)``)."""
    prefix = os.path.realpath(folder) + os.sep
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(prefix)
        except OSError:
            pass
    with open("/proc/self/maps") as f:
        return n + sum(len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith(prefix) for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc")
def test_temporary_files_are_closed_after_the_peeling_and_on_interrupt(streamed, tmp_path):
    g = residual_graph(torch.bfloat16, seed=4, dyadic=True)
    streamed.setattr(_lines, "TRANSPOSE_BUDGET_BYTES", 0)
    streamed.setattr(_columns.tempfile, "tempdir", str(tmp_path))
    _open_column_files = lambda: _open_files_in(tmp_path)  # noqa: E731
    blocks = _blocks.load_abs_blocks(g, weighting=_blocks.Weighting(), dtype=torch.float32,
                                     device=torch.device("cpu"))
    space = _blocks.NodeSpace.of_graph(g)
    placed = _blocks.place(space, blocks)
    before = _open_column_files()
    seen = []

    def progress(step, done, total):  # Ctrl-C as soon as a temporary file is open
        seen.append(_open_column_files())
        if seen[-1] > before:
            raise KeyboardInterrupt

    streamed.setattr(hc, "_PROGRESS_EVERY", 1)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        hc.peel(space.n, placed, progress=progress)
    assert seen[-1] > before and len(seen) < space.n  # interrupted with a file open
    assert interrupted.tb is not None  # its frames (and the lines they held) are still alive
    assert _open_column_files() == before
    np.testing.assert_array_equal(hc.peel(space.n, placed), naive_peeling(dense_abs_adjacency(as_float64(g))))
    assert _open_column_files() == before


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_safetensors_file_peels_with_its_pages_released(dtype, streamed, tmp_path):
    """Weights read through the file's memory map (as extraction reads a checkpoint): the peeling
    releases the pages it read (after every removal here), leaves none resident, and gives the
    numbers of the in-memory graph."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from graphnn import _pages

    g = residual_graph(dtype, seed=5, dyadic=True)
    path = tmp_path / "w.safetensors"
    save_file({b.name: b.matrix().contiguous() for b in g.blocks.values()}, str(path))
    ref = graphnn.hypercore(g)["core"].to_numpy()
    with safe_open(str(path), framework="pt") as f:
        mapped = {name: f.get_tensor(name) for name in f.keys()}
    if _pages.register(*mapped.values()) != len(mapped):
        pytest.skip("safetensors did not map the file here")
    streamed.setattr(hc, "PAGE_BUDGET_BYTES", 0)
    streamed.setattr(hc, "_CHECK_BYTES", 0)
    released = []
    real = hc.release_pages

    def counting(t):
        got = real(t)
        released.append(got)
        return got

    streamed.setattr(hc, "release_pages", counting)
    g_file = make_graph(SIZES, [(b.name, int(b.src[1:]), int(b.dst[1:]), mapped[b.name], 1) for b in g.blocks.values()])
    blocks = _blocks.load_abs_blocks(g_file, weighting=_blocks.Weighting(), dtype=torch.float32,
                                     device=torch.device("cpu"))
    space = _blocks.NodeSpace.of_graph(g_file)
    np.testing.assert_array_equal(hc.peel(space.n, _blocks.place(space, blocks)), ref)
    assert sum(released) > 0
    assert all(_pages.resident_file_bytes(t) == 0 for t in mapped.values())
