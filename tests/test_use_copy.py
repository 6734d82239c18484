"""Where the |W| operator lives: a compute-dtype copy or the weights in their own dtype (docs/gpu.md)."""

import copy

import numpy as np
import pytest
import torch

import graphnn
from graphnn.analyses import _blocks, summary
from graphnn.analyses._blocks import use_copy

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # constructing a device needs no GPU
LARGE = _blocks.CPU_COPY_MAX_EDGES + 1


@pytest.mark.parametrize("dtype, copied", [(torch.bfloat16, False), (torch.float16, False),
                                           (torch.float8_e4m3fn, False), (torch.float32, True),
                                           (torch.float64, True), (None, True)])
def test_cuda_keeps_narrow_weights_of_a_large_graph_in_their_own_dtype(dtype, copied):
    assert use_copy(LARGE, CUDA, dtype) is copied
    assert use_copy(_blocks.CPU_COPY_MAX_EDGES, CUDA, dtype) is True  # small graphs: always the copy


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, None])
def test_cpu_copies_small_graphs_only(dtype):
    assert use_copy(_blocks.CPU_COPY_MAX_EDGES, CPU, dtype) is True
    assert use_copy(LARGE, CPU, dtype) is False


def test_bf16_streamed_in_own_dtype_equals_the_float64_copy(monkeypatch):
    """The path CUDA takes for a large bf16 graph (no copy: |w| converted a chunk at a time) gives
    the numbers of the float64 copy of the same weights (bf16 values are exact in float64)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)).to(torch.bfloat16)
    ref = graphnn.analyse(graphnn.extract(copy.deepcopy(model).double()))
    g16 = graphnn.extract(model)
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", 0)
    monkeypatch.setattr(_blocks, "_STREAM_ELEMENTS", 7)  # several chunks per block
    calls = []
    real = _blocks.use_copy
    monkeypatch.setattr(summary, "use_copy", lambda *a: calls.append(a) or real(*a))
    got = graphnn.analyse(g16)
    assert calls and all(c[2] == torch.bfloat16 for c in calls)
    for col in ("in_strength", "out_strength", "centrality"):
        np.testing.assert_allclose(got.neurons[col], ref.neurons[col], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(got.neurons["core"], ref.neurons["core"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/device_check.sh runs it)")
def test_cuda_holds_bf16_weights_in_their_own_dtype_and_matches_the_cpu(monkeypatch):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32)).to(torch.bfloat16)
    g = graphnn.extract(model)
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", 0)  # a "large" graph: the 2 B/edge path
    blocks = _blocks.load_abs_blocks(g, dtype=torch.float32, device=CUDA)
    assert all(b.t is None and b.w.dtype == torch.bfloat16 and b.w.is_cuda for b in blocks)
    cpu = graphnn.analyse(g, device="cpu")
    gpu = graphnn.analyse(g, device="cuda")
    np.testing.assert_allclose(gpu.neurons["centrality"], cpu.neurons["centrality"], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(gpu.neurons["core"], cpu.neurons["core"])


def test_peeling_reads_a_gpu_block_from_the_graphs_own_cpu_matrix(monkeypatch):
    """The hypercore peels on the CPU: for a block whose weights were moved to a GPU it reads the
    graph's CPU matrix itself (no copy), else one copy in the weights' dtype (not float32)."""
    from graphnn.analyses._lines import _cpu_matrix
    w = torch.randn(6, 5).to(torch.bfloat16)
    g = graphnn.LayeredGraph.from_matrices({"a": 5, "b": 6}, {"w": ("a", "b", w)})
    monkeypatch.setattr(_blocks, "CPU_COPY_MAX_EDGES", -1)  # streamed: the block keeps its signed matrix
    (blk,) = _blocks.load_abs_blocks(g, dtype=torch.float32, device=CPU)
    on_gpu = blk.w.clone()  # stands in for the device copy: same values, other memory
    got = _cpu_matrix(blk, on_gpu)
    assert got.data_ptr() == next(iter(g.blocks.values())).matrix().data_ptr()  # the graph's own memory
    assert got.dtype == torch.bfloat16 and torch.equal(got, w)
    other = torch.randn(6, 5, dtype=torch.float64)  # not the graph's matrix: a copy in its own dtype
    assert _cpu_matrix(blk, other).dtype == torch.float64
